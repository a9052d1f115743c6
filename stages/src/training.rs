//! The loop the training kinds share (not a stage kind itself).
//!
//! A stage supplies an [`Objective`]: it owns its models (`pretrain` and `sft` a GPT, `reward`
//! a backbone and a scalar head, `ppo` a policy, a critic and frozen references), makes its
//! batches and computes the gradients of its loss, with named statistics, and evaluates. The
//! [`Trainer`] owns the rest: the trained parameters in [`ParamGroup`]s (each with its own
//! AdamW settings and learning-rate schedule), AdamW, the training RNG, the step count and
//! metrics.jsonl. [`Trainer::run`] resumes from the stage's checkpoint (the objective's own
//! state included, so a resumed run equals an uninterrupted one), then takes steps at the
//! scheduled rates with global-norm gradient clipping, stops with the step number when the
//! loss or the gradient norm stops being finite, evaluates every `eval_every` steps and at the
//! end, shows progress (loss, statistics, tokens per second, ETA through the engine), saves
//! checkpoints every `checkpoint_every` steps and when stopped, and records one line per step
//! in metrics.jsonl:
//! `{"step", "loss", <the objective's statistics>, "lr" (and "lr/<group>"), "grad_norm"}`.
//!
//! The params every training kind has (batch size, steps, the schedule, AdamW, clipping,
//! evaluation and checkpoint intervals, threads) are defined once, by [`training_params!`],
//! and validated once ([`Common::problems`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use candle_core::{Tensor, Var};
use hone_engine::stage::{ParamProblem, RunCx, Stage, StageError};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::model::checkpoint::{Checkpoint, ObjectiveState};
use crate::model::optim::{AdamW, AdamWConfig, Grads, LrSchedule};
use crate::model::rng::{Rng, Stream};
use crate::model::{GptConfig, ModelError};

/// Named statistics of a step, in the order they are written (TRL's names where there are
/// some: `accuracy`, `margin`, `objective/kl`, …).
pub(crate) type Stats = Vec<(String, f64)>;

/// What one step of an objective computed.
pub(crate) struct StepOut {
    /// The loss that was minimised (the divergence check watches it).
    pub loss: f64,
    /// The gradients of every trained parameter, in the trainer's order ([`Trainer::vars`]).
    pub grads: Grads,
    /// Tokens trained on (for the tokens per second in progress).
    pub tokens: usize,
    /// Statistics beyond the loss, for metrics.jsonl and progress.
    pub stats: Stats,
}

/// What a training stage computes; the [`Trainer`] does the rest.
pub(crate) trait Objective {
    /// What an evaluation finds; the last one is returned by [`Trainer::run`].
    type Eval;
    /// The gradients of the optimizer step after `step` steps, for `vars` (every trained
    /// parameter, in order), with the loss and statistics. `rng` is the training stream
    /// (batches, dropout), saved in checkpoints.
    fn step(
        &mut self,
        vars: &[(String, Var)],
        step: u64,
        rng: &mut Rng,
    ) -> Result<StepOut, StageError>;
    /// Evaluates after `step` steps: the line for metrics.jsonl (none to record nothing) and
    /// the result. Long evaluations call `cx.check_cancelled()` between batches.
    fn evaluate(
        &mut self,
        step: u64,
        cx: &RunCx,
    ) -> Result<(Option<String>, Self::Eval), StageError>;
    /// State of the objective's own that a resumed run needs (a rollout buffer, a KL
    /// controller): saved in every checkpoint.
    fn state(&self) -> Result<ObjectiveState, StageError> {
        Ok(ObjectiveState::default())
    }
    /// Restores [`Objective::state`] from a checkpoint.
    fn restore(&mut self, state: ObjectiveState) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err("it holds objective state this stage does not use".into())
        }
    }
}

/// Trained parameters that share AdamW settings and a learning-rate schedule.
pub(crate) struct ParamGroup {
    /// The group's name: its learning rate is logged as `lr/<name>` (the first group's as `lr`).
    pub name: &'static str,
    pub vars: Vec<(String, Var)>,
    pub adamw: AdamWConfig,
    pub schedule: LrSchedule,
}

