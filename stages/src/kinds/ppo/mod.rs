//! `ppo`: the recipe's last step, PPO against a reward model (InstructGPT's RLHF).
//!
//! ```yaml
//! ppo:
//!   uses: ppo
//!   inputs: { model: sft, reward: reward, prompts: prompts }  # a chat model, a reward model, prompt records
//!   with: { rollouts: 64, batch_size: 16, epochs: 4, steps: 640, lr: 3e-5 }
//! ```
//!
//! How it works (the models, an iteration's five steps, what is logged, when it stops,
//! checkpoints and outputs): `docs/kinds/ppo.md`. The arithmetic is in [`math`], each piece
//! tested by hand.

pub mod math;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};

use crate::data::corpus::Split;
use crate::model::chat_template::ChatTokenizer;
use crate::model::checkpoint::ObjectiveState;
use crate::model::export;
use crate::model::heads::ScalarHead;
use crate::model::ops::{self, Dropout};
use crate::model::optim::LrSchedule;
use crate::model::rng::Rng;
use crate::model::sample;
use crate::model::{Gpt, GptConfig, ModelError, ParamStore};
use crate::ports;
use crate::rl::reward_model::{self, RewardModel};
use crate::rl::rollout::{
    Prompt, answer_logits, encode_prompts, err, held_out, layout, length_groups, minibatch_order,
    sample_answers, split, to_f64, unpermute,
};
use crate::rl::scorer::{Scorer, load_reward};
use crate::training::{
    self, EpochOrder, ParamGroup, StepOut, Trainer, save_chat_model, training_params, write,
};
use math::{KlControl, KlEstimator};

pub struct Ppo;

/// What the reward model's raw score `r` becomes before the KL penalty is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreScale {
    /// `r` itself.
    Raw,
    /// σ(r), the probability-like score in (0, 1).
    Sigmoid,
    /// (r − mean)/std over the SFT model's answers the reward model was trained on
    /// (`reward.json` of the `reward` stage): OpenAI's reward normalisation.
    Normalized,
}

training_params! {
    /// PPO's own params, then the params every training kind has (`batch_size` is the
    /// minibatch: answers per optimizer step; `steps` a whole number of iterations).
    pub struct Params {
        /// Answers sampled per iteration (one per prompt); a multiple of `batch_size`.
        #[serde(default = "defaults::rollouts")]
        pub rollouts: usize,
        /// Passes over an iteration's answers.
        #[serde(default = "defaults::epochs")]
        pub epochs: usize,
        #[serde(default = "defaults::max_new_tokens")]
        pub max_new_tokens: usize,
        /// Sampling temperature, used for every log-prob too (rollout, reference, update).
        #[serde(default = "defaults::temperature")]
        pub temperature: f64,
        /// β, the weight of the KL penalty (its start value when `kl_target` is set).
        #[serde(default = "defaults::kl_coef")]
        pub kl_coef: f64,
        /// Adapt β toward this KL per answer (nats); none: β stays `kl_coef`.
        #[serde(default)]
        pub kl_target: Option<f64>,
        /// The adaptive controller's horizon, in answers.
        #[serde(default = "defaults::kl_horizon")]
        pub kl_horizon: f64,
        #[serde(default)]
        pub kl_estimator: KlEstimator,
        /// Stop when the mean KL per answer passes this (a blow-up).
        #[serde(default = "defaults::max_kl")]
        pub max_kl: f64,
        #[serde(default = "defaults::gamma")]
        pub gamma: f64,
        #[serde(default = "defaults::lam")]
        pub lam: f64,
        /// The policy ratio's clip range ε.
        #[serde(default = "defaults::clip")]
        pub clip: f64,
        /// The value prediction's clip range around its rollout value.
        #[serde(default = "defaults::clip")]
        pub value_clip: f64,
        #[serde(default = "defaults::vf_coef")]
        pub vf_coef: f64,
        #[serde(default)]
        pub entropy_coef: f64,
        /// The critic's peak learning rate; none: `lr`.
        #[serde(default)]
        pub value_lr: Option<f64>,
        #[serde(default = "defaults::score")]
        pub score: ScoreScale,
        /// Clip the (scaled) score to ±this; none: no clipping.
        #[serde(default)]
        pub score_clip: Option<f64>,
        #[serde(default)]
        pub whiten_rewards: bool,
        /// Subtracted from the score of an answer that reaches `max_new_tokens` unfinished.
        #[serde(default = "defaults::missing_eos_penalty")]
        pub missing_eos_penalty: f64,
        /// Held-out prompts (the `val` split) answered greedily at each evaluation; 0: none.
        #[serde(default = "defaults::eval_prompts")]
        pub eval_prompts: usize,
        /// Score with a toy rule instead of a reward model: +1 when the answer contains this
        /// text, else 0 (then `reward` is not wired, and the critic starts from the policy).
        #[serde(default)]
        pub reward_contains: Option<String>,
    }
}

