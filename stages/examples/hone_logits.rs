//! hone's logits for some token ids, as JSON, for comparing with other implementations
//! (`tests/python/check_hf.py` compares them with HuggingFace transformers).
//!
//! - `hone_logits MODEL_DIR 1,2,3` prints `{"ids": [...], "logits": [[...], ...]}`.
//! - `hone_logits --random DIR` writes a small random model with biases to DIR, its weights
//!   scaled up so that the logits are far from uniform and a misplaced tensor shows.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hone_stages::model::export::{self, GenerationConfig};
use hone_stages::model::ops::Dropout;
use hone_stages::model::{Gpt, GptConfig, ParamStore};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, dir] if flag == "--random" => random(Path::new(dir)),
        [dir, ids] => logits(Path::new(dir), ids),
        _ => {
            eprintln!("usage: hone_logits MODEL_DIR 1,2,3 | hone_logits --random DIR");
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

fn logits(dir: &Path, ids: &str) {
    let ids: Vec<u32> =
        ids.split(',').map(|s| s.trim().parse().expect("ids are integers")).collect();
    let loaded = export::load(dir, DType::F32).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
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
