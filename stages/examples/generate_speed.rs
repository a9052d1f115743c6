//! Batched generation speed (`bench/generate_speed.sh` runs it beside HuggingFace's
//! `generate` on the same model).
//!
//! - `generate_speed --random DIR` writes a random model with the default pipeline's sizes
//!   (4 layers, 4 heads, 128 wide, 64 positions, 512 tokens) in HuggingFace's layout.
//! - `generate_speed MODEL_DIR BATCH PROMPT_LEN NEW_TOKENS THREADS REPEATS` samples BATCH
//!   sequences of NEW_TOKENS tokens (no stop token, temperature 1, no top-k/top-p) after
//!   seeded random prompts of PROMPT_LEN tokens, REPEATS times after one warm-up, and prints
//!   `{"tokens_per_second": median, "tokens_per_cpu_second": median, "runs": [...]}`: new
//!   tokens per second of wall time and per second of the process's CPU time (user + system,
//!   all threads), prompts included. On a shared, loaded machine the wall time mostly
//!   measures the scheduler; the CPU time measures the work.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use hone_stages::model::decoder::Decoder;
use hone_stages::model::export::{self, GenerationConfig};
use hone_stages::model::rng::{Rng, Stream};
use hone_stages::model::sample::{Request, SampleOptions, row_seed, sample_batch};
use hone_stages::model::{Gpt, GptConfig, ParamStore};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, dir] if flag == "--random" => random(Path::new(dir)),
        [dir, b, p, n, t, r] => {
            let num = |s: &str| s.parse::<usize>().unwrap_or_else(|_| usage());
            speed(Path::new(dir), num(b), num(p), num(n), num(t), num(r))
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: generate_speed --random DIR | generate_speed MODEL_DIR BATCH PROMPT_LEN NEW_TOKENS THREADS REPEATS"
    );
    std::process::exit(2)
}

fn random(dir: &Path) {
    let cfg = GptConfig {
        vocab_size: 512,
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        bias: true,
        dropout: 0.0,
        ..Default::default()
    };
    let ps = ParamStore::seeded(1234);
    Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    export::save(dir, &cfg, &ps.snapshot(), &GenerationConfig::defaults(Some(511))).unwrap();
    eprintln!("wrote a random model to {}", dir.display());
}

fn speed(dir: &Path, batch: usize, prompt_len: usize, new: usize, threads: usize, repeats: usize) {
    let loaded = export::load(dir, DType::F32).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let dec = Decoder::from_store(&loaded.config, &loaded.params).unwrap();
    let vocab = loaded.config.vocab_size;
    let mut rng = Rng::new(7, Stream::Init);
    let requests: Vec<Request> = (0..batch)
        .map(|i| Request {
            prompt: (0..prompt_len).map(|_| rng.below(vocab) as u32).collect(),
            seed: row_seed(1, i as u64),
        })
        .collect();
    let o = SampleOptions {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens: new,
        seed: 0,
        stop_at: None,
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let (mut runs, mut cpu_runs) = (Vec::new(), Vec::new());
    for i in 0..=repeats {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let out = pool
            .install(|| sample_batch(&dec, &requests, &o, &[], batch, &mut ()).unwrap().unwrap());
        let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let tokens: usize = out.iter().map(|s| s.tokens.len()).sum();
        assert_eq!(tokens, batch * new);
        if i > 0 {
            runs.push(tokens as f64 / secs);
            cpu_runs.push(tokens as f64 / cpu);
        }
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    println!(
        "{}",
        serde_json::json!({ "tokens_per_second": median(&runs), "tokens_per_cpu_second": median(&cpu_runs), "runs": runs })
    );
}

/// User + system CPU time of this process, all threads.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}