mod defaults {
    use super::ScoreScale;
    pub fn rollouts() -> usize {
        64
    }
    pub fn epochs() -> usize {
        4
    }
    pub fn max_new_tokens() -> usize {
        24
    }
    pub fn temperature() -> f64 {
        0.7
    }
    pub fn kl_coef() -> f64 {
        0.05
    }
    pub fn kl_horizon() -> f64 {
        10_000.0
    }
    pub fn max_kl() -> f64 {
        30.0
    }
    pub fn gamma() -> f64 {
        1.0
    }
    pub fn lam() -> f64 {
        0.95
    }
    pub fn clip() -> f64 {
        0.2
    }
    pub fn vf_coef() -> f64 {
        0.1
    }
    pub fn score() -> ScoreScale {
        ScoreScale::Raw
    }
    pub fn missing_eos_penalty() -> f64 {
        1.0
    }
    pub fn eval_prompts() -> usize {
        64
    }
    pub fn batch_size() -> usize {
        16
    }
    pub fn steps() -> u64 {
        640
    }
    pub fn lr() -> f64 {
        3e-5
    }
    pub fn min_lr() -> f64 {
        3e-6
    }
    pub fn warmup_steps() -> u64 {
        0
    }
    pub fn weight_decay() -> f64 {
        0.0
    }
    pub fn eval_every() -> u64 {
        160
    }
    pub fn checkpoint_every() -> u64 {
        64
    }
}

impl Params {
    fn steps_per_iteration(&self) -> u64 {
        (self.epochs * (self.rollouts / self.batch_size.max(1))) as u64
    }
}

impl Stage for Ppo {
    type Params = Params;
    const KIND: &'static str = "ppo";
    /// Why each bump: docs/kind-versions.md.
    const VERSION: u32 = 5;
    const ABOUT: &'static str = "optimise a chat model against a reward model with PPO (KL penalty to the frozen SFT model, GAE, clipped losses)";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::required("model", ports::MODEL),
        Port::optional("reward", ports::REWARD_MODEL),
        Port::required("prompts", ports::PROMPTS),
    ]);
    const OUTPUTS: &'static [Port] =
        &[Port::required("model", ports::MODEL), Port::required("metrics", ports::METRICS)];

    /// The reference, critic, reward model and update run the model ops (`HONE_PLAIN_OPS`).
    fn settings() -> Vec<(&'static str, String)> {
        crate::model::settings()
    }

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = p.common_problems();
        let mut need = |ok: bool, field: &str, msg: String, help: &str| {
            if !ok {
                out.push(ParamProblem::at(&[field], msg).help(help.to_string()));
            }
        };
        need(
            p.rollouts > 0,
            "rollouts",
            "`rollouts` must be at least 1".into(),
            "TRL samples 64 answers per iteration",
        );
        need(
            p.batch_size == 0 || p.rollouts.is_multiple_of(p.batch_size),
            "rollouts",
            format!(
                "`rollouts` ({}) must be a multiple of `batch_size` ({})",
                p.rollouts, p.batch_size
            ),
            "each iteration's answers are split into minibatches of `batch_size`",
        );
        need(p.epochs > 0, "epochs", "`epochs` must be at least 1".into(), "OpenAI uses 4");
        let per = p.steps_per_iteration();
        need(
            per == 0 || p.steps.is_multiple_of(per),
            "steps",
            format!(
                "`steps` ({}) must be a whole number of iterations of {per} steps (epochs {} × rollouts {} / batch_size {})",
                p.steps, p.epochs, p.rollouts, p.batch_size
            ),
            &format!("try {}", (p.steps / per.max(1)).max(1) * per),
        );
        need(
            p.max_new_tokens > 0,
            "max_new_tokens",
            "`max_new_tokens` must be at least 1".into(),
            "tinyworld answers take about 20 tokens",
        );
        need(
            p.temperature > 0.0 && p.temperature.is_finite(),
            "temperature",
            format!("`temperature` must be positive, not {}", p.temperature),
            "PPO samples; TRL uses 0.7",
        );
        need(
            p.kl_coef >= 0.0 && p.kl_coef.is_finite(),
            "kl_coef",
            format!("`kl_coef` must not be negative, not {}", p.kl_coef),
            "TRL uses 0.05",
        );
        if let Some(t) = p.kl_target {
            need(
                t > 0.0 && t.is_finite(),
                "kl_target",
                format!("`kl_target` must be positive, not {t}"),
                "OpenAI aims at 6 nats",
            );
            need(
                p.kl_coef > 0.0,
                "kl_coef",
                "an adaptive β needs a positive `kl_coef` to start from".into(),
                "OpenAI starts at 0.15",
            );
        }
        need(
            p.kl_horizon > 0.0,
            "kl_horizon",
            format!("`kl_horizon` must be positive, not {}", p.kl_horizon),
            "OpenAI uses 10000",
        );
        need(
            p.max_kl > 0.0,
            "max_kl",
            format!("`max_kl` must be positive, not {}", p.max_kl),
            "the KL per answer at which the run stops as a blow-up",
        );
        need(
            (0.0..=1.0).contains(&p.gamma),
            "gamma",
            format!("`gamma` must be in [0, 1], not {}", p.gamma),
            "1 for language models",
        );
        need(
            (0.0..=1.0).contains(&p.lam),
            "lam",
            format!("`lam` must be in [0, 1], not {}", p.lam),
            "0.95 as TRL",
        );
        need(
            p.clip > 0.0,
            "clip",
            format!("`clip` must be positive, not {}", p.clip),
            "0.2 as the PPO paper",
        );
        need(
            p.value_clip > 0.0,
            "value_clip",
            format!("`value_clip` must be positive, not {}", p.value_clip),
            "0.2 as TRL",
        );
        need(
            p.vf_coef >= 0.0,
            "vf_coef",
            format!("`vf_coef` must not be negative, not {}", p.vf_coef),
            "0.1 as TRL",
        );
        need(
            p.entropy_coef >= 0.0,
            "entropy_coef",
            format!("`entropy_coef` must not be negative, not {}", p.entropy_coef),
            "0 turns the bonus off",
        );
        if let Some(v) = p.value_lr {
            need(
                v > 0.0 && v.is_finite(),
                "value_lr",
                format!("`value_lr` must be positive, not {v}"),
                "leave it out to use `lr`",
            );
        }
        if let Some(c) = p.score_clip {
            need(
                c > 0.0,
                "score_clip",
                format!("`score_clip` must be positive, not {c}"),
                "DeepSpeed-Chat clips at 5",
            );
        }
        need(
            p.missing_eos_penalty >= 0.0,
            "missing_eos_penalty",
            format!("`missing_eos_penalty` must not be negative, not {}", p.missing_eos_penalty),
            "0 turns it off; TRL suggests 1",
        );
        if let Some(t) = &p.reward_contains {
            need(
                !t.is_empty(),
                "reward_contains",
                "`reward_contains` is empty".into(),
                "give the text an answer is rewarded for containing",
            );
        }
        out
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        training::on_threads(p.threads, || train(p, cx))
    }
}

