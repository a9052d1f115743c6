//! `dpo`: Direct Preference Optimization: the chat model learns straight from the preference
//! pairs its rankings imply, with no reward model and no sampling loop (Rafailov et al. 2023).
//!
//! ```yaml
//! dpo:
//!   uses: dpo
//!   inputs: { model: sft, rankings: rank }   # a chat model and a `rank` stage; optionally
//!                                            # `reference:` another chat model
//!   with: { beta: 0.1, loss: sigmoid, steps: 200, batch_size: 8, lr: 1e-5 }
//! ```
//!
//! **The loss.** A response's log-probability `log π(y|x)` is the sum over its answer tokens
//! (the assistant's message and its closing `<|im_end|>`, as `sft` trains on), under the
//! policy (trained, starting as `model`) and under a frozen reference (`reference`, else
//! `model` itself). With `h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))`
//! for a pair, chosen `y_c` and rejected `y_r`, the loss is the mean over a batch's pairs of
//! - `sigmoid` (DPO): `−log σ(β·h)`;
//! - `ipo` (Azar et al. 2023): `(h − 1/(2β))²`, on log-probabilities averaged over the answer's
//!   tokens, as TRL computes it.
//!
//! `length_normalize: true` averages the log-probabilities over the answer's tokens for
//! `sigmoid` too. The reference's log-probabilities are computed once, before training
//! (TRL's `precompute_ref_log_probs`): the reference never changes.
//!
//! **Data.** Every pair a ranking implies (ties give none); `batch_size` counts ranked prompts,
//! all of whose pairs enter the step. A seeded `val_fraction` of the prompts is held out
//! ([`held_out`]) to measure pair accuracy: the share of held-out pairs whose implicit reward
//! `β·(log π − log π_ref)` is higher for the chosen response.
//!
//! **Logged** under TRL's names each step: `rewards/chosen`, `rewards/rejected` (the mean
//! implicit rewards), `rewards/accuracies`, `rewards/margins`, `logps/chosen`,
//! `logps/rejected`; at each evaluation `val_loss`, `val_accuracy`, `val_margin`.
//!
//! **Outputs** (port `model`, a chat model like `sft`'s, and `metrics`): the policy
//! (`model.safetensors`, `config.json`, `generation_config.json`, loadable by transformers),
//! the tokenizer with the chat template, `metrics.jsonl`, `loss.svg` and `data.json` (counts).
//! Checkpoints, resume and reproducibility work as in `pretrain`.

use candle_core::{DType, Device, Tensor, Var};
use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};

use crate::model::chat_template::ChatTokenizer;
use crate::model::export;
use crate::model::ops;
use crate::model::optim::Grads;
use crate::model::rng::Rng;
use crate::model::{Gpt, ModelError};
use crate::ports;
use crate::rl::preferences::{Example, Preferences};
use crate::rl::reference::load_reference;
use crate::rl::reward_model::answer_span;
use crate::rl::rollout::{answer_logits, layout, length_groups};
use crate::training::{
    self, EpochOrder, StepOut, Trainer, gradients_of, save_chat_model, training_params, write,
};

pub struct Dpo;

/// The preference loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// DPO's `−log σ(β·h)`.
    Sigmoid,
    /// IPO's `(h − 1/(2β))²` on length-averaged log-probabilities.
    Ipo,
}