/// The loop's settings, from the stage's params.
pub(crate) struct Settings {
    pub steps: u64,
    /// 0: no clipping (the norm is still checked and recorded).
    pub grad_clip: f64,
    /// 0: evaluate only at the end.
    pub eval_every: u64,
    /// 0: checkpoint only when stopped.
    pub checkpoint_every: u64,
}

/// Defaults of the params every training kind has with the same value.
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

/// Defines a training kind's params type: the kind's own fields, then the fields every
/// training kind has ([`Common`]), with `deny_unknown_fields`. The calling module has a
/// `defaults` module with the kind's defaults: `batch_size`, `steps`, `lr`, `min_lr`,
/// `warmup_steps`, `weight_decay`, `eval_every`, `checkpoint_every`.
///
/// A macro rather than a `#[serde(flatten)]` struct: flattening deserialises through a buffer,
/// which loses the path of a bad value (so its line and column in the pipeline file), the
/// list of valid names in an unknown-field error, and the field list of `hone kinds`.
macro_rules! training_params {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($body)*
            /// Sequences per optimizer step.
            #[serde(default = "defaults::batch_size")]
            pub batch_size: usize,
            /// Optimizer steps.
            #[serde(default = "defaults::steps")]
            pub steps: u64,
            /// Peak learning rate (after warmup).
            #[serde(default = "defaults::lr")]
            pub lr: f64,
            /// Learning rate at the end of the cosine decay.
            #[serde(default = "defaults::min_lr")]
            pub min_lr: f64,
            #[serde(default = "defaults::warmup_steps")]
            pub warmup_steps: u64,
            /// AdamW's decoupled weight decay (on matrices and embeddings only).
            #[serde(default = "defaults::weight_decay")]
            pub weight_decay: f64,
            /// Clip the global gradient norm to this; 0 turns clipping off.
            #[serde(default = "crate::training::defaults::grad_clip")]
            pub grad_clip: f64,
            #[serde(default)]
            pub dropout: f64,
            #[serde(default = "crate::training::defaults::beta1")]
            pub beta1: f64,
            #[serde(default = "crate::training::defaults::beta2")]
            pub beta2: f64,
            /// Evaluate every this many steps (and at the end); 0: only at the end.
            #[serde(default = "defaults::eval_every")]
            pub eval_every: u64,
            /// Save the training state every this many steps; 0: only when stopped.
            #[serde(default = "defaults::checkpoint_every")]
            pub checkpoint_every: u64,
            /// Worker threads; 0 uses them all. The result does not depend on it.
            #[serde(default)]
            pub threads: usize,
            /// Recompute each block's activations in the backward pass instead of keeping
            /// them (and run the LM head and loss a block of rows at a time): the blocks'
            /// gradients the same bits, the head's row-blocked sums up to their last bits;
            /// about a third more time, a fraction of the memory.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub gradient_checkpointing: bool,
        }

        impl $name {
            /// The params every training kind has.
            pub(crate) fn common(&self) -> $crate::training::Common {
                $crate::training::Common {
                    batch_size: self.batch_size,
                    steps: self.steps,
                    lr: self.lr,
                    min_lr: self.min_lr,
                    warmup_steps: self.warmup_steps,
                    weight_decay: self.weight_decay,
                    grad_clip: self.grad_clip,
                    dropout: self.dropout,
                    beta1: self.beta1,
                    beta2: self.beta2,
                    eval_every: self.eval_every,
                    checkpoint_every: self.checkpoint_every,
                    threads: self.threads,
                }
            }

            /// [`Common::problems`] with this kind's defaults in the hints.
            pub(crate) fn common_problems(&self) -> Vec<hone_engine::stage::ParamProblem> {
                self.common().problems(defaults::batch_size(), defaults::steps(), defaults::lr())
            }
        }
    };
}
pub(crate) use training_params;

