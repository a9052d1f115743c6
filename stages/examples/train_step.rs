//! Times hone's training step (forward, backward, gradient collection, clip, AdamW) on
//! nanoGPT's CPU configuration with random tokens, phase by phase, for profiling.
//!
//! `train_step [BLOCK] [STEPS]` (threads: `RAYON_NUM_THREADS`; `HONE_PLAIN_OPS=1` for the
//! plain candle ops). Prints the median milliseconds of each phase after two warm-up steps.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hone_stages::model::ops::Dropout;
use hone_stages::model::optim::{AdamW, AdamWConfig, Grads};
use hone_stages::model::rng::{Rng, Stream};
use hone_stages::model::{Gpt, GptConfig, ParamStore};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
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
