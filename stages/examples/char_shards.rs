//! Builds a character-level tokenizer artifact from a text file, split 90/10 into train and
//! validation like nanoGPT's `data/shakespeare_char/prepare.py` (the benchmark's data).
//!
//! `cargo run --release -p hone-stages --example char_shards -- INPUT.txt OUT_DIR`
//!
//! The whole file is one document, so `<|endoftext|>` (the last id) ends `val.bin` only.

use std::path::PathBuf;

use hone_stages::model::shards::{TokenizerKind, char_tokenizer, write_artifact};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, out] = args.as_slice() else {
        eprintln!("usage: char_shards INPUT.txt OUT_DIR");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(input).unwrap_or_else(|e| {
        eprintln!("cannot read {input}: {e}");
        std::process::exit(1);
    });
    let (json, vocab, eot, encode) = char_tokenizer(&text);
    let ids = encode(&text);
    let n = ids.len() * 9 / 10;
    let train = &ids[..n];
    let mut val = ids[n..].to_vec();
    val.push(eot);
    let out = PathBuf::from(out);
    write_artifact(&out, TokenizerKind::Char, vocab, eot, &json, train, &val).unwrap_or_else(|e| {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    });
    eprintln!(
        "{}: vocab {vocab}, {} train and {} val tokens",
        out.display(),
        train.len(),
        val.len()
    );
}
