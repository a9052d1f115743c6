//! `gopher-repetition`: Gopher's repetition heuristics (Rae et al. 2021, table A1), with
//! datatrove's `GopherRepetitionFilter` defaults and definitions:
//! - duplicate paragraphs (split on `\n\n+`) and lines (split on `\n+`): the fraction of
//!   elements that repeat an earlier one, and the fraction of the text's characters in them;
//! - for n = 2, 3, 4: the characters covered by the most frequent n-gram (its length times
//!   its count, counted even when it occurs once, as datatrove does) over the text's;
//! - for n = 5 … 10: the characters of n-grams that repeat an earlier one, scanning left to
//!   right and jumping past a repeat so overlapping repeats count once.
//!
//! Character counts are Unicode scalar values, like Python's `len`. N-grams are compared
//! by a 64-bit hash of their words, which keeps the filter fast on large corpora.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::text::{HashMap, HashSet, char_len, hash64, mix64, ratio, words};
use super::{BuiltinParams, DocFilter, FilterError, ParamIssue, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "defaults::ratio_0_3")]
    pub dup_line_frac: Option<f64>,
    #[serde(default = "defaults::ratio_0_3")]
    pub dup_para_frac: Option<f64>,
    #[serde(default = "defaults::ratio_0_2")]
    pub dup_line_char_frac: Option<f64>,
    #[serde(default = "defaults::ratio_0_2")]
    pub dup_para_char_frac: Option<f64>,
    /// `[n, max fraction]` pairs for the most frequent n-gram.
    #[serde(default = "defaults::top_n_grams")]
    pub top_n_grams: Vec<(usize, f64)>,
    /// `[n, max fraction]` pairs for duplicated n-grams.
    #[serde(default = "defaults::dup_n_grams")]
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl BuiltinParams for Params {
    fn problems(&self) -> Vec<ParamIssue> {
        let mut p = Vec::new();
        for (field, v) in [
            ("dup_line_frac", self.dup_line_frac),
            ("dup_para_frac", self.dup_para_frac),
            ("dup_line_char_frac", self.dup_line_char_frac),
            ("dup_para_char_frac", self.dup_para_char_frac),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                p.push((
                    field,
                    format!(
                        "`{field}` must be a fraction ≥ 0 (or null to skip the check), found {v}"
                    ),
                ));
            }
        }
        for (field, list) in
            [("top_n_grams", &self.top_n_grams), ("dup_n_grams", &self.dup_n_grams)]
        {
            for &(n, f) in list {
                if n == 0 || n > 64 || !(f.is_finite() && f >= 0.0) {
                    p.push((field, format!("`{field}` holds [n, fraction] pairs with 1 ≤ n ≤ 64 and fraction ≥ 0, found [{n}, {f}]")));
                }
            }
        }
        p
    }

    fn build(&self) -> Box<dyn DocFilter> {
        Box::new(GopherRepetition { p: self.clone() })
    }
}

pub struct GopherRepetition {
    p: Params,
}

/// Sets reused across checks and documents (they keep their capacity), one per thread.
#[derive(Default)]
struct Scratch {
    seen: HashSet<u64>,
    counts: HashMap<u64, (usize, usize)>,
}

/// (elements repeating an earlier one, their characters); elements compared by hash.
fn duplicates(elements: &[&str], seen: &mut HashSet<u64>) -> (usize, usize) {
    seen.clear();
    let (mut n, mut chars) = (0, 0);
    for e in elements {
        if !seen.insert(hash64(e.as_bytes())) {
            n += 1;
            chars += char_len(e);
        }
    }
    (n, chars)
}

/// Splits on runs of at least `min_run` newlines.
fn split_newlines(text: &str, min_run: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let run_end = i + bytes[i..].iter().take_while(|&&b| b == b'\n').count();
            if run_end - i >= min_run {
                out.push(&text[start..i]);
                start = run_end;
            }
            i = run_end;
        } else {
            i += 1;
        }
    }
    out.push(&text[start..]);
    out
}

/// Word n-grams as hashes, by a polynomial rolling hash over per-word hashes, so each
/// n-gram costs O(1) whatever n.
struct NGrams {
    prefix: Vec<u64>,
    /// Prefix sums of word lengths in characters.
    chars: Vec<usize>,
}

const BASE: u64 = 0x9e37_79b9_7f4a_7c15 | 1;

