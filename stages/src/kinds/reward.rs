//! `reward`: a reward model learnt from rankings: the SFT model's backbone (as InstructGPT
//! initialises it) and a scalar head, trained on every preference pair the rankings imply.
//!
//! ```yaml
//! reward:
//!   uses: reward
//!   inputs: { model: sft, rankings: rank }   # a chat model, a `rank` stage (rankings.jsonl)
//!   with: { steps: 200, batch_size: 8, lr: 1e-4 }
//! ```
//!
//! **Scores.** A response is scored as the conversation `sft` trains on (the prompt as the
//! user's message, the response as the assistant's, in ChatML) by the head at its last token:
//! `r = w · h_last`, with `w` (1, n_embd) initialised N(0, 1/(n_embd + 1)) and no bias.
//! With `likelihood: α` (default 0) the score adds `α · mean log p(answer)`: the mean
//! log-probability of the answer's tokens (and its closing `<|im_end|>`) under the reward
//! model's own backbone and tied LM head, trained with it:
//! `r = w · h_last + α · (1/n) Σ_t log p(y_t | prompt, y_<t)`.
//! Why: a head read at the last token must learn to judge "6 plus 11 is 16." wrong from a
//! few thousand pairs, which a small model does not (on tinyworld it ranked 60% of held-out
//! pairs right); the SFT model already knows that "17" follows "6 plus 11 is" at the position
//! where it writes it, and its log-probabilities alone rank 80% of the pairs right before any
//! training. The pairwise loss then trains the backbone through both terms (the
//! length-normalised likelihood as an implicit reward is SimPO's, Meng et al. 2024).
//! A response whose conversation is longer than the model's context is left out of its
//! ranking (counted in `data.json` as `too_long`); a ranking left with no pair is skipped.
//!
//! **Loss.** A step takes `batch_size` ranked prompts (seeded epochs, as `sft`), scores each of
//! their responses once, and takes every pair a ranking implies (all K(K-1)/2 of a prompt in the
//! same batch; ties give none) with `-log σ(r_better - r_worse)`, averaged over a prompt's pairs
//! and then over the prompts (InstructGPT's `1/C(K,2)` weighting: each prompt counts once).
//! `center_rewards: c` adds TRL's `c · mean((r_better + r_worse)²)`, which keeps scores near 0.
//!
//! **Held-out pairs.** A seeded `val_fraction` of the distinct prompts (at least one) is held
//! out; every `eval_every` steps and at the end: `val_loss`, `val_accuracy` (the share of
//! held-out pairs ranked right), `val_margin` (mean `r_better - r_worse`), `val_chosen` and
//! `val_rejected` (mean scores). Each step logs `loss`, `accuracy`, `margin`, `rewards/chosen`
//! and `rewards/rejected` (TRL's reward-trainer names).
//!
//! **Outputs** (port `model`, type `reward-model`; and `metrics`): `model.safetensors` and
//! `config.json` that transformers loads as `GPT2ForSequenceClassification` (`num_labels: 1`,
//! `score.weight`, `pad_token_id`) giving the same scores ([`crate::model::export::save_reward`]),
//! the tokenizer with the chat template, `metrics.jsonl`, `loss.svg`, `data.json` (counts),
//! `val_pairs.jsonl` (each held-out pair, better answer first, with the final scores: the
//! pairs it ranks wrong are those with `better_score <= worse_score`) and
//! `reward.json`: the mean and standard deviation of the final model's scores on every response
//! of the rankings (the SFT model's own samples), so PPO can normalise rewards.
//! Checkpoints, resume and reproducibility work as in `pretrain`.

use candle_core::{DType, Device, Tensor, Var};
use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::Serialize;

use crate::data::formats::PromptText;
use crate::model::chat_template::{self, ChatTokenizer};
use crate::model::export;
use crate::model::heads::ScalarHead;
use crate::model::ops::Dropout;
use crate::model::rng::Rng;
use crate::model::{ModelError, ParamStore};
use crate::ports;
use crate::rl::preferences::{Example, Preferences};
use crate::rl::reward_model::{Likelihood, REWARD_JSON, RewardModel};
use crate::training::{
    self, EpochOrder, StepOut, Trainer, gradients_of, loss_svg, training_params, write,
};

pub struct Reward;

training_params! {
    /// The held-out split and the loss, then the params every training kind has
    /// (`batch_size` counts ranked prompts).
    pub struct Params {
        /// The share of distinct prompts held out to measure pair accuracy (seeded split).
        #[serde(default = "defaults::val_fraction")]
        pub val_fraction: f64,
        /// TRL's `center_rewards_coefficient`: adds `c · mean((r_better + r_worse)²)`; 0: off.
        #[serde(default)]
        pub center_rewards: f64,
        /// The backbone's learning rate as a multiple of `lr` (the head's); 0 freezes the
        /// backbone, so only the head learns (a linear probe of the SFT model's features).
        #[serde(default = "defaults::backbone_lr")]
        pub backbone_lr: f64,
        /// The weight α of the answer's mean log-probability in the score; 0: the head alone
        /// (InstructGPT's reward model).
        #[serde(default)]
        pub likelihood: f64,
    }
}

