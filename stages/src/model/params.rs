//! [`ParamStore`]: the named trainable variables of a model, in creation order.
//!
//! It is a candle `VarBuilder` backend, so models are written the candle way
//! (`Gpt::new(&cfg, vb)`, names from `vb.pp("h.0.attn")`), but unlike `VarMap` it
//! - draws initial values from a seeded [`Rng`] (candle's CPU RNG cannot be seeded), in the
//!   order the model asks for them, so a seed always gives the same weights;
//! - keeps the variables in that order, so reductions over all parameters (the gradient
//!   norm) add up in the same order every run;
//! - can take the values from loaded tensors instead (a saved model, a checkpoint).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::rng::{Rng, Stream};

#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    vars: Vec<(String, Var)>,
    source: Source,
}

enum Source {
    Init(Box<Rng>),
    Tensors(HashMap<String, Tensor>),
}

impl ParamStore {
    /// Fresh parameters from the init hints, drawn from `seed`.
    pub fn seeded(seed: u64) -> ParamStore {
        Self::with(Source::Init(Box::new(Rng::new(seed, Stream::Init))))
    }

    /// Parameters with these values (by name); asking for a missing one is an error.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> ParamStore {
        Self::with(Source::Tensors(tensors))
    }

    fn with(source: Source) -> ParamStore {
        ParamStore { inner: Arc::new(Mutex::new(Inner { vars: Vec::new(), source })) }
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Every variable created so far, in creation order.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.inner.lock().unwrap().vars.clone()
    }

    /// Loaded tensors that no variable asked for (a sign of a mismatched file).
    pub fn unused(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        match &inner.source {
            Source::Init(_) => Vec::new(),
            Source::Tensors(t) => {
                let mut names: Vec<String> = t
                    .keys()
                    .filter(|k| !inner.vars.iter().any(|(n, _)| n == *k))
                    .cloned()
                    .collect();
                names.sort();
                names
            }
        }
    }

    /// The current values, detached, by name.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        self.vars().into_iter().map(|(n, v)| (n, v.as_detached_tensor())).collect()
    }
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut inner = self.inner.lock().unwrap();
        if let Some((_, v)) = inner.vars.iter().find(|(n, _)| n == name) {
            if v.shape() != &shape {
                candle_core::bail!(
                    "parameter `{name}` asked for twice with shapes {shape:?} and {:?}",
                    v.shape()
                )
            }
            return Ok(v.as_tensor().clone());
        }
        let value = match &mut inner.source {
            Source::Init(rng) => draw(rng, &shape, init, dtype, dev)?,
            Source::Tensors(t) => {
                // Taken out: the loaded copy is freed once the variable holds its own (what
                // is left is what no variable asked for: `unused`).
                let Some(t) = t.remove(name) else {
                    candle_core::bail!("no tensor `{name}` in the saved model")
                };
                if t.shape() != &shape {
                    candle_core::bail!(
                        "tensor `{name}` has shape {:?}, the model needs {shape:?}",
                        t.shape()
                    )
                }
                t.to_dtype(dtype)?.to_device(dev)?
            }
        };
        // `from_tensor` copies, so training never writes into loaded (maybe mmapped) data.
        let var = Var::from_tensor(&value)?;
        let t = var.as_tensor().clone();
        inner.vars.push((name.to_string(), var));
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("parameter `{name}` needs a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let inner = self.inner.lock().unwrap();
        match &inner.source {
            Source::Init(_) => true,
            Source::Tensors(t) => t.contains_key(name),
        }
    }
}

fn draw(
    rng: &mut Rng,
    shape: &Shape,
    init: Init,
    dtype: DType,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let values: Vec<f64> = match init {
        Init::Const(c) => vec![c; n],
        Init::Randn { mean, stdev } => (0..n).map(|_| mean + stdev * rng.normal()).collect(),
        Init::Uniform { lo, up } => {
            (0..n).map(|_| lo + (up - lo) * f64::from(rng.uniform())).collect()
        }
        other => candle_core::bail!("init {other:?} is not supported by hone's parameter store"),
    };
    Tensor::from_vec(values, shape.clone(), dev)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_order() {
        let make = |seed| {
            let ps = ParamStore::seeded(seed);
            let vb = ps.var_builder(DType::F32, &Device::Cpu);
            vb.pp("a")
                .get_with_hints((3, 4), "weight", Init::Randn { mean: 0.0, stdev: 0.02 })
                .unwrap();
            vb.pp("a").get_with_hints(4, "bias", Init::Const(0.0)).unwrap();
            ps.snapshot()
                .into_iter()
                .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                .collect::<Vec<_>>()
        };
        let (a, b, c) = (make(1), make(1), make(2));
        assert_eq!(a, b);
        assert_ne!(a[0].1, c[0].1);
        assert_eq!(a[0].0, "a.weight");
        assert_eq!(a[1].1, vec![0.0; 4]);
        let std = (a[0].1.iter().map(|x| x * x).sum::<f32>() / 12.0).sqrt();
        assert!(std > 0.005 && std < 0.05, "std {std}");
    }

    #[test]
    fn loading_checks_names_and_shapes() {
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let ps = ParamStore::from_tensors(HashMap::from([
            ("w".to_string(), t.clone()),
            ("extra".to_string(), t),
        ]));
        let vb = ps.var_builder(DType::F32, &Device::Cpu);
        assert!(vb.get((2, 2), "w").is_ok());
        assert!(vb.get((2, 3), "w").is_err());
        let err = vb.get(2, "missing").unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        assert_eq!(ps.unused(), vec!["extra".to_string()]);
    }
}