impl NGrams {
    fn new(words: &[&str]) -> Self {
        let mut prefix = Vec::with_capacity(words.len() + 1);
        let mut chars = Vec::with_capacity(words.len() + 1);
        prefix.push(0u64);
        chars.push(0usize);
        for w in words {
            prefix
                .push(prefix.last().unwrap().wrapping_mul(BASE).wrapping_add(hash64(w.as_bytes())));
            chars.push(chars.last().unwrap() + char_len(w));
        }
        NGrams { prefix, chars }
    }
    fn len(&self) -> usize {
        self.prefix.len() - 1
    }
    /// Hash of words `i..i+n`; `pow` is BASE^n.
    fn hash(&self, i: usize, n: usize, pow: u64) -> u64 {
        mix64(self.prefix[i + n].wrapping_sub(self.prefix[i].wrapping_mul(pow)) ^ n as u64)
    }
    fn chars(&self, i: usize, n: usize) -> usize {
        self.chars[i + n] - self.chars[i]
    }
}

fn pow(n: usize) -> u64 {
    (0..n).fold(1u64, |p, _| p.wrapping_mul(BASE))
}

impl GopherRepetition {
    fn judge(&self, scratch: &mut Scratch, text: &str) -> Verdict {
        let p = &self.p;
        let text_chars = char_len(text);
        if text_chars == 0 {
            return Verdict::Keep;
        }
        let paragraphs = split_newlines(text.trim(), 2);
        let (n, chars) = duplicates(&paragraphs, &mut scratch.seen);
        if p.dup_para_frac.is_some_and(|max| ratio(n, paragraphs.len()) > max) {
            return drop("dup-paragraphs");
        }
        if p.dup_para_char_frac.is_some_and(|max| ratio(chars, text_chars) > max) {
            return drop("dup-paragraph-chars");
        }
        let lines = split_newlines(text, 1);
        let (n, chars) = duplicates(&lines, &mut scratch.seen);
        if p.dup_line_frac.is_some_and(|max| ratio(n, lines.len()) > max) {
            return drop("dup-lines");
        }
        if p.dup_line_char_frac.is_some_and(|max| ratio(chars, text_chars) > max) {
            return drop("dup-line-chars");
        }

        let words = words(text);
        let grams = NGrams::new(&words);
        for &(n, max) in &p.top_n_grams {
            if grams.len() < n {
                continue;
            }
            let pw = pow(n);
            // hash → (count, first position); ties go to the n-gram seen first, like
            // Python's Counter.most_common.
            let counts = &mut scratch.counts;
            counts.clear();
            for i in 0..=grams.len() - n {
                counts.entry(grams.hash(i, n, pw)).or_insert((0, i)).0 += 1;
            }
            let (count, first) = counts
                .values()
                .copied()
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
                .expect("at least one n-gram");
            // Python joins the n-gram's words with spaces.
            let top_chars = (grams.chars(first, n) + n - 1) * count;
            if ratio(top_chars, text_chars) > max {
                return Verdict::Drop(format!("top-{n}-gram"));
            }
        }
        for &(n, max) in &p.dup_n_grams {
            if grams.len() < n {
                continue;
            }
            let pw = pow(n);
            let seen = &mut scratch.seen;
            seen.clear();
            let (mut repeated, mut i) = (0, 0);
            while i + n <= grams.len() {
                if seen.insert(grams.hash(i, n, pw)) {
                    i += 1;
                } else {
                    // datatrove joins these words without a separator.
                    repeated += grams.chars(i, n);
                    i += n;
                }
            }
            if ratio(repeated, text_chars) > max {
                return Verdict::Drop(format!("duplicated-{n}-grams"));
            }
        }
        Verdict::Keep
    }
}

fn drop(reason: &str) -> Verdict {
    Verdict::Drop(reason.to_string())
}

impl DocFilter for GopherRepetition {
    fn name(&self) -> &str {
        "gopher-repetition"
    }
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        Ok(docs
            .par_iter()
            .map_init(Scratch::default, |scratch, d| self.judge(scratch, d))
            .collect())
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    pub fn ratio_0_2() -> Option<f64> {
        Some(0.2)
    }

    pub fn ratio_0_3() -> Option<f64> {
        Some(0.3)
    }