mod defaults {
    pub fn val_fraction() -> f64 {
        0.1
    }
    pub fn backbone_lr() -> f64 {
        1.0
    }
    pub fn batch_size() -> usize {
        8
    }
    pub fn steps() -> u64 {
        200
    }
    pub fn lr() -> f64 {
        1e-4
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

/// The held-out pairs with the final model's scores, to see which it ranks wrong.
pub const VAL_PAIRS: &str = "val_pairs.jsonl";

/// A line of [`VAL_PAIRS`].
#[derive(Serialize)]
struct ValPair<'a> {
    prompt: &'a PromptText,
    better: &'a str,
    worse: &'a str,
    better_score: f64,
    worse_score: f64,
}

impl Stage for Reward {
    type Params = Params;
    const KIND: &'static str = "reward";
    /// Why each bump: docs/kind-versions.md.
    const VERSION: u32 = 4;
    const ABOUT: &'static str = "train a reward model (the SFT model + a scalar head) on every preference pair of a rankings artifact";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::required("model", ports::MODEL),
        Port::required("rankings", ports::RANKINGS),
    ]);
    const OUTPUTS: &'static [Port] =
        &[Port::required("model", ports::REWARD_MODEL), Port::required("metrics", ports::METRICS)];

    fn settings() -> Vec<(&'static str, String)> {
        crate::model::settings()
    }

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = p.common_problems();
        if !(0.0..1.0).contains(&p.val_fraction) {
            out.push(
                ParamProblem::at(
                    &["val_fraction"],
                    format!("`val_fraction` must be in [0, 1), not {}", p.val_fraction),
                )
                .help("0.1 holds out a tenth of the prompts".to_string()),
            );
        }
        if !(p.backbone_lr >= 0.0 && p.backbone_lr.is_finite()) {
            out.push(
                ParamProblem::at(
                    &["backbone_lr"],
                    format!("`backbone_lr` must be 0 or more, not {}", p.backbone_lr),
                )
                .help("1 trains the backbone at `lr`, 0 freezes it".to_string()),
            );
        }
        if !(p.likelihood >= 0.0 && p.likelihood.is_finite()) {
            out.push(
                ParamProblem::at(
                    &["likelihood"],
                    format!("`likelihood` must be 0 or more, not {}", p.likelihood),
                )
                .help(
                    "0 scores with the head alone; 1 to 10 adds the answer's mean log-probability"
                        .to_string(),
                ),
            );
        }
        if !(p.center_rewards >= 0.0 && p.center_rewards.is_finite()) {
            out.push(
                ParamProblem::at(
                    &["center_rewards"],
                    format!("`center_rewards` must be 0 or more, not {}", p.center_rewards),
                )
                .help("TRL suggests 0.01; 0 turns it off".to_string()),
            );
        }
        out
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        training::on_threads(p.threads, || train(p, cx))
    }
}

