//! The loop the training kinds share (not a stage kind itself). A [`Trainer`] holds the
//! model, its parameters, AdamW and the training RNG; [`Trainer::run`] resumes from the
//! stage's checkpoint, then takes steps at the scheduled learning rate with gradient
//! clipping, stops with the step number when the loss or the gradient norm stops being
//! finite, evaluates every `eval_every` steps and at the end, shows progress (loss, tokens
//! per second, ETA through the engine), saves checkpoints every `checkpoint_every` steps and
//! when stopped, and records metrics.jsonl. A stage supplies what differs, as an
//! [`Objective`]: its batches and loss, and its evaluation.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use candle_core::{Tensor, Var};
use hone_engine::stage::{RunCx, StageError};
use serde::Serialize;

use crate::model::checkpoint::Checkpoint;
use crate::model::optim::{AdamW, AdamWConfig, Grads, LrSchedule};
use crate::model::rng::{Rng, Stream};
use crate::model::{Gpt, ModelError, ParamStore};

/// What a training stage computes; the [`Trainer`] does the rest.
pub(crate) trait Objective {
    /// What an evaluation finds; the last one is returned by [`Trainer::run`].
    type Eval;
    /// The gradients of the optimizer step after `step` steps (for `vars`, in their order):
    /// the loss, the gradients and the number of tokens trained on. `rng` is the training
    /// stream (batches, dropout), saved in checkpoints.
    fn gradients(&mut self, model: &Gpt, vars: &[(String, Var)], step: u64, rng: &mut Rng) -> Result<(f64, Grads, usize), StageError>;
    /// Evaluates the model after `step` steps: the line for metrics.jsonl (none to record
    /// nothing) and the result. Long evaluations call `cx.check_cancelled()` between batches.
    fn evaluate(&mut self, model: &Gpt, step: u64, cx: &RunCx) -> Result<(Option<String>, Self::Eval), StageError>;
}

/// The loop's settings, from the stage's params.
pub(crate) struct Settings {
    pub steps: u64,
    pub schedule: LrSchedule,
    /// 0: no clipping (the norm is still checked and recorded).
    pub grad_clip: f64,
    /// 0: evaluate only at the end.
    pub eval_every: u64,
    /// 0: checkpoint only when stopped.
    pub checkpoint_every: u64,
}

/// Defaults of the params every training kind has (`#[serde(default = "…")]`).
pub(crate) mod defaults {
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.99
    }
    pub fn grad_clip() -> f64 {
        1.0
    }
}

/// A line of metrics.jsonl after a training step (fields in this order).
#[derive(Serialize)]
pub(crate) struct StepLine {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// How a finished run ended: the last training loss and the final evaluation.
pub(crate) struct Finished<E> {
    pub loss: f64,
    pub eval: E,
}

pub(crate) struct Trainer<'a> {
    cx: &'a RunCx<'a>,
    pub model: Gpt,
    pub params: ParamStore,
    /// The trained parameters, in the order of the optimizer's state and the gradients.
    vars: Vec<(String, Var)>,
    opt: AdamW,
    rng: Rng,
    /// Optimizer steps done.
    pub step: u64,
    /// metrics.jsonl so far.
    history: String,
    /// What a checkpoint must match to be resumed (params, seed, model, version).
    fingerprint: String,
}

impl<'a> Trainer<'a> {
    /// A trainer for `model` (whose parameters are `params`), continuing from the stage's
    /// checkpoint when there is one with the same `fingerprint`.
    pub fn new(cx: &'a RunCx<'a>, model: Gpt, params: ParamStore, adamw: AdamWConfig, fingerprint: String) -> Result<Self, StageError> {
        crate::model::kernels::tune_allocator();
        let vars = params.vars();
        let opt = AdamW::new(&vars, adamw);
        let mut t = Trainer { cx, model, params, vars, opt, rng: Rng::new(cx.seed, Stream::Train), step: 0, history: String::new(), fingerprint };
        Checkpoint::resume(cx.checkpoint_dir, &t.fingerprint, &t.params, &mut t.opt, &mut t.rng, &mut t.step, &mut t.history)?;
        Ok(t)
    }

    /// metrics.jsonl so far.
    pub fn history(&self) -> &str {
        &self.history
    }