/// The params every training kind has (see [`training_params!`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Common {
    pub batch_size: usize,
    pub steps: u64,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub dropout: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub threads: usize,
}

impl Common {
    /// What is wrong with the values; the hints name the kind's defaults.
    pub fn problems(&self, batch_size: usize, steps: u64, lr: f64) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        let mut need = |ok: bool, field: &str, msg: String, help: String| {
            if !ok {
                out.push(ParamProblem::at(&[field], msg).help(help));
            }
        };
        need(
            self.batch_size > 0,
            "batch_size",
            "`batch_size` must be at least 1".into(),
            format!("the default is {batch_size}"),
        );
        need(
            self.steps > 0,
            "steps",
            "`steps` must be at least 1".into(),
            format!("the default is {steps}"),
        );
        need(
            self.lr > 0.0 && self.lr.is_finite(),
            "lr",
            format!("`lr` must be positive, not {}", self.lr),
            format!("the default is {lr:e}"),
        );
        let min_lr = format!("`min_lr` ({}) must be between 0 and `lr` ({})", self.min_lr, self.lr);
        need(
            self.min_lr >= 0.0 && self.min_lr <= self.lr,
            "min_lr",
            min_lr,
            "the cosine decay ends here; nanoGPT uses lr / 10".into(),
        );
        need(
            self.weight_decay >= 0.0,
            "weight_decay",
            format!("`weight_decay` must not be negative, not {}", self.weight_decay),
            "0 turns it off".into(),
        );
        need(
            self.grad_clip >= 0.0,
            "grad_clip",
            format!("`grad_clip` must not be negative, not {}", self.grad_clip),
            "0 turns clipping off".into(),
        );
        need(
            (0.0..1.0).contains(&self.dropout),
            "dropout",
            format!("`dropout` must be in [0, 1), not {}", self.dropout),
            "0 turns it off".into(),
        );
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            need(
                (0.0..1.0).contains(&b),
                name,
                format!("`{name}` must be in [0, 1), not {b}"),
                "nanoGPT uses 0.9 and 0.99".into(),
            );
        }
        out
    }

    /// Linear warmup, then cosine from `lr` to `min_lr` at the last step.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            decay_steps: self.steps,
        }
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig::new(self.beta1, self.beta2, self.weight_decay)
    }

    /// One group of parameters with these AdamW settings and schedule.
    pub fn group(&self, name: &'static str, vars: Vec<(String, Var)>) -> ParamGroup {
        ParamGroup { name, vars, adamw: self.adamw(), schedule: self.schedule() }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            steps: self.steps,
            grad_clip: self.grad_clip,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
        }
    }
}

/// A line of metrics.jsonl after a training step: `step`, `loss`, the statistics, the
/// learning rates and `grad_norm`, in this order.
struct StepLine<'a> {
    step: u64,
    loss: f64,
    stats: &'a Stats,
    lrs: &'a [(String, f64)],
    grad_norm: f64,
}

impl Serialize for StepLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("step", &self.step)?;
        m.serialize_entry("loss", &self.loss)?;
        for (k, v) in self.stats.iter().chain(self.lrs) {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("grad_norm", &self.grad_norm)?;
        m.end()
    }
}

/// How a finished run ended: the last training loss and the final evaluation.
pub(crate) struct Finished<E> {
    pub loss: f64,
    pub eval: E,
}

/// A group's place in the trainer's parameter list.
struct GroupInfo {
    name: &'static str,
    schedule: LrSchedule,
}

pub(crate) struct Trainer<'a> {
    cx: &'a RunCx<'a>,
    /// The trained parameters of every group, in the order of the optimizer's state and the
    /// gradients.
    vars: Vec<(String, Var)>,
    groups: Vec<GroupInfo>,
    opt: AdamW,
    rng: Rng,
    /// Optimizer steps done.
    pub step: u64,
    /// metrics.jsonl so far.
    history: String,
    /// What a checkpoint must match to be resumed (params, seed, model, version).
    fingerprint: String,
    /// The objective's state from the checkpoint resumed, for [`Trainer::run`] to restore.
    resumed: Option<ObjectiveState>,
}