/// `-log σ(r_better - r_worse)` per pair, weighted (weights summing to 1: each prompt's pairs
/// share its weight), plus `center · mean((r_better + r_worse)²)`: the loss of a batch whose
/// responses scored `scores` (N).
pub fn pairwise_loss(
    scores: &Tensor,
    pairs: &[(usize, usize)],
    weights: &[f64],
    center: f64,
) -> candle_core::Result<Tensor> {
    let dev = scores.device();
    let idx = |f: fn(&(usize, usize)) -> usize| {
        Tensor::new(pairs.iter().map(|p| f(p) as u32).collect::<Vec<_>>(), dev)
    };
    let better = scores.index_select(&idx(|p| p.0)?, 0)?;
    let worse = scores.index_select(&idx(|p| p.1)?, 0)?;
    let d = (&better - &worse)?;
    // -log σ(d) = softplus(-d) = relu(-d) + log(1 + exp(-|d|)), stable for any d.
    let nll = (d.neg()?.relu()? + ((d.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    let w = Tensor::new(weights, dev)?.to_dtype(scores.dtype())?;
    let loss = (nll * w)?.sum_all()?;
    if center > 0.0 {
        return loss + ((better + worse)?.sqr()?.mean_all()? * center)?;
    }
    Ok(loss)
}

/// What a batch's scores say about its pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PairStats {
    pub pairs: usize,
    /// Pairs whose better response scored higher.
    pub right: usize,
    pub sum_better: f64,
    pub sum_worse: f64,
    /// Σ weight · -log σ(d), as in [`pairwise_loss`] without centring.
    pub weighted_nll: f64,
}

impl PairStats {
    fn add(&mut self, scores: &[f32], pairs: &[(usize, usize)], weight: f64) {
        for &(b, w) in pairs {
            let (rb, rw) = (f64::from(scores[b]), f64::from(scores[w]));
            let d = rb - rw;
            self.pairs += 1;
            self.right += usize::from(d > 0.0);
            self.sum_better += rb;
            self.sum_worse += rw;
            self.weighted_nll += weight * ((-d).max(0.0) + (-d.abs()).exp().ln_1p());
        }
    }
    pub fn accuracy(&self) -> f64 {
        self.right as f64 / self.pairs.max(1) as f64
    }
    pub fn chosen(&self) -> f64 {
        self.sum_better / self.pairs.max(1) as f64
    }
    pub fn rejected(&self) -> f64 {
        self.sum_worse / self.pairs.max(1) as f64
    }
}

/// The scores of every row of `examples`, in order, without dropout.
fn scores_of(model: &RewardModel, examples: &[Example], pad: u32) -> Result<Vec<f32>, ModelError> {
    let rows: Vec<&Vec<u32>> = examples.iter().flat_map(|e| &e.rows).collect();
    let starts: Vec<usize> =
        examples.iter().flat_map(|e| std::iter::repeat_n(e.start, e.rows.len())).collect();
    Ok(model.scores(&rows, &starts, pad, &mut Dropout::off())?.to_vec1::<f32>()?)
}

/// A batch of examples as rows, their answers' starts, pairs (offset into the rows) and pair
/// weights.
type Batch<'e> = (Vec<&'e Vec<u32>>, Vec<usize>, Vec<(usize, usize)>, Vec<f64>);

fn gather<'e>(examples: &[&'e Example]) -> Batch<'e> {
    let (mut rows, mut starts, mut pairs, mut weights) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in examples {
        let base = rows.len();
        rows.extend(e.rows.iter());
        starts.extend(std::iter::repeat_n(e.start, e.rows.len()));
        let w = 1.0 / (examples.len() * e.pairs.len()) as f64;
        for &(b, r) in &e.pairs {
            pairs.push((base + b, base + r));
            weights.push(w);
        }
    }
    (rows, starts, pairs, weights)
}

/// The pairwise loss on the rankings, in shuffled epochs of prompts.
struct PairLoss<'a> {
    p: &'a Params,
    model: RewardModel,
    train: Vec<Example>,
    val: Vec<Example>,
    pad: u32,
    order: EpochOrder,
}

#[derive(Serialize)]
struct EvalLine {
    step: u64,
    val_loss: f64,
    val_accuracy: f64,
    val_margin: f64,
    val_chosen: f64,
    val_rejected: f64,
}