training_params! {
    /// The loss and the held-out split, then the params every training kind has
    /// (`batch_size` counts ranked prompts).
    pub struct Params {
        /// β: how far the policy may move from the reference (higher: less far).
        #[serde(default = "defaults::beta")]
        pub beta: f64,
        #[serde(default = "defaults::loss")]
        pub loss: LossKind,
        /// Average each answer's log-probability over its tokens (always on for `ipo`).
        #[serde(default)]
        pub length_normalize: bool,
        /// The share of distinct prompts held out to measure pair accuracy (seeded split).
        #[serde(default = "defaults::val_fraction")]
        pub val_fraction: f64,
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    use super::LossKind;

    pub fn beta() -> f64 {
        0.1
    }
    pub fn loss() -> LossKind {
        LossKind::Sigmoid
    }
    pub fn val_fraction() -> f64 {
        0.1
    }
    pub fn batch_size() -> usize {
        8
    }
    pub fn steps() -> u64 {
        200
    }
    pub fn lr() -> f64 {
        1e-5
    }
    pub fn min_lr() -> f64 {
        0.0
    }
    pub fn warmup_steps() -> u64 {
        10
    }
    pub fn weight_decay() -> f64 {
        0.0
    }
    pub fn eval_every() -> u64 {
        50
    }
    pub fn checkpoint_every() -> u64 {
        50
    }
}

impl Params {
    /// Whether answers' log-probabilities are averaged over their tokens.
    fn averaged(&self) -> bool {
        self.length_normalize || self.loss == LossKind::Ipo
    }
}

impl Stage for Dpo {
    type Params = Params;
    const KIND: &'static str = "dpo";
    /// Why each bump: docs/kind-versions.md.
    const VERSION: u32 = 4;
    const ABOUT: &'static str = "train a chat model on every preference pair of a rankings artifact with DPO (or IPO), against a frozen reference";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::required("model", ports::MODEL),
        Port::required("rankings", ports::RANKINGS),
        Port::optional("reference", ports::MODEL),
    ]);
    const OUTPUTS: &'static [Port] =
        &[Port::required("model", ports::MODEL), Port::required("metrics", ports::METRICS)];

    fn settings() -> Vec<(&'static str, String)> {
        crate::model::settings()
    }

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = p.common_problems();
        if !(p.beta > 0.0 && p.beta.is_finite()) {
            out.push(
                ParamProblem::at(&["beta"], format!("`beta` must be positive, not {}", p.beta))
                    .help("TRL's default is 0.1; higher keeps the policy nearer the reference"),
            );
        }
        if !(0.0..1.0).contains(&p.val_fraction) {
            out.push(
                ParamProblem::at(
                    &["val_fraction"],
                    format!("`val_fraction` must be in [0, 1), not {}", p.val_fraction),
                )
                .help("0.1 holds out a tenth of the prompts"),
            );
        }
        out
    }

    fn resources(p: &Params) -> hone_engine::resources::Resources {
        training::resources(p.threads)
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        training::on_threads(p.threads, || train(p, cx))
    }
}

/// The loss of pairs from the log-probabilities (each (P)) of their chosen and rejected
/// answers under the policy (`pc`, `pr`) and the reference (`rc`, `rr`): the mean over pairs.
pub fn dpo_loss(
    pc: &Tensor,
    pr: &Tensor,
    rc: &Tensor,
    rr: &Tensor,
    beta: f64,
    kind: LossKind,
) -> candle_core::Result<Tensor> {
    let h = ((pc - rc)? - (pr - rr)?)?;
    match kind {
        LossKind::Sigmoid => {
            // −log σ(z) = softplus(−z) = relu(−z) + log(1 + exp(−|z|)), stable for any z.
            let z = (h * beta)?;
            (z.neg()?.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?.mean_all()
        }
        LossKind::Ipo => (h - 1.0 / (2.0 * beta))?.sqr()?.mean_all(),
    }
}

/// What the implicit rewards say about a set of pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairStats {
    pub pairs: usize,
    /// Pairs whose chosen answer has the higher implicit reward.
    pub right: usize,
    pub sum_chosen: f64,
    pub sum_rejected: f64,
    pub sum_logp_chosen: f64,
    pub sum_logp_rejected: f64,
    /// Σ of the pairs' losses.
    pub sum_loss: f64,
}

impl PairStats {
    /// Adds pairs given the policy's and the reference's log-probabilities of their answers.
    fn add(&mut self, policy: (f64, f64), reference: (f64, f64), beta: f64, kind: LossKind) {
        let (chosen, rejected) = (beta * (policy.0 - reference.0), beta * (policy.1 - reference.1));
        let h = (chosen - rejected) / beta;
        self.pairs += 1;
        self.right += usize::from(chosen > rejected);
        self.sum_chosen += chosen;
        self.sum_rejected += rejected;
        self.sum_logp_chosen += policy.0;
        self.sum_logp_rejected += policy.1;
        self.sum_loss += match kind {
            LossKind::Sigmoid => (-beta * h).max(0.0) + (-(beta * h).abs()).exp().ln_1p(),
            LossKind::Ipo => (h - 1.0 / (2.0 * beta)).powi(2),
        };
    }
    fn mean(&self, x: f64) -> f64 {
        x / self.pairs.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.mean(self.right as f64)
    }
    pub fn loss(&self) -> f64 {
        self.mean(self.sum_loss)
    }
    pub fn margin(&self) -> f64 {
        self.mean(self.sum_chosen - self.sum_rejected)
    }
    /// TRL's names.
    fn named(&self) -> Vec<(String, f64)> {
        vec![
            ("rewards/chosen".into(), self.mean(self.sum_chosen)),
            ("rewards/rejected".into(), self.mean(self.sum_rejected)),
            ("rewards/accuracies".into(), self.accuracy()),
            ("rewards/margins".into(), self.margin()),
            ("logps/chosen".into(), self.mean(self.sum_logp_chosen)),
            ("logps/rejected".into(), self.mean(self.sum_logp_rejected)),
        ]
    }
}

