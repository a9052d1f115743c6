//! `pretrain`: train a GPT from scratch on token shards, nanoGPT-style.
//!
//! ```yaml
//! base:
//!   uses: pretrain
//!   inputs: { tokenizer: tokenizer }        # meta.json, tokenizer.json, train.bin, val.bin
//!   with: { n_layer: 4, n_head: 4, n_embd: 128, block_size: 64, batch_size: 12, steps: 2000 }
//! ```
//!
//! Params keep nanoGPT's names (`n_layer`, `lr`, `min_lr`, `warmup_steps`, …) so its configs
//! translate directly. `arch: llama` trains the Llama family's layout instead of GPT-2's
//! (RMSNorm, rotary positions with `rope_theta`, a SwiGLU MLP `n_inner` wide, `n_kv_head`
//! key/value heads, `tie_embeddings: false` for a head of its own), exported as
//! `LlamaForCausalLM`. Each step samples `grad_accum` batches of `batch_size` random windows
//! of `block_size + 1` tokens from `train.bin`, takes the mean next-token loss, clips the
//! global gradient norm, and takes an AdamW step at the scheduled rate (linear warmup, then
//! cosine down to `min_lr` at the last step). Every `eval_every` steps (and at the end) it
//! estimates the loss on `eval_iters` fixed batches of `val.bin` and of `train.bin`.
//!
//! Outputs (port `model`, and `metrics` for the same directory): `model.safetensors`,
//! `config.json`, `generation_config.json` (HuggingFace GPT-2 layout), `tokenizer.json` (+
//! `tokenizer_config.json`), `metrics.jsonl` (one line per step and per evaluation) and
//! `loss.svg`.
//!
//! Reproducible: the seed fixes the initial weights, the batches and dropout; with the same
//! seed the weights are the same bytes at any `threads` (no sum is split across threads; a
//! changed `threads` reruns the stage, as any param does, and early cutoff keeps what follows). Every `checkpoint_every` steps, and
//! when stopped, the whole training state goes to the stage's checkpoint directory; the next
//! `hone run` resumes from it and ends with exactly the weights of an uninterrupted run.

use candle_core::{DType, Device, Tensor, Var};
use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::Serialize;

use crate::model::config::{Arch, Rope, is_default, is_true};
use crate::model::export::{self, GenerationConfig};
use crate::model::ops::Dropout;
use crate::model::optim::Grads;
use crate::model::rng::{Rng, Stream};
use crate::model::shards::{TokenData, TokenShard};
use crate::model::{Gpt, GptConfig, ParamStore};
use crate::ports;
use crate::training::{self, StepOut, Trainer, gradients_of, loss_svg, training_params, write};

pub struct Pretrain;

training_params! {
    /// The architecture, then the params every training kind has.
    pub struct Params {
        #[serde(default = "defaults::n_layer")]
        pub n_layer: usize,
        #[serde(default = "defaults::n_head")]
        pub n_head: usize,
        #[serde(default = "defaults::n_embd")]
        pub n_embd: usize,
        #[serde(default = "defaults::block_size")]
        pub block_size: usize,
        #[serde(default)]
        pub bias: bool,
        /// `gpt2` (LayerNorm, learned positions, GELU) or `llama` (RMSNorm, rotary
        /// positions, SwiGLU, grouped-query attention).
        #[serde(default, skip_serializing_if = "is_default")]
        pub arch: Arch,
        /// Key/value heads (`llama`; default: `n_head`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub n_kv_head: Option<usize>,
        /// The MLP's hidden width (default: GPT-2 4 x n_embd; Llama 8/3 x n_embd rounded up
        /// to a multiple of 32, as its parameter count then matches GPT-2's 4x MLP).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub n_inner: Option<usize>,
        /// Rotary base period (`llama`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rope_theta: Option<f64>,
        /// Share the token embedding with the LM head (`llama` may untie them).
        #[serde(default = "crate::model::config::yes", skip_serializing_if = "is_true")]
        pub tie_embeddings: bool,
        /// Batches per loss estimate.
        #[serde(default = "defaults::eval_iters")]
        pub eval_iters: usize,
        /// Micro-batches per optimizer step (their gradients are averaged).
        #[serde(default = "defaults::grad_accum")]
        pub grad_accum: usize,
    }
}

