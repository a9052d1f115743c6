//! How far a policy moved from a reference on given answers: the exact KL divergence of their
//! next-token distributions, summed over the answer's positions ([`answer_kl`]). `evaluate`
//! reports its mean per answer beside accuracy and reward, so PPO, DPO and the like can be
//! compared at the distance they went.

use candle_core::{D, Device, Tensor};

use crate::model::ops::Dropout;
use crate::model::{Gpt, ModelError};
use crate::rl::reward_model::answer_span;

/// For each row (its answer starting at `starts[i]`, closed by `im_end`):
/// `Σ_t KL(π(·|y_<t) ‖ π_ref(·|y_<t))` over the positions that predict the answer's tokens,
/// in nats. Rows are right-padded with `pad` into one batch.
pub fn answer_kl(
    policy: &Gpt,
    reference: &Gpt,
    rows: &[&Vec<u32>],
    starts: &[usize],
    pad: u32,
    im_end: u32,
) -> Result<Vec<f64>, ModelError> {
    let (n, t) = (rows.len(), rows.iter().map(|r| r.len()).max().unwrap_or(1));
    let mut x = vec![pad; n * t];
    let mut mask = vec![0f32; n * t];
    for (b, r) in rows.iter().enumerate() {
        x[b * t..b * t + r.len()].copy_from_slice(r);
        // Position i predicts token i + 1: the answer's tokens start..=end at start - 1..end.
        let (start, end) = answer_span(r, starts[b], im_end)?;
        mask[b * t + start - 1..b * t + end].fill(1.0);
    }
    let x = Tensor::from_vec(x, (n, t), &Device::Cpu)?;
    let log_softmax = |g: &Gpt| -> Result<Tensor, ModelError> {
        Ok(candle_nn::ops::log_softmax(&g.forward(&x, &mut Dropout::off())?, D::Minus1)?)
    };
    let (lp, lq) = (log_softmax(policy)?, log_softmax(reference)?);
    let kl = (lp.exp()? * (&lp - &lq)?)?.sum(D::Minus1)?;
    let kl = (kl * Tensor::from_vec(mask, (n, t), &Device::Cpu)?)?.sum(1)?;
    Ok(kl.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::model::{GptConfig, ParamStore};

    fn gpt(seed: u64) -> Gpt {
        let cfg = GptConfig {
            vocab_size: 12,
            block_size: 16,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            bias: true,
            dropout: 0.0,
            ..Default::default()
        };
        Gpt::new(&cfg, ParamStore::seeded(seed).var_builder(DType::F32, &Device::Cpu)).unwrap()
    }

    /// Against a hand sum over positions and tokens of p·(log p − log q), from each model's
    /// own logits; a model against itself is 0; padding changes nothing.
    #[test]
    fn the_kl_sums_each_answer_positions_divergence() {
        let (p, q) = (gpt(1), gpt(2));
        let im_end = 11;
        let (a, b) = (vec![1u32, 2, 3, 4, 5, 11, 6], vec![1u32, 2, 7, 11]);
        let kl = answer_kl(&p, &q, &[&a, &b], &[3, 2], 0, im_end).unwrap();
        for (row, start, got) in [(&a, 3usize, kl[0]), (&b, 2, kl[1])] {
            let x = Tensor::new(row.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let logits = |g: &Gpt| g.forward(&x, &mut Dropout::off()).unwrap().squeeze(0).unwrap();
            let (lp, lq) =
                (logits(&p).to_vec2::<f32>().unwrap(), logits(&q).to_vec2::<f32>().unwrap());
            let end = row.iter().rposition(|&t| t == im_end).unwrap();
            let lse = |v: &[f32]| {
                let m = v.iter().cloned().fold(f64::MIN, |a, b| a.max(f64::from(b)));
                m + v.iter().map(|&z| (f64::from(z) - m).exp()).sum::<f64>().ln()
            };
            let mut want = 0.0;
            for i in start - 1..end {
                let (zp, zq) = (lse(&lp[i]), lse(&lq[i]));
                for k in 0..12 {
                    let (lpk, lqk) = (f64::from(lp[i][k]) - zp, f64::from(lq[i][k]) - zq);
                    want += lpk.exp() * (lpk - lqk);
                }
            }
            assert!(want > 0.0 && (got - want).abs() < 1e-4, "{got} vs {want}");
        }
        let same = answer_kl(&p, &p, &[&a], &[3], 0, im_end).unwrap();
        assert!(same[0].abs() < 1e-6);
        let alone = answer_kl(&p, &q, &[&b], &[2], 0, im_end).unwrap();
        assert!((alone[0] - kl[1]).abs() < 1e-5, "padding changed the KL");
    }
}