impl<'a> Trainer<'a> {
    /// A trainer for these parameter groups, continuing from the stage's checkpoint when
    /// there is one with the same `fingerprint`. Parameter names must be unique across groups.
    pub fn new(
        cx: &'a RunCx<'a>,
        groups: Vec<ParamGroup>,
        fingerprint: String,
    ) -> Result<Self, StageError> {
        crate::model::kernels::tune_allocator();
        let mut vars: Vec<(String, Var)> = Vec::new();
        for g in &groups {
            if let Some((name, _)) = g.vars.iter().find(|(n, _)| vars.iter().any(|(m, _)| m == n)) {
                return Err(StageError::msg(format!(
                    "parameter `{name}` is trained twice (group `{}`)",
                    g.name
                )));
            }
            vars.extend(g.vars.iter().cloned());
        }
        let opt = AdamW::with_groups(
            groups.iter().map(|g| (g.vars.as_slice(), g.adamw.clone())).collect(),
        );
        let groups =
            groups.into_iter().map(|g| GroupInfo { name: g.name, schedule: g.schedule }).collect();
        let mut t = Trainer {
            cx,
            vars,
            groups,
            opt,
            rng: Rng::new(cx.seed, Stream::Train),
            step: 0,
            history: String::new(),
            fingerprint,
            resumed: None,
        };
        t.resumed = Checkpoint::resume(
            cx.checkpoint_dir,
            &t.fingerprint,
            &t.vars,
            &mut t.opt,
            &mut t.rng,
            &mut t.step,
            &mut t.history,
        )?;
        Ok(t)
    }

    /// metrics.jsonl so far.
    pub fn history(&self) -> &str {
        &self.history
    }

