//! `gopher-quality`: the quality heuristics of Gopher (Rae et al. 2021, appendix A), with
//! HuggingFace datatrove's `GopherQualityFilter` defaults and order of checks, so that results
//! compare with published pipelines (FineWeb, …).
//!
//! Differences from datatrove: words come from [`super::text::words`] instead of a language
//! tokenizer, and lines are split on `\n` only. A threshold set to `null` is not checked.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::text::{char_len, is_symbol, ratio, words};
use super::{BuiltinParams, DocFilter, FilterError, ParamIssue, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Fewest non-symbol words.
    #[serde(default = "defaults::min_doc_words")]
    pub min_doc_words: Option<usize>,
    /// Most non-symbol words.
    #[serde(default = "defaults::max_doc_words")]
    pub max_doc_words: Option<usize>,
    /// Bounds on the mean length (characters) of non-symbol words.
    #[serde(default = "defaults::min_avg_word_length")]
    pub min_avg_word_length: Option<f64>,
    #[serde(default = "defaults::max_avg_word_length")]
    pub max_avg_word_length: Option<f64>,
    /// Most `#`, and most `...`/`…`, per word (each).
    #[serde(default = "defaults::ratio_0_1")]
    pub max_symbol_word_ratio: Option<f64>,
    /// Most lines starting with a bullet (`•` or `-`), as a fraction of lines.
    #[serde(default = "defaults::max_bullet_lines_ratio")]
    pub max_bullet_lines_ratio: Option<f64>,
    /// Most lines ending in an ellipsis, as a fraction of lines.
    #[serde(default = "defaults::max_ellipsis_lines_ratio")]
    pub max_ellipsis_lines_ratio: Option<f64>,
    /// Fewest words containing a letter, as a fraction of words (datatrove calls it
    /// `max_non_alpha_words_ratio`, but it is this lower bound).
    #[serde(default = "defaults::min_alpha_words_ratio")]
    pub min_alpha_words_ratio: Option<f64>,
    /// Fewest occurrences of `stop_words` (case-sensitive, as in datatrove).
    #[serde(default = "defaults::min_stop_words")]
    pub min_stop_words: Option<usize>,
    #[serde(default = "defaults::stop_words")]
    pub stop_words: Vec<String>,
}

impl BuiltinParams for Params {
    fn problems(&self) -> Vec<ParamIssue> {
        let mut p = Vec::new();
        if let (Some(lo), Some(hi)) = (self.min_doc_words, self.max_doc_words)
            && lo > hi
        {
            p.push((
                "min_doc_words",
                format!("`min_doc_words` ({lo}) is above `max_doc_words` ({hi})"),
            ));
        }
        if let (Some(lo), Some(hi)) = (self.min_avg_word_length, self.max_avg_word_length)
            && lo > hi
        {
            p.push((
                "min_avg_word_length",
                format!("`min_avg_word_length` ({lo}) is above `max_avg_word_length` ({hi})"),
            ));
        }
        for (field, v) in [
            ("max_symbol_word_ratio", self.max_symbol_word_ratio),
            ("max_bullet_lines_ratio", self.max_bullet_lines_ratio),
            ("max_ellipsis_lines_ratio", self.max_ellipsis_lines_ratio),
            ("min_alpha_words_ratio", self.min_alpha_words_ratio),
            ("min_avg_word_length", self.min_avg_word_length),
            ("max_avg_word_length", self.max_avg_word_length),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                p.push((
                    field,
                    format!(
                        "`{field}` must be a number ≥ 0 (or null to skip the check), found {v}"
                    ),
                ));
            }
        }
        p
    }

    fn build(&self) -> Box<dyn DocFilter> {
        Box::new(GopherQuality { p: self.clone() })
    }
}

pub struct GopherQuality {
    p: Params,
}

