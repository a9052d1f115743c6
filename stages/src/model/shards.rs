//! [`TokenData`]: a tokenizer artifact as training reads it: `meta.json`, `tokenizer.json`
//! and the memory-mapped token shards `train.bin` / `val.bin` (flat little-endian ids, u16
//! when `meta.json` says `"dtype": "u16"`, else u32).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::{ModelError, Result};

pub const META: &str = "meta.json";
pub const TRAIN: &str = "train.bin";
pub const VAL: &str = "val.bin";

/// The kind of a tokenizer (the `tokenizer` stage's `kind` param).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Byte-level BPE.
    #[default]
    Bpe,
    /// One token per character, with byte fallback.
    Char,
}

/// Width of the ids in `train.bin` / `val.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U16,
    U32,
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
        })
    }
}

impl Dtype {
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        if vocab_size <= 1 << 16 { Dtype::U16 } else { Dtype::U32 }
    }
    pub fn bytes(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }
}

/// `meta.json` of a tokenizer artifact: the `tokenizer` stage writes it, training reads it.
/// Unknown fields are allowed when reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub kind: TokenizerKind,
    pub vocab_size: usize,
    pub dtype: Dtype,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// The `<|endoftext|>` id that ends every document.
    pub eot_id: u32,
    /// Special token → id.
    pub special_tokens: BTreeMap<String, u32>,
}

/// Reads a whole shard (`train.bin` / `val.bin`) into ids. Pretraining memory-maps instead;
/// this is for tools and tests.
pub fn read_shard(path: &Path, dtype: Dtype) -> std::io::Result<Vec<u32>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() % dtype.bytes() != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes is not a whole number of {dtype:?} ids", bytes.len()),
        ));
    }
    Ok(match dtype {
        Dtype::U16 => {
            bytes.chunks_exact(2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))).collect()
        }
        Dtype::U32 => {
            bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
    })
}

/// One shard, memory-mapped.
pub struct TokenShard {
    map: Option<Mmap>,
    wide: bool,
    len: usize,
    pub path: PathBuf,
}

impl TokenShard {
    /// Maps `path`, checks its size against `expected` tokens and every id against `vocab`.
    pub fn open(path: &Path, wide: bool, expected: u64, vocab: usize) -> Result<TokenShard> {
        let file = std::fs::File::open(path).map_err(ModelError::io(path))?;
        let bytes = file.metadata().map_err(ModelError::io(path))?.len();
        let width = if wide { 4 } else { 2 };
        if bytes % width != 0 {
            return Err(ModelError::format(
                path,
                format!("{bytes} bytes is not a whole number of {width}-byte token ids"),
            ));
        }
        if bytes / width != expected {
            return Err(ModelError::format(
                path,
                format!("holds {} tokens but meta.json says {expected}", bytes / width),
            ));
        }
        // SAFETY: the store makes artifacts read-only; nothing writes the file while mapped.
        let map = if bytes == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&file) }.map_err(ModelError::io(path))?)
        };
        let shard =
            TokenShard { map, wide, len: (bytes / width) as usize, path: path.to_path_buf() };
        if let Some(i) = (0..shard.len).find(|&i| shard.get(i) as usize >= vocab) {
            return Err(ModelError::format(
                path,
                format!("token {i} has id {} but vocab_size (meta.json) is {vocab}", shard.get(i)),
            ));
        }
        Ok(shard)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> u32 {
        let b = self.map.as_deref().expect("index within a non-empty shard");
        if self.wide {
            u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())
        } else {
            u32::from(u16::from_le_bytes(b[2 * i..2 * i + 2].try_into().unwrap()))
        }
    }

    /// Appends tokens `start..start + n` to `out`.
    pub fn extend(&self, start: usize, n: usize, out: &mut Vec<u32>) {
        out.extend((start..start + n).map(|i| self.get(i)));
    }
}

/// A tokenizer artifact, opened.
pub struct TokenData {
    pub dir: PathBuf,
    pub meta: ShardMeta,
    pub train: TokenShard,
    pub val: TokenShard,
}

