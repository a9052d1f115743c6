//! `dedup-exact`: drop a document whose text, normalised (lowercase, punctuation removed,
//! whitespace collapsed; see [`super::text::normalise`]), was already seen earlier in the
//! corpus. The first occurrence wins, so the result depends only on the corpus order.
//!
//! Memory: a 128-bit hash per distinct document (about 32 bytes with the set's overhead),
//! never the documents themselves.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::text::{HashSet, normalise};
use super::{BuiltinParams, DocFilter, FilterError, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Compare normalised text (true) or the exact bytes (false).
    #[serde(default = "defaults::yes")]
    pub normalise: bool,
}

impl BuiltinParams for Params {
    fn build(&self) -> Box<dyn DocFilter> {
        Box::new(DedupExact { normalise: self.normalise, seen: HashSet::default() })
    }
}

pub struct DedupExact {
    normalise: bool,
    seen: HashSet<u128>,
}

impl DocFilter for DedupExact {
    fn name(&self) -> &str {
        "dedup-exact"
    }
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        // Hash in parallel; decide in order, so the first copy is the one kept.
        let hashes: Vec<u128> = docs
            .par_iter()
            .map(|d| {
                let h = if self.normalise {
                    blake3::hash(normalise(d).as_bytes())
                } else {
                    blake3::hash(d.as_bytes())
                };
                u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
            })
            .collect();
        Ok(hashes
            .into_iter()
            .map(|h| {
                if self.seen.insert(h) { Verdict::Keep } else { Verdict::Drop("duplicate".into()) }
            })
            .collect())
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    pub fn yes() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::specs;
    use super::*;
    use std::path::Path;

    #[test]
    fn drops_later_copies_across_batches() {
        let mut f = specs("- builtin: dedup-exact").unwrap()[0].build(Path::new(".")).unwrap();
        let dup = || Verdict::Drop("duplicate".into());
        assert_eq!(
            f.filter(&["The cat sat.", "A dog.", "the  CAT sat"]).unwrap(),
            vec![Verdict::Keep, Verdict::Keep, dup()]
        );
        assert_eq!(
            f.filter(&["a dog", "The cat sat on a mat."]).unwrap(),
            vec![dup(), Verdict::Keep]
        );
        // Numbers are content: different sums are different documents.
        assert_eq!(
            f.filter(&["7 plus 5 is 12.", "7 plus 6 is 13."]).unwrap(),
            vec![Verdict::Keep, Verdict::Keep]
        );
    }

    #[test]
    fn exact_bytes_when_asked() {
        let mut f = specs("- builtin: dedup-exact\n  with: { normalise: false }").unwrap()[0]
            .build(Path::new("."))
            .unwrap();
        assert_eq!(
            f.filter(&["A b.", "a b", "A b."]).unwrap(),
            vec![Verdict::Keep, Verdict::Keep, Verdict::Drop("duplicate".into())]
        );
    }
}
