//! Finite-difference gradient checks (tests only), in f64 so the tolerance can be tight.
//!
//! `check(inputs, f)` reduces `f`'s output to a scalar with a fixed random projection, takes
//! candle's gradient of it, and compares each input entry (all of them for small tensors, a
//! spread sample of big ones) with the central difference `(L(x+h) - L(x-h)) / 2h`.

use candle_core::{DType, Device, Result, Tensor, Var};

use super::rng::{Rng, Stream};

/// A fresh f64 variable with N(0, std²) entries from `seed`.
pub fn randn(shape: &[usize], std: f64, seed: u64) -> Var {
    let mut rng = Rng::new(seed, Stream::Init);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| std * rng.normal()).collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

pub fn check(inputs: &[Var], f: impl Fn(&[Var]) -> Result<Tensor>) {
    check_tol(inputs, f, 1e-6)
}

/// Entries of one input compared at most (spread evenly over the tensor).
const MAX_ENTRIES: usize = 24;
const H: f64 = 1e-5;

pub fn check_tol(inputs: &[Var], f: impl Fn(&[Var]) -> Result<Tensor>, tol: f64) {
    for v in inputs {
        assert_eq!(v.dtype(), DType::F64, "gradient checks run in f64");
    }
    let out = f(inputs).unwrap();
    let proj = randn(out.dims(), 1.0, 99).as_detached_tensor();
    let loss = |vs: &[Var]| -> f64 {
        (f(vs).unwrap() * &proj).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let grads = (out * &proj).unwrap().sum_all().unwrap().backward().unwrap();
    let mut compared = 0;
    for (i, v) in inputs.iter().enumerate() {
        let shape = v.shape().clone();
        let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let analytic = match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            None => vec![0.0; base.len()],
        };
        let step = base.len().div_ceil(MAX_ENTRIES).max(1);
        for j in (0..base.len()).step_by(step) {
            let at = |delta: f64| {
                let mut x = base.clone();
                x[j] += delta;
                v.set(&Tensor::from_vec(x, shape.clone(), &Device::Cpu).unwrap()).unwrap();
                loss(inputs)
            };
            let numeric = (at(H) - at(-H)) / (2.0 * H);
            v.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap()).unwrap();
            let a = analytic[j];
            let err = (a - numeric).abs() / numeric.abs().max(a.abs()).max(1.0);
            assert!(
                err < tol,
                "input {i} entry {j}: analytic gradient {a} vs finite difference {numeric} (error {err:e})"
            );
            compared += 1;
        }
    }
    assert!(compared > 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker itself must catch a wrong gradient: x.detach() * x has the gradient of
    /// x² halved.
    #[test]
    #[should_panic(expected = "analytic gradient")]
    fn a_wrong_gradient_is_caught() {
        let x = randn(&[4], 1.0, 1);
        check(&[x], |v| v[0].as_tensor().detach() * v[0].as_tensor());
    }
}
