//! hone's logits for some token ids, as JSON, for comparing with other implementations
//! (`tests/python/check_hf.py` compares them with HuggingFace transformers).
//!
//! - `hone_logits MODEL_DIR 1,2,3` prints `{"ids": [...], "logits": [[...], ...]}`.
//! - `hone_logits --random DIR` writes a small random model with biases to DIR, its weights
//!   scaled up so that the logits are far from uniform and a misplaced tensor shows.
//! - `hone_logits --greedy N MODEL_DIR 1,2,3` prints `{"ids": [...], "tokens": [...]}`: N
//!   tokens chosen greedily after the prompt by hone's KV-cache decoder (no stop token).
//! - `hone_logits --roundtrip SRC DST` reads the HF folder SRC into hone's parameters and
//!   writes them back with hone's exporter into DST (tokenizer files copied).
//!
//! `tests/python/check_hf_models.py` runs all three against transformers.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hone_stages::model::decoder::{Decoder, Row};
use hone_stages::model::export::{self, GenerationConfig};
use hone_stages::model::ops::Dropout;
use hone_stages::model::{Gpt, GptConfig, ParamStore};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, dir] if flag == "--random" => random(Path::new(dir)),
        [flag, n, dir, ids] if flag == "--greedy" => {
            greedy(Path::new(dir), ids, n.parse().expect("N is a number"))
        }
        [flag, src, dst] if flag == "--roundtrip" => roundtrip(Path::new(src), Path::new(dst)),
        [dir, ids] => logits(Path::new(dir), ids),
        _ => {
            eprintln!(
                "usage: hone_logits MODEL_DIR 1,2,3 | hone_logits --greedy N MODEL_DIR 1,2,3 | hone_logits --roundtrip SRC DST | hone_logits --random DIR"
            );
            std::process::exit(2);
        }
    }
}

fn random(dir: &Path) {
    let cfg = GptConfig {
        vocab_size: 50,
        block_size: 32,
        n_layer: 2,
        n_head: 4,
        n_embd: 32,
        bias: true,
        dropout: 0.0,
        ..Default::default()
    };
    let ps = ParamStore::seeded(1234);
    Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
    for (i, (_, v)) in ps.vars().iter().enumerate() {
        // Random values everywhere, biases and gains included.
        let noise = Tensor::randn(0f32, 1.0, v.shape(), &Device::Cpu).unwrap();
        let scale = if v.rank() == 1 { 0.3 } else { 0.15 };
        let base = if v.rank() == 1 && i % 3 == 0 { 1.0 } else { 0.0 };
        v.set(&((noise * scale).unwrap() + base).unwrap()).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    export::save(dir, &cfg, &ps.snapshot(), &GenerationConfig::defaults(None)).unwrap();
    eprintln!("wrote a random model to {}", dir.display());
}

fn parse_ids(ids: &str) -> Vec<u32> {
    ids.split(',').map(|s| s.trim().parse().expect("ids are integers")).collect()
}

fn load(dir: &Path) -> export::Loaded {
    export::load(dir, DType::F32).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    })
}

fn greedy(dir: &Path, ids: &str, n: usize) {
    let ids = parse_ids(ids);
    let loaded = load(dir);
    let d = Decoder::from_store(&loaded.config, &loaded.params).expect("a decoder");
    let mut cache = d.new_cache();
    let mut tokens = Vec::new();
    let mut feed = ids.clone();
    for _ in 0..n {
        let logits = d.forward(&mut [Row { cache: &mut cache, tokens: &feed }]).expect("a step");
        let best = logits[0]
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32;
        tokens.push(best);
        feed = vec![best];
    }
    println!("{}", serde_json::json!({ "ids": ids, "tokens": tokens }));
}

fn roundtrip(src: &Path, dst: &Path) {
    let loaded = load(src);
    std::fs::create_dir_all(dst).unwrap();
    export::save_from(
        dst,
        &loaded.config,
        &loaded.params.snapshot(),
        &loaded.generation,
        Some(src),
    )
    .unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
    }
    eprintln!("wrote {}", dst.display());
}

fn logits(dir: &Path, ids: &str) {
    let ids = parse_ids(ids);
    let loaded = load(dir);
    let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
    let l = loaded
        .model
        .forward(&x, &mut Dropout::off())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    println!("{}", serde_json::json!({ "ids": ids, "logits": l }));
}