/// nanoGPT's CPU example (`config/train_shakespeare_char.py`, scaled down).
mod defaults {
    pub fn n_layer() -> usize {
        4
    }
    pub fn n_head() -> usize {
        4
    }
    pub fn n_embd() -> usize {
        128
    }
    pub fn block_size() -> usize {
        64
    }
    pub fn batch_size() -> usize {
        12
    }
    pub fn lr() -> f64 {
        1e-3
    }
    pub fn min_lr() -> f64 {
        1e-4
    }
    pub fn warmup_steps() -> u64 {
        100
    }
    pub fn weight_decay() -> f64 {
        0.1
    }
    pub fn steps() -> u64 {
        2000
    }
    pub fn eval_every() -> u64 {
        250
    }
    pub fn eval_iters() -> usize {
        20
    }
    pub fn grad_accum() -> usize {
        1
    }
    pub fn checkpoint_every() -> u64 {
        250
    }
}

impl Params {
    fn model_config(&self, vocab_size: usize) -> GptConfig {
        let llama = self.arch == Arch::Llama;
        GptConfig {
            vocab_size,
            block_size: self.block_size,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            bias: self.bias,
            dropout: self.dropout,
            arch: self.arch,
            n_kv_head: self.n_kv_head,
            n_inner: self
                .n_inner
                .or(llama.then(|| (8 * self.n_embd).div_ceil(3).div_ceil(32) * 32)),
            norm_eps: llama.then_some(1e-5),
            rope: Rope { theta: self.rope_theta.unwrap_or(10_000.0), scaling: None },
            tie_embeddings: self.tie_embeddings,
            ..Default::default()
        }
    }
}

impl Stage for Pretrain {
    type Params = Params;
    const KIND: &'static str = "pretrain";
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "train a GPT (GPT-2 or Llama layout) from scratch on a tokenizer's token shards";
    const INPUTS: Inputs = Inputs::Fixed(&[Port::required("tokenizer", ports::TOKENIZER)]);
    const OUTPUTS: &'static [Port] =
        &[Port::required("model", ports::MODEL), Port::required("metrics", ports::METRICS)];

    fn settings() -> Vec<(&'static str, String)> {
        crate::model::settings()
    }

    fn validate(p: &Params) -> Vec<ParamProblem> {
        // `dropout` is checked with the common params.
        let mut out: Vec<ParamProblem> = p
            .model_config(1)
            .problems()
            .into_iter()
            .filter(|(f, _)| *f != "dropout")
            .map(|(field, msg)| ParamProblem::at(&[field], msg))
            .collect();
        out.extend(p.common_problems());
        if p.grad_accum == 0 {
            out.push(
                ParamProblem::at(&["grad_accum"], "`grad_accum` must be at least 1")
                    .help("1 means no accumulation".to_string()),
            );
        }
        if p.eval_iters == 0 {
            out.push(
                ParamProblem::at(&["eval_iters"], "`eval_iters` must be at least 1")
                    .help("the loss estimate averages this many batches".to_string()),
            );
        }
        out
    }

    fn resources(p: &Params) -> hone_engine::resources::Resources {
        crate::training::resources(p.threads)
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        let data = TokenData::open(cx.required_input("tokenizer")?)?;
        training::on_threads(p.threads, || train(p, cx, &data))
    }
}

/// A line of metrics.jsonl after an evaluation.
#[derive(Serialize)]
struct EvalLine {
    step: u64,
    train_loss: f64,
    val_loss: f64,
}

/// Next-token loss on random windows of the shards.
struct NextToken<'a> {
    p: &'a Params,
    seed: u64,
    data: &'a TokenData,
    model: Gpt,
}

