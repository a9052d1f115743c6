//! Times hone's training step (forward, backward, gradient collection, clip, AdamW) on
//! nanoGPT's CPU configuration with random tokens, phase by phase, for profiling.
//!
//! `train_step [BLOCK] [STEPS]` (threads: `RAYON_NUM_THREADS`; `HONE_PLAIN_OPS=1` for the
//! plain candle ops). Prints the median milliseconds of each phase after two warm-up steps.
//!
//! `train_step --from MODEL_DIR BATCH SEQ STEPS THREADS [sft]` times whole steps of a
//! HuggingFace folder's model (any family hone reads: `bench/llama_speed.sh` writes one with
//! PyTorch) on random tokens, and prints `{"ms_median", "ms_min", "peak_rss_mb"}`; with `sft`
//! the loss is SFT's, masked to the second half of each row (the assistant's tokens); with
//! `recompute`, gradient checkpointing (`Gpt::with_recompute`: blocks recomputed in the
//! backward pass, the LM head and loss a block of rows at a time).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hone_stages::model::ops::Dropout;
use hone_stages::model::optim::{AdamW, AdamWConfig, Grads};
use hone_stages::model::rng::{Rng, Stream};
use hone_stages::model::{Gpt, GptConfig, ParamStore};

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().is_some_and(|a| a == "--from") {
        return from_folder(&raw[1..]);
    }
    let args: Vec<usize> = raw.iter().map(|a| a.parse().expect("numbers")).collect();
    let block = args.first().copied().unwrap_or(64);
    let steps = args.get(1).copied().unwrap_or(12);
    // As the training stages do.
    hone_stages::model::kernels::tune_allocator();
    let cfg = GptConfig {
        vocab_size: 65,
        block_size: block,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        bias: false,
        dropout: 0.0,
        ..Default::default()
    };
    let ps = ParamStore::seeded(1337);
    let gpt = Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let vars = ps.vars();
    let mut opt = AdamW::new(&vars, AdamWConfig::new(0.9, 0.99, 0.1));
    let mut rng = Rng::new(1, Stream::Train);
    let b = 12;
    let mut times: Vec<[f64; 5]> = Vec::new();
    for _ in 0..steps {
        let ids: Vec<u32> = (0..b * (block + 1)).map(|_| rng.below(65) as u32).collect();
        let all = Tensor::from_vec(ids, (b, block + 1), &Device::Cpu).unwrap();
        let x = all.narrow(1, 0, block).unwrap().contiguous().unwrap();
        let y = all.narrow(1, 1, block).unwrap().contiguous().unwrap();
        let t0 = Instant::now();
        let loss = gpt.loss(&x, &y, &mut Dropout::off()).unwrap();
        let _ = loss.to_scalar::<f32>().unwrap();
        let t1 = Instant::now();
        let store = loss.backward().unwrap();
        let t2 = Instant::now();
        let mut g = Grads::collect(&store, &vars).unwrap();
        drop(store);
        let t3 = Instant::now();
        g.clip(1.0);
        opt.step(&g, 1e-3).unwrap();
        let t4 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        times.push([ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4), ms(t0, t4)]);
    }
    let names = ["forward", "backward", "collect", "clip+adamw", "total"];
    let timed = &times[2.min(times.len() - 1)..];
    for (i, n) in names.iter().enumerate() {
        let mut v: Vec<f64> = timed.iter().map(|t| t[i]).collect();
        v.sort_by(f64::total_cmp);
        println!("{n:>11}: {:8.2} ms (min {:.2})", v[v.len() / 2], v[0]);
    }
}

fn from_folder(args: &[String]) {
    let [dir, b, t, steps, threads, rest @ ..] = args else {
        eprintln!("usage: train_step --from MODEL_DIR BATCH SEQ STEPS THREADS [sft]");
        std::process::exit(2)
    };
    let num = |s: &String| s.parse::<usize>().expect("a number");
    let (b, t, steps, threads) = (num(b), num(t), num(steps), num(threads));
    let sft = rest.iter().any(|a| a == "sft");
    let recompute = rest.iter().any(|a| a == "recompute");
    hone_stages::model::kernels::tune_allocator();
    let loaded = hone_stages::model::export::load(std::path::Path::new(dir), DType::F32)
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let vocab = loaded.config.vocab_size;
    let vars = loaded.params.vars();
    let model = loaded.model.with_recompute(recompute);
    let mut opt = AdamW::new(&vars, AdamWConfig::new(0.9, 0.95, 0.1));
    let mut rng = Rng::new(1, Stream::Train);
    let mask: Vec<f32> = (0..b * t).map(|i| if i % t >= t / 2 { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, b * t, &Device::Cpu).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut times = Vec::new();
    pool.install(|| {
        for _ in 0..steps {
            let ids: Vec<u32> = (0..b * (t + 1)).map(|_| rng.below(vocab) as u32).collect();
            let all = Tensor::from_vec(ids, (b, t + 1), &Device::Cpu).unwrap();
            let x = all.narrow(1, 0, t).unwrap().contiguous().unwrap();
            let y = all.narrow(1, 1, t).unwrap().contiguous().unwrap();
            let t0 = Instant::now();
            let weights = sft.then_some(&mask);
            let loss = model.masked_loss(&x, &y, weights, &mut Dropout::off()).unwrap();
            let store = loss.backward().unwrap();
            // The graph (and the activations it keeps) goes before the optimizer's step.
            drop(loss);
            let mut g = Grads::take(store, &vars).unwrap();
            g.clip(1.0);
            opt.step(&g, 1e-4).unwrap();
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    });
    let timed = &mut times[2.min(steps.saturating_sub(1))..];
    timed.sort_by(f64::total_cmp);
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    println!(
        "{}",
        serde_json::json!({
            "ms_median": timed[timed.len() / 2],
            "ms_min": timed[0],
            "peak_rss_mb": u.ru_maxrss as f64 / 1024.0,
            "params": loaded.config.n_params(),
            "recompute": recompute,
        })
    );
}
