//! Text helpers shared by the built-in filters: word splitting, punctuation, normalisation
//! for deduplication, and a small deterministic hash.
//!
//! datatrove splits words with a language tokenizer (NLTK/spaCy); hone has none, so
//! [`words`] approximates it: whitespace-separated chunks with leading and trailing
//! punctuation peeled off as tokens of their own ("end." → "end", "."), which is what a word
//! tokenizer does to English text in all but rare cases (abbreviations, URLs).

/// Punctuation and symbols a word tokenizer would split off: ASCII punctuation plus the
/// common Unicode quotes, dashes, ellipsis, bullets and CJK punctuation.
#[inline]
pub fn is_punct(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    UNICODE_PUNCT.contains(c)
}

const UNICODE_PUNCT: &str = "…–—‐‑‒―‘’‚‛“”„‟«»‹›¡¿·•§¶†‡°′″、。，！？：；（）【】《》「」『』";

/// Length in characters (Unicode scalar values), like Python's `len`.
#[inline]
pub fn char_len(s: &str) -> usize {
    if s.is_ascii() { s.len() } else { s.chars().count() }
}

/// Words and punctuation tokens, in order.
pub fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        let start = chunk.find(|c: char| !is_punct(c));
        let Some(start) = start else {
            out.push(chunk);
            continue;
        };
        // Last non-punctuation char: `rfind` gives its start, so step over it.
        let last = chunk.rfind(|c: char| !is_punct(c)).unwrap_or(start);
        let end = last + chunk[last..].chars().next().map_or(0, char::len_utf8);
        if start > 0 {
            out.push(&chunk[..start]);
        }
        out.push(&chunk[start..end]);
        if end < chunk.len() {
            out.push(&chunk[end..]);
        }
    }
    out
}

/// True when the token is made only of punctuation (datatrove's "symbol words").
pub fn is_symbol(word: &str) -> bool {
    word.chars().all(is_punct)
}

/// Text as deduplication compares it: lowercase, punctuation removed, runs of whitespace
/// collapsed to one space, trimmed. Digits are kept (unlike datatrove's number folding) so
/// that "7 plus 5 is 12" and "7 plus 6 is 13" stay different documents.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else if !is_punct(c) {
            if space {
                out.push(' ');
                space = false;
            }
            // Most text is ASCII: skip the general lowercase mapping for it.
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        }
    }
    out
}

/// The splitmix64 finaliser: spreads the bits of `x` (used to finish hashes and as a PRNG).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A 64-bit hash of bytes that is the same on every platform and toolchain (std's hashers
/// promise neither), so filter decisions, and with them artifact digests, are reproducible.
/// FNV-1a over 8-byte words, finished with [`mix64`]; not cryptographic, only well spread.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .wrapping_mul(0x0000_0100_0000_01b3);
        h = h.rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// A hasher for keys that are already well-spread hashes (from [`hash64`], [`mix64`] or
/// blake3): it passes them through, where std's SipHash would hash them again, which made
/// the repetition and dedup filters several times slower.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix64(self.0 ^ hash64(bytes));
    }
    fn write_u64(&mut self, x: u64) {
        self.0 ^= x;
    }
    fn write_u128(&mut self, x: u128) {
        self.0 ^= x as u64 ^ (x >> 64) as u64;
    }
}

/// A set of hashes (see [`PreHashed`]).
pub type HashSet<T> = std::collections::HashSet<T, std::hash::BuildHasherDefault<PreHashed>>;
/// A map keyed by hashes (see [`PreHashed`]).
pub type HashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<PreHashed>>;

/// `a / b`, or 0 when there is nothing to divide by (an empty document has no repetition,
/// bullets or symbols).
pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_peel_punctuation() {
        assert_eq!(
            words("Hello, world... (it's) #1 — ok"),
            vec!["Hello", ",", "world", "...", "(", "it's", ")", "#", "1", "—", "ok"]
        );
        assert_eq!(words("  é.  ¿qué?  "), vec!["é", ".", "¿", "qué", "?"]);
        assert!(words("").is_empty());
    }

    #[test]
    fn normalise_folds_case_punctuation_and_space() {
        assert_eq!(normalise("  The CAT,\n\tsat!  On 7 mats. "), "the cat sat on 7 mats");
        assert_eq!(normalise("..."), "");
    }

    #[test]
    fn hash64_is_fixed() {
        // A changed hash would silently change which documents dedup drops.
        assert_eq!(hash64(b"hello world"), hash64(b"hello world"));
        assert_ne!(hash64(b"hello world"), hash64(b"hello worle"));
        assert_ne!(hash64(b""), hash64(b"\0"));
        assert_eq!(hash64(b"abc"), 0x860a_de0a_23f3_5a4b, "{:#x}", hash64(b"abc"));
    }
}
