//! PPO's arithmetic, in the order the algorithm uses it (CleanRL's `ppo.py`, TRL's
//! `PPOTrainer`), each piece tested against a hand computation:
//!
//! 1. rollout scoring: [`KlEstimator`] (k1, k3), [`penalised_score`] (missing EOS),
//!    [`token_rewards`] (−β·KL on every token, the score on the last);
//! 2. advantages: [`gae`] (γ, λ) with the returns, [`whiten`] over the real tokens;
//! 3. the update's losses, as candle tensors (gradients needed): [`policy_loss`] (the clipped
//!    surrogate, with approximate KL and clip fraction), [`value_loss`] (clipped,
//!    `0.5·max(unclipped², clipped²)`), [`entropy`];
//! 4. statistics: [`explained_variance`]; β between iterations: [`KlControl`] (fixed, or
//!    Ziegler et al.'s adaptive controller).
//!
//! The rollout side is plain `f64` per sequence: a response's values are stored for its real
//! tokens only, so "masked" statistics are statistics over what is stored. The loss side works
//! on padded (B, T) tensors with a 0/1 mask, as the batched forward pass produces them.

use candle_core::{D, DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::ops;

// ---------------------------------------------------------------------------------------
// 1. Rewards per token

/// How the KL to the reference is estimated from the sampled token's log-probabilities
/// under the policy (`logp`) and the reference (`ref_logp`); with `r = ref_logp − logp`:
/// k1 = −r (unbiased, negative for some tokens), k3 = (eʳ − 1) − r (never negative, lower
/// variance). TRL's `kl_estimator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    #[default]
    K1,
    K3,
}

impl KlEstimator {
    pub fn per_token(self, logp: f64, ref_logp: f64) -> f64 {
        let r = ref_logp - logp;
        match self {
            KlEstimator::K1 => -r,
            KlEstimator::K3 => r.exp_m1() - r,
        }
    }
}

/// The score of a response that never produced the stop token, lowered by `penalty`
/// (TRL's `missing_eos_penalty`; 0 leaves it as is).
pub fn penalised_score(score: f64, finished: bool, penalty: f64) -> f64 {
    if finished { score } else { score - penalty }
}

/// A response's per-token KL estimates and rewards.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRewards {
    pub kl: Vec<f64>,
    /// −β·klₜ on every token, plus `score` on the last.
    pub rewards: Vec<f64>,
}

/// The per-token rewards of one response: `logp`/`ref_logp` are its tokens' log-probs under
/// the policy that sampled it and the frozen reference; `score` is the reward model's (already
/// penalised) score, given to the last token.
pub fn token_rewards(
    logp: &[f64],
    ref_logp: &[f64],
    score: f64,
    beta: f64,
    est: KlEstimator,
) -> TokenRewards {
    assert_eq!(logp.len(), ref_logp.len(), "one reference log-prob per token");
    let kl: Vec<f64> = logp.iter().zip(ref_logp).map(|(&p, &r)| est.per_token(p, r)).collect();
    let mut rewards: Vec<f64> = kl.iter().map(|k| -beta * k).collect();
    if let Some(last) = rewards.last_mut() {
        *last += score;
    }
    TokenRewards { kl, rewards }
}

// ---------------------------------------------------------------------------------------
// 2. Advantages and returns