    /// Trains up to `s.steps` steps and evaluates at the end. Stopped, it saves a checkpoint
    /// and returns [`StageError::Cancelled`].
    pub fn run<O: Objective>(
        &mut self,
        s: &Settings,
        obj: &mut O,
    ) -> Result<Finished<O::Eval>, StageError> {
        let cx = self.cx;
        if let Some(state) = self.resumed.take() {
            obj.restore(state).map_err(|m| {
                StageError::msg(format!(
                    "cannot resume from `{}`: {m}; delete it to start over",
                    cx.checkpoint_dir.join(crate::model::checkpoint::FILE).display()
                ))
            })?;
        }
        let (started, first) = (Instant::now(), self.step);
        let (mut tokens, mut last_loss, mut step_ms) = (0usize, f64::NAN, Vec::new());
        while self.step < s.steps {
            if s.eval_every > 0 && self.step.is_multiple_of(s.eval_every) {
                self.evaluate(obj)?;
            }
            let lrs: Vec<(String, f64)> = self
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    (
                        if i == 0 { "lr".to_string() } else { format!("lr/{}", g.name) },
                        g.schedule.at(self.step),
                    )
                })
                .collect();
            let t0 = Instant::now();
            let (out, norm) = self.train_step(s, obj, &lrs)?;
            step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            (tokens, last_loss) = (tokens + out.tokens, out.loss);
            let line = StepLine {
                step: self.step,
                loss: out.loss,
                stats: &out.stats,
                lrs: &lrs,
                grad_norm: norm,
            };
            writeln!(self.history, "{}", serde_json::to_string(&line).expect("numbers serialise"))
                .unwrap();
            let rate = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let mut shown = format!("loss {:.4}", out.loss);
            for (k, v) in out.stats.iter().take(3) {
                write!(shown, " · {k} {v:.3}").unwrap();
            }
            cx.progress(self.step, Some(s.steps), format!("{shown} · {} tok/s", human(rate)));
            if cx.is_cancelled() {
                self.save(obj)?;
                return Err(StageError::Cancelled);
            }
            if s.checkpoint_every > 0
                && self.step.is_multiple_of(s.checkpoint_every)
                && self.step < s.steps
            {
                self.save(obj)?;
            }
        }
        log_timing(&mut step_ms, tokens as f64 / (self.step - first).max(1) as f64);
        let eval = self.evaluate(obj)?;
        if last_loss.is_nan() {
            // Resumed from a checkpoint taken at the very end: report the last recorded loss.
            last_loss = self
                .history
                .lines()
                .rev()
                .find_map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).ok()?.get("loss")?.as_f64()
                })
                .unwrap_or(f64::NAN);
        }
        Ok(Finished { loss: last_loss, eval })
    }

    fn save<O: Objective>(&self, obj: &O) -> Result<(), StageError> {
        let state = obj.state()?;
        Checkpoint::capture(
            self.step,
            &self.vars,
            &self.opt,
            &self.rng,
            &self.fingerprint,
            &self.history,
            state,
        )?
        .save(self.cx.checkpoint_dir)?;
        Ok(())
    }

    /// One optimizer step at the groups' rates `lrs`: what the objective found and the
    /// gradient norm.
    fn train_step<O: Objective>(
        &mut self,
        s: &Settings,
        obj: &mut O,
        lrs: &[(String, f64)],
    ) -> Result<(StepOut, f64), StageError> {
        let mut out = obj.step(&self.vars, self.step, &mut self.rng)?;
        let step = self.step + 1;
        let lr = self.groups[0].schedule.lr;
        if !out.loss.is_finite() {
            return Err(StageError::msg(format!(
                "training diverged at step {step}: the loss is {}\n   = help: lower `lr` (now {lr:e}), or set `grad_clip`",
                out.loss
            )));
        }
        let norm = if s.grad_clip > 0.0 { out.grads.clip(s.grad_clip) } else { out.grads.norm() };
        if !norm.is_finite() {
            return Err(StageError::msg(format!(
                "training diverged at step {step}: the gradient norm is {norm}\n   = help: lower `lr` (now {lr:e})"
            )));
        }
        let rates: Vec<f64> = lrs.iter().map(|(_, r)| *r).collect();
        self.opt.step_groups(&out.grads, &rates)?;
        self.step = step;
        Ok((out, norm))
    }

    /// Evaluates and records the line. Stopped midway, it saves the state first, so the next
    /// run starts with this evaluation.
    fn evaluate<O: Objective>(&mut self, obj: &mut O) -> Result<O::Eval, StageError> {
        match obj.evaluate(self.step, self.cx) {
            Ok((line, eval)) => {
                if let Some(line) = line {
                    writeln!(self.history, "{line}").unwrap();
                }
                Ok(eval)
            }
            Err(StageError::Cancelled) => {
                self.save(obj)?;
                Err(StageError::Cancelled)
            }
            Err(e) => Err(e),
        }
    }
}

/// An endless sequence of epochs over `n` items, each a seeded shuffle: the item at position
/// `k` is a function of `k` alone, so a resumed run needs only the step to find its batches.
pub(crate) struct EpochOrder {
    seed: u64,
    n: usize,
    /// The epoch whose order is held.
    epoch: Option<(u64, Vec<usize>)>,
}

impl EpochOrder {
    pub fn new(seed: u64, n: usize) -> EpochOrder {
        EpochOrder { seed, n, epoch: None }
    }

    /// The item at position `k` (`n` must be at least 1).
    pub fn at(&mut self, k: u64) -> usize {
        let n = self.n as u64;
        let epoch = k / n;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<usize> = (0..self.n).collect();
            let mut rng = Rng::new(
                self.seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                Stream::Train,
            );
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            self.epoch = Some((epoch, order));
        }
        self.epoch.as_ref().expect("just set").1[(k % n) as usize]
    }
}

/// What changes a training run's result besides its input data, for [`Trainer::new`]: a
/// checkpoint from other settings is not resumed (the checkpoint directory is per stage key,
/// so this is a second guard).
pub(crate) fn fingerprint<S: Stage>(params: &S::Params, cx: &RunCx, model: &GptConfig) -> String {
    serde_json::json!({ "params": params, "seed": cx.seed, "model": model, "version": S::VERSION })
        .to_string()
}

