//! GRPO's arithmetic, as TRL's `GRPOTrainer` computes it, each piece tested by hand:
//! [`advantages`] (the reward less its group's mean, over the group's standard deviation) and
//! [`loss`] (the clipped surrogate per token, the k3 KL to the reference, summed with the
//! weights of a [`LossType`]).

use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

/// What a reward's deviation from its group's mean is divided by (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRewards {
    /// The group's standard deviation (GRPO).
    Group,
    /// The whole rollout's standard deviation.
    Batch,
    /// Nothing (Dr. GRPO): the advantage is the reward less the group's mean.
    None,
}

/// How the per-token losses of an optimizer step's answers are summed (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Each answer's mean over its tokens, then the mean over answers (the GRPO paper).
    Grpo,
    /// The mean over all the step's tokens.
    Bnpo,
    /// The sum over tokens over (answers × `max_new_tokens`) (Dr. GRPO).
    DrGrpo,
    /// The sum over tokens over the rollout's tokens per optimizer step (DAPO; TRL's default).
    Dapo,
}

/// The unbiased standard deviation (as `torch.std` and TRL's `nanstd`); 0 for one value.
fn std(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Advantages of `rewards` (consecutive groups of `g` answers to one prompt), and per answer
/// the standard deviation it was scaled by (for `reward_std` and `frac_reward_zero_std`).
pub fn advantages(rewards: &[f64], g: usize, scale: ScaleRewards) -> (Vec<f64>, Vec<f64>) {
    let batch_std = std(rewards);
    let (mut adv, mut stds) = (Vec::with_capacity(rewards.len()), Vec::new());
    for group in rewards.chunks(g) {
        let mean = group.iter().sum::<f64>() / group.len() as f64;
        let s = if scale == ScaleRewards::Batch { batch_std } else { std(group) };
        for r in group {
            adv.push(if scale == ScaleRewards::None { r - mean } else { (r - mean) / (s + 1e-4) });
            stds.push(s);
        }
    }
    (adv, stds)
}

/// The weight of each token of answers of these `lengths` in the step's loss (a sum of
/// weighted per-token losses). `dapo_tokens`: the rollout's tokens per optimizer step.
pub fn token_weights(
    lengths: &[usize],
    loss: LossType,
    max_new_tokens: usize,
    dapo_tokens: f64,
) -> Vec<f32> {
    let total: usize = lengths.iter().sum();
    let b = lengths.len() as f64;
    let mut w = Vec::with_capacity(total);
    for &len in lengths {
        let each = match loss {
            LossType::Grpo => 1.0 / (len.max(1) as f64 * b),
            LossType::Bnpo => 1.0 / total.max(1) as f64,
            LossType::DrGrpo => 1.0 / (b * max_new_tokens as f64),
            LossType::Dapo => 1.0 / dapo_tokens.max(1.0),
        };
        w.extend(std::iter::repeat_n(each as f32, len));
    }
    w
}

/// One step's loss and what is logged of it.
pub struct Loss {
    /// Scalar, differentiable.
    pub loss: Tensor,
    /// The clipped surrogate alone (the loss less β·KL).
    pub policy: f64,
    /// Mean k3 KL per token to the reference, when `beta` is not 0.
    pub kl: Option<f64>,
    /// Share of tokens clipped below (ratio < 1 − ε, negative advantage), above, and either.
    pub clip_low: f64,
    pub clip_high: f64,
    pub clip_region: f64,
}

/// TRL's GRPO loss over flat per-token tensors (N): the policy's log-probs `logp` (with
/// gradient), the sampler's `old_logp`, the reference's `ref_logp` (with `beta` > 0), each
/// token's answer's `adv`antage, and the token `weights` ([`token_weights`]):
/// `Σ_t w_t · (−min(ρ_t·A, clip(ρ_t, 1−ε_low, 1+ε_high)·A) + β·k3_t)` with
/// `k3 = e^{ref−logp} − (ref−logp) − 1`, times ρ_t when `kl_correction` (TRL's
/// `use_bias_correction_kl`: the answers were sampled from the old policy, so ρ·k3 estimates
/// the KL of the current one; the same value at ρ = 1, another gradient).
#[allow(clippy::too_many_arguments)]
pub fn loss(
    logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    adv: &Tensor,
    weights: &Tensor,
    (eps_low, eps_high): (f64, f64),
    beta: f64,
    kl_correction: bool,
) -> Result<Loss> {
    let ratio = (logp - old_logp)?.exp()?;
    let clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)?;
    let per_token = (ratio.broadcast_mul(adv)?.minimum(&clipped.broadcast_mul(adv)?)? * -1.0)?;
    let policy = (&per_token * weights)?.sum_all()?;
    let n = logp.dim(0)? as f64;
    let (loss, kl) = match ref_logp {
        Some(r) if beta != 0.0 => {
            let d = (r - logp)?;
            let kl = ((d.exp()? - &d)? - 1.0)?;
            let kl = if kl_correction { (kl * &ratio)? } else { kl };
            let mean = f64::from(kl.sum_all()?.to_scalar::<f32>()?) / n.max(1.0);
            ((&policy + ((kl * weights)?.sum_all()? * beta)?)?, Some(mean))
        }
        _ => (policy.clone(), None),
    };
    let r = ratio.detach().to_vec1::<f32>()?;
    let a = adv.to_vec1::<f32>()?;
    let (mut low, mut high) = (0usize, 0usize);
    for (&r, &a) in r.iter().zip(&a) {
        low += usize::from(f64::from(r) < 1.0 - eps_low && a < 0.0);
        high += usize::from(f64::from(r) > 1.0 + eps_high && a > 0.0);
    }
    let share = |k: usize| k as f64 / n.max(1.0);
    Ok(Loss {
        loss,
        policy: f64::from(policy.to_scalar::<f32>()?),
        kl,
        clip_low: share(low),
        clip_high: share(high),
        clip_region: share(low + high),
    })
}