/// Generalised advantage estimation over one response (an episode that ends after its last
/// token, so the value after it is 0): δₜ = rₜ + γ·Vₜ₊₁ − Vₜ, Aₜ = δₜ + γλ·Aₜ₊₁. Returns the
/// advantages and the returns Aₜ + Vₜ (the value loss's targets).
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(rewards.len(), values.len(), "one value per token");
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut last = 0.0;
    for t in (0..n).rev() {
        let next = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next - values[t];
        last = delta + gamma * lambda * last;
        adv[t] = last;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Mean and unbiased variance over every entry of every row (TRL's `masked_mean` and
/// `masked_var`: the rows hold real tokens only).
pub fn mean_var(rows: &[Vec<f64>]) -> (f64, f64) {
    let n = rows.iter().map(Vec::len).sum::<usize>() as f64;
    let mean = rows.iter().flatten().sum::<f64>() / n;
    let ss = rows.iter().flatten().map(|x| (x - mean).powi(2)).sum::<f64>();
    (mean, if n > 1.0 { ss / (n - 1.0) } else { 0.0 })
}

/// Whitening over the real tokens of a batch (TRL's `masked_whiten`): (x − mean)/√(var + 1e-8);
/// with `shift_mean` false the mean is added back (rewards keep their level, advantages do
/// not).
pub fn whiten(rows: &mut [Vec<f64>], shift_mean: bool) {
    if rows.iter().all(Vec::is_empty) {
        return;
    }
    let (mean, var) = mean_var(rows);
    let scale = 1.0 / (var + 1e-8).sqrt();
    let back = if shift_mean { 0.0 } else { mean };
    rows.iter_mut().flatten().for_each(|x| *x = (*x - mean) * scale + back);
}

// ---------------------------------------------------------------------------------------
// 3. The update's losses (tensors)

/// `sum(x·mask) / sum(mask)`: the mean over the real tokens of padded (B, T) rows.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    (x * mask)?.sum_all()?.broadcast_div(&mask.sum_all()?)
}

/// A scalar tensor's value as f64 (statistics).
fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The clipped surrogate and its statistics for one minibatch.
pub struct PolicyLoss {
    /// mean over real tokens of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = π/π_old.
    pub loss: Tensor,
    /// TRL's `policy/approxkl`: 0.5·mean((log ρ)²).
    pub approx_kl: f64,
    /// TRL's `policy/clipfrac`: the share of tokens whose clipped term is the larger.
    pub clip_frac: f64,
    /// TRL's `val/ratio`: the mean ρ.
    pub ratio: f64,
}

/// PPO's clipped surrogate objective (as a loss) over padded (B, T) `logp` (the policy now,
/// with gradients), `old_logp` (at the rollout), `advantages` and `mask` (1 for real tokens).
pub fn policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<PolicyLoss> {
    let log_ratio = (logp - old_logp)?;
    let ratio = log_ratio.exp()?;
    let unclipped = (advantages.neg()? * &ratio)?;
    let clipped = (advantages.neg()? * ratio.clamp(1.0 - clip, 1.0 + clip)?)?;
    let loss = masked_mean(&unclipped.maximum(&clipped)?, mask)?;
    let log_ratio = log_ratio.detach();
    Ok(PolicyLoss {
        loss,
        approx_kl: 0.5 * scalar(&masked_mean(&log_ratio.sqr()?, mask)?)?,
        clip_frac: scalar(&masked_mean(&clipped.gt(&unclipped)?.to_dtype(mask.dtype())?, mask)?)?,
        ratio: scalar(&masked_mean(&ratio.detach(), mask)?)?,
    })
}

/// The clipped value loss and its statistics for one minibatch.
pub struct ValueLoss {
    /// 0.5·mean over real tokens of max((V − R)², (clip(V, V_old ± c) − R)²).
    pub loss: Tensor,
    /// TRL's `val/clipfrac`: the share of tokens whose clipped term is the larger.
    pub clip_frac: f64,
}

/// The clipped value loss over padded (B, T) `values` (now, with gradients), `old_values` (at
/// the rollout), `returns` and `mask`.
pub fn value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<ValueLoss> {
    let clipped_values = (old_values + (values - old_values)?.clamp(-clip, clip)?)?;
    let unclipped = (values - returns)?.sqr()?;
    let clipped = (clipped_values - returns)?.sqr()?;
    let loss = (masked_mean(&unclipped.maximum(&clipped)?, mask)? * 0.5)?;
    Ok(ValueLoss {
        loss,
        clip_frac: scalar(&masked_mean(&clipped.gt(&unclipped)?.to_dtype(mask.dtype())?, mask)?)?,
    })
}

/// The entropy of the softmax of `logits` over the last dimension, per row:
/// logsumexp(x) − Σ softmax(x)·x. Differentiable (for an entropy bonus).
pub fn entropy(logits: &Tensor) -> Result<Tensor> {
    let lse = ops::plain::logsumexp_last_dim(logits)?.squeeze(D::Minus1)?;
    let p = ops::softmax_last_dim(logits)?;
    lse - (p * logits)?.sum(D::Minus1)?
}

// ---------------------------------------------------------------------------------------
// 4. Statistics and the KL coefficient

/// How much of the returns' variance the values explain: 1 − Var(R − V)/Var(R) over every
/// token (CleanRL's `explained_variance`; population variances). None when the returns do
/// not vary.
pub fn explained_variance(values: &[Vec<f64>], returns: &[Vec<f64>]) -> Option<f64> {
    let pop = |rows: &[Vec<f64>]| {
        let n = rows.iter().map(Vec::len).sum::<usize>() as f64;
        mean_var(rows).1 * (n - 1.0) / n
    };
    let var_r = pop(returns);
    if var_r.is_nan() || var_r <= 0.0 {
        return None;
    }
    let diff: Vec<Vec<f64>> = returns
        .iter()
        .zip(values)
        .map(|(r, v)| r.iter().zip(v).map(|(a, b)| a - b).collect())
        .collect();
    Some(1.0 - pop(&diff) / var_r)
}

/// β, the weight of the KL penalty, between iterations: fixed, or Ziegler et al.'s
/// (2019) adaptive controller, which moves β toward a target KL: with e = clip(KL/target − 1,
/// ±0.2), β ← β·(1 + e·n/horizon) after an iteration of n responses. Saved in checkpoints
/// (β as exact text: serde_json's own float parsing may be off in the last bit, and a resumed
/// run must equal an uninterrupted one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KlControl {
    Fixed {
        #[serde(with = "exact")]
        beta: f64,
    },
    Adaptive {
        #[serde(with = "exact")]
        beta: f64,
        target: f64,
        horizon: f64,
    },
}