    pub fn dup_n_grams() -> Vec<(usize, f64)> {
        vec![(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
    }

    pub fn top_n_grams() -> Vec<(usize, f64)> {
        vec![(2, 0.2), (3, 0.18), (4, 0.16)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::verdicts;
    use super::*;

    fn one(yaml_with: &str, text: &str) -> Verdict {
        verdicts(&format!("- builtin: gopher-repetition\n  with: {yaml_with}"), &[text]).remove(0)
    }

    fn dropped(reason: &str) -> Verdict {
        Verdict::Drop(reason.into())
    }

    /// Distinct filler words, so only what a test repeats on purpose repeats.
    fn filler(seed: usize, n: usize) -> String {
        (0..n).map(|i| format!("w{}x{}", seed, i)).collect::<Vec<_>>().join(" ")
    }

    /// Only the paragraph and line checks.
    const LINES_ONLY: &str = "{ top_n_grams: [], dup_n_grams: [] }";

    #[test]
    fn splits_like_python_re_split() {
        assert_eq!(split_newlines("a\n\nb\nc\n\n\nd", 2), vec!["a", "b\nc", "d"]);
        assert_eq!(split_newlines("\na\nb\n", 1), vec!["", "a", "b", ""]);
        assert_eq!(split_newlines("", 1), vec![""]);
    }

    #[test]
    fn duplicate_paragraph_fraction() {
        // 10 paragraphs of which k repeat the first: k/10 against 0.3. Char fraction off.
        let doc = |k: usize| {
            let rep = filler(0, 3);
            let mut ps: Vec<String> = vec![rep.clone()];
            ps.extend((1..10 - k).map(|i| filler(i, 3)));
            ps.extend(std::iter::repeat_n(rep, k));
            ps.join("\n\n")
        };
        let w = "{ top_n_grams: [], dup_n_grams: [], dup_para_char_frac: null, dup_line_char_frac: null, dup_line_frac: null }";
        assert_eq!(one(w, &doc(3)), Verdict::Keep);
        assert_eq!(one(w, &doc(4)), dropped("dup-paragraphs"));
    }

    #[test]
    fn duplicate_line_fraction_and_chars() {
        // 10 lines: k repeats of a 1-char line, so the character share stays low.
        let doc = |k: usize| {
            let mut ls: Vec<String> = vec!["a".into()];
            ls.extend((1..10 - k).map(|i| format!("line{i}")));
            ls.extend(std::iter::repeat_n("a".to_string(), k));
            ls.join("\n")
        };
        assert_eq!(one(LINES_ONLY, &doc(3)), Verdict::Keep);
        assert_eq!(one(LINES_ONLY, &doc(4)), dropped("dup-lines"));
        // 1 of 5 lines repeats (0.2 ≤ 0.3); its 4 characters are 4/20 = 0.2 of the text
        // (keep), or 4/19 (drop).
        assert_eq!(one(LINES_ONLY, "XXXX\naaa\nbbb\ncc\nXXXX"), Verdict::Keep);
        assert_eq!(one(LINES_ONLY, "XXXX\naaa\nbbb\nc\nXXXX"), dropped("dup-line-chars"));
    }

    #[test]
    fn duplicate_paragraph_chars() {
        // 1 of 4 paragraphs repeats (0.25 ≤ 0.3) and holds over 20% of the characters.
        let p = "y".repeat(40);
        let text = format!("{p}\n\na\n\nb\n\n{p}");
        assert_eq!(one(LINES_ONLY, &text), dropped("dup-paragraph-chars"));
        let short = "y".repeat(5);
        assert_eq!(
            one(
                LINES_ONLY,
                &format!("{short}\n\n{}\n\n{}\n\n{short}", "z".repeat(20), "q".repeat(20))
            ),
            Verdict::Keep
        );
    }

    #[test]
    fn top_n_gram_share() {
        // f distinct 3-char words, then "ab cd" k times: the top 2-gram "ab cd" covers 5k
        // characters of 4f + 6k - 1.
        let doc = |f: usize, k: usize| {
            let mut w: Vec<String> = (0..f).map(|i| format!("{i:03}")).collect();
            w.extend(std::iter::repeat_n("ab cd".to_string(), k));
            w.join(" ")
        };
        let only_top2 = "{ top_n_grams: [[2, 0.2]], dup_n_grams: [] }";
        assert_eq!(one(only_top2, &doc(19, 4)), dropped("top-2-gram")); // 20/99
        assert_eq!(one(only_top2, &doc(20, 4)), Verdict::Keep); // 20/103
        // A 3-gram threshold is separate: "ab cd ab" 8 chars × 3 = 24 of 103.
        assert_eq!(
            one("{ top_n_grams: [[3, 0.18]], dup_n_grams: [] }", &doc(20, 4)),
            dropped("top-3-gram")
        );
        assert_eq!(
            one("{ top_n_grams: [[3, 0.25]], dup_n_grams: [] }", &doc(20, 4)),
            Verdict::Keep
        );
    }

    #[test]
    fn duplicated_n_gram_share() {
        let five = "alpha beta gamma delta omega";
        let only5 = "{ top_n_grams: [], dup_n_grams: [[5, 0.15]] }";
        // A repeated 5-gram: 24 chars (without spaces) repeated once.
        let t = format!("{five} {} {five}", filler(0, 10));
        let total = t.chars().count();
        assert!(24.0 / total as f64 > 0.15, "{total}");
        assert_eq!(one(only5, &t), dropped("duplicated-5-grams"));
        let t = format!("{five} {} {five}", filler(0, 30));
        assert!(24.0 / (t.chars().count() as f64) <= 0.15);
        assert_eq!(one(only5, &t), Verdict::Keep);
        // The defaults keep ordinary prose without repetition.
        assert_eq!(one("{}", &filler(7, 200)), Verdict::Keep);
    }
}
