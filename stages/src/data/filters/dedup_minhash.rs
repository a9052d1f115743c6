//! `dedup-minhash`: drop near-duplicates with MinHash locality-sensitive hashing, with
//! datatrove's defaults: word 5-gram shingles of the normalised text, 14 bands of 8 hashes.
//! Two documents whose shingle sets have Jaccard similarity s share a band with probability
//! 1 − (1 − s⁸)¹⁴: about 0.5 at s = 0.77, above 0.99 at s = 0.9.
//!
//! datatrove deduplicates in several passes (signatures, buckets, clusters); hone does it in
//! one streaming pass: a document is dropped when any of its band signatures was seen on an
//! earlier kept document, and otherwise its band signatures are remembered. So the first
//! document of a cluster is kept, like datatrove's default. Memory: one 64-bit hash per band
//! per kept document (14 × ~10 bytes with set overhead), never the documents.
//!
//! A document shorter than a shingle is one shingle of all its words, so short documents are
//! near-duplicates only of the same words.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::text::{HashSet, hash64, mix64, normalise};
use super::{BuiltinParams, DocFilter, FilterError, ParamIssue, Verdict};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Words per shingle.
    #[serde(default = "defaults::n_grams")]
    pub n_grams: usize,
    /// Bands (LSH buckets).
    #[serde(default = "defaults::num_buckets")]
    pub num_buckets: usize,
    /// Hashes per band.
    #[serde(default = "defaults::hashes_per_bucket")]
    pub hashes_per_bucket: usize,
    /// Seeds the hash permutations.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
}

impl BuiltinParams for Params {
    fn problems(&self) -> Vec<ParamIssue> {
        let mut p = Vec::new();
        for (field, v) in [
            ("n_grams", self.n_grams),
            ("num_buckets", self.num_buckets),
            ("hashes_per_bucket", self.hashes_per_bucket),
        ] {
            if v == 0 {
                p.push((field, format!("`{field}` must be at least 1")));
            }
        }
        if self.num_buckets * self.hashes_per_bucket > 4096 {
            p.push((
                "num_buckets",
                "`num_buckets` × `hashes_per_bucket` must be at most 4096".to_string(),
            ));
        }
        p
    }

    fn build(&self) -> Box<dyn DocFilter> {
        let k = self.num_buckets * self.hashes_per_bucket;
        let mut state = self.seed;
        let mut next = || {
            state = state.wrapping_add(1);
            mix64(state)
        };
        let (a, b): (Vec<u64>, Vec<u64>) = (0..k).map(|_| (next() | 1, next())).unzip();
        Box::new(MinHash {
            p: self.clone(),
            a,
            b,
            bands: vec![HashSet::default(); self.num_buckets],
        })
    }
}

pub struct MinHash {
    p: Params,
    /// The hash functions h_k(x) = (a_k·x + b_k mod 2⁶⁴) >> 32 (multiply-add-shift, a
    /// 2-universal family over 32-bit x): one multiply each, where datatrove's arithmetic
    /// modulo a prime needs a 128-bit product and a reduction; this loop is the filter's cost.
    a: Vec<u64>,
    b: Vec<u64>,
    bands: Vec<HashSet<u64>>,
}