/// The log-probabilities (N) of the answers of `rows` (each starting at `starts[i]` and closed
/// by `im_end`) under `gpt`: summed over the answer's tokens, or averaged when `averaged`.
/// The rows run in at most two groups of similar length, each padded to its own longest, and
/// the LM head reads only the positions that predict an answer token.
fn answer_log_probs(
    gpt: &Gpt,
    rows: &[&Vec<u32>],
    starts: &[usize],
    pad: u32,
    im_end: u32,
    averaged: bool,
) -> Result<Tensor, ModelError> {
    let spans = rows
        .iter()
        .zip(starts)
        .map(|(r, &s)| answer_span(r, s, im_end))
        .collect::<Result<Vec<_>, _>>()?;
    let (order, ends) = length_groups(&spans.iter().map(|s| s.1 + 1).collect::<Vec<_>>(), 2);
    let dev = Device::Cpu;
    let mut sums = Vec::with_capacity(ends.len());
    let mut first = 0;
    for &end in &ends {
        let group = &order[first..end];
        let pairs: Vec<(&[u32], &[u32])> = group
            .iter()
            .map(|&i| (&rows[i][..spans[i].0], &rows[i][spans[i].0..=spans[i].1]))
            .collect();
        let (x, at, targets) = layout(&pairs, pad)?;
        let lp = ops::token_log_probs(&answer_logits(gpt, &x, &at, 1.0)?, &targets)?;
        // Each token's row in the group, and its weight (1, or 1/length when averaged).
        let (mut row, mut weight) = (Vec::new(), Vec::new());
        for (g, (_, answer)) in pairs.iter().enumerate() {
            let w = if averaged { 1.0 / answer.len() as f32 } else { 1.0 };
            row.extend(std::iter::repeat_n(g as u32, answer.len()));
            weight.extend(std::iter::repeat_n(w, answer.len()));
        }
        let lp = (lp * Tensor::new(weight, &dev)?)?;
        let zeros = Tensor::zeros(group.len(), lp.dtype(), &dev)?;
        sums.push(zeros.index_add(&Tensor::new(row, &dev)?, &lp, 0)?);
        first = end;
    }
    // Back in the rows' order: row `order[k]` is at `k`.
    let mut at = vec![0u32; order.len()];
    for (k, &i) in order.iter().enumerate() {
        at[i] = k as u32;
    }
    Ok(Tensor::cat(&sums, 0)?.index_select(&Tensor::new(at, &dev)?, 0)?)
}

/// A batch of examples as rows, their answers' starts and pairs (offset into the rows).
type Batch<'e> = (Vec<&'e Vec<u32>>, Vec<usize>, Vec<(usize, usize)>);

fn gather<'e>(examples: &[&'e Example]) -> Batch<'e> {
    let (mut rows, mut starts, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for e in examples {
        let base = rows.len();
        rows.extend(e.rows.iter());
        starts.extend(std::iter::repeat_n(e.start, e.rows.len()));
        pairs.extend(e.pairs.iter().map(|&(c, r)| (base + c, base + r)));
    }
    (rows, starts, pairs)
}

/// Ranked prompts with the reference's log-probabilities of their rows.
struct Scored {
    example: Example,
    reference: Vec<f32>,
}

/// The DPO loss on the rankings, in shuffled epochs of prompts.
struct PreferenceLoss<'a> {
    p: &'a Params,
    policy: Gpt,
    train: Vec<Scored>,
    val: Vec<Scored>,
    pad: u32,
    im_end: u32,
    order: EpochOrder,
}

#[derive(Serialize)]
struct EvalLine {
    step: u64,
    val_loss: f64,
    val_accuracy: f64,
    val_margin: f64,
}

