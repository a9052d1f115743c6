//! [`Checkpoint`]: everything a training run needs to continue exactly where it was.
//!
//! One safetensors file (`checkpoint.safetensors`): the parameters (`param/<name>`), AdamW's
//! moments (`adam_m/<name>`, `adam_v/<name>`), the training objective's own tensors
//! (`objective/<name>`), and in the metadata the step, AdamW's step count, the RNG position,
//! a fingerprint of the run's settings, the metric lines so far and the objective's own
//! state as JSON ([`ObjectiveState`]).
//! It is written to a temporary file and renamed, so a kill at any moment leaves the
//! previous checkpoint or the new one, never half of one.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::optim::AdamState;
use super::rng::RngState;
use super::{ModelError, Result};

pub const FILE: &str = "checkpoint.safetensors";

pub struct Checkpoint {
    /// Optimizer steps completed.
    pub step: u64,
    pub params: Vec<(String, Tensor)>,
    pub adam: AdamState,
    pub rng: RngState,
    /// What the run was configured with; a checkpoint from other settings is not resumed.
    pub fingerprint: String,
    /// The metric lines (JSONL) written so far.
    pub history: String,
    pub objective: ObjectiveState,
}

/// What a training objective keeps between steps beyond the parameters (PPO's rollout buffer,
/// its KL controller): settings-like values as JSON, arrays as named tensors.
#[derive(Clone, Debug, Default)]
pub struct ObjectiveState {
    pub json: serde_json::Value,
    pub tensors: Vec<(String, Tensor)>,
}

impl ObjectiveState {
    pub fn is_empty(&self) -> bool {
        self.json.is_null() && self.tensors.is_empty()
    }

    fn tensor(&self, name: &str) -> std::result::Result<&Tensor, String> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or(format!("no `{name}`"))
    }

    /// The `u32` array saved as `name` (an error names it when it is missing or not one).
    pub fn u32s(&self, name: &str) -> std::result::Result<Vec<u32>, String> {
        self.tensor(name)?.to_vec1::<u32>().map_err(|e| format!("`{name}`: {e}"))
    }

    /// The `f64` array saved as `name`.
    pub fn f64s(&self, name: &str) -> std::result::Result<Vec<f64>, String> {
        self.tensor(name)?.to_vec1::<f64>().map_err(|e| format!("`{name}`: {e}"))
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    step: u64,
    adam_t: u64,
    rng: RngState,
    fingerprint: String,
    history: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    objective: serde_json::Value,
}

const PARAM: &str = "param/";
const ADAM_M: &str = "adam_m/";
const ADAM_V: &str = "adam_v/";
const OBJECTIVE: &str = "objective/";

impl Checkpoint {
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let meta = Meta {
            step: self.step,
            adam_t: self.adam.t,
            rng: self.rng.clone(),
            fingerprint: self.fingerprint.clone(),
            history: self.history.clone(),
            objective: self.objective.json.clone(),
        };
        let meta = HashMap::from([(
            "hone".to_string(),
            serde_json::to_string(&meta).expect("plain data serialises"),
        )]);
        let tensors = self
            .params
            .iter()
            .map(|(n, t)| (format!("{PARAM}{n}"), t))
            .chain(self.adam.m.iter().map(|(n, t)| (format!("{ADAM_M}{n}"), t)))
            .chain(self.adam.v.iter().map(|(n, t)| (format!("{ADAM_V}{n}"), t)))
            .chain(self.objective.tensors.iter().map(|(n, t)| (format!("{OBJECTIVE}{n}"), t)));
        let bytes = safetensors::serialize(tensors, Some(meta))
            .map_err(|e| ModelError::format(&path, e.to_string()))?;
        hone_engine::files::write_atomic(&path, &bytes)
            .map_err(|e| ModelError::format(&path, format!("cannot write the checkpoint: {e}")))
    }

    /// The checkpoint in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(ModelError::io(&path))?;
        let bad = |m: String| ModelError::format(&path, m);
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("hone"))
            .ok_or_else(|| bad("no hone metadata".into()))?;
        let meta: Meta = serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        let mut sorted: Vec<(String, Tensor)> = tensors.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let take = |prefix: &str| -> Vec<(String, Tensor)> {
            sorted
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
                .collect()
        };
        Ok(Some(Checkpoint {
            step: meta.step,
            params: take(PARAM),
            adam: AdamState { t: meta.adam_t, m: take(ADAM_M), v: take(ADAM_V) },
            rng: meta.rng,
            fingerprint: meta.fingerprint,
            history: meta.history,
            objective: ObjectiveState { json: meta.objective, tensors: take(OBJECTIVE) },
        }))
    }
}