impl GopherQuality {
    fn judge(&self, text: &str) -> Verdict {
        let p = &self.p;
        let words = words(text);
        let n_words = words.len();
        let content: Vec<&str> = words.iter().copied().filter(|w| !is_symbol(w)).collect();
        let n = content.len();
        if p.min_doc_words.is_some_and(|min| n < min) {
            return drop("too-few-words");
        }
        if p.max_doc_words.is_some_and(|max| n > max) {
            return drop("too-many-words");
        }
        let mean_len = ratio(content.iter().map(|w| char_len(w)).sum(), n);
        if p.min_avg_word_length.is_some_and(|min| mean_len < min) {
            return drop("short-words");
        }
        if p.max_avg_word_length.is_some_and(|max| mean_len > max) {
            return drop("long-words");
        }
        if let Some(max) = p.max_symbol_word_ratio {
            if ratio(text.matches('#').count(), n_words) > max {
                return drop("too-many-hashes");
            }
            if ratio(text.matches("...").count() + text.matches('…').count(), n_words) > max {
                return drop("too-many-ellipses");
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        if let Some(max) = p.max_bullet_lines_ratio {
            let bullets = lines.iter().filter(|l| l.trim_start().starts_with(['•', '-'])).count();
            if ratio(bullets, lines.len()) > max {
                return drop("bullet-lines");
            }
        }
        if let Some(max) = p.max_ellipsis_lines_ratio {
            let trailing = lines
                .iter()
                .filter(|l| l.trim_end().ends_with("...") || l.trim_end().ends_with('…'))
                .count();
            if ratio(trailing, lines.len()) > max {
                return drop("ellipsis-lines");
            }
        }
        if let Some(min) = p.min_alpha_words_ratio
            && ratio(words.iter().filter(|w| w.chars().any(char::is_alphabetic)).count(), n_words)
                < min
        {
            return drop("few-alpha-words");
        }
        if let Some(min) = p.min_stop_words
            && words.iter().filter(|w| p.stop_words.iter().any(|s| s == *w)).count() < min
        {
            return drop("few-stop-words");
        }
        Verdict::Keep
    }
}

fn drop(reason: &str) -> Verdict {
    Verdict::Drop(reason.to_string())
}

impl DocFilter for GopherQuality {
    fn name(&self) -> &str {
        "gopher-quality"
    }
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        Ok(docs.par_iter().map(|d| self.judge(d)).collect())
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    pub fn max_avg_word_length() -> Option<f64> {
        Some(10.0)
    }

    pub fn max_bullet_lines_ratio() -> Option<f64> {
        Some(0.9)
    }

    pub fn max_doc_words() -> Option<usize> {
        Some(100_000)
    }

    pub fn max_ellipsis_lines_ratio() -> Option<f64> {
        Some(0.3)
    }

    pub fn min_alpha_words_ratio() -> Option<f64> {
        Some(0.8)
    }

    pub fn min_avg_word_length() -> Option<f64> {
        Some(3.0)
    }

    pub fn min_doc_words() -> Option<usize> {
        Some(50)
    }

    pub fn min_stop_words() -> Option<usize> {
        Some(2)
    }

    pub fn ratio_0_1() -> Option<f64> {
        Some(0.1)
    }

    pub fn stop_words() -> Vec<String> {
        ["the", "be", "to", "of", "and", "that", "have", "with"].map(String::from).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::verdicts;
    use super::*;

    /// `n` words of four letters, two of them stop words ("the", "with").
    fn doc(n: usize) -> String {
        let mut w: Vec<&str> = vec!["the", "with"];
        w.extend(std::iter::repeat_n("word", n - 2));
        w.join(" ") + "."
    }

    fn one(yaml_with: &str, text: &str) -> Verdict {
        verdicts(&format!("- builtin: gopher-quality\n  with: {yaml_with}"), &[text]).remove(0)
    }

    fn dropped(reason: &str) -> Verdict {
        Verdict::Drop(reason.into())
    }

    #[test]
    fn word_count_bounds() {
        assert_eq!(one("{}", &doc(50)), Verdict::Keep);
        assert_eq!(one("{}", &doc(49)), dropped("too-few-words"));
        assert_eq!(one("{ max_doc_words: 60 }", &doc(60)), Verdict::Keep);
        assert_eq!(one("{ max_doc_words: 60 }", &doc(61)), dropped("too-many-words"));
        // Punctuation tokens are not words.
        assert_eq!(one("{}", &(doc(49) + " , , , ,")), dropped("too-few-words"));
        assert_eq!(one("{ min_doc_words: null }", &doc(5)), Verdict::Keep);
    }

    #[test]
    fn mean_word_length_bounds() {
        // 50 words: "the", "with" and 48 words of length k → mean = (3 + 4 + 48k) / 50.
        let with_len = |k: usize| {
            let w = "a".repeat(k);
            format!("the with {}", vec![w.as_str(); 48].join(" "))
        };
        // k = 3 → mean 3.02 (keep); k = 2 → mean 2.06 (drop).
        assert_eq!(one("{}", &with_len(3)), Verdict::Keep);
        assert_eq!(one("{}", &with_len(2)), dropped("short-words"));
        // k = 10 → mean 9.74 (keep); k = 11 → mean 10.7 (drop).
        assert_eq!(one("{}", &with_len(10)), Verdict::Keep);
        assert_eq!(one("{}", &with_len(11)), dropped("long-words"));
    }

    #[test]
    fn hash_and_ellipsis_ratios() {
        // 51 tokens (50 words + "."), so 5 symbols → 0.098 (keep), 6 → 0.117 (drop); symbols
        // inside a word add no token.
        let base = doc(50);
        let hashes = |k: usize| base.replacen("word", &format!("wo{}rd", "#".repeat(k)), 1);
        assert_eq!(one("{}", &hashes(5)), Verdict::Keep);
        assert_eq!(one("{}", &hashes(6)), dropped("too-many-hashes"));
        let ell = |k: usize| base.replacen("word", &format!("wo{}rd", "…".repeat(k)), 1);
        assert_eq!(one("{}", &ell(5)), Verdict::Keep);
        assert_eq!(one("{}", &ell(6)), dropped("too-many-ellipses"));
    }

    #[test]
    fn bullet_and_ellipsis_lines() {
        // 10 lines of 10 words each; b of them start with a bullet, e end in an ellipsis.
        let lines = |b: usize, e: usize| {
            (0..10)
                .map(|i| {
                    let head = if i < b { "- " } else { "" };
                    let tail = if i < e { " word..." } else { " word." };
                    format!("{head}the with word word word word word word word{tail}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(one("{ max_symbol_word_ratio: null }", &lines(9, 0)), Verdict::Keep);
        assert_eq!(
            one("{ max_symbol_word_ratio: null, max_bullet_lines_ratio: 0.8 }", &lines(9, 0)),
            dropped("bullet-lines")
        );
        assert_eq!(one("{ max_symbol_word_ratio: null }", &lines(10, 0)), dropped("bullet-lines"));
        assert_eq!(one("{ max_symbol_word_ratio: null }", &lines(0, 3)), Verdict::Keep);
        assert_eq!(one("{ max_symbol_word_ratio: null }", &lines(0, 4)), dropped("ellipsis-lines"));
    }

    #[test]
    fn alphabetic_words_and_stop_words() {
        // 50 words, k of them numbers: alpha ratio (51 - 1 - k) / 51 over tokens incl. ".".
        let numbers = |k: usize| doc(50).replacen("word", "1234", k);
        assert_eq!(one("{}", &numbers(9)), Verdict::Keep); // 41/51 = 0.804
        assert_eq!(one("{}", &numbers(10)), dropped("few-alpha-words")); // 40/51 = 0.784
        let no_stop = doc(50).replacen("with", "word", 1);
        assert_eq!(one("{}", &no_stop), dropped("few-stop-words"));
        // Case-sensitive, as in datatrove.
        assert_eq!(one("{}", &doc(50).replacen("with", "The", 1)), dropped("few-stop-words"));
        assert_eq!(one("{ min_stop_words: 1 }", &no_stop), Verdict::Keep);
    }

    #[test]
    fn bad_params_are_reported() {
        let s = super::super::tests::specs(
            "- builtin: gopher-quality\n  with: { min_doc_words: 9, max_doc_words: 3, max_bullet_lines_ratio: -1 }",
        )
        .unwrap();
        let problems = s[0].problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, vec!["with", "min_doc_words"]);
    }
}
