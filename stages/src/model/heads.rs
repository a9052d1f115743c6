//! Heads on a GPT's final hidden states ([`super::Gpt::hidden`]): [`ScalarHead`], one number
//! per position: read at the last real token it is a reward model's score (HuggingFace's
//! `GPT2ForSequenceClassification` with `num_labels: 1`), at every position PPO's value.

use candle_core::{Device, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::ops;

/// A linear map from the hidden size to one number, without bias (HF's `score`).
pub struct ScalarHead {
    /// (1, n_embd), as `nn.Linear(n_embd, 1, bias=False)` stores it.
    weight: Tensor,
}

impl ScalarHead {
    /// The head's standard deviation at initialisation, 1/√(n_embd + 1): unit-variance
    /// scores from unit-variance features (the reward heads of lm-human-preferences and the
    /// summarize-from-feedback reproduction).
    pub fn init_std(n_embd: usize) -> f64 {
        1.0 / ((n_embd + 1) as f64).sqrt()
    }

    /// `weight` (1, n_embd) under `vb` (e.g. `vb.pp("score")` gives `score.weight`), drawn
    /// from N(0, [`ScalarHead::init_std`]²) when it is created fresh.
    pub fn new(n_embd: usize, vb: VarBuilder) -> Result<ScalarHead> {
        let weight = vb.get_with_hints(
            (1, n_embd),
            "weight",
            Init::Randn { mean: 0.0, stdev: Self::init_std(n_embd) },
        )?;
        Ok(ScalarHead { weight })
    }

    /// The head at every position: (B, T) for hidden states (B, T, C).
    pub fn per_position(&self, hidden: &Tensor) -> Result<Tensor> {
        ops::linear(hidden, &self.weight, None)?.squeeze(2)
    }

    /// The head at one position per row: (B) for hidden states (B, T, C), row `b` read at
    /// `positions[b]` (a reward model reads the last real token of each right-padded row).
    pub fn at(&self, hidden: &Tensor, positions: &[usize]) -> Result<Tensor> {
        let (b, t, c) = hidden.dims3()?;
        if positions.len() != b {
            candle_core::bail!("{} positions for {b} rows", positions.len())
        }
        if let Some(p) = positions.iter().find(|&&p| p >= t) {
            candle_core::bail!("position {p} is past the {t} positions of the rows")
        }
        let rows: Vec<u32> =
            positions.iter().enumerate().map(|(i, &p)| (i * t + p) as u32).collect();
        let picked =
            hidden.reshape((b * t, c))?.index_select(&Tensor::new(rows, &Device::Cpu)?, 0)?;
        ops::linear(&picked, &self.weight, None)?.squeeze(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamStore;
    use crate::model::gradcheck::{check, randn};
    use candle_core::DType;

    #[test]
    fn reads_the_given_positions_with_gradients() {
        let ps = ParamStore::seeded(1);
        let head =
            ScalarHead::new(4, ps.var_builder(DType::F64, &Device::Cpu).pp("score")).unwrap();
        assert_eq!(ps.vars()[0].0, "score.weight");
        let h = randn(&[2, 3, 4], 1.0, 5);
        let all = head.per_position(h.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let at = head.at(h.as_tensor(), &[2, 0]).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(at, vec![all[0][2], all[1][0]]);
        let w = ps.vars()[0].1.clone();
        check(&[h.clone(), w.clone()], |v| {
            ScalarHead { weight: v[1].as_tensor().clone() }.at(v[0].as_tensor(), &[1, 2])
        });
        check(&[h, w], |v| {
            ScalarHead { weight: v[1].as_tensor().clone() }.per_position(v[0].as_tensor())
        });
        assert!(
            head.at(&Tensor::zeros((2, 3, 4), DType::F64, &Device::Cpu).unwrap(), &[3, 0]).is_err()
        );
    }

    #[test]
    fn initial_scores_have_about_unit_variance_on_unit_features() {
        let d = 64;
        let ps = ParamStore::seeded(2);
        let head = ScalarHead::new(d, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let w = ps.vars()[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let var = w.iter().map(|x| f64::from(x * x)).sum::<f64>() / d as f64;
        let want = ScalarHead::init_std(d).powi(2);
        assert!((var / want - 1.0).abs() < 0.35, "weight variance {var}, want {want}");
        let _ = head;
    }
}