    /// Trains up to `s.steps` steps and evaluates at the end. Stopped, it saves a checkpoint
    /// and returns [`StageError::Cancelled`].
    pub fn run<O: Objective>(&mut self, s: &Settings, obj: &mut O) -> Result<Finished<O::Eval>, StageError> {
        let cx = self.cx;
        let (started, first) = (Instant::now(), self.step);
        let (mut tokens, mut last_loss, mut step_ms) = (0usize, f64::NAN, Vec::new());
        while self.step < s.steps {
            if s.eval_every > 0 && self.step.is_multiple_of(s.eval_every) {
                self.evaluate(obj)?;
            }
            let lr = s.schedule.at(self.step);
            let t0 = Instant::now();
            let (loss, norm, n) = self.train_step(s, obj, lr)?;
            step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            (tokens, last_loss) = (tokens + n, loss);
            let line = StepLine { step: self.step, loss, lr, grad_norm: norm };
            writeln!(self.history, "{}", serde_json::to_string(&line).expect("finite numbers serialise")).unwrap();
            let rate = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
            cx.progress(self.step, Some(s.steps), format!("loss {loss:.4} · {} tok/s", human(rate)));
            if cx.is_cancelled() {
                self.save()?;
                return Err(StageError::Cancelled);
            }
            if s.checkpoint_every > 0 && self.step.is_multiple_of(s.checkpoint_every) && self.step < s.steps {
                self.save()?;
            }
        }
        log_timing(&mut step_ms, tokens as f64 / (self.step - first).max(1) as f64);
        let eval = self.evaluate(obj)?;
        if last_loss.is_nan() {
            // Resumed from a checkpoint taken at the very end: report the last recorded loss.
            last_loss = self.history.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("loss")?.as_f64()).unwrap_or(f64::NAN);
        }
        Ok(Finished { loss: last_loss, eval })
    }

    fn save(&self) -> Result<(), StageError> {
        Checkpoint::capture(self.step, &self.params, &self.opt, &self.rng, &self.fingerprint, &self.history)?.save(self.cx.checkpoint_dir)?;
        Ok(())
    }

    /// One optimizer step at rate `lr`: (loss, gradient norm, tokens).
    fn train_step<O: Objective>(&mut self, s: &Settings, obj: &mut O, lr: f64) -> Result<(f64, f64, usize), StageError> {
        let (loss, mut grads, tokens) = obj.gradients(&self.model, &self.vars, self.step, &mut self.rng)?;
        let step = self.step + 1;
        if !loss.is_finite() {
            return Err(StageError::msg(format!(
                "training diverged at step {step}: the loss is {loss}\n   = help: lower `lr` (now {:e}), or set `grad_clip`",
                s.schedule.lr
            )));
        }
        let norm = if s.grad_clip > 0.0 { grads.clip(s.grad_clip) } else { grads.norm() };
        if !norm.is_finite() {
            return Err(StageError::msg(format!("training diverged at step {step}: the gradient norm is {norm}\n   = help: lower `lr` (now {:e})", s.schedule.lr)));
        }
        self.opt.step(&grads, lr)?;
        self.step = step;
        Ok((loss, norm, tokens))
    }

    /// Evaluates and records the line. Stopped midway, it saves the state first, so the next
    /// run starts with this evaluation.
    fn evaluate<O: Objective>(&mut self, obj: &mut O) -> Result<O::Eval, StageError> {
        match obj.evaluate(&self.model, self.step, self.cx) {
            Ok((line, eval)) => {
                if let Some(line) = line {
                    writeln!(self.history, "{line}").unwrap();
                }
                Ok(eval)
            }
            Err(StageError::Cancelled) => {
                self.save()?;
                Err(StageError::Cancelled)
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs `f` on a pool of `threads` worker threads (0: the current pool), inside the
/// caller's tracing span (which routes events to the stage's log). For every kind that runs
/// the model (training and evaluation).
pub(crate) fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> Result<R, StageError> + Send) -> Result<R, StageError> {
    if threads == 0 {
        return f();
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| StageError::msg(format!("cannot start {threads} worker threads: {e}")))?;
    let span = tracing::Span::current();
    pool.install(|| span.in_scope(f))
}

/// The loss value and the gradients of `loss` for `vars`.
pub(crate) fn gradients_of(loss: &Tensor, vars: &[(String, Var)]) -> Result<(f64, Grads), StageError> {
    let value = f64::from(loss.to_scalar::<f32>().map_err(ModelError::from)?);
    Ok((value, Grads::collect(&loss.backward().map_err(ModelError::from)?, vars)?))
}

/// Wall time per training step into the stage log (not the metrics: they must not depend on
/// the machine). The first two steps warm up allocators and caches and are left out of the
/// median, as in the PyTorch benchmark. `bench/train_speed.sh` reads this line.
fn log_timing(step_ms: &mut [f64], tokens_per_step: f64) {
    if step_ms.len() < 3 {
        return;
    }
    let timed = &mut step_ms[2..];
    timed.sort_by(f64::total_cmp);
    let median = timed[timed.len() / 2];
    tracing::info!(steps_timed = timed.len(), ms_per_step_median = format!("{median:.2}"), ms_per_step_min = format!("{:.2}", timed[0]), tokens_per_s = format!("{:.0}", tokens_per_step / median * 1e3), "step timing");
}

pub(crate) fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> Result<(), StageError> {
    std::fs::write(dir.join(name), text).map_err(StageError::io(format!("cannot write `{name}`")))
}

/// The training and validation loss curves from metrics.jsonl, as a small SVG.
pub(crate) fn loss_svg(history: &str) -> String {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in history.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let step = v["step"].as_f64().unwrap_or(0.0);
        if let Some(l) = v["loss"].as_f64() {
            train.push((step, l));
        }
        if let Some(l) = v["val_loss"].as_f64() {
            val.push((step, l));
        }
    }
    let (w, h, m) = (640.0, 400.0, 50.0);
    let all = train.iter().chain(&val);
    let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all.map(|p| p.1).filter(|l| l.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
    let sx = |x: f64| m + x / max_x * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - lo) / (hi - lo) * (h - 2.0 * m);
    let path = |pts: &[(f64, f64)]| pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect::<Vec<_>>().join(" ");
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n");
    writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>").unwrap();
    writeln!(s, "<path d=\"M{m},{m} V{} H{}\" stroke=\"black\" fill=\"none\"/>", h - m, w - m).unwrap();
    for k in 0..=4 {
        let y = lo + (hi - lo) * f64::from(k) / 4.0;
        writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.2}</text>", m - 4.0, sy(y) + 4.0).unwrap();
    }
    writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\">step (0 to {max_x})</text>", w / 2.0, h - m / 3.0).unwrap();
    writeln!(s, "<polyline points=\"{}\" stroke=\"#1f77b4\" fill=\"none\"/>", path(&train)).unwrap();
    writeln!(s, "<polyline points=\"{}\" stroke=\"#d62728\" stroke-width=\"2\" fill=\"none\"/>", path(&val)).unwrap();
    writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\">train loss</text>", w - m - 140.0, m).unwrap();
    writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#d62728\">val loss</text>", w - m - 140.0, m + 16.0).unwrap();
    s.push_str("</svg>\n");
    s
}
