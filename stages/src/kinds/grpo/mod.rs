//! `grpo`: Group Relative Policy Optimization (DeepSeekMath), as TRL's `GRPOTrainer` runs it.
//!
//! ```yaml
//! grpo:
//!   uses: grpo
//!   inputs: { model: sft, prompts: rl_prompts }   # and `reward:` a reward model, `reference:`
//!   with: { reward_program: check_answer, num_generations: 8, rollouts: 64, steps: 240 }
//! ```
//!
//! Each iteration takes `rollouts / num_generations` training prompts and samples
//! `num_generations` answers to each with the policy as it is. Each answer is scored: by a
//! program (`reward_program: check_answer`, tinyworld's grader: 1 when it gives the prompt's
//! checkable answer, else 0: a verifiable reward), by a reward model (input `reward`), or by
//! a toy rule (`reward_contains`). An answer's advantage is its reward less its group's mean,
//! over the group's standard deviation (`scale_rewards`). There is no critic. The policy is
//! then updated `num_iterations` times over the rollout in minibatches of `batch_size`
//! answers, on the clipped surrogate per token (`epsilon`, `epsilon_high`) plus `beta` times
//! the k3 KL to a frozen reference (input `reference`, else the input model), summed as
//! `loss_type` says ([`math`]). Defaults are TRL's (`loss_type: dapo`, `beta: 0`,
//! `scale_rewards: group`, `temperature: 1`) where they suit a small model.
//!
//! Logged under TRL's names: `reward`, `reward_std`, `frac_reward_zero_std`,
//! `rewards/<scorer>/mean|std`, `completions/*`, `kl`, `entropy`, `clip_ratio/*`; and the
//! held-out prompts' mean reward (greedy answers) at each evaluation. A stopped run resumes
//! from its checkpoint (the rollout in progress included) to the same bytes. Outputs: the
//! policy (HF export), `metrics.jsonl`, `loss.svg`, `grpo.json` and `rollout.jsonl` (the last
//! iteration's prompts, answers, rewards and advantages).

pub mod math;
#[cfg(test)]
mod tests;

use candle_core::{DType, Device, Tensor, Var};
use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};

use crate::data::corpus::Split;
use crate::model::chat_template::ChatTokenizer;
use crate::model::checkpoint::ObjectiveState;
use crate::model::export;
use crate::model::rng::Rng;
use crate::model::{Gpt, GptConfig, ModelError, ParamStore, ops, sample};
use crate::ports;
use crate::rl::reference::load_reference;
use crate::rl::rollout::{
    Prompt, answer_logits, encode_prompts, err, held_out, layout, length_groups, minibatch_order,
    sample_answers, split, to_f64, unpermute,
};
use crate::rl::scorer::{Scorer, load_reward};
use crate::training::{
    self, EpochOrder, StepOut, Trainer, save_chat_model, training_params, write,
};
use math::{LossType, ScaleRewards};

pub struct Grpo;

/// A program that scores answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    /// tinyworld's grader: 1 when the answer gives the prompt record's `answer`, else 0.
    CheckAnswer,
}

training_params! {
    /// GRPO's own params (TRL's names), then the params every training kind has
    /// (`batch_size` is the minibatch: answers per optimizer step; `steps` a whole number of
    /// iterations).
    pub struct Params {
        /// Answers sampled per prompt: a group (G).
        #[serde(default = "defaults::num_generations")]
        pub num_generations: usize,
        /// Answers sampled per iteration: a multiple of `num_generations` and `batch_size`.
        #[serde(default = "defaults::rollouts")]
        pub rollouts: usize,
        /// Passes over an iteration's answers (μ).
        #[serde(default = "defaults::num_iterations")]
        pub num_iterations: usize,
        #[serde(default = "defaults::max_new_tokens")]
        pub max_new_tokens: usize,
        /// Sampling temperature, used for every log-prob too.
        #[serde(default = "defaults::temperature")]
        pub temperature: f64,
        /// The weight of the KL penalty to the reference; 0: no reference is loaded.
        #[serde(default)]
        pub beta: f64,
        /// The ratio's clip range below 1 (and above, unless `epsilon_high` is set).
        #[serde(default = "defaults::epsilon")]
        pub epsilon: f64,
        #[serde(default)]
        pub epsilon_high: Option<f64>,
        /// Weigh each token's KL by its ratio (TRL's `use_bias_correction_kl`).
        #[serde(default = "defaults::use_bias_correction_kl")]
        pub use_bias_correction_kl: bool,
        #[serde(default = "defaults::loss_type")]
        pub loss_type: LossType,
        #[serde(default = "defaults::scale_rewards")]
        pub scale_rewards: ScaleRewards,
        /// Score with a program instead of a reward model.
        #[serde(default)]
        pub reward_program: Option<Program>,
        /// Score with a toy rule: +1 when the answer contains this text, else 0.
        #[serde(default)]
        pub reward_contains: Option<String>,
        /// Held-out prompts (the `val` split) answered greedily at each evaluation; 0: none.
        #[serde(default = "defaults::eval_prompts")]
        pub eval_prompts: usize,
    }
}