impl PreferenceLoss<'_> {
    /// The policy's answer log-probabilities of `scored`'s rows, in order.
    fn log_probs(&self, scored: &[&Scored]) -> Result<Tensor, ModelError> {
        let examples: Vec<&Example> = scored.iter().map(|s| &s.example).collect();
        let (rows, starts, _) = gather(&examples);
        answer_log_probs(&self.policy, &rows, &starts, self.pad, self.im_end, self.p.averaged())
    }

    /// The loss of `batch`'s pairs as their share of a mean over `n` pairs, its gradients for
    /// `vars`, and the policy's log-probabilities of its rows.
    fn part(
        &self,
        batch: &[&Scored],
        n: usize,
        vars: &[(String, Var)],
    ) -> Result<(f64, Grads, Vec<f32>), StageError> {
        let mut pairs = 0;
        let policy = self.log_probs(batch)?;
        let (mut chosen, mut rejected, mut ref_c, mut ref_r) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut base = 0u32;
        for sc in batch {
            for &(c, r) in &sc.example.pairs {
                chosen.push(base + c as u32);
                rejected.push(base + r as u32);
                ref_c.push(sc.reference[c]);
                ref_r.push(sc.reference[r]);
                pairs += 1;
            }
            base += sc.reference.len() as u32;
        }
        let dev = Device::Cpu;
        let pick = |idx: Vec<u32>| policy.index_select(&Tensor::from_vec(idx, pairs, &dev)?, 0);
        let (pc, pr) =
            (pick(chosen).map_err(ModelError::from)?, pick(rejected).map_err(ModelError::from)?);
        let rc = Tensor::from_vec(ref_c, pairs, &dev).map_err(ModelError::from)?;
        let rr = Tensor::from_vec(ref_r, pairs, &dev).map_err(ModelError::from)?;
        let loss = dpo_loss(&pc, &pr, &rc, &rr, self.p.beta, self.p.loss)
            .and_then(|l| l * (pairs as f64 / n as f64))
            .map_err(ModelError::from)?;
        let (loss, grads) = gradients_of(&loss, vars)?;
        Ok((loss, grads, policy.to_vec1::<f32>().map_err(ModelError::from)?))
    }

    /// Adds the pairs of `scored` to `s`, given the policy's log-probabilities of its rows.
    fn add(&self, s: &mut PairStats, scored: &[&Scored], policy: &[f32]) {
        let mut at = 0;
        for sc in scored {
            let (pol, rf) = (&policy[at..at + sc.reference.len()], &sc.reference);
            for &(c, r) in &sc.example.pairs {
                let p = (f64::from(pol[c]), f64::from(pol[r]));
                s.add(p, (f64::from(rf[c]), f64::from(rf[r])), self.p.beta, self.p.loss);
            }
            at += sc.reference.len();
        }
    }
}

impl training::Objective for PreferenceLoss<'_> {
    /// The held-out pairs' statistics (none without held-out prompts).
    type Eval = Option<PairStats>;

    /// The batch in two halves of its prompts, each its own graph: each half's loss is its
    /// pairs' share of the batch's mean, so the halves' losses add up to the batch's and their
    /// gradients (summed first half first) are its gradients. The halves run at once on two
    /// threads (one after the other with gradient checkpointing, whose gradient stash is
    /// shared): the same bits either way.
    fn step(
        &mut self,
        vars: &[(String, Var)],
        step: u64,
        _rng: &mut Rng,
    ) -> Result<StepOut, StageError> {
        let b = self.p.batch_size as u64;
        let batch: Vec<&Scored> =
            (0..b).map(|i| &self.train[self.order.at(step * b + i)]).collect();
        let n: usize = batch.iter().map(|sc| sc.example.pairs.len()).sum();
        let (first, second) = batch.split_at(batch.len().div_ceil(2));
        let this = &*self;
        let (a, b) = if second.is_empty() {
            (this.part(first, n, vars), None)
        } else if self.p.gradient_checkpointing {
            (this.part(first, n, vars), Some(this.part(second, n, vars)))
        } else {
            let (a, b) = rayon::join(|| this.part(first, n, vars), || this.part(second, n, vars));
            (a, Some(b))
        };
        let (mut loss, mut grads, mut values) = a?;
        if let Some(b) = b {
            let (loss_b, grads_b, values_b) = b?;
            loss += loss_b;
            grads.add(&grads_b);
            values.extend(values_b);
        }
        let mut s = PairStats::default();
        self.add(&mut s, &batch, &values);
        let tokens = batch.iter().flat_map(|sc| &sc.example.rows).map(Vec::len).sum();
        Ok(StepOut { loss, grads, tokens, stats: s.named() })
    }

    fn evaluate(
        &mut self,
        step: u64,
        cx: &RunCx,
    ) -> Result<(Option<String>, Option<PairStats>), StageError> {
        if self.val.is_empty() {
            return Ok((None, None));
        }
        let mut s = PairStats::default();
        let val: Vec<&Scored> = self.val.iter().collect();
        for chunk in val.chunks(self.p.batch_size) {
            cx.check_cancelled()?;
            let values = self.log_probs(chunk)?.to_vec1::<f32>().map_err(ModelError::from)?;
            self.add(&mut s, chunk, &values);
        }
        let line = EvalLine {
            step,
            val_loss: s.loss(),
            val_accuracy: s.accuracy(),
            val_margin: s.margin(),
        };
        if !line.val_loss.is_finite() {
            return Ok((None, Some(s)));
        }
        cx.metric("val_loss", line.val_loss);
        cx.metric("val_accuracy", line.val_accuracy);
        Ok((Some(serde_json::to_string(&line).expect("finite numbers serialise")), Some(s)))
    }
}

