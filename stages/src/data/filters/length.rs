//! `length`: keep documents whose length in words (whitespace-separated) and characters
//! (Unicode scalar values) lies within the given bounds; unset bounds are not checked.

use serde::{Deserialize, Serialize};

use super::{BuiltinParams, DocFilter, FilterError, ParamIssue, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    pub min_words: Option<usize>,
    #[serde(default)]
    pub max_words: Option<usize>,
    #[serde(default)]
    pub min_chars: Option<usize>,
    #[serde(default)]
    pub max_chars: Option<usize>,
}

impl BuiltinParams for Params {
    fn problems(&self) -> Vec<ParamIssue> {
        let mut p = Vec::new();
        if [self.min_words, self.max_words, self.min_chars, self.max_chars]
            .iter()
            .all(Option::is_none)
        {
            p.push((
                "min_words",
                "`length` needs at least one of `min_words`, `max_words`, `min_chars`, `max_chars`"
                    .to_string(),
            ));
        }
        if let (Some(lo), Some(hi)) = (self.min_words, self.max_words)
            && lo > hi
        {
            p.push(("min_words", format!("`min_words` ({lo}) is above `max_words` ({hi})")));
        }
        if let (Some(lo), Some(hi)) = (self.min_chars, self.max_chars)
            && lo > hi
        {
            p.push(("min_chars", format!("`min_chars` ({lo}) is above `max_chars` ({hi})")));
        }
        p
    }
    fn build(&self) -> Box<dyn DocFilter> {
        Box::new(Length { p: self.clone() })
    }
}

pub struct Length {
    p: Params,
}

impl Length {
    fn judge(&self, text: &str) -> Verdict {
        let p = &self.p;
        if p.min_words.is_some() || p.max_words.is_some() {
            let n = text.split_whitespace().count();
            if p.min_words.is_some_and(|min| n < min) {
                return Verdict::Drop("too-few-words".into());
            }
            if p.max_words.is_some_and(|max| n > max) {
                return Verdict::Drop("too-many-words".into());
            }
        }
        if p.min_chars.is_some() || p.max_chars.is_some() {
            let n = text.chars().count();
            if p.min_chars.is_some_and(|min| n < min) {
                return Verdict::Drop("too-few-chars".into());
            }
            if p.max_chars.is_some_and(|max| n > max) {
                return Verdict::Drop("too-many-chars".into());
            }
        }
        Verdict::Keep
    }
}

impl DocFilter for Length {
    fn name(&self) -> &str {
        "length"
    }
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        Ok(docs.iter().map(|d| self.judge(d)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{specs, verdicts};
    use super::*;

    fn drop(r: &str) -> Verdict {
        Verdict::Drop(r.into())
    }

    #[test]
    fn word_bounds() {
        let v = verdicts(
            "- builtin: length\n  with: { min_words: 3, max_words: 4 }",
            &["a b", "a b c", "a  b\tc\nd", "a b c d e"],
        );
        assert_eq!(
            v,
            vec![drop("too-few-words"), Verdict::Keep, Verdict::Keep, drop("too-many-words")]
        );
    }

    #[test]
    fn char_bounds_count_characters_not_bytes() {
        let v = verdicts(
            "- builtin: length\n  with: { min_chars: 3, max_chars: 4 }",
            &["ab", "éé", "ééé", "éééé", "ééééé"],
        );
        assert_eq!(
            v,
            vec![
                drop("too-few-chars"),
                drop("too-few-chars"),
                Verdict::Keep,
                Verdict::Keep,
                drop("too-many-chars")
            ]
        );
    }

    #[test]
    fn needs_a_bound() {
        let s = specs("- builtin: length").unwrap();
        assert!(s[0].problems()[0].1.contains("at least one"));
        let s = specs("- builtin: length\n  with: { min_chars: 5, max_chars: 4 }").unwrap();
        assert_eq!(s[0].problems()[0].0, vec!["with", "min_chars"]);
    }
}