impl TokenData {
    pub fn open(dir: &Path) -> Result<TokenData> {
        let meta_path = dir.join(META);
        let text = std::fs::read_to_string(&meta_path).map_err(ModelError::io(&meta_path))?;
        let meta: ShardMeta = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(&meta_path, e.to_string()))?;
        let wide = meta.dtype == Dtype::U32;
        if meta.vocab_size == 0 || (!wide && meta.vocab_size > 1 << 16) {
            return Err(ModelError::format(
                &meta_path,
                format!("vocab_size {} does not fit dtype {}", meta.vocab_size, meta.dtype),
            ));
        }
        if meta.eot_id as usize >= meta.vocab_size {
            return Err(ModelError::format(
                &meta_path,
                format!("eot_id {} is not below vocab_size {}", meta.eot_id, meta.vocab_size),
            ));
        }
        let train = TokenShard::open(&dir.join(TRAIN), wide, meta.train_tokens, meta.vocab_size)?;
        let val = TokenShard::open(&dir.join(VAL), wide, meta.val_tokens, meta.vocab_size)?;
        Ok(TokenData { dir: dir.to_path_buf(), meta, train, val })
    }

    pub fn tokenizer_json(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

/// Writes a tokenizer artifact (tests and the benchmark's data preparation).
pub fn write_artifact(
    dir: &Path,
    kind: TokenizerKind,
    vocab_size: usize,
    eot_id: u32,
    tokenizer_json: &str,
    train: &[u32],
    val: &[u32],
) -> std::io::Result<()> {
    let dtype = Dtype::for_vocab(vocab_size);
    let encode = |ids: &[u32]| -> Vec<u8> {
        match dtype {
            Dtype::U32 => ids.iter().flat_map(|t| t.to_le_bytes()).collect(),
            Dtype::U16 => ids.iter().flat_map(|&t| (t as u16).to_le_bytes()).collect(),
        }
    };
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(TRAIN), encode(train))?;
    std::fs::write(dir.join(VAL), encode(val))?;
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json)?;
    let meta = ShardMeta {
        kind,
        vocab_size,
        dtype,
        train_tokens: train.len() as u64,
        val_tokens: val.len() as u64,
        eot_id,
        special_tokens: BTreeMap::from([("<|endoftext|>".to_string(), eot_id)]),
    };
    std::fs::write(dir.join(META), serde_json::to_string_pretty(&meta).expect("meta serialises"))
}

/// A character-level tokenizer for `text`: every distinct character (sorted) is a token,
/// then `<|endoftext|>`. Returns the `tokenizer.json` (HuggingFace format: a BPE model with
/// no merges, joined back by a `Fuse` decoder), the vocab size, the end-of-text id and the
/// encoder.
pub fn char_tokenizer(text: &str) -> (String, usize, u32, impl Fn(&str) -> Vec<u32>) {
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let eot = chars.len() as u32;
    let vocab: serde_json::Map<String, serde_json::Value> = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i.into()))
        .chain(std::iter::once(("<|endoftext|>".to_string(), eot.into())))
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": eot, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    let index: std::collections::HashMap<char, u32> =
        chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
    let encode = move |s: &str| s.chars().map(|c| index[&c]).collect();
    (serde_json::to_string_pretty(&json).unwrap(), chars.len() + 1, eot, encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_and_bad_artifacts_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let (json, vocab, eot, enc) = char_tokenizer("hello world");
        let mut train = enc("hello");
        train.push(eot);
        write_artifact(dir.path(), TokenizerKind::Char, vocab, eot, &json, &train, &enc("world"))
            .unwrap();
        let d = TokenData::open(dir.path()).unwrap();
        assert_eq!(d.train.len(), 6);
        let mut got = Vec::new();
        d.train.extend(1, 5, &mut got);
        assert_eq!(got, train[1..].to_vec());
        // The tokenizer.json is a real HuggingFace tokenizer that decodes back to text.
        let tok = tokenizers::Tokenizer::from_file(d.tokenizer_json()).unwrap();
        assert_eq!(tok.decode(&enc("hello world"), true).unwrap(), "hello world");
        assert_eq!(tok.encode("low", false).unwrap().get_ids(), enc("low").as_slice());

        // An id past the vocabulary names the file and the position.
        write_artifact(
            dir.path(),
            TokenizerKind::Char,
            vocab,
            eot,
            &json,
            &[1, 2, 99],
            &enc("world"),
        )
        .unwrap();
        let err = TokenData::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("train.bin") && err.contains("token 2 has id 99"), "{err}");
        // A size that disagrees with meta.json.
        std::fs::write(dir.path().join(VAL), [0u8; 3]).unwrap();
        write_artifact(dir.path(), TokenizerKind::Char, vocab, eot, &json, &[1], &[1]).unwrap();
        std::fs::write(dir.path().join(VAL), [0u8; 6]).unwrap();
        let err = TokenData::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("val.bin") && err.contains("holds 3 tokens but meta.json says 1"),
            "{err}"
        );
    }
}