mod defaults {
    use super::{LossType, ScaleRewards};
    pub fn num_generations() -> usize {
        8
    }
    pub fn rollouts() -> usize {
        64
    }
    pub fn num_iterations() -> usize {
        1
    }
    pub fn max_new_tokens() -> usize {
        24
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn epsilon() -> f64 {
        0.2
    }
    pub fn use_bias_correction_kl() -> bool {
        true
    }
    pub fn loss_type() -> LossType {
        LossType::Dapo
    }
    pub fn scale_rewards() -> ScaleRewards {
        ScaleRewards::Group
    }
    pub fn eval_prompts() -> usize {
        64
    }
    pub fn batch_size() -> usize {
        16
    }
    pub fn steps() -> u64 {
        160
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
        40
    }
    pub fn checkpoint_every() -> u64 {
        16
    }
}

impl Params {
    fn steps_per_iteration(&self) -> u64 {
        (self.num_iterations * (self.rollouts / self.batch_size.max(1))) as u64
    }

    fn scorer_name(&self) -> &'static str {
        match (&self.reward_program, &self.reward_contains) {
            (Some(Program::CheckAnswer), _) => "check_answer",
            (None, Some(_)) => "contains",
            (None, None) => "reward_model",
        }
    }
}

impl Stage for Grpo {
    type Params = Params;
    const KIND: &'static str = "grpo";
    /// Why each bump: docs/kind-versions.md.
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "optimise a chat model with GRPO: groups of answers per prompt, advantages within the group, no critic; the reward from a program or a reward model";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::required("model", ports::MODEL),
        Port::required("prompts", ports::PROMPTS),
        Port::optional("reward", ports::REWARD_MODEL),
        Port::optional("reference", ports::MODEL),
    ]);
    const OUTPUTS: &'static [Port] =
        &[Port::required("model", ports::MODEL), Port::required("metrics", ports::METRICS)];

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
            p.num_generations >= 2,
            "num_generations",
            format!("`num_generations` must be at least 2, not {}", p.num_generations),
            "advantages compare answers within a group; TRL uses 8",
        );
        need(
            p.rollouts > 0
                && p.rollouts.is_multiple_of(p.num_generations.max(1))
                && (p.batch_size == 0 || p.rollouts.is_multiple_of(p.batch_size)),
            "rollouts",
            format!(
                "`rollouts` ({}) must be a positive multiple of `num_generations` ({}) and of `batch_size` ({})",
                p.rollouts, p.num_generations, p.batch_size
            ),
            "each iteration samples whole groups and splits them into minibatches",
        );
        need(
            p.num_iterations > 0,
            "num_iterations",
            "`num_iterations` must be at least 1".into(),
            "TRL's default is 1",
        );
        let per = p.steps_per_iteration();
        need(
            per == 0 || p.steps.is_multiple_of(per),
            "steps",
            format!(
                "`steps` ({}) must be a whole number of iterations of {per} steps (num_iterations {} × rollouts {} / batch_size {})",
                p.steps, p.num_iterations, p.rollouts, p.batch_size
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
            "GRPO needs varied answers in a group; TRL uses 1.0",
        );
        need(
            p.beta >= 0.0 && p.beta.is_finite(),
            "beta",
            format!("`beta` must not be negative, not {}", p.beta),
            "TRL's default is 0 (no KL term); DeepSeekMath used 0.04",
        );
        need(
            p.epsilon > 0.0 && p.epsilon < 1.0,
            "epsilon",
            format!("`epsilon` must be in (0, 1), not {}", p.epsilon),
            "0.2 as PPO",
        );
        if let Some(e) = p.epsilon_high {
            need(
                e > 0.0 && e.is_finite(),
                "epsilon_high",
                format!("`epsilon_high` must be positive, not {e}"),
                "DAPO uses 0.28",
            );
        }
        if let Some(t) = &p.reward_contains {
            need(
                !t.is_empty(),
                "reward_contains",
                "`reward_contains` is empty".into(),
                "give the text an answer is rewarded for containing",
            );
        }
        need(
            !(p.reward_contains.is_some() && p.reward_program.is_some()),
            "reward_program",
            "both `reward_program` and `reward_contains` are set: GRPO optimises one reward".into(),
            "remove one",
        );
        out
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        training::on_threads(p.threads, || train(p, cx))
    }
}