/// An f64 as the shortest text that parses back to the same bits (Rust's `Display` and
/// `parse` round-trip exactly).
mod exact {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(x)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl KlControl {
    pub fn beta(&self) -> f64 {
        match *self {
            KlControl::Fixed { beta } | KlControl::Adaptive { beta, .. } => beta,
        }
    }

    /// After an iteration of `n` responses whose mean KL (summed over each response's tokens)
    /// was `kl`.
    pub fn update(&mut self, kl: f64, n: usize) {
        if let KlControl::Adaptive { beta, target, horizon } = self {
            let error = (kl / *target - 1.0).clamp(-0.2, 0.2);
            *beta *= 1.0 + error * n as f64 / *horizon;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use candle_core::{Device, Var};

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    fn close_all(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    fn t(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn var(v: &[f64]) -> Var {
        Var::new(v, &Device::Cpu).unwrap()
    }

    fn vec(x: &Tensor) -> Vec<f64> {
        x.to_vec1::<f64>().unwrap()
    }

    #[test]
    fn kl_estimators_and_token_rewards_by_hand() {
        // r = ref − logp = −0.5: k1 = 0.5, k3 = e^−0.5 − 1 + 0.5 = 0.106530659…
        close(KlEstimator::K1.per_token(-1.0, -1.5), 0.5);
        close(KlEstimator::K3.per_token(-1.0, -1.5), (-0.5f64).exp() - 0.5);
        close(KlEstimator::K3.per_token(-1.0, -1.5), 0.10653065971263342);
        // A token the policy finds less likely than the reference: k1 < 0, k3 > 0.
        assert!(KlEstimator::K1.per_token(-2.0, -1.0) < 0.0);
        close(KlEstimator::K3.per_token(-2.0, -1.0), 1f64.exp() - 2.0);
        close(KlEstimator::K3.per_token(-0.7, -0.7), 0.0);

        // β = 0.1, k1 per token [0.5, −1, 0], score 2 on the last token.
        let r = token_rewards(&[-1.0, -2.0, -0.3], &[-1.5, -1.0, -0.3], 2.0, 0.1, KlEstimator::K1);
        close_all(&r.kl, &[0.5, -1.0, 0.0]);
        close_all(&r.rewards, &[-0.05, 0.1, 2.0]);
        let r = token_rewards(&[-1.0], &[-1.5], 2.0, 0.1, KlEstimator::K3);
        close_all(&r.rewards, &[2.0 - 0.1 * 0.10653065971263342]);
        assert!(token_rewards(&[], &[], 1.0, 0.1, KlEstimator::K1).rewards.is_empty());

        close(penalised_score(0.4, true, 1.0), 0.4);
        close(penalised_score(0.4, false, 1.0), -0.6);
        close(penalised_score(0.4, false, 0.0), 0.4);
    }

    #[test]
    fn gae_by_hand() {
        // γ 0.9, λ 0.8 (γλ 0.72), rewards [1, 0, 2], values [0.5, 1, 1.5]:
        // δ₂ = 2 − 1.5 = 0.5                    A₂ = 0.5
        // δ₁ = 0 + 0.9·1.5 − 1 = 0.35           A₁ = 0.35 + 0.72·0.5 = 0.71
        // δ₀ = 1 + 0.9·1 − 0.5 = 1.4            A₀ = 1.4 + 0.72·0.71 = 1.9112
        let (adv, ret) = gae(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 0.9, 0.8);
        close_all(&adv, &[1.9112, 0.71, 0.5]);
        close_all(&ret, &[2.4112, 1.71, 2.0]);
        // γ = λ = 1: the return is the sum of the rewards to come, whatever the values.
        let (adv, ret) = gae(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 1.0, 1.0);
        close_all(&ret, &[3.0, 2.0, 2.0]);
        close_all(&adv, &[2.5, 1.0, 0.5]);
        // λ = 0: one-step TD errors.
        let (adv, _) = gae(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 0.9, 0.0);
        close_all(&adv, &[1.4, 0.35, 0.5]);
    }

    #[test]
    fn whitening_uses_the_real_tokens_only() {
        // Five real tokens over two rows of different lengths: mean 4, unbiased var
        // (16 + 4 + 0 + 4 + 16)/4 = 10.
        let mut rows = vec![vec![0.0, 2.0], vec![4.0, 6.0, 8.0]];
        close_all(&[mean_var(&rows).0, mean_var(&rows).1], &[4.0, 10.0]);
        let s = (10.0f64 + 1e-8).sqrt();
        whiten(&mut rows, true);
        close_all(&rows[0], &[-4.0 / s, -2.0 / s]);
        close_all(&rows[1], &[0.0, 2.0 / s, 4.0 / s]);
        let mut rows = vec![vec![0.0, 2.0], vec![4.0, 6.0, 8.0]];
        whiten(&mut rows, false);
        close_all(&rows[0], &[4.0 - 4.0 / s, 4.0 - 2.0 / s]);
        let mut empty: Vec<Vec<f64>> = vec![vec![]];
        whiten(&mut empty, true);
    }

    /// Four tokens covering each case of the clip (ε = 0.2), and a padded one that must not
    /// count:
    /// - ρ = 1,    A = 1:  −1 and −1 (tie)            → −1,     not clipped, ∂/∂logp = −A·ρ
    /// - ρ = 1.5,  A = 1:  −1.5 and −1.2              → −1.2,   clipped, no gradient
    /// - ρ = 0.5,  A = −1: 0.5 and 0.8                → 0.8,    clipped, no gradient
    /// - ρ = e^0.1, A = −2: 2e^0.1 both (inside)      → 2e^0.1, not clipped
    #[test]
    fn clipped_surrogate_by_hand() {
        let old = [-1.0, -2.0, -1.0, -3.0, -1.0];
        let lr = [0.0, 1.5f64.ln(), 0.5f64.ln(), 0.1, 5.0];
        let logp = var(&old.iter().zip(&lr).map(|(o, l)| o + l).collect::<Vec<_>>());
        let adv = t(&[1.0, 1.0, -1.0, -2.0, 100.0]);
        let mask = t(&[1.0, 1.0, 1.0, 1.0, 0.0]);
        let out = policy_loss(logp.as_tensor(), &t(&old), &adv, &mask, 0.2).unwrap();
        let e01 = 0.1f64.exp();
        close(out.loss.to_scalar::<f64>().unwrap(), (-1.0 - 1.2 + 0.8 + 2.0 * e01) / 4.0);
        close(out.clip_frac, 0.5);
        close(out.approx_kl, 0.5 * (0.0 + 1.5f64.ln().powi(2) + 0.5f64.ln().powi(2) + 0.01) / 4.0);
        close(out.ratio, (1.0 + 1.5 + 0.5 + e01) / 4.0);
        let g = out.loss.backward().unwrap();
        close_all(
            &vec(g.get(logp.as_tensor()).unwrap()),
            &[-1.0 / 4.0, 0.0, 0.0, 2.0 * e01 / 4.0, 0.0],
        );
        // Away from the clip's edges the gradient matches finite differences.
        let adv = t(&[0.7, -0.4, 1.3, -2.0]);
        let mask = t(&[1.0, 1.0, 0.0, 1.0]);
        let old = t(&[-1.0, -2.0, -0.5, -3.0]);
        let l =
            Var::from_tensor(&(old.clone() + randn(&[4], 0.3, 3).as_tensor()).unwrap()).unwrap();
        check(&[l], |v| Ok(policy_loss(v[0].as_tensor(), &old, &adv, &mask, 0.2)?.loss));
    }

    /// Value clip 0.2, returns R:
    /// - V = 1,   V_old = 0.5, R = 2: clipped V 0.7; (1−2)² = 1, (0.7−2)² = 1.69 → 1.69, clipped,
    ///   no gradient
    /// - V = 0.6, V_old = 0.5, R = 0: inside; 0.36 both → 0.36, ∂/∂V = 0.5·2·0.6/3
    /// - V = 0,   V_old = 0.5, R = 1: clipped V 0.3; 1 and 0.49 → 1 (unclipped), ∂/∂V = 0.5·2·(0−1)/3
    #[test]
    fn clipped_value_loss_by_hand() {
        let v = var(&[1.0, 0.6, 0.0, 9.0]);
        let out = value_loss(
            v.as_tensor(),
            &t(&[0.5, 0.5, 0.5, 0.0]),
            &t(&[2.0, 0.0, 1.0, -9.0]),
            &t(&[1.0, 1.0, 1.0, 0.0]),
            0.2,
        )
        .unwrap();
        close(out.loss.to_scalar::<f64>().unwrap(), 0.5 * (1.69 + 0.36 + 1.0) / 3.0);
        close(out.clip_frac, 1.0 / 3.0);
        let g = out.loss.backward().unwrap();
        close_all(&vec(g.get(v.as_tensor()).unwrap()), &[0.0, 0.6 / 3.0, -1.0 / 3.0, 0.0]);
    }

    #[test]
    fn entropy_by_hand_and_its_gradient() {
        let h =
            vec(&entropy(&Tensor::new(&[[0.0f64, 0.0], [0.0, 3f64.ln()]], &Device::Cpu).unwrap())
                .unwrap());
        // [½, ½] → ln 2; [¼, ¾] → −(¼ ln ¼ + ¾ ln ¾).
        close_all(&h, &[2f64.ln(), -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln())]);
        check(&[randn(&[3, 5], 2.0, 7)], |v| entropy(v[0].as_tensor()));
    }

    #[test]
    fn explained_variance_by_hand() {
        let ret = vec![vec![1.0, 2.0], vec![3.0, 6.0]];
        // Perfect values explain everything; constant values at the mean explain nothing.
        close(explained_variance(&ret, &ret).unwrap(), 1.0);
        close(explained_variance(&[vec![3.0, 3.0], vec![3.0, 3.0]], &ret).unwrap(), 0.0);
        // Var(R) = (4 + 1 + 0 + 9)/4 = 3.5; R − V = [1, 0, 1, 0]: Var 0.25 → 1 − 0.25/3.5.
        close(
            explained_variance(&[vec![0.0, 2.0], vec![2.0, 6.0]], &ret).unwrap(),
            1.0 - 0.25 / 3.5,
        );
        assert_eq!(explained_variance(&[vec![0.0]], &[vec![1.0]]), None);
    }

    #[test]
    fn adaptive_kl_controller_by_hand() {
        let mut c = KlControl::Adaptive { beta: 0.2, target: 6.0, horizon: 10_000.0 };
        // KL 9: error 0.5 clipped to 0.2; 256 responses: β·(1 + 0.2·256/10⁴) = 0.2·1.00512.
        c.update(9.0, 256);
        close(c.beta(), 0.2 * 1.00512);
        // KL 6.6: error 0.1 → ·1.00256; KL 3: error −0.5 clipped to −0.2 → ·0.99488.
        c.update(6.6, 256);
        close(c.beta(), 0.2 * 1.00512 * 1.00256);
        c.update(3.0, 256);
        close(c.beta(), 0.2 * 1.00512 * 1.00256 * 0.99488);
        // On target: unchanged. Fixed: never changes.
        let before = c.beta();
        c.update(6.0, 256);
        close(c.beta(), before);
        let mut f = KlControl::Fixed { beta: 0.05 };
        f.update(100.0, 256);
        close(f.beta(), 0.05);
        // The state round-trips through JSON (checkpoints) bit for bit.
        for x in [c.beta(), 0.1 + 0.2, 1e-300, 0.2 * 1.00512 * 1.00256 * 0.99488] {
            let k = KlControl::Fixed { beta: x };
            let back: KlControl =
                serde_json::from_str(&serde_json::to_string(&k).unwrap()).unwrap();
            assert_eq!(back.beta().to_bits(), x.to_bits());
        }
        let back: KlControl = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