impl training::Objective for PairLoss<'_> {
    /// The held-out pairs' statistics (none without held-out prompts).
    type Eval = Option<PairStats>;

    fn step(
        &mut self,
        vars: &[(String, Var)],
        step: u64,
        rng: &mut Rng,
    ) -> Result<StepOut, StageError> {
        let b = self.p.batch_size as u64;
        let idx: Vec<usize> = (0..b).map(|i| self.order.at(step * b + i)).collect();
        let examples: Vec<&Example> = idx.iter().map(|&i| &self.train[i]).collect();
        let (rows, starts, pairs, weights) = gather(&examples);
        let scores = self.model.scores(
            &rows,
            &starts,
            self.pad,
            &mut Dropout::train(self.p.dropout, rng),
        )?;
        let loss = pairwise_loss(&scores, &pairs, &weights, self.p.center_rewards)
            .map_err(ModelError::from)?;
        let (loss, grads) = gradients_of(&loss, vars)?;
        let values = scores.to_vec1::<f32>().map_err(ModelError::from)?;
        let mut s = PairStats::default();
        s.add(&values, &pairs, 0.0);
        let stats = vec![
            ("accuracy".to_string(), s.accuracy()),
            ("margin".to_string(), s.chosen() - s.rejected()),
            ("rewards/chosen".to_string(), s.chosen()),
            ("rewards/rejected".to_string(), s.rejected()),
        ];
        Ok(StepOut { loss, grads, tokens: rows.iter().map(|r| r.len()).sum(), stats })
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
        let n = self.val.len();
        for chunk in self.val.chunks(self.p.batch_size) {
            cx.check_cancelled()?;
            let values = scores_of(&self.model, chunk, self.pad)?;
            let mut at = 0;
            for e in chunk {
                s.add(&values[at..at + e.rows.len()], &e.pairs, 1.0 / (n * e.pairs.len()) as f64);
                at += e.rows.len();
            }
        }
        let line = EvalLine {
            step,
            val_loss: s.weighted_nll,
            val_accuracy: s.accuracy(),
            val_margin: s.chosen() - s.rejected(),
            val_chosen: s.chosen(),
            val_rejected: s.rejected(),
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
    let Preferences { rankings: all, train: train_set, val: val_set, val_rankings, counts } =
        Preferences::read(
            cx.required_input("rankings")?,
            &tok,
            cfg.block_size,
            p.val_fraction,
            cx,
        )?;

    let head_params = ParamStore::seeded(cx.seed);
    let head = ScalarHead::new(
        cfg.n_embd,
        head_params.var_builder(DType::F32, &Device::Cpu).pp(export::SCORE),
    )
    .map_err(ModelError::from)?;
    let backbone = loaded.params;
    let common = p.common();
    // One group at `lr`; with another `backbone_lr`, the head's group first (its rate is
    // logged as `lr`) and the backbone's (`lr/backbone`), or the head alone when frozen.
    let groups = if p.backbone_lr == 1.0 {
        vec![common.group("model", backbone.vars().into_iter().chain(head_params.vars()).collect())]
    } else {
        let mut groups = vec![common.group("head", head_params.vars())];
        if p.backbone_lr > 0.0 {
            let mut g = common.group("backbone", backbone.vars());
            (g.schedule.lr, g.schedule.min_lr) = (p.lr * p.backbone_lr, p.min_lr * p.backbone_lr);
            groups.push(g);
        }
        groups
    };
    let mut trainer = Trainer::new(cx, groups, training::fingerprint::<Reward>(p, cx, &cfg))?;
    let order = EpochOrder::new(cx.seed, train_set.len());
    let likelihood = Likelihood::new(p.likelihood, tok.im_end);
    let mut objective = PairLoss {
        p,
        model: RewardModel {
            gpt: loaded.model.with_recompute(p.gradient_checkpointing),
            head,
            likelihood,
        },
        train: train_set,
        val: val_set,
        pad: tok.end_of_text,
        order,
    };
    tracing::info!(
        train_pairs = counts.train_pairs,
        val_pairs = counts.val_pairs,
        from_step = trainer.step,
        steps = p.steps,
        "training a reward model"
    );

    let done = trainer.run(&common.settings(), &mut objective)?;
    cx.metric("loss", done.loss);
    if let Some(s) = done.eval {
        cx.metric("val_margin", s.chosen() - s.rejected());
    }

    // The scores of every response the rankings hold (the reference policy's samples).
    let mut scores = Vec::new();
    for chunk in objective.train.chunks(p.batch_size).chain(objective.val.chunks(p.batch_size)) {
        cx.check_cancelled()?;
        scores
            .extend(scores_of(&objective.model, chunk, objective.pad)?.into_iter().map(f64::from));
    }
    // The held-out pairs as the final model scores them (the val ones are the last scores).
    let mut val_pairs = String::new();
    let mut at = scores.len() - objective.val.iter().map(|e| e.rows.len()).sum::<usize>();
    for (e, r) in objective.val.iter().zip(val_rankings.iter().map(|&i| &all[i])) {
        for &(b, w) in &e.pairs {
            let line = ValPair {
                prompt: &r.prompt,
                better: &r.responses[e.responses[b]],
                worse: &r.responses[e.responses[w]],
                better_score: scores[at + b],
                worse_score: scores[at + w],
            };
            val_pairs.push_str(&(serde_json::to_string(&line).expect("plain data") + "\n"));
        }
        at += e.rows.len();
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / scores.len() as f64).sqrt();
    cx.metric("reference_mean", mean);
    let reward_json = serde_json::json!({ "reference_mean": mean, "reference_std": std, "responses": scores.len() });

    let out = cx.out_dir;
    cfg.dropout = 0.0;
    let params: Vec<(String, Tensor)> =
        backbone.snapshot().into_iter().chain(head_params.snapshot()).collect();
    export::save_reward_from(
        out,
        &cfg,
        &params,
        tok.end_of_text,
        Some(tok.im_end),
        p.likelihood,
        tok_path.parent(),
    )?;
    chat_template::write_tokenizer(out, &tok_path, cfg.block_size)?;
    write(out, "metrics.jsonl", trainer.history())?;
    write(out, "loss.svg", &loss_svg(trainer.history()))?;
    write(out, "data.json", &(serde_json::to_string_pretty(&counts).expect("plain data") + "\n"))?;
    write(out, VAL_PAIRS, &val_pairs)?;
    write(
        out,
        REWARD_JSON,
        &(serde_json::to_string_pretty(&reward_json).expect("plain data") + "\n"),
    )
}

#[cfg(test)]
mod tests;