/// Capture and restore the state of a training run (`pretrain`, `sft`, …): one place for
/// what a checkpoint holds and how a resume checks it.
impl Checkpoint {
    /// A checkpoint of a run's current state: the trained parameters `vars`, the optimizer,
    /// the RNG and the objective's state.
    pub fn capture(
        step: u64,
        vars: &[(String, Var)],
        opt: &super::optim::AdamW,
        rng: &super::rng::Rng,
        fingerprint: &str,
        history: &str,
        objective: ObjectiveState,
    ) -> std::result::Result<Checkpoint, hone_engine::stage::StageError> {
        Ok(Checkpoint {
            step,
            params: vars.iter().map(|(n, v)| (n.clone(), v.as_detached_tensor())).collect(),
            adam: opt.state()?,
            rng: rng.state(),
            fingerprint: fingerprint.to_string(),
            history: history.to_string(),
            objective,
        })
    }

    /// Continue from `dir`'s checkpoint, if there is one made with the same settings
    /// (`fingerprint`): restores the parameters `vars`, the optimizer, the RNG, the step and
    /// the metric history. Returns the objective's state when it resumed, for the objective
    /// to restore.
    pub fn resume(
        dir: &Path,
        fingerprint: &str,
        vars: &[(String, Var)],
        opt: &mut super::optim::AdamW,
        rng: &mut super::rng::Rng,
        step: &mut u64,
        history: &mut String,
    ) -> std::result::Result<Option<ObjectiveState>, hone_engine::stage::StageError> {
        use hone_engine::stage::StageError;
        let Some(ck) = Checkpoint::load(dir)? else { return Ok(None) };
        if ck.fingerprint != fingerprint {
            tracing::warn!("ignoring a checkpoint in {} made with other settings", dir.display());
            return Ok(None);
        }
        let bad = |m: String| {
            StageError::msg(format!(
                "cannot resume from `{}`: {m}; delete it to start over",
                dir.join(FILE).display()
            ))
        };
        for (name, var) in vars {
            let (_, t) = ck
                .params
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| bad(format!("no parameter `{name}`")))?;
            var.set(t).map_err(|e| bad(format!("parameter `{name}`: {e}")))?;
        }
        opt.load_state(&ck.adam).map_err(bad)?;
        *rng = super::rng::Rng::from_state(&ck.rng)
            .ok_or_else(|| bad("its RNG state is malformed".into()))?;
        *step = ck.step;
        *history = ck.history;
        tracing::info!(step = ck.step, "resuming from a checkpoint");
        Ok(Some(ck.objective))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::{Rng, Stream};

    #[test]
    fn save_then_load_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
        let mut rng = Rng::new(5, Stream::Train);
        rng.below(10);
        let ck = Checkpoint {
            step: 42,
            params: vec![("b".into(), t(&[1.5, f32::MIN_POSITIVE])), ("a".into(), t(&[-0.0]))],
            adam: AdamState {
                t: 42,
                m: vec![("a".into(), t(&[0.25])), ("b".into(), t(&[1.0, 2.0]))],
                v: vec![("a".into(), t(&[3.0])), ("b".into(), t(&[4.0, 5.0]))],
            },
            rng: rng.state(),
            fingerprint: "fp".into(),
            history: "{\"step\":1}\n".into(),
            objective: ObjectiveState {
                json: serde_json::json!({ "kl_coef": 0.15 }),
                tensors: vec![("buffer".into(), t(&[7.0, -1.0]))],
            },
        };
        assert!(Checkpoint::load(dir.path()).unwrap().is_none());
        ck.save(dir.path()).unwrap();
        let back = Checkpoint::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (back.step, back.adam.t, back.fingerprint.as_str(), back.history.as_str()),
            (42, 42, "fp", "{\"step\":1}\n")
        );
        assert_eq!(back.rng, rng.state());
        let bits = |list: &[(String, Tensor)], name: &str| {
            list.iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&back.params, "b"), vec![1.5f32.to_bits(), f32::MIN_POSITIVE.to_bits()]);
        assert_eq!(bits(&back.params, "a"), vec![(-0.0f32).to_bits()]);
        assert_eq!(bits(&back.adam.v, "b"), vec![4.0f32.to_bits(), 5.0f32.to_bits()]);
        assert_eq!(back.objective.json, serde_json::json!({ "kl_coef": 0.15 }));
        assert_eq!(
            bits(&back.objective.tensors, "buffer"),
            vec![7.0f32.to_bits(), (-1.0f32).to_bits()]
        );
        // Only the checkpoint file is left: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        let err = Checkpoint::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains(FILE), "{err}");
    }
}