/// One answer of the rollout being trained on.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    prompt: usize,
    /// The sampled tokens (the stop token last when it ended).
    tokens: Vec<u32>,
    finished: bool,
    old_logp: Vec<f64>,
    /// Empty when `beta` is 0.
    ref_logp: Vec<f64>,
    reward: f64,
    advantage: f64,
}

/// The rollout of one iteration and its minibatch statistics so far.
#[derive(Clone, Debug, PartialEq)]
struct Rollout {
    iteration: u64,
    answers: Vec<Answer>,
    /// Sums over the minibatches so far, in [`MB_STATS`] order, then their count.
    sums: Vec<f64>,
}

/// The minibatch statistics averaged over an iteration.
const MB_STATS: [&str; 5] =
    ["entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl"];

struct GrpoObjective<'a> {
    p: &'a Params,
    seed: u64,
    cfg: GptConfig,
    tok: ChatTokenizer,
    policy: Gpt,
    policy_params: ParamStore,
    /// Loaded when `beta` is not 0.
    reference: Option<Gpt>,
    scorer: Scorer,
    train: Vec<Prompt>,
    val: Vec<Prompt>,
    order: EpochOrder,
    rollout: Option<Rollout>,
    /// The last iteration's statistics (for `grpo.json`).
    last: Vec<(String, f64)>,
}