// ---------------------------------------------------------------------------------------
// Models and scoring

/// One answer of the rollout being trained on, and what the update needs of it.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    prompt: usize,
    /// The sampled tokens (the stop token last when it ended).
    tokens: Vec<u32>,
    old_logp: Vec<f64>,
    old_values: Vec<f64>,
    advantages: Vec<f64>,
    returns: Vec<f64>,
}

/// The rollout of one iteration and its minibatch statistics so far.
#[derive(Clone, Debug, PartialEq)]
struct Rollout {
    iteration: u64,
    answers: Vec<Answer>,
    /// Sums over the minibatches so far, in [`MB_STATS`] order, then their count.
    sums: Vec<f64>,
}

/// The minibatch statistics averaged over an iteration (TRL's `_avg` names).
const MB_STATS: [&str; 7] = [
    "policy/approxkl_avg",
    "policy/clipfrac_avg",
    "loss/policy_avg",
    "loss/value_avg",
    "val/clipfrac_avg",
    "policy/entropy_avg",
    "val/ratio",
];

/// Times of the iteration in progress: (iteration, started, rollout s, scoring s).
type Clock = (u64, Instant, f64, f64);

struct PpoObjective<'a> {
    p: &'a Params,
    seed: u64,
    cfg: GptConfig,
    tok: ChatTokenizer,
    policy: Gpt,
    policy_params: ParamStore,
    reference: Gpt,
    /// A backbone and a scalar head read at every position.
    critic: RewardModel,
    scorer: Scorer,
    /// The reward model's mean and standard deviation on the SFT model's answers
    /// (`score: normalized`).
    norm: (f64, f64),
    train: Vec<Prompt>,
    val: Vec<Prompt>,
    order: EpochOrder,
    kl: KlControl,
    rollout: Option<Rollout>,
    clock: Option<Clock>,
    /// The last iteration's statistics (for `ppo.json`).
    last: Vec<(String, f64)>,
}

/// At most this many length runs per update minibatch ([`length_groups`]).
const UPDATE_GROUPS: usize = 2;

/// The critic's value (N) at the position before each answer token.
fn values(critic: &RewardModel, x: &Tensor, at: &Tensor) -> candle_core::Result<Tensor> {
    let v = critic.head.per_position(&critic.gpt.hidden(x, &mut Dropout::off())?)?;
    v.flatten_all()?.index_select(at, 0)
}