/// The mean entropy (nats) of the distributions `logits` (N, V) give.
pub fn mean_entropy(logits: &Tensor) -> Result<f64> {
    let lp = candle_nn::ops::log_softmax(&logits.detach(), D::Minus1)?;
    let h = (lp.exp()? * &lp)?.sum(D::Minus1)?.neg()?.mean_all()?;
    Ok(f64::from(h.to_scalar::<f32>()?))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn advantages_by_hand() {
        // Group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735.
        let (a, s) = advantages(&[1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], 4, ScaleRewards::Group);
        let x = 0.5 / (0.577_350_269 + 1e-4);
        for (got, want) in a.iter().zip([x, -x, -x, x, 0.0, 0.0, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-8, "{a:?}");
        }
        assert!(
            (s[0] - 0.577_350_269).abs() < 1e-8 && s[4] == 0.0,
            "a group of equal rewards has std 0"
        );
        let (a, _) = advantages(&[1.0, 0.0, 0.0, 1.0], 4, ScaleRewards::None);
        assert_eq!(a, [0.5, -0.5, -0.5, 0.5]);
        // Batch: all eight rewards' std (mean 1.25; Σ(r−m)² = 2·0.0625 + 2·1.5625 + 4·0.5625 = 5.5).
        let (a, s) = advantages(&[1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], 4, ScaleRewards::Batch);
        let std = (5.5f64 / 7.0).sqrt();
        assert!((s[0] - std).abs() < 1e-12 && (a[0] - 0.5 / (std + 1e-4)).abs() < 1e-12);
    }

    #[test]
    fn token_weights_by_loss_type() {
        let lens = [2, 4];
        assert_eq!(
            token_weights(&lens, LossType::Grpo, 8, 0.0),
            [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
        );
        assert_eq!(token_weights(&lens, LossType::Bnpo, 8, 0.0), [1.0 / 6.0; 6]);
        assert_eq!(token_weights(&lens, LossType::DrGrpo, 8, 0.0), [1.0 / 16.0; 6]);
        assert_eq!(token_weights(&lens, LossType::Dapo, 8, 12.0), [1.0 / 12.0; 6]);
    }

    #[test]
    fn loss_by_hand() {
        // Token 0: ratio e^0.5 = 1.6487 > 1.2 with A = +1: clipped to 1.2 → −1.2.
        // Token 1: ratio e^−0.5 = 0.6065 < 0.8 with A = −1: min(−0.6065, −0.8) = −0.8 → +0.8.
        // Token 2: ratio 1, A = 2 → −2.
        let logp = t(&[0.0, -1.0, -0.5]);
        let old = t(&[-0.5, -0.5, -0.5]);
        let adv = t(&[1.0, -1.0, 2.0]);
        let w = t(&[0.5, 0.25, 0.25]);
        let l = loss(&logp, &old, None, &adv, &w, (0.2, 0.2), 0.0, false).unwrap();
        let want = 0.5 * -1.2 + 0.25 * 0.8 + 0.25 * -2.0;
        let got = f64::from(l.loss.to_scalar::<f32>().unwrap());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(l.kl.is_none());
        assert_eq!((l.clip_low, l.clip_high, l.clip_region), (1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0));
        // k3 KL with ref − logp = d: e^d − d − 1.
        let r = t(&[0.0, 0.0, 0.0]);
        let l = loss(&logp, &old, Some(&r), &adv, &w, (0.2, 0.2), 0.1, false).unwrap();
        let k = |d: f64| d.exp() - d - 1.0;
        let kl_w = 0.5 * k(0.0) + 0.25 * k(1.0) + 0.25 * k(0.5);
        let got = f64::from(l.loss.to_scalar::<f32>().unwrap());
        assert!((got - (want + 0.1 * kl_w)).abs() < 1e-6);
        assert!((l.kl.unwrap() - (k(0.0) + k(1.0) + k(0.5)) / 3.0).abs() < 1e-6);
        // Corrected: each token's k3 times its ratio (e^0.5, e^-0.5, 1).
        let l = loss(&logp, &old, Some(&r), &adv, &w, (0.2, 0.2), 0.1, true).unwrap();
        let (up, down) = (0.5f64.exp(), (-0.5f64).exp());
        let kl_w = 0.5 * up * k(0.0) + 0.25 * down * k(1.0) + 0.25 * k(0.5);
        let got = f64::from(l.loss.to_scalar::<f32>().unwrap());
        assert!((got - (want + 0.1 * kl_w)).abs() < 1e-6);
    }

    /// At ρ = 1 the corrected KL has the value of the plain one and the gradient
    /// β·(1 − e^d) + β·k3 (the ratio's derivative is 1 there) per unit weight.
    #[test]
    fn the_corrected_kl_adds_its_value_to_the_gradient() {
        let logp = candle_core::Var::new(&[-1.0f32], &Device::Cpu).unwrap();
        let (old, r, adv, w) = (t(&[-1.0]), t(&[-0.5]), t(&[0.0]), t(&[1.0]));
        let grad = |corr: bool| {
            let l =
                loss(logp.as_tensor(), &old, Some(&r), &adv, &w, (0.2, 0.2), 0.5, corr).unwrap();
            let g = l.loss.backward().unwrap();
            g.get(logp.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0] as f64
        };
        let d = 0.5f64;
        let k3 = d.exp() - d - 1.0;
        assert!((grad(false) - 0.5 * (1.0 - d.exp())).abs() < 1e-6);
        assert!((grad(true) - 0.5 * (1.0 - d.exp() + k3)).abs() < 1e-6);
    }

    #[test]
    fn the_gradient_is_the_advantage_where_unclipped() {
        // d/dlogp of −ρ·A at ρ = 1 is −A (times the weight); a clipped token has none.
        let logp = candle_core::Var::new(&[-0.5f32, 0.0], &Device::Cpu).unwrap();
        let old = t(&[-0.5, -0.5]);
        let adv = t(&[3.0, 1.0]);
        let w = t(&[1.0, 1.0]);
        let l = loss(logp.as_tensor(), &old, None, &adv, &w, (0.2, 0.2), 0.0, false).unwrap();
        let g = l.loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!((g[0] + 3.0).abs() < 1e-6 && g[1] == 0.0, "{g:?}");
    }
}
