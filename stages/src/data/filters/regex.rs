//! `regex`: drop documents that match a pattern, or redact (replace) every match.
//!
//! ```yaml
//! - builtin: regex
//!   with: { pattern: '[\w.]+@[\w.]+', mode: redact, replacement: "<email>" }
//! ```
//!
//! Patterns use the `regex` crate's syntax (Perl-like, no look-around); `(?i)` makes one
//! case-insensitive. The replacement is literal text (`$1` is not expanded).

use std::fmt;

use ::regex::{NoExpand, Regex};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BuiltinParams, DocFilter, FilterError, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub pattern: Pattern,
    #[serde(default)]
    pub mode: Mode,
    /// What replaces each match in `redact` mode.
    #[serde(default)]
    pub replacement: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop a document with a match.
    #[default]
    Drop,
    /// Replace every match.
    Redact,
}

/// A compiled regular expression that (de)serialises as its source, so an invalid one is an
/// error at load time, pointing at `pattern`.
#[derive(Clone)]
pub struct Pattern(pub Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let src = String::deserialize(d)?;
        Regex::new(&src)
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("invalid regular expression: {e}")))
    }
}

impl BuiltinParams for Params {
    fn build(&self) -> Box<dyn DocFilter> {
        Box::new(RegexFilter { p: self.clone() })
    }
}

pub struct RegexFilter {
    p: Params,
}

impl DocFilter for RegexFilter {
    fn name(&self) -> &str {
        "regex"
    }
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        let re = &self.p.pattern.0;
        Ok(docs
            .iter()
            .map(|d| match self.p.mode {
                Mode::Drop if re.is_match(d) => Verdict::Drop("match".into()),
                Mode::Drop => Verdict::Keep,
                Mode::Redact => match re.replace_all(d, NoExpand(&self.p.replacement)) {
                    std::borrow::Cow::Borrowed(_) => Verdict::Keep,
                    std::borrow::Cow::Owned(s) => Verdict::Rewrite(s),
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::verdicts;
    use super::*;

    #[test]
    fn drops_on_match() {
        let v = verdicts(
            "- builtin: regex\n  with: { pattern: '(?i)click here' }",
            &["Please CLICK HERE now", "nothing to see"],
        );
        assert_eq!(v, vec![Verdict::Drop("match".into()), Verdict::Keep]);
    }

    #[test]
    fn redacts_literally() {
        let v = verdicts(
            "- builtin: regex\n  with: { pattern: '[a-z]+@([a-z]+)\\.com', mode: redact, replacement: '<$1>' }",
            &["mail bob@example.com or amy@test.com", "no address"],
        );
        assert_eq!(v, vec![Verdict::Rewrite("mail <$1> or <$1>".into()), Verdict::Keep]);
    }
}