fn train(p: &Params, cx: &RunCx, data: &TokenData) -> Result<(), StageError> {
    let cfg = p.model_config(data.meta.vocab_size);
    for (name, shard) in [("train.bin", &data.train), ("val.bin", &data.val)] {
        if shard.len() <= p.block_size {
            return Err(StageError::msg(format!(
                "`{name}` of input `tokenizer` has {} tokens; block_size {} needs at least {}",
                shard.len(),
                p.block_size,
                p.block_size + 1
            )));
        }
    }
    let tokenizer = tokenizers::Tokenizer::from_file(data.tokenizer_json()).map_err(|e| {
        StageError::msg(format!("cannot read `{}`: {e}", data.tokenizer_json().display()))
    })?;
    let eot_token = tokenizer.id_to_token(data.meta.eot_id);

    let params = ParamStore::seeded(cx.seed);
    let model = Gpt::new(&cfg, params.var_builder(DType::F32, &Device::Cpu))
        .map_err(crate::model::ModelError::from)?
        .with_recompute(p.gradient_checkpointing);
    let common = p.common();
    let mut trainer = Trainer::new(
        cx,
        vec![common.group("model", params.vars())],
        training::fingerprint::<Pretrain>(p, cx, &cfg),
    )?;
    tracing::info!(
        params = cfg.n_params(),
        from_step = trainer.step,
        steps = p.steps,
        "pretraining"
    );
    cx.metric("params", cfg.n_params() as u64);

    let done = trainer.run(&common.settings(), &mut NextToken { p, seed: cx.seed, data, model })?;
    let (train_est, val) = done.eval;
    cx.metric("loss", done.loss);
    cx.metric("train_loss", train_est);
    cx.metric("val_loss", val);
    cx.metric("tokens", (p.batch_size * p.block_size * p.grad_accum) as u64 * p.steps);

    let out = cx.out_dir;
    let generation = GenerationConfig::defaults(Some(data.meta.eot_id));
    export::save(out, &cfg, &params.snapshot(), &generation)?;
    export::save_tokenizer(out, &data.tokenizer_json(), eot_token, cfg.block_size)?;
    write(out, "metrics.jsonl", trainer.history())?;
    write(out, "loss.svg", &loss_svg(trainer.history()))
}

impl training::Objective for NextToken<'_> {
    /// Loss estimates on train and val.
    type Eval = (f64, f64);

    /// The mean loss of `grad_accum` batches, their gradients summed.
    fn step(
        &mut self,
        vars: &[(String, Var)],
        _step: u64,
        rng: &mut Rng,
    ) -> Result<StepOut, StageError> {
        let (p, model) = (self.p, &self.model);
        let mut total: Option<Grads> = None;
        let mut loss_sum = 0.0;
        for _ in 0..p.grad_accum {
            let (x, y) = batch(&self.data.train, p.batch_size, p.block_size, rng)?;
            let loss = model
                .loss(&x, &y, &mut Dropout::train(p.dropout, rng))
                .map_err(crate::model::ModelError::from)?;
            let (value, g) = gradients_of(
                &(loss / p.grad_accum as f64).map_err(crate::model::ModelError::from)?,
                vars,
            )?;
            loss_sum += value;
            match &mut total {
                None => total = Some(g),
                Some(t) => t.add(&g),
            }
        }
        let grads = total.expect("grad_accum >= 1");
        Ok(StepOut {
            loss: loss_sum,
            grads,
            tokens: p.batch_size * p.block_size * p.grad_accum,
            stats: Vec::new(),
        })
    }

    /// Loss estimates on `eval_iters` fixed batches of train and val.
    fn evaluate(
        &mut self,
        step: u64,
        cx: &RunCx,
    ) -> Result<(Option<String>, (f64, f64)), StageError> {
        let model = &self.model;
        let est = |shard: &TokenShard| -> Result<f64, StageError> {
            // The same batches every time: estimates at different steps compare like for like.
            let mut rng = Rng::new(self.seed, Stream::Eval);
            let mut sum = 0.0;
            for _ in 0..self.p.eval_iters {
                cx.check_cancelled()?;
                let (x, y) = batch(shard, self.p.batch_size, self.p.block_size, &mut rng)?;
                let l = model
                    .loss(&x, &y, &mut Dropout::off())
                    .and_then(|l| l.to_scalar::<f32>())
                    .map_err(crate::model::ModelError::from)?;
                sum += f64::from(l);
            }
            Ok(sum / self.p.eval_iters as f64)
        };
        let (train, val) = (est(&self.data.train)?, est(&self.data.val)?);
        cx.metric("val_loss", val);
        let line = serde_json::to_string(&EvalLine { step, train_loss: train, val_loss: val })
            .expect("finite numbers serialise");
        Ok((Some(line), (train, val)))
    }
}

