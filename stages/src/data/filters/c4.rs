//! `c4`: the C4 cleaning rules (Raffel et al. 2020), with datatrove's `C4QualityFilter`
//! defaults and order of checks. Line by line (or sentence by sentence with
//! `split_paragraph: false`), a line is removed when it has a word over `max_word_length`
//! characters, does not end in terminal punctuation (`.`, `?`, `!`, `"`, `'`; an ellipsis
//! does not count), has fewer than `min_words_per_line` words, mentions "javascript", or
//! holds policy boilerplate; `[1]`-style citations are cut. The whole document is dropped when
//! a kept line holds "lorem ipsum" or `{`, or fewer than `min_num_sentences` sentences
//! remain. A document that loses lines is rewritten to the lines it keeps.
//!
//! Sentences are counted with a simple rule (a run of `.`, `!` or `?` followed by a space or
//! the end) where datatrove uses NLTK's punkt, so abbreviations such as "Dr." count as ends.

use std::sync::LazyLock;

use ::regex::Regex;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{BuiltinParams, DocFilter, FilterError, ParamIssue, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Judge lines (true) or sentences (false).
    #[serde(default = "defaults::yes")]
    pub split_paragraph: bool,
    #[serde(default = "defaults::yes")]
    pub remove_citations: bool,
    #[serde(default = "defaults::yes")]
    pub filter_no_terminal_punct: bool,
    #[serde(default = "defaults::min_num_sentences")]
    pub min_num_sentences: Option<usize>,
    #[serde(default = "defaults::min_words_per_line")]
    pub min_words_per_line: usize,
    #[serde(default = "defaults::max_word_length")]
    pub max_word_length: Option<usize>,
    #[serde(default = "defaults::yes")]
    pub filter_lorem_ipsum: bool,
    #[serde(default = "defaults::yes")]
    pub filter_javascript: bool,
    #[serde(default = "defaults::yes")]
    pub filter_curly_bracket: bool,
    #[serde(default = "defaults::yes")]
    pub filter_policy: bool,
}

impl BuiltinParams for Params {
    fn problems(&self) -> Vec<ParamIssue> {
        Vec::new()
    }
    fn build(&self) -> Box<dyn DocFilter> {
        Box::new(C4 { p: self.clone() })
    }
}

const END_PUNCTUATION: [char; 5] = ['.', '?', '!', '"', '\''];
const POLICY: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

static CITATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[\d*\]|\[edit\]|\[citation needed\]").expect("valid regex"));

pub struct C4 {
    p: Params,
}

/// Sentences of a line: pieces ending in a run of `.`, `!` or `?` followed by whitespace or
/// the end, that hold at least one letter or digit.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?') {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if matches!(d, '.' | '!' | '?') {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            if chars.peek().is_none_or(|&(_, d)| d.is_whitespace()) {
                out.push(&text[start..end]);
                start = end;
            }
        }
    }
    out.push(&text[start..]);
    out.into_iter().map(str::trim).filter(|s| s.chars().any(char::is_alphanumeric)).collect()
}

impl C4 {
    fn judge(&self, text: &str) -> Verdict {
        let p = &self.p;
        let units: Vec<&str> =
            if p.split_paragraph { text.lines().collect() } else { sentences(text) };
        let mut kept: Vec<String> = Vec::new();
        let mut n_sentences = 0;
        for unit in units {
            let line = unit.trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            if p.max_word_length.is_some_and(|max| words.iter().any(|w| w.chars().count() > max)) {
                continue;
            }
            let line = if p.remove_citations {
                CITATION.replace_all(line, "").into_owned()
            } else {
                line.to_string()
            };
            if p.filter_no_terminal_punct
                && (!line.ends_with(END_PUNCTUATION) || line.ends_with("..."))
            {
                continue;
            }
            if words.len() < p.min_words_per_line {
                continue;
            }
            let lower = line.to_lowercase();
            if p.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                return Verdict::Drop("lorem-ipsum".into());
            }
            if p.filter_javascript && lower.contains("javascript") {
                continue;
            }
            if p.filter_curly_bracket && line.contains('{') {
                return Verdict::Drop("curly-bracket".into());
            }
            if p.filter_policy && POLICY.iter().any(|s| lower.contains(s)) {
                continue;
            }
            if p.min_num_sentences.is_some() {
                n_sentences += if p.split_paragraph { sentences(&line).len() } else { 1 };
            }
            kept.push(line);
        }
        if p.min_num_sentences.is_some_and(|min| n_sentences < min) {
            return Verdict::Drop("too-few-sentences".into());
        }
        let joined = kept.join(if p.split_paragraph { "\n" } else { " " });
        let cleaned = joined.trim();
        if cleaned == text { Verdict::Keep } else { Verdict::Rewrite(cleaned.to_string()) }
    }
}