impl GrpoObjective<'_> {
    fn scores(
        &self,
        prompts: &[&Prompt],
        answers: &[&[u32]],
        finished: &[bool],
    ) -> Result<Vec<f64>, StageError> {
        let (block, batch) = (self.cfg.block_size, self.p.batch_size);
        self.scorer.scores(&self.tok, block, batch, prompts, answers, finished)
    }

    /// Samples groups of answers for iteration `it`, scores them and computes their
    /// advantages; returns the rollout statistics.
    fn rollout(&mut self, it: u64) -> Result<Vec<(String, f64)>, StageError> {
        let p = self.p;
        let g = p.num_generations;
        let per = (p.rollouts / g) as u64;
        let idx: Vec<usize> = (0..per)
            .map(|j| self.order.at(it * per + j))
            .flat_map(|i| std::iter::repeat_n(i, g))
            .collect();
        let prompts: Vec<&Prompt> = idx.iter().map(|&i| &self.train[i]).collect();
        let sampled = sample_answers(
            &self.cfg,
            &self.policy_params,
            &self.tok,
            &prompts,
            |i| sample::row_seed(self.seed, it * p.rollouts as u64 + i as u64),
            p.temperature,
            p.max_new_tokens,
            &|| false,
        )?;
        let answers: Vec<&[u32]> = sampled.iter().map(|s| s.tokens.as_slice()).collect();
        let finished: Vec<bool> = sampled.iter().map(|s| s.finished).collect();

        // The reference's log-probs, shortest rows first in chunks of `batch_size` (as little
        // padding as may be), put back in rollout order.
        let ref_logp = match &self.reference {
            None => vec![Vec::new(); answers.len()],
            Some(reference) => {
                let mut order: Vec<usize> = (0..answers.len()).collect();
                order.sort_by_key(|&i| prompts[i].ids.len() + answers[i].len());
                let by_len: Vec<&[u32]> = order.iter().map(|&i| answers[i]).collect();
                let mut flat = Vec::new();
                for chunk in order.chunks(p.batch_size) {
                    let rows: Vec<(&[u32], &[u32])> =
                        chunk.iter().map(|&i| (prompts[i].ids.as_slice(), answers[i])).collect();
                    let (x, at, targets) = layout(&rows, self.tok.end_of_text).map_err(err)?;
                    let logits = answer_logits(reference, &x, &at, p.temperature).map_err(err)?;
                    flat.extend(to_f64(&ops::token_log_probs(&logits, &targets).map_err(err)?)?);
                }
                unpermute(&order, split(&flat, &by_len))
            }
        };
        let rewards = self.scores(&prompts, &answers, &finished)?;
        if let Some(i) = rewards.iter().position(|s| !s.is_finite()) {
            return Err(StageError::msg(format!(
                "GRPO stopped at iteration {}: the reward of answer {} is {}\n   = help: check the reward model (`hone score`)",
                it + 1,
                i + 1,
                rewards[i]
            )));
        }
        let (advantages, stds) = math::advantages(&rewards, g, p.scale_rewards);

        let n = answers.len() as f64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let lengths: Vec<f64> = answers.iter().map(|a| a.len() as f64).collect();
        let terminated: Vec<f64> =
            lengths.iter().zip(&finished).filter(|(_, f)| **f).map(|(l, _)| *l).collect();
        let reward_mean = mean(&rewards);
        let reward_sd = (rewards.iter().map(|r| (r - reward_mean).powi(2)).sum::<f64>()
            / (n - 1.0).max(1.0))
        .sqrt();
        let name = p.scorer_name();
        let mut stats = vec![
            ("reward".to_string(), reward_mean),
            ("reward_std".to_string(), mean(&stds)),
            (
                "frac_reward_zero_std".to_string(),
                stds.iter().filter(|s| **s < 1e-8).count() as f64 / n,
            ),
            (format!("rewards/{name}/mean"), reward_mean),
            (format!("rewards/{name}/std"), reward_sd),
            ("completions/mean_length".to_string(), mean(&lengths)),
            (
                "completions/min_length".to_string(),
                lengths.iter().copied().fold(f64::MAX, f64::min),
            ),
            ("completions/max_length".to_string(), lengths.iter().copied().fold(0.0, f64::max)),
            (
                "completions/clipped_ratio".to_string(),
                finished.iter().filter(|f| !**f).count() as f64 / n,
            ),
        ];
        if !terminated.is_empty() {
            stats.push(("completions/mean_terminated_length".to_string(), mean(&terminated)));
        }
        let answers = (0..answers.len())
            .map(|i| Answer {
                prompt: idx[i],
                tokens: sampled[i].tokens.clone(),
                finished: finished[i],
                old_logp: sampled[i].logprobs.iter().map(|&l| f64::from(l)).collect(),
                ref_logp: ref_logp[i].clone(),
                reward: rewards[i],
                advantage: advantages[i],
            })
            .collect();
        self.rollout =
            Some(Rollout { iteration: it, answers, sums: vec![0.0; MB_STATS.len() + 1] });
        Ok(stats)
    }

    /// The loss of one minibatch (answers `idx` of the rollout): the loss, its gradients, the
    /// tokens and the statistics in [`MB_STATS`] order.
    fn minibatch(
        &self,
        idx: &[usize],
        vars: &[(String, Var)],
    ) -> Result<(f64, crate::model::optim::Grads, usize, [f64; 5]), StageError> {
        let p = self.p;
        let ro = self.rollout.as_ref().expect("a rollout before its minibatches");
        let answers: Vec<&Answer> = idx.iter().map(|&i| &ro.answers[i]).collect();
        let lens: Vec<usize> =
            answers.iter().map(|a| self.train[a.prompt].ids.len() + a.tokens.len()).collect();
        let (order, ends) = length_groups(&lens, 2);
        let answers: Vec<&Answer> = order.iter().map(|&i| answers[i]).collect();
        let mut logits = Vec::with_capacity(ends.len());
        let mut targets = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in &ends {
            let rows: Vec<(&[u32], &[u32])> = answers[start..end]
                .iter()
                .map(|a| (self.train[a.prompt].ids.as_slice(), a.tokens.as_slice()))
                .collect();
            let (x, at, t) = layout(&rows, self.tok.end_of_text).map_err(err)?;
            logits.push(answer_logits(&self.policy, &x, &at, p.temperature).map_err(err)?);
            targets.push(t);
            start = end;
        }
        let logits = Tensor::cat(&logits, 0).map_err(err)?;
        let targets = Tensor::cat(&targets, 0).map_err(err)?;
        let logp = ops::token_log_probs(&logits, &targets).map_err(err)?;
        let flat = |f: &dyn Fn(&Answer) -> Vec<f32>| -> Result<Tensor, StageError> {
            let v: Vec<f32> = answers.iter().flat_map(|a| f(a)).collect();
            Tensor::new(v, &Device::Cpu).map_err(err)
        };
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let old_logp = flat(&|a| f32s(&a.old_logp))?;
        let adv = flat(&|a| vec![a.advantage as f32; a.tokens.len()])?;
        let ref_logp = match self.reference {
            Some(_) => Some(flat(&|a| f32s(&a.ref_logp))?),
            None => None,
        };
        let lengths: Vec<usize> = answers.iter().map(|a| a.tokens.len()).collect();
        let rollout_tokens: usize = ro.answers.iter().map(|a| a.tokens.len()).sum();
        let dapo_tokens = rollout_tokens as f64 * p.batch_size as f64 / p.rollouts as f64;
        let weights = math::token_weights(&lengths, p.loss_type, p.max_new_tokens, dapo_tokens);
        let weights = Tensor::new(weights, &Device::Cpu).map_err(err)?;
        let eps = (p.epsilon, p.epsilon_high.unwrap_or(p.epsilon));
        let corrected = p.use_bias_correction_kl;
        let ref_logp = ref_logp.as_ref();
        let l = math::loss(&logp, &old_logp, ref_logp, &adv, &weights, eps, p.beta, corrected)
            .map_err(err)?;
        let entropy = math::mean_entropy(&logits).map_err(err)?;
        let grads = l.loss.backward().map_err(err)?;
        let total = f64::from(l.loss.to_scalar::<f32>().map_err(err)?);
        let grads = crate::model::optim::Grads::collect_from(&[&grads], vars).map_err(err)?;
        let n = targets.dim(0).map_err(err)?;
        Ok((
            total,
            grads,
            n,
            [entropy, l.clip_low, l.clip_high, l.clip_region, l.kl.unwrap_or(0.0)],
        ))
    }

    /// Greedy answers to the first `eval_prompts` held-out prompts: their mean reward and
    /// length.
    fn held_out(&self, cancelled: &dyn Fn() -> bool) -> Result<Option<(f64, f64)>, StageError> {
        let k = self.p.eval_prompts.min(self.val.len());
        let prompts: Vec<&Prompt> = self.val[..k].iter().collect();
        let (cfg, params, tok) = (&self.cfg, &self.policy_params, &self.tok);
        let score = |p: &[&Prompt], a: &[&[u32]], f: &[bool]| self.scores(p, a, f);
        held_out(cfg, params, tok, &prompts, self.p.max_new_tokens, score, cancelled)
    }

    /// The last rollout as JSON lines: prompt, answer, reward, advantage, tokens.
    fn rollout_jsonl(&self) -> Result<String, StageError> {
        let mut out = String::new();
        for (i, a) in self.rollout.iter().flat_map(|r| r.answers.iter().enumerate()) {
            let prompt = &self.train[a.prompt];
            let text = self
                .tok
                .decode_reply(&a.tokens[..a.tokens.len() - usize::from(a.finished)])
                .map_err(err)?;
            let line = serde_json::json!({
                "group": i / self.p.num_generations,
                "prompt": prompt.text,
                "answer": text,
                "finished": a.finished,
                "reward": a.reward,
                "advantage": a.advantage,
                "prompt_tokens": prompt.ids,
                "tokens": a.tokens,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        Ok(out)
    }
}

#[derive(Serialize)]
struct EvalLine {
    step: u64,
    val_reward: f64,
    val_length: f64,
}

impl training::Objective for GrpoObjective<'_> {
    /// The held-out mean reward and answer length.
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
        let per_pass = (p.rollouts / p.batch_size) as u64;
        let pass = (within / per_pass) as usize;
        let mb = (within % per_pass) as usize;
        let order = minibatch_order(self.seed, 0x4752_504F, it, pass, p.rollouts);
        let idx = &order[mb * p.batch_size..(mb + 1) * p.batch_size];
        let (loss, grads, tokens, mb_stats) = self.minibatch(idx, vars)?;
        if !loss.is_finite() {
            return Err(StageError::msg(format!(
                "GRPO diverged at iteration {} (step {}): the loss is {loss}\n   = help: lower `lr` (now {:e}) or set `grad_clip`",
                it + 1,
                step + 1,
                p.lr
            )));
        }
        let ro = self.rollout.as_mut().expect("just made");
        for (s, v) in ro.sums.iter_mut().zip(mb_stats) {
            *s += v;
        }
        *ro.sums.last_mut().expect("a count") += 1.0;
        if within + 1 == per {
            let count = *ro.sums.last().expect("a count");
            let avg: Vec<(String, f64)> = MB_STATS
                .iter()
                .zip(&ro.sums)
                .filter(|(k, _)| p.beta != 0.0 || **k != "kl")
                .map(|(k, s)| (k.to_string(), s / count))
                .collect();
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
        let Some((val_reward, val_length)) = self.held_out(&|| cx.is_cancelled())? else {
            return Ok((None, None));
        };
        cx.metric("val_reward", val_reward);
        let line = serde_json::to_string(&EvalLine { step, val_reward, val_length }).ok();
        Ok((line.filter(|_| val_reward.is_finite()), Some((val_reward, val_length))))
    }

    fn state(&self) -> Result<ObjectiveState, StageError> {
        let mut json = serde_json::json!({});
        let mut tensors = Vec::new();
        if let Some(r) = &self.rollout {
            json["iteration"] = r.iteration.into();
            let dev = Device::Cpu;
            let u32s = |v: Vec<u32>| Tensor::new(v, &dev).map_err(err);
            let f64s = |v: Vec<f64>| Tensor::new(v, &dev).map_err(err);
            let per_answer = |f: fn(&Answer) -> u32| r.answers.iter().map(f).collect::<Vec<u32>>();
            let per_token = |f: fn(&Answer) -> &Vec<f64>| {
                r.answers.iter().flat_map(|a| f(a).iter().copied()).collect::<Vec<f64>>()
            };
            tensors.push(("prompt".to_string(), u32s(per_answer(|a| a.prompt as u32))?));
            tensors.push(("length".to_string(), u32s(per_answer(|a| a.tokens.len() as u32))?));
            tensors.push(("finished".to_string(), u32s(per_answer(|a| u32::from(a.finished)))?));
            tensors.push((
                "tokens".to_string(),
                u32s(r.answers.iter().flat_map(|a| a.tokens.iter().copied()).collect())?,
            ));
            tensors.push(("old_logp".to_string(), f64s(per_token(|a| &a.old_logp))?));
            tensors.push(("ref_logp".to_string(), f64s(per_token(|a| &a.ref_logp))?));
            tensors
                .push(("reward".to_string(), f64s(r.answers.iter().map(|a| a.reward).collect())?));
            tensors.push((
                "advantage".to_string(),
                f64s(r.answers.iter().map(|a| a.advantage).collect())?,
            ));
            tensors.push(("sums".to_string(), f64s(r.sums.clone())?));
        }
        Ok(ObjectiveState { json, tensors })
    }

    fn restore(&mut self, state: ObjectiveState) -> Result<(), String> {
        let Some(iteration) = state.json.get("iteration").and_then(serde_json::Value::as_u64)
        else {
            return Ok(());
        };
        let u32s = |name: &str| state.u32s(name).map_err(|e| format!("rollout {e}"));
        let f64s = |name: &str| state.f64s(name).map_err(|e| format!("rollout {e}"));
        let (prompts, lengths, finished, tokens) =
            (u32s("prompt")?, u32s("length")?, u32s("finished")?, u32s("tokens")?);
        let (old_logp, ref_logp, reward, advantage) =
            (f64s("old_logp")?, f64s("ref_logp")?, f64s("reward")?, f64s("advantage")?);
        let total: usize = lengths.iter().map(|&l| l as usize).sum();
        let n = prompts.len();
        let with_ref = self.reference.is_some();
        if [lengths.len(), finished.len(), reward.len(), advantage.len()].iter().any(|&l| l != n)
            || tokens.len() != total
            || old_logp.len() != total
            || ref_logp.len() != if with_ref { total } else { 0 }
        {
            return Err("its rollout's arrays disagree in length".into());
        }
        if let Some(&bad) = prompts.iter().find(|&&i| i as usize >= self.train.len()) {
            return Err(format!("its rollout names prompt {bad} of {}", self.train.len()));
        }
        let mut at = 0;
        let answers = (0..n)
            .map(|i| {
                let r = at..at + lengths[i] as usize;
                at += lengths[i] as usize;
                Answer {
                    prompt: prompts[i] as usize,
                    tokens: tokens[r.clone()].to_vec(),
                    finished: finished[i] != 0,
                    old_logp: old_logp[r.clone()].to_vec(),
                    ref_logp: if with_ref { ref_logp[r].to_vec() } else { Vec::new() },
                    reward: reward[i],
                    advantage: advantage[i],
                }
            })
            .collect();
        self.rollout = Some(Rollout { iteration, answers, sums: f64s("sums")? });
        Ok(())
    }
}

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
    let scorer = match (p.reward_program, &p.reward_contains, cx.input("reward")) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(StageError::msg(
                "both a reward program (`reward_program` or `reward_contains`) and the input `reward` are given: GRPO optimises one reward\n   = help: remove one",
            ));
        }
        (None, None, None) => {
            return Err(StageError::msg(
                "no reward: the input `reward` is not wired and no `reward_program` is set\n   = help: set `reward_program: check_answer` (prompt records with an `answer`), or wire a reward model (`inputs: { reward: <a reward stage> }`)",
            ));
        }
        (Some(Program::CheckAnswer), _, None) => Scorer::Answers,
        (None, Some(text), None) => Scorer::Contains(text.clone()),
        (None, None, Some(dir)) => Scorer::reward_model(load_reward(dir, &cfg)?, tok.im_end),
    };
    // The answer and a reward model's closing `<|im_end|>\n` must fit after the prompt.
    let room = cfg.block_size - p.max_new_tokens - 2;
    let prompts_dir = cx.required_input("prompts")?;
    let (train_prompts, long_train) =
        encode_prompts(&tok, prompts_dir, Split::Train, room, Grpo::KIND)?;
    let (val_prompts, long_val) = encode_prompts(&tok, prompts_dir, Split::Val, room, Grpo::KIND)?;
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
    if p.reward_program == Some(Program::CheckAnswer)
        && !train_prompts.iter().any(|q| q.answer.is_some())
    {
        return Err(StageError::msg(
            "`reward_program: check_answer` needs prompt records with an `answer`, and input `prompts` has none\n   = help: use prompts with answers (`builtin:tinyworld/rl-prompts`), or a reward model",
        ));
    }
    let reference = if p.beta != 0.0 { Some(load_reference(cx, &loaded)?) } else { None };

    let common = p.common();
    let groups = vec![common.group("policy", loaded.params.vars())];
    let mut trainer = Trainer::new(cx, groups, training::fingerprint::<Grpo>(p, cx, &cfg))?;
    let n_train = train_prompts.len();
    let mut objective = GrpoObjective {
        p,
        seed: cx.seed,
        cfg: cfg.clone(),
        tok,
        policy: loaded.model.with_recompute(p.gradient_checkpointing),
        policy_params: loaded.params,
        reference,
        scorer,
        train: train_prompts,
        val: val_prompts,
        order: EpochOrder::new(cx.seed, n_train),
        rollout: None,
        last: Vec::new(),
    };
    tracing::info!(
        train_prompts = n_train,
        val_prompts = objective.val.len(),
        from_step = trainer.step,
        steps = p.steps,
        iterations = p.steps / p.steps_per_iteration(),
        "GRPO"
    );
    let done = trainer.run(&common.settings(), &mut objective)?;
    for (k, v) in &objective.last {
        cx.metric(k, *v);
    }

    let out = cx.out_dir;
    let (params, tok) = (&objective.policy_params, &objective.tok);
    save_chat_model(out, &cfg, params, tok, model_dir, trainer.history())?;
    write(out, "rollout.jsonl", &objective.rollout_jsonl()?)?;
    let summary = serde_json::json!({
        "last_iteration": objective.last.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "val_reward": done.eval.map(|e| e.0),
        "val_length": done.eval.map(|e| e.1),
        "reward": p.scorer_name(),
        "train_prompts": n_train,
        "val_prompts": objective.val.len(),
        "prompts_too_long": long_train + long_val,
    });
    write(out, "grpo.json", &(serde_json::to_string_pretty(&summary).expect("plain data") + "\n"))
}