/// What a model stage asks a cluster for by default: a core per worker thread (`threads: 0`
/// uses the whole node, so no count is asked) and 2 GB, enough for the small models here.
pub(crate) fn resources(threads: usize) -> hone_engine::resources::Resources {
    hone_engine::resources::Resources {
        cpus: (threads > 0).then_some(threads as u32),
        memory: Some("2G".into()),
        ..Default::default()
    }
}

/// Runs `f` on a pool of `threads` worker threads (0: the current pool), inside the
/// caller's tracing span (which routes events to the stage's log). For every kind that runs
/// the model (training and evaluation).
pub(crate) fn on_threads<R: Send>(
    threads: usize,
    f: impl FnOnce() -> Result<R, StageError> + Send,
) -> Result<R, StageError> {
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
pub(crate) fn gradients_of(
    loss: &Tensor,
    vars: &[(String, Var)],
) -> Result<(f64, Grads), StageError> {
    let value = f64::from(loss.to_scalar::<f32>().map_err(ModelError::from)?);
    Ok((value, Grads::take(loss.backward().map_err(ModelError::from)?, vars)?))
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
    tracing::info!(
        steps_timed = timed.len(),
        ms_per_step_median = format!("{median:.2}"),
        ms_per_step_min = format!("{:.2}", timed[0]),
        tokens_per_s = format!("{:.0}", tokens_per_step / median * 1e3),
        "step timing"
    );
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

/// A chat model's outputs in `out`, trained from the model folder `from`: the HF export of
/// `params` over `from`'s `config.json` (an imported model keeps its other keys; generation
/// starts from the padding token and stops at the turn's end), `from`'s tokenizer with its
/// chat template, and the training's `metrics.jsonl` and `loss.svg`.
pub(crate) fn save_chat_model(
    out: &Path,
    cfg: &GptConfig,
    params: &crate::model::ParamStore,
    tok: &crate::model::chat_template::ChatTokenizer,
    from: &Path,
    history: &str,
) -> Result<(), StageError> {
    use crate::model::export;
    let generation = export::GenerationConfig {
        bos_token_id: Some(tok.end_of_text),
        ..export::GenerationConfig::defaults(Some(tok.im_end))
    };
    export::save_from(out, cfg, &params.snapshot(), &generation, Some(from))?;
    crate::model::chat_template::write_tokenizer(
        out,
        &from.join(export::TOKENIZER),
        cfg.block_size,
    )?;
    write(out, "metrics.jsonl", history)?;
    write(out, "loss.svg", &loss_svg(history))
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
    let (lo, hi) = all
        .map(|p| p.1)
        .filter(|l| l.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
    let sx = |x: f64| m + x / max_x * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - lo) / (hi - lo) * (h - 2.0 * m);
    let path = |pts: &[(f64, f64)]| {
        pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect::<Vec<_>>().join(" ")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>").unwrap();
    writeln!(s, "<path d=\"M{m},{m} V{} H{}\" stroke=\"black\" fill=\"none\"/>", h - m, w - m)
        .unwrap();
    for k in 0..=4 {
        let y = lo + (hi - lo) * f64::from(k) / 4.0;
        writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.2}</text>",
            m - 4.0,
            sy(y) + 4.0
        )
        .unwrap();
    }
    writeln!(
        s,
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\">step (0 to {max_x})</text>",
        w / 2.0,
        h - m / 3.0
    )
    .unwrap();
    writeln!(s, "<polyline points=\"{}\" stroke=\"#1f77b4\" fill=\"none\"/>", path(&train))
        .unwrap();
    writeln!(
        s,
        "<polyline points=\"{}\" stroke=\"#d62728\" stroke-width=\"2\" fill=\"none\"/>",
        path(&val)
    )
    .unwrap();
    writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\">train loss</text>", w - m - 140.0, m)
        .unwrap();
    writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" fill=\"#d62728\">val loss</text>",
        w - m - 140.0,
        m + 16.0
    )
    .unwrap();
    s.push_str("</svg>\n");
    s
}