impl DocFilter for C4 {
    fn name(&self) -> &str {
        "c4"
    }
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        Ok(docs.par_iter().map(|d| self.judge(d)).collect())
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    pub fn max_word_length() -> Option<usize> {
        Some(1000)
    }

    pub fn min_num_sentences() -> Option<usize> {
        Some(5)
    }

    pub fn min_words_per_line() -> usize {
        3
    }

    pub fn yes() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::verdicts;
    use super::*;

    fn one(yaml_with: &str, text: &str) -> Verdict {
        verdicts(&format!("- builtin: c4\n  with: {yaml_with}"), &[text]).remove(0)
    }

    const GOOD: &str = "The cat sat on the mat.\nIt was a sunny day!\nWhy did the dog bark?\nShe said \"hello there.\"\nWe walked home slowly.";

    #[test]
    fn counts_sentences_simply() {
        assert_eq!(sentences("One. Two! Three?? Four"), vec!["One.", "Two!", "Three??", "Four"]);
        assert_eq!(sentences("3.14 is pi. Done..."), vec!["3.14 is pi.", "Done..."]);
        assert!(sentences(" ... ").is_empty());
    }

    #[test]
    fn keeps_clean_text_and_counts_sentences() {
        assert_eq!(one("{}", GOOD), Verdict::Keep);
        // Four sentences are one too few.
        let four = GOOD.rsplit_once('\n').unwrap().0;
        assert_eq!(one("{}", four), Verdict::Drop("too-few-sentences".into()));
        assert_eq!(one("{ min_num_sentences: 4 }", four), Verdict::Keep);
        // Two sentences on one line count as two.
        assert_eq!(
            one(
                "{}",
                "One two three. Four five six.\nSeven eight nine. Ten eleven twelve!\nA b c?"
            ),
            Verdict::Keep
        );
    }

    #[test]
    fn removes_bad_lines() {
        let text = format!(
            "{GOOD}\nno terminal punctuation here\nToo short.\nIt trails off...\nPlease enable JavaScript to view.\nRead our privacy policy now.\nA {} word.",
            "w".repeat(1001)
        );
        assert_eq!(one("{}", &text), Verdict::Rewrite(GOOD.into()));
        // The same word at 1000 characters is allowed.
        let ok = format!("{GOOD}\nA {} word.", "w".repeat(1000));
        assert_eq!(one("{}", &ok), Verdict::Keep);
        // A 3-word line is kept, a 2-word line is not (above).
        assert_eq!(one("{}", &format!("{GOOD}\nThree words here.")), Verdict::Keep);
        // Switching a rule off keeps its lines.
        assert_eq!(
            one("{ filter_javascript: false }", &format!("{GOOD}\nJavaScript is a language.")),
            Verdict::Keep
        );
    }

    #[test]
    fn cuts_citations_and_trims() {
        let text = format!("{GOOD}\nThe sky is blue.[1]\n   Lines are trimmed.   ");
        assert_eq!(
            one("{}", &text),
            Verdict::Rewrite(format!("{GOOD}\nThe sky is blue.\nLines are trimmed."))
        );
    }

    #[test]
    fn drops_documents() {
        assert_eq!(
            one("{}", &format!("{GOOD}\nLorem ipsum dolor sit amet.")),
            Verdict::Drop("lorem-ipsum".into())
        );
        assert_eq!(
            one("{}", &format!("{GOOD}\nThe code is {{ x }} here.")),
            Verdict::Drop("curly-bracket".into())
        );
        // A brace on a line that is removed anyway does not drop the document.
        assert_eq!(one("{}", &format!("{GOOD}\nfunction() {{")), Verdict::Rewrite(GOOD.into()));
    }

    #[test]
    fn sentence_mode() {
        let text = "One two three. Four five six. Seven eight nine. Ten eleven twelve. Thirteen fourteen fifteen. no end";
        assert_eq!(
            one("{ split_paragraph: false }", text),
            Verdict::Rewrite("One two three. Four five six. Seven eight nine. Ten eleven twelve. Thirteen fourteen fifteen.".into())
        );
    }
}