fn train(p: &Params, cx: &RunCx) -> Result<(), StageError> {
    let model_dir = cx.required_input("model")?;
    let loaded = export::load(model_dir, DType::F32)
        .map_err(|e| StageError::msg(format!("input `model`: {e}")))?;
    let mut cfg = loaded.config.clone();
    let tok_path = model_dir.join(export::TOKENIZER);
    let tok = ChatTokenizer::from_file(&tok_path, cfg.vocab_size)
        .map_err(|e| StageError::msg(format!("input `model`: {e}")))?;
    let Preferences { train: train_set, val: val_set, counts, .. } = Preferences::read(
        cx.required_input("rankings")?,
        &tok,
        cfg.block_size,
        p.val_fraction,
        cx,
    )?;

    // The reference's log-probabilities, once: it never changes.
    let frozen = load_reference(cx, &loaded)?;
    let (pad, im_end) = (tok.end_of_text, tok.im_end);
    let score = |set: Vec<Example>| -> Result<Vec<Scored>, StageError> {
        let mut lp = Vec::new();
        for chunk in set.chunks(p.batch_size) {
            cx.check_cancelled()?;
            let refs: Vec<&Example> = chunk.iter().collect();
            let (rows, starts, _) = gather(&refs);
            lp.extend(
                answer_log_probs(&frozen, &rows, &starts, pad, im_end, p.averaged())?
                    .to_vec1::<f32>()
                    .map_err(ModelError::from)?,
            );
        }
        let mut lp = lp.into_iter();
        Ok(set
            .into_iter()
            .map(|example| {
                let reference = lp.by_ref().take(example.rows.len()).collect();
                Scored { example, reference }
            })
            .collect())
    };
    let (train_set, val_set) = (score(train_set)?, score(val_set)?);
    drop(frozen);

    let common = p.common();
    let params = loaded.params;
    let mut trainer = Trainer::new(
        cx,
        vec![common.group("model", params.vars())],
        training::fingerprint::<Dpo>(p, cx, &cfg),
    )?;
    let mut objective = PreferenceLoss {
        p,
        policy: loaded.model.with_recompute(p.gradient_checkpointing),
        order: EpochOrder::new(cx.seed, train_set.len()),
        train: train_set,
        val: val_set,
        pad,
        im_end,
    };
    tracing::info!(
        train_pairs = counts.train_pairs,
        val_pairs = counts.val_pairs,
        from_step = trainer.step,
        steps = p.steps,
        "training with DPO"
    );
    let done = trainer.run(&common.settings(), &mut objective)?;
    cx.metric("loss", done.loss);
    if let Some(s) = done.eval {
        cx.metric("val_margin", s.margin());
    }

    let out = cx.out_dir;
    cfg.dropout = 0.0;
    save_chat_model(out, &cfg, &params, &tok, model_dir, trainer.history())?;
    write(out, "data.json", &(serde_json::to_string_pretty(&counts).expect("plain data") + "\n"))
}

#[cfg(test)]
mod tests;