/// `b` random windows of `t + 1` tokens: inputs (b, t) and next-token targets (b, t).
fn batch(
    shard: &TokenShard,
    b: usize,
    t: usize,
    rng: &mut Rng,
) -> Result<(Tensor, Tensor), StageError> {
    let (mut x, mut y) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
    for _ in 0..b {
        let i = rng.below(shard.len() - t);
        shard.extend(i, t, &mut x);
        shard.extend(i + 1, t, &mut y);
    }
    let x = Tensor::from_vec(x, (b, t), &Device::Cpu).map_err(crate::model::ModelError::from)?;
    let y = Tensor::from_vec(y, (b, t), &Device::Cpu).map_err(crate::model::ModelError::from)?;
    Ok((x, y))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};

    use hone_engine::events::Event;
    use hone_engine::exec::RunSummary;
    use hone_engine::spec;

    use crate::model::shards::{char_tokenizer, write_artifact};
    use crate::testing::support::{self, quiet};

    /// A workspace with a tokenizer artifact in `fixture/` (made here, as the tokenizer stage
    /// would) and a pipeline that copies it in with a `command` stage and pretrains on it.
    struct Bench {
        dir: tempfile::TempDir,
    }

    const TEXT: &str =
        "the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log. ";

    impl Bench {
        fn new() -> Bench {
            let dir = tempfile::tempdir().unwrap();
            let (json, vocab, eot, enc) = char_tokenizer(TEXT);
            let mut train = Vec::new();
            for _ in 0..20 {
                train.extend(enc(TEXT));
                train.push(eot);
            }
            let mut val = enc(TEXT);
            val.push(eot);
            write_artifact(
                &dir.path().join("fixture"),
                crate::model::shards::TokenizerKind::Char,
                vocab,
                eot,
                &json,
                &train,
                &val,
            )
            .unwrap();
            Bench { dir }
        }

        /// The pipeline with the base params, some replaced or added by `with`.
        fn pipeline(&self, seed: u64, with: &[(&str, &str)]) -> spec::Pipeline {
            let mut params: Vec<(&str, &str)> = vec![
                ("n_layer", "2"),
                ("n_head", "2"),
                ("n_embd", "16"),
                ("block_size", "16"),
                ("batch_size", "4"),
                ("lr", "1e-2"),
                ("min_lr", "1e-3"),
                ("warmup_steps", "5"),
                ("steps", "40"),
                ("eval_every", "10"),
                ("eval_iters", "3"),
                ("checkpoint_every", "10"),
                ("threads", "1"),
            ];
            for &(k, v) in with {
                match params.iter_mut().find(|(n, _)| *n == k) {
                    Some(slot) => slot.1 = v,
                    None => params.push((k, v)),
                }
            }
            let with: Vec<String> = params.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let src = format!(
                "name: t\nseed: {seed}\nstages:\n  tok:\n    uses: command\n    with: {{ cmd: 'cp fixture/* \"$HONE_OUT\"/', deps: [fixture] }}\n  base:\n    uses: pretrain\n    inputs: {{ tokenizer: tok }}\n    with: {{ {} }}\n",
                with.join(", ")
            );
            spec::load_str(&self.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
                .unwrap_or_else(|e| panic!("{e}"))
        }

        fn run(
            &self,
            p: &spec::Pipeline,
            on_event: impl Fn(&Event, &AtomicBool) + Send + Sync,
        ) -> (RunSummary, Vec<Event>) {
            support::run(self.dir.path(), p, on_event)
        }

        fn output(&self, p: &spec::Pipeline) -> PathBuf {
            support::output(self.dir.path(), p, "base")
        }
    }

    fn weights(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join("model.safetensors")).unwrap()
    }

    fn metric_lines(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn pretrains_through_the_engine_the_loss_falls_and_the_model_exports() {
        let b = Bench::new();
        let p = b.pipeline(7, &[]);
        let (summary, events) = b.run(&p, quiet);
        assert!(summary.ok(), "{:?}", summary.failed);
        let out = b.output(&p);
        for f in [
            "model.safetensors",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "metrics.jsonl",
            "loss.svg",
        ] {
            assert!(out.join(f).is_file(), "missing {f}");
        }
        let lines = metric_lines(&out);
        let evals: Vec<f64> = lines.iter().filter_map(|l| l["val_loss"].as_f64()).collect();
        let steps: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l.get("loss").is_some()).collect();
        assert_eq!(steps.len(), 40);
        assert_eq!(evals.len(), 5, "evaluations at 0, 10, 20, 30 and the end");
        // ln(vocab) ≈ 2.9 at the start; the repetitive text is quickly learnt.
        assert!(evals[0] > 2.5, "{evals:?}");
        assert!(
            evals.windows(2).all(|w| w[1] < w[0]) && evals[4] < 0.7 * evals[0],
            "validation loss did not fall: {evals:?}"
        );
        let first = steps[0]["loss"].as_f64().unwrap();
        let last = steps[39]["loss"].as_f64().unwrap();
        assert!(last < 0.7 * first, "training loss {first} -> {last}");
        assert!(steps[0]["lr"].as_f64().unwrap() < steps[5]["lr"].as_f64().unwrap(), "warmup");
        // Progress per step, with the total for an ETA; final metrics.
        let progress: Vec<u64> = events
            .iter()
            .filter_map(|e| {
                if let Event::Progress { stage, done, total: Some(40), .. } = e {
                    (stage == "base").then_some(*done)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(progress, (1..=40).collect::<Vec<_>>());
        let finished = support::finished_metrics(&events, "base");
        assert_eq!(finished["val_loss"].as_f64(), Some(evals[4]));
        // The exported model loads and continues the text.
        let mut text = String::new();
        let done =
            crate::model::sample::generate_text(&out, "the c", &Default::default(), 3, |t| {
                text.push_str(t)
            })
            .unwrap();
        assert!(done.new_tokens > 0 && !text.is_empty());
        // A second run is a cache hit.
        let (again, _) = b.run(&p, quiet);
        assert_eq!((again.ran.len(), again.cached.len()), (0, 2));
    }

    #[test]
    fn same_seed_same_weight_bytes_other_seed_other_weights() {
        let (a, b, c) = (Bench::new(), Bench::new(), Bench::new());
        let with: &[(&str, &str)] = &[("steps", "12"), ("eval_every", "0")];
        let (pa, pb, pc) = (a.pipeline(7, with), b.pipeline(7, with), c.pipeline(8, with));
        for (bench, p) in [(&a, &pa), (&b, &pb), (&c, &pc)] {
            assert!(bench.run(p, quiet).0.ok());
        }
        assert_eq!(weights(&a.output(&pa)), weights(&b.output(&pb)));
        assert_ne!(weights(&a.output(&pa)), weights(&c.output(&pc)));
        assert_eq!(
            std::fs::read(a.output(&pa).join("metrics.jsonl")).unwrap(),
            std::fs::read(b.output(&pb).join("metrics.jsonl")).unwrap()
        );
    }

    /// One worker thread or two (the fused kernels split rows, and the matrix products output
    /// blocks, over the pool; no sum is split): the same weight and metric bytes, so the
    /// thread count stays out of the stage key. The model is wide enough for every kernel to
    /// take its parallel path.
    #[test]
    fn one_and_two_threads_give_the_same_bytes() {
        let runs: Vec<(Vec<u8>, Vec<u8>)> = ["1", "2", "2"]
            .into_iter()
            .map(|threads| {
                let b = Bench::new();
                let with: &[(&str, &str)] = &[
                    ("steps", "6"),
                    ("eval_every", "3"),
                    ("threads", threads),
                    ("n_embd", "64"),
                    ("n_head", "4"),
                    ("batch_size", "16"),
                ];
                let p = b.pipeline(7, with);
                assert!(b.run(&p, quiet).0.ok());
                (weights(&b.output(&p)), std::fs::read(b.output(&p).join("metrics.jsonl")).unwrap())
            })
            .collect();
        assert!(runs[0] == runs[1], "1 and 2 threads differ");
        assert!(runs[1] == runs[2], "two runs at 2 threads differ");
    }

    /// Stopped (Ctrl-C: a checkpoint is written on the way out) or killed (here: a panic
    /// mid-run, so only the periodic checkpoint at step 10 exists), the next run resumes and
    /// ends with the weights and metrics of an uninterrupted run, bit for bit. Dropout is on
    /// and gradients are accumulated so that every piece of state matters.
    #[test]
    fn a_stopped_or_killed_run_resumes_to_identical_weights() {
        let with: &[(&str, &str)] =
            &[("dropout", "0.1"), ("grad_accum", "2"), ("steps", "24"), ("eval_every", "8")];
        let whole = Bench::new();
        let pw = whole.pipeline(7, with);
        assert!(whole.run(&pw, quiet).0.ok());

        for (how, stop_at, resumes_at) in [("cancel", 17u64, 18u64), ("kill", 13, 11)] {
            let b = Bench::new();
            let p = b.pipeline(7, with);
            let (first, _) = b.run(&p, move |e, cancel| {
                if let Event::Progress { done, .. } = e
                    && *done == stop_at
                {
                    if how == "kill" {
                        panic!("simulated kill at step {stop_at}");
                    }
                    cancel.store(true, Ordering::SeqCst);
                }
            });
            assert!(!first.ok(), "{how}: the first run should not finish");
            let (second, events) = b.run(&p, quiet);
            assert!(second.ok(), "{how}: {:?}", second.failed);
            let first_step = events.iter().find_map(|e| {
                if let Event::Progress { done, .. } = e { Some(*done) } else { None }
            });
            assert_eq!(first_step, Some(resumes_at), "{how}: did not resume from its checkpoint");
            assert_eq!(
                weights(&b.output(&p)),
                weights(&whole.output(&pw)),
                "{how}: weights differ from the uninterrupted run"
            );
            assert_eq!(
                metric_lines(&b.output(&p)),
                metric_lines(&whole.output(&pw)),
                "{how}: metrics differ"
            );
        }
    }

    #[test]
    fn divergence_stops_with_the_step_number() {
        let b = Bench::new();
        let p = b.pipeline(
            7,
            &[("lr", "1e30"), ("min_lr", "1e30"), ("warmup_steps", "0"), ("grad_clip", "0")],
        );
        let (summary, _) = b.run(&p, quiet);
        let (_, err, _) = &summary.failed[0];
        // Step 1 sends the weights to ±1e30; step 2's gradients overflow.
        assert!(err.contains("training diverged at step 2:"), "{err}");
    }

    #[test]
    fn bad_params_are_reported_at_their_key() {
        let b = Bench::new();
        let src = "name: t\nstages:\n  tok: { uses: command, with: { cmd: 'true' } }\n  base:\n    uses: pretrain\n    inputs: { tokenizer: tok }\n    with: { n_embd: 30, n_head: 4, min_lr: 1.0, lr_decay: 3 }\n";
        let err = spec::load_str(&b.dir.path().join("p.yaml"), src.into(), &crate::registry(), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("lr_decay"), "{err}");
        let src = src.replace(", lr_decay: 3", "");
        let err = spec::load_str(&b.dir.path().join("p.yaml"), src, &crate::registry(), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("multiple of `n_head`")
                && err.contains("`min_lr` (1) must be between 0 and `lr`"),
            "{err}"
        );
    }

    #[test]
    fn a_corpus_shorter_than_the_block_is_explained() {
        let b = Bench::new();
        let p = b.pipeline(7, &[("block_size", "200")]);
        let (summary, _) = b.run(&p, quiet);
        let (_, err, _) = &summary.failed[0];
        assert!(
            err.contains("val.bin") && err.contains("block_size 200 needs at least 201"),
            "{err}"
        );
    }
}