impl MinHash {
    /// One hash per band, or `None` for a document without words.
    /// `sig` is scratch space for the signature, reused across documents.
    fn band_keys(&self, sig: &mut Vec<u32>, text: &str) -> Option<Vec<u64>> {
        let norm = normalise(text);
        if norm.is_empty() {
            return None;
        }
        // Byte ranges of the words; `normalise` leaves exactly one space between them.
        let mut spans = Vec::new();
        let mut start = 0;
        for (i, b) in norm.bytes().enumerate() {
            if b == b' ' {
                spans.push((start, i));
                start = i + 1;
            }
        }
        spans.push((start, norm.len()));
        let n = self.p.n_grams.min(spans.len());
        sig.clear();
        sig.resize(self.a.len(), u32::MAX);
        for w in spans.windows(n) {
            let x = hash64(&norm.as_bytes()[w[0].0..w[n - 1].1]) >> 32;
            for ((s, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                *s = (*s).min((a.wrapping_mul(x).wrapping_add(b) >> 32) as u32);
            }
        }
        Some(
            sig.chunks(self.p.hashes_per_bucket)
                .map(|band| {
                    band.iter().fold(0x6d69_6e68_6173_6821u64, |acc, &v| mix64(acc ^ v as u64))
                })
                .collect(),
        )
    }
}

impl DocFilter for MinHash {
    fn name(&self) -> &str {
        "dedup-minhash"
    }
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        // Signatures in parallel; decide in order, so the first of a cluster is kept.
        let keys: Vec<Option<Vec<u64>>> =
            docs.par_iter().map_init(Vec::new, |sig, d| self.band_keys(sig, d)).collect();
        Ok(keys
            .into_iter()
            .map(|keys| {
                let Some(keys) = keys else {
                    return Verdict::Keep;
                };
                if keys.iter().zip(&self.bands).any(|(k, band)| band.contains(k)) {
                    return Verdict::Drop("near-duplicate".into());
                }
                for (k, band) in keys.into_iter().zip(&mut self.bands) {
                    band.insert(k);
                }
                Verdict::Keep
            })
            .collect())
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    pub fn hashes_per_bucket() -> usize {
        8
    }

    pub fn n_grams() -> usize {
        5
    }

    pub fn num_buckets() -> usize {
        14
    }

    pub fn seed() -> u64 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::specs;
    use super::*;
    use std::path::Path;

    /// `n` distinct words drawn from a seeded sequence.
    fn words(seed: u64, n: usize) -> Vec<String> {
        (0..n as u64).map(|i| format!("w{}", mix64(seed * 1000 + i) % 100_000)).collect()
    }

    fn filter(yaml: &str) -> Box<dyn DocFilter> {
        specs(yaml).unwrap()[0].build(Path::new(".")).unwrap()
    }

    #[test]
    fn catches_near_duplicates_not_different_documents() {
        let mut f = filter("- builtin: dedup-minhash");
        let base = words(1, 200);
        let mut near = base.clone();
        near[100] = "changed".into(); // Jaccard ≈ 0.95
        let mut far = base.clone();
        for w in near.iter_mut().take(10) {
            w.push('!'); // punctuation is normalised away: still ≈ 0.95
        }
        for w in far.iter_mut().step_by(2) {
            w.push('x'); // every shingle changes
        }
        let other = words(2, 200);
        let docs: Vec<String> =
            [&base, &near, &far, &other, &base].iter().map(|w| w.join(" ")).collect();
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        let near_dup = || Verdict::Drop("near-duplicate".into());
        assert_eq!(
            f.filter(&refs).unwrap(),
            vec![Verdict::Keep, near_dup(), Verdict::Keep, Verdict::Keep, near_dup()]
        );
    }

    #[test]
    fn short_documents_compare_whole() {
        let mut f = filter("- builtin: dedup-minhash");
        let v = f.filter(&["a cat", "a dog", "A cat!", "", "  "]).unwrap();
        assert_eq!(
            v,
            vec![
                Verdict::Keep,
                Verdict::Keep,
                Verdict::Drop("near-duplicate".into()),
                Verdict::Keep,
                Verdict::Keep
            ]
        );
    }

    #[test]
    fn fewer_bands_and_seeds_are_params() {
        let mut f = filter(
            "- builtin: dedup-minhash\n  with: { num_buckets: 2, hashes_per_bucket: 2, n_grams: 2, seed: 9 }",
        );
        assert_eq!(
            f.filter(&["a b c d", "a b c d"]).unwrap()[1],
            Verdict::Drop("near-duplicate".into())
        );
        let s = specs("- builtin: dedup-minhash\n  with: { num_buckets: 0 }").unwrap();
        assert_eq!(s[0].problems()[0].0, vec!["with", "num_buckets"]);
    }
}