impl PpoObjective<'_> {
    /// Answers `prompts` with the policy as it is now: tokens, their log-probs, finished.
    fn answer(
        &self,
        prompts: &[&Prompt],
        seeds: impl Fn(usize) -> u64,
        temperature: f64,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<sample::Sampled>, StageError> {
        let (p, tok) = (self.p, &self.tok);
        let params = &self.policy_params;
        sample_answers(
            &self.cfg,
            params,
            tok,
            prompts,
            seeds,
            temperature,
            p.max_new_tokens,
            cancelled,
        )
    }

    /// The scores (scaled, clipped; not yet penalised) of `answers` to `prompts`.
    fn scores(
        &self,
        prompts: &[&Prompt],
        answers: &[&[u32]],
        finished: &[bool],
    ) -> Result<Vec<f64>, StageError> {
        let (block, batch) = (self.cfg.block_size, self.p.batch_size);
        let raw = self.scorer.scores(&self.tok, block, batch, prompts, answers, finished)?;
        Ok(raw.into_iter().map(|r| self.scale(r)).collect())
    }

    fn scale(&self, r: f64) -> f64 {
        let s = match (self.p.score, &self.scorer) {
            (_, Scorer::Contains(_) | Scorer::Answers) | (ScoreScale::Raw, _) => r,
            (ScoreScale::Sigmoid, _) => reward_model::sigmoid(r),
            (ScoreScale::Normalized, Scorer::Model { .. }) => (r - self.norm.0) / self.norm.1,
        };
        match self.p.score_clip {
            Some(c) => s.clamp(-c, c),
            None => s,
        }
    }

    /// Samples, scores and computes the advantages of iteration `it`; returns the rollout
    /// statistics. Not cancellable: a training step has no [`RunCx`], so a stop takes effect
    /// after the step that made the rollout.
    fn rollout(&mut self, it: u64) -> Result<Vec<(String, f64)>, StageError> {
        self.close_clock();
        let started = Instant::now();
        let p = self.p;
        let r = p.rollouts as u64;
        let idx: Vec<usize> = (0..r).map(|i| self.order.at(it * r + i)).collect();
        let prompts: Vec<&Prompt> = idx.iter().map(|&i| &self.train[i]).collect();
        let sampled = self.answer(
            &prompts,
            |i| sample::row_seed(self.seed, it * r + i as u64),
            p.temperature,
            &|| false,
        )?;
        let rollout_s = started.elapsed().as_secs_f64();

        // Scoring: the reference's log-probs, the critic's values, the reward model's scores.
        let t0 = Instant::now();
        let answers: Vec<&[u32]> = sampled.iter().map(|s| s.tokens.as_slice()).collect();
        let finished: Vec<bool> = sampled.iter().map(|s| s.finished).collect();
        // Scored shortest first, in chunks of `batch_size`, so that each chunk pads little,
        // then put back in rollout order (the rows beside a row move its scores' last bits
        // only; the order is a function of the rollout, so the bits are reproducible).
        let mut order: Vec<usize> = (0..answers.len()).collect();
        order.sort_by_key(|&i| prompts[i].ids.len() + answers[i].len());
        let by_len: Vec<&Prompt> = order.iter().map(|&i| prompts[i]).collect();
        let answers_by_len: Vec<&[u32]> = order.iter().map(|&i| answers[i]).collect();
        let finished_by_len: Vec<bool> = order.iter().map(|&i| finished[i]).collect();
        let layouts = by_len
            .chunks(p.batch_size)
            .zip(answers_by_len.chunks(p.batch_size))
            .map(|(chunk_p, chunk_a)| {
                let rows: Vec<(&[u32], &[u32])> =
                    chunk_p.iter().zip(chunk_a).map(|(p, a)| (p.ids.as_slice(), *a)).collect();
                layout(&rows, self.tok.end_of_text).map_err(err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Three models, no shared state: side by side.
        let per_token = |f: &(
                              dyn Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>
                                  + Sync
                          )|
         -> Result<Vec<Vec<f64>>, StageError> {
            let mut flat = Vec::new();
            for (x, at, targets) in &layouts {
                flat.extend(to_f64(&f(x, at, targets).map_err(err)?)?);
            }
            Ok(split(&flat, &answers_by_len))
        };
        let ((ref_logp, old_values), scores) = rayon::join(
            || {
                rayon::join(
                    || {
                        per_token(&|x, at, targets| {
                            ops::token_log_probs(
                                &answer_logits(&self.reference, x, at, p.temperature)?,
                                targets,
                            )
                        })
                    },
                    || per_token(&|x, at, _| values(&self.critic, x, at)),
                )
            },
            || self.scores(&by_len, &answers_by_len, &finished_by_len),
        );
        let (ref_logp, old_values, scores) = (
            unpermute(&order, ref_logp?),
            unpermute(&order, old_values?),
            unpermute(&order, scores?),
        );
        let scoring_s = t0.elapsed().as_secs_f64();
        let beta = self.kl.beta();
        let old_logp: Vec<Vec<f64>> =
            sampled.iter().map(|s| s.logprobs.iter().map(|&l| f64::from(l)).collect()).collect();
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(StageError::msg(format!(
                "PPO stopped at iteration {}: the score of answer {} is {}\n   = help: check the reward model (`hone score`)",
                it + 1,
                i + 1,
                scores[i]
            )));
        }

        // Per-token rewards, GAE, whitening.
        let mut rewards = Vec::with_capacity(answers.len());
        let mut kl_sums = Vec::with_capacity(answers.len());
        let mut penalised = Vec::with_capacity(answers.len());
        for i in 0..answers.len() {
            let score = math::penalised_score(scores[i], finished[i], p.missing_eos_penalty);
            let tr = math::token_rewards(&old_logp[i], &ref_logp[i], score, beta, p.kl_estimator);
            kl_sums.push(tr.kl.iter().sum::<f64>());
            penalised.push(score);
            rewards.push(tr.rewards);
        }
        let n = answers.len() as f64;
        let mean_kl = kl_sums.iter().sum::<f64>() / n;
        if !mean_kl.is_finite() || mean_kl > p.max_kl {
            return Err(StageError::msg(format!(
                "PPO stopped at iteration {}: the KL to the reference is {mean_kl:.3} nats per answer, past `max_kl` ({})\n   = help: lower `lr` (now {:e}), raise `kl_coef` (now {beta}) or set `kl_target`; or raise `max_kl`",
                it + 1,
                p.max_kl,
                p.lr
            )));
        }
        if p.whiten_rewards {
            math::whiten(&mut rewards, false);
        }
        let (mut advantages, mut returns) = (Vec::new(), Vec::new());
        for (rw, v) in rewards.iter().zip(&old_values) {
            let (a, r) = math::gae(rw, v, p.gamma, p.lam);
            advantages.push(a);
            returns.push(r);
        }
        let explained = math::explained_variance(&old_values, &returns);
        math::whiten(&mut advantages, true);

        let lengths: f64 = answers.iter().map(|a| a.len() as f64).sum();
        let mean_score = scores.iter().sum::<f64>() / n;
        let non_score = -beta * mean_kl;
        let mut stats = vec![
            ("objective/scores".to_string(), mean_score),
            ("objective/kl".to_string(), mean_kl),
            ("objective/entropy".to_string(), -old_logp.iter().flatten().sum::<f64>() / n),
            ("objective/non_score_reward".to_string(), non_score),
            ("objective/rlhf_reward".to_string(), penalised.iter().sum::<f64>() / n + non_score),
            ("beta".to_string(), beta),
            ("answer_length".to_string(), lengths / n),
            ("val/finished".to_string(), finished.iter().filter(|&&f| f).count() as f64 / n),
        ];
        if let Some(e) = explained {
            stats.push(("val/explained_var".to_string(), e));
        }
        self.kl.update(mean_kl, answers.len());
        let answers = (0..answers.len())
            .map(|i| Answer {
                prompt: idx[i],
                tokens: sampled[i].tokens.clone(),
                old_logp: old_logp[i].clone(),
                old_values: old_values[i].clone(),
                advantages: advantages[i].clone(),
                returns: returns[i].clone(),
            })
            .collect();
        self.rollout =
            Some(Rollout { iteration: it, answers, sums: vec![0.0; MB_STATS.len() + 1] });
        self.clock = Some((it, started, rollout_s, scoring_s));
        Ok(stats)
    }

    /// Logs the iteration in progress's times, if any.
    fn close_clock(&mut self) {
        if let Some((it, started, rollout, scoring)) = self.clock.take() {
            let total = started.elapsed().as_secs_f64();
            tracing::info!(
                iteration = it + 1,
                rollout_ms = format!("{:.1}", rollout * 1e3),
                scoring_ms = format!("{:.1}", scoring * 1e3),
                update_ms = format!("{:.1}", (total - rollout - scoring) * 1e3),
                total_ms = format!("{:.1}", total * 1e3),
                "ppo iteration timing"
            );
        }
    }

    /// The losses of one minibatch (answers `idx` of the rollout): the total loss, its
    /// gradients, the tokens and the statistics in [`MB_STATS`] order (less the `_avg`).
    fn minibatch(
        &self,
        idx: &[usize],
        vars: &[(String, Var)],
    ) -> Result<(f64, crate::model::optim::Grads, usize, [f64; 7]), StageError> {
        let p = self.p;
        let ro = self.rollout.as_ref().expect("a rollout before its minibatches");
        let answers: Vec<&Answer> = idx.iter().map(|&i| &ro.answers[i]).collect();
        let lens: Vec<usize> =
            answers.iter().map(|a| self.train[a.prompt].ids.len() + a.tokens.len()).collect();
        let (order, ends) = length_groups(&lens, UPDATE_GROUPS);
        let answers: Vec<&Answer> = order.iter().map(|&i| answers[i]).collect();
        let mut layouts = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in &ends {
            let rows: Vec<(&[u32], &[u32])> = answers[start..end]
                .iter()
                .map(|a| (self.train[a.prompt].ids.as_slice(), a.tokens.as_slice()))
                .collect();
            layouts.push(layout(&rows, self.tok.end_of_text).map_err(err)?);
            start = end;
        }
        let targets =
            Tensor::cat(&layouts.iter().map(|l| &l.2).collect::<Vec<_>>(), 0).map_err(err)?;
        let flat = |f: fn(&Answer) -> &Vec<f64>| -> Result<Tensor, StageError> {
            let v: Vec<f32> = answers.iter().flat_map(|a| f(a).iter().map(|&x| x as f32)).collect();
            Tensor::new(v, &Device::Cpu).map_err(err)
        };
        let (old_logp, old_values, adv, returns) = (
            flat(|a| &a.old_logp)?,
            flat(|a| &a.old_values)?,
            flat(|a| &a.advantages)?,
            flat(|a| &a.returns)?,
        );
        let n = targets.dim(0).map_err(err)?;
        let mask = Tensor::ones(n, DType::F32, &Device::Cpu).map_err(err)?;

        // The policy's and the critic's losses share no parameter: each is built and
        // differentiated on its own, side by side on two workers (the same bits as one backward
        // of their sum: each graph's nodes are visited in the same order).
        let (policy, critic) = rayon::join(
            || -> Result<_, StageError> {
                let logits = layouts
                    .iter()
                    .map(|(x, at, _)| answer_logits(&self.policy, x, at, p.temperature))
                    .collect::<candle_core::Result<Vec<_>>>()
                    .map_err(err)?;
                let logits = Tensor::cat(&logits, 0).map_err(err)?;
                let logp = ops::token_log_probs(&logits, &targets).map_err(err)?;
                let pg = math::policy_loss(&logp, &old_logp, &adv, &mask, p.clip).map_err(err)?;
                let entropy =
                    math::entropy(&if p.entropy_coef > 0.0 { logits } else { logits.detach() })
                        .map_err(err)?
                        .mean_all()
                        .map_err(err)?;
                let bonus = (p.entropy_coef > 0.0)
                    .then(|| &entropy * p.entropy_coef)
                    .transpose()
                    .map_err(err)?;
                let grads = match &bonus {
                    Some(b) => (&pg.loss - b).and_then(|l| l.backward()),
                    None => pg.loss.backward(),
                }
                .map_err(err)?;
                Ok((pg, entropy, bonus, grads))
            },
            || -> Result<_, StageError> {
                let v = layouts
                    .iter()
                    .map(|(x, at, _)| values(&self.critic, x, at))
                    .collect::<candle_core::Result<Vec<_>>>()
                    .map_err(err)?;
                let v = Tensor::cat(&v, 0).map_err(err)?;
                let vf = math::value_loss(&v, &old_values, &returns, &mask, p.value_clip)
                    .map_err(err)?;
                let weighted = (&vf.loss * p.vf_coef).map_err(err)?;
                let grads = weighted.backward().map_err(err)?;
                Ok((vf, weighted, grads))
            },
        );
        let ((pg, entropy, bonus, policy_grads), (vf, weighted, critic_grads)) = (policy?, critic?);
        let mut loss = (&pg.loss + &weighted).map_err(err)?;
        if let Some(b) = &bonus {
            loss = (loss - b).map_err(err)?;
        }
        let scalar =
            |t: &Tensor| t.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).map_err(err);
        let (pg_loss, vf_loss, ent) = (scalar(&pg.loss)?, scalar(&vf.loss)?, scalar(&entropy)?);
        let total = f64::from(loss.to_scalar::<f32>().map_err(err)?);
        let grads = crate::model::optim::Grads::collect_from(&[&policy_grads, &critic_grads], vars)
            .map_err(err)?;
        Ok((
            total,
            grads,
            n,
            [pg.approx_kl, pg.clip_frac, pg_loss, vf_loss, vf.clip_frac, ent, pg.ratio],
        ))
    }

    /// Greedy answers to the first `eval_prompts` held-out prompts: their mean score (as
    /// [`PpoObjective::scores`] gives it) and length.
    fn held_out(&self, cancelled: &dyn Fn() -> bool) -> Result<Option<(f64, f64)>, StageError> {
        let k = self.p.eval_prompts.min(self.val.len());
        let prompts: Vec<&Prompt> = self.val[..k].iter().collect();
        let (cfg, params, tok) = (&self.cfg, &self.policy_params, &self.tok);
        let score = |p: &[&Prompt], a: &[&[u32]], f: &[bool]| self.scores(p, a, f);
        held_out(cfg, params, tok, &prompts, self.p.max_new_tokens, score, cancelled)
    }
}

#[derive(Serialize)]
struct EvalLine {
    step: u64,
    val_reward: f64,
    val_length: f64,
}

impl training::Objective for PpoObjective<'_> {
    /// The held-out mean score and answer length.
    type Eval = Option<(f64, f64)>;

    fn step(
        &mut self,
        vars: &[(String, Var)],
        step: u64,
        _rng: &mut Rng,
    ) -> Result<StepOut, StageError> {
        let p = self.p;
        let per = p.steps_per_iteration();
        let (it, within) = (step / per, step % per);
        let mut stats = Vec::new();
        if self.rollout.as_ref().is_none_or(|r| r.iteration != it) {
            stats = self.rollout(it)?;
            self.last = stats.clone();
        }
        let per_epoch = (p.rollouts / p.batch_size) as u64;
        let epoch = (within / per_epoch) as usize;
        let mb = (within % per_epoch) as usize;
        let order = minibatch_order(self.seed, 0x5050_4F00, it, epoch, p.rollouts);
        let idx = &order[mb * p.batch_size..(mb + 1) * p.batch_size];
        let (loss, grads, tokens, mb_stats) = self.minibatch(idx, vars)?;
        if !loss.is_finite() || mb_stats.iter().any(|s| !s.is_finite()) {
            return Err(StageError::msg(format!(
                "PPO diverged at iteration {} (step {}): the policy loss is {}, the value loss {}\n   = help: lower `lr` (now {:e}) or `value_lr`, or set `grad_clip`",
                it + 1,
                step + 1,
                mb_stats[2],
                mb_stats[3],
                p.lr
            )));
        }
        let ro = self.rollout.as_mut().expect("just made");
        for (s, v) in ro.sums.iter_mut().zip(mb_stats) {
            *s += v;
        }
        *ro.sums.last_mut().expect("a count") += 1.0;
        stats.extend(
            [
                ("loss/policy", mb_stats[2]),
                ("loss/value", mb_stats[3]),
                ("policy/approxkl", mb_stats[0]),
                ("policy/clipfrac", mb_stats[1]),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        if within + 1 == per {
            let count = *ro.sums.last().expect("a count");
            let avg: Vec<(String, f64)> =
                MB_STATS.iter().zip(&ro.sums).map(|(k, s)| (k.to_string(), s / count)).collect();
            self.last.extend(avg.iter().cloned());
            stats.extend(avg);
        }
        Ok(StepOut { loss, grads, tokens, stats })
    }

    fn evaluate(
        &mut self,
        step: u64,
        cx: &RunCx,
    ) -> Result<(Option<String>, Self::Eval), StageError> {
        if self.clock.is_some_and(|(it, ..)| (it + 1) * self.p.steps_per_iteration() == step) {
            self.close_clock();
        }
        let Some((val_reward, val_length)) = self.held_out(&|| cx.is_cancelled())? else {
            return Ok((None, None));
        };
        cx.metric("val_reward", val_reward);
        let line = serde_json::to_string(&EvalLine { step, val_reward, val_length }).ok();
        Ok((line.filter(|_| val_reward.is_finite()), Some((val_reward, val_length))))
    }

    fn state(&self) -> Result<ObjectiveState, StageError> {
        let mut json = serde_json::json!({ "kl": self.kl });
        let mut tensors = Vec::new();
        if let Some(r) = &self.rollout {
            json["iteration"] = r.iteration.into();
            let dev = Device::Cpu;
            let u32s = |v: Vec<u32>| Tensor::new(v, &dev).map_err(err);
            let f64s = |f: fn(&Answer) -> &Vec<f64>| {
                Tensor::new(
                    r.answers.iter().flat_map(|a| f(a).iter().copied()).collect::<Vec<f64>>(),
                    &dev,
                )
                .map_err(err)
            };
            tensors.push((
                "prompt".to_string(),
                u32s(r.answers.iter().map(|a| a.prompt as u32).collect())?,
            ));
            tensors.push((
                "length".to_string(),
                u32s(r.answers.iter().map(|a| a.tokens.len() as u32).collect())?,
            ));
            tensors.push((
                "tokens".to_string(),
                u32s(r.answers.iter().flat_map(|a| a.tokens.iter().copied()).collect())?,
            ));
            tensors.push(("old_logp".to_string(), f64s(|a| &a.old_logp)?));
            tensors.push(("old_values".to_string(), f64s(|a| &a.old_values)?));
            tensors.push(("advantages".to_string(), f64s(|a| &a.advantages)?));
            tensors.push(("returns".to_string(), f64s(|a| &a.returns)?));
            tensors.push(("sums".to_string(), Tensor::new(r.sums.as_slice(), &dev).map_err(err)?));
        }
        Ok(ObjectiveState { json, tensors })
    }

    fn restore(&mut self, state: ObjectiveState) -> Result<(), String> {
        self.kl = serde_json::from_value(state.json.get("kl").cloned().unwrap_or_default())
            .map_err(|e| format!("its KL controller: {e}"))?;
        let Some(iteration) = state.json.get("iteration").and_then(serde_json::Value::as_u64)
        else {
            return Ok(());
        };
        let u32s = |name: &str| state.u32s(name).map_err(|e| format!("rollout {e}"));
        let f64s = |name: &str| state.f64s(name).map_err(|e| format!("rollout {e}"));
        let (prompts, lengths, tokens) = (u32s("prompt")?, u32s("length")?, u32s("tokens")?);
        let (old_logp, old_values, advantages, returns) =
            (f64s("old_logp")?, f64s("old_values")?, f64s("advantages")?, f64s("returns")?);
        let total: usize = lengths.iter().map(|&l| l as usize).sum();
        if prompts.len() != lengths.len()
            || [tokens.len(), old_logp.len(), old_values.len(), advantages.len(), returns.len()]
                .iter()
                .any(|&l| l != total)
        {
            return Err("its rollout's arrays disagree in length".into());
        }
        if let Some(&bad) = prompts.iter().find(|&&i| i as usize >= self.train.len()) {
            return Err(format!("its rollout names prompt {bad} of {}", self.train.len()));
        }
        let mut at = 0;
        let answers = prompts
            .iter()
            .zip(&lengths)
            .map(|(&prompt, &len)| {
                let r = at..at + len as usize;
                at += len as usize;
                Answer {
                    prompt: prompt as usize,
                    tokens: tokens[r.clone()].to_vec(),
                    old_logp: old_logp[r.clone()].to_vec(),
                    old_values: old_values[r.clone()].to_vec(),
                    advantages: advantages[r.clone()].to_vec(),
                    returns: returns[r].to_vec(),
                }
            })
            .collect();
        self.rollout = Some(Rollout { iteration, answers, sums: f64s("sums")? });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The stage

fn train(p: &Params, cx: &RunCx) -> Result<(), StageError> {
    let model_dir = cx.required_input("model")?;
    let in_model = |e: ModelError| StageError::msg(format!("input `model`: {e}"));
    let loaded = export::load(model_dir, DType::F32).map_err(in_model)?;
    let mut cfg = loaded.config.clone();
    cfg.dropout = 0.0;
    let tok_path = model_dir.join(export::TOKENIZER);
    let tok = ChatTokenizer::from_file(&tok_path, cfg.vocab_size).map_err(in_model)?;
    if p.max_new_tokens + 4 > cfg.block_size {
        return Err(StageError::msg(format!(
            "`max_new_tokens` ({}) leaves no room for a prompt in the model's {} positions\n   = help: lower `max_new_tokens`",
            p.max_new_tokens, cfg.block_size
        )));
    }
    let mut norm = (0.0, 1.0);
    let ((critic, critic_vars), scorer) = match (&p.reward_contains, cx.input("reward")) {
        (Some(_), Some(_)) => {
            return Err(StageError::msg(
                "both `reward_contains` and the input `reward` are given: PPO optimises one reward\n   = help: remove one",
            ));
        }
        (None, None) => {
            return Err(StageError::msg(
                "no reward: the input `reward` is not wired\n   = help: wire a reward model (`inputs: { reward: <a reward stage> }`), or set `reward_contains` for a toy rule",
            ));
        }
        (Some(text), None) => {
            // The critic: the policy's backbone and a fresh head.
            let c = export::load(model_dir, DType::F32).map_err(in_model)?;
            let head_params = ParamStore::seeded(cx.seed);
            let head = ScalarHead::new(
                cfg.n_embd,
                head_params.var_builder(DType::F32, &Device::Cpu).pp(export::SCORE),
            )
            .map_err(err)?;
            let vars = c.params.vars().into_iter().chain(head_params.vars()).collect();
            (
                (RewardModel { gpt: c.model, head, likelihood: None }, vars),
                Scorer::Contains(text.clone()),
            )
        }
        (None, Some(dir)) => {
            let c = load_reward(dir, &cfg)?;
            let scorer = Scorer::reward_model(load_reward(dir, &cfg)?, tok.im_end);
            if p.score == ScoreScale::Normalized {
                norm = reference_stats(dir)?;
            }
            // The critic: the reward model's backbone and head (its value is the head alone).
            (
                (
                    RewardModel { gpt: c.backbone.model, head: c.head, likelihood: None },
                    c.backbone.params.vars(),
                ),
                scorer,
            )
        }
    };
    // The answer and the reward model's closing `<|im_end|>\n` must fit after the prompt.
    let room = cfg.block_size - p.max_new_tokens - 2;
    let prompts_dir = cx.required_input("prompts")?;
    let (train_prompts, long_train) =
        encode_prompts(&tok, prompts_dir, Split::Train, room, Ppo::KIND)?;
    let (val_prompts, long_val) = encode_prompts(&tok, prompts_dir, Split::Val, room, Ppo::KIND)?;
    if long_train + long_val > 0 {
        tracing::warn!(
            left_out = long_train + long_val,
            "prompts longer than {room} tokens (the context less `max_new_tokens`) left out"
        );
    }
    if train_prompts.is_empty() {
        return Err(StageError::msg(format!(
            "input `prompts` has no training prompt that fits: {long_train} are longer than {room} tokens\n   = help: lower `max_new_tokens`"
        )));
    }

    let reference = export::load(model_dir, DType::F32).map_err(in_model)?.model;

    let common = p.common();
    let value_lr = p.value_lr.unwrap_or(p.lr);
    let value_schedule =
        LrSchedule { lr: value_lr, min_lr: p.min_lr * value_lr / p.lr, ..common.schedule() };
    let groups = vec![
        common.group("policy", loaded.params.vars()),
        ParamGroup {
            name: "value",
            vars: critic_vars.into_iter().map(|(n, v)| (format!("critic.{n}"), v)).collect(),
            adamw: common.adamw(),
            schedule: value_schedule,
        },
    ];
    let mut trainer = Trainer::new(cx, groups, training::fingerprint::<Ppo>(p, cx, &cfg))?;
    let kl = match p.kl_target {
        Some(target) => KlControl::Adaptive { beta: p.kl_coef, target, horizon: p.kl_horizon },
        None => KlControl::Fixed { beta: p.kl_coef },
    };
    let n_train = train_prompts.len();
    let mut objective = PpoObjective {
        p,
        seed: cx.seed,
        cfg: cfg.clone(),
        tok,
        policy: loaded.model.with_recompute(p.gradient_checkpointing),
        policy_params: loaded.params,
        reference,
        critic,
        scorer,
        norm,
        train: train_prompts,
        val: val_prompts,
        order: EpochOrder::new(cx.seed, n_train),
        kl,
        rollout: None,
        clock: None,
        last: Vec::new(),
    };
    tracing::info!(
        train_prompts = n_train,
        val_prompts = objective.val.len(),
        from_step = trainer.step,
        steps = p.steps,
        iterations = p.steps / p.steps_per_iteration(),
        "PPO"
    );
    let done = trainer.run(&common.settings(), &mut objective)?;
    objective.close_clock();
    for (k, v) in &objective.last {
        cx.metric(k, *v);
    }

    let out = cx.out_dir;
    let (params, tok) = (&objective.policy_params, &objective.tok);
    save_chat_model(out, &cfg, params, tok, model_dir, trainer.history())?;
    let summary = serde_json::json!({
        "last_iteration": objective.last.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "val_reward": done.eval.map(|e| e.0),
        "val_length": done.eval.map(|e| e.1),
        "beta": objective.kl.beta(),
        "train_prompts": n_train,
        "val_prompts": objective.val.len(),
        "prompts_too_long": long_train + long_val,
    });
    write(out, "ppo.json", &(serde_json::to_string_pretty(&summary).expect("plain data") + "\n"))
}

/// The reward model's mean and standard deviation on the SFT model's answers (`reward.json`).
fn reference_stats(dir: &Path) -> Result<(f64, f64), StageError> {
    let path = dir.join(reward_model::REWARD_JSON);
    let text = std::fs::read_to_string(&path).map_err(StageError::io(format!(
        "input `reward`: `score: normalized` needs `{}`",
        path.display()
    )))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| StageError::msg(format!("`{}`: {e}", path.display())))?;
    match (v["reference_mean"].as_f64(), v["reference_std"].as_f64()) {
        (Some(m), Some(s)) if s > 0.0 => Ok((m, s)),
        _ => Err(StageError::msg(format!(
            "`{}` has no `reference_mean` and positive `reference_std`\n   = help: use `score: raw` or `sigmoid`",
            path.display()
        ))),
    }
}
