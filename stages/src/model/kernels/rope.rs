//! Rotary position embeddings applied in place of a copy on the packed query/key/value
//! projection (B, T, (H + 2·KV)·hd): the first `H + KV` heads (queries and keys) of the row
//! at position `t` are rotated by `t`'s angles ([`crate::model::rope`]), the values copied.
//! Backward: the transposed rotation, `(da, db) → (da·cos + db·sin, db·cos − da·sin)`.
//! Elementwise per row: the same bits on any thread count.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::{Real, float_op, grad, par_rows, storage, with_float_data};
use crate::model::rope::RopeTable;

pub struct RotaryQk {
    pub table: Arc<RopeTable>,
    /// Heads rotated (queries and keys).
    pub heads: usize,
    pub head_dim: usize,
}

impl RotaryQk {
    fn dims(&self, shape: &Shape) -> Result<(usize, usize, usize)> {
        let (b, t, w) = shape.dims3()?;
        if self.heads * self.head_dim > w || self.head_dim != 2 * self.table.half {
            candle_core::bail!("rope: {shape:?} has no {} heads of {}", self.heads, self.head_dim)
        }
        if t > self.table.len() {
            candle_core::bail!("rope: {t} positions, the table has {}", self.table.len())
        }
        Ok((b, t, w))
    }

    /// One row at position `pos`; `inverse` rotates backwards (the gradient).
    fn row<T: Real>(&self, x: &[T], out: &mut [T], pos: usize, inverse: bool) {
        let (cos, sin) = self.table.at(pos);
        let (hd, half) = (self.head_dim, self.table.half);
        let rotated = self.heads * hd;
        for h in 0..self.heads {
            let (xa, xb) = x[h * hd..(h + 1) * hd].split_at(half);
            let (oa, ob) = out[h * hd..(h + 1) * hd].split_at_mut(half);
            for i in 0..half {
                let (c, s) = (T::from(cos[i]).unwrap(), T::from(sin[i]).unwrap());
                let (a, b) = (xa[i], xb[i]);
                if inverse {
                    oa[i] = a * c + b * s;
                    ob[i] = b * c - a * s;
                } else {
                    oa[i] = a * c + -b * s;
                    ob[i] = b * c + a * s;
                }
            }
        }
        out[rotated..].copy_from_slice(&x[rotated..]);
    }

    fn apply<T: Real>(&self, x: &[T], t: usize, w: usize, inverse: bool) -> Vec<T> {
        let mut y = vec![T::zero(); x.len()];
        par_rows(&mut y, w, |r, out| self.row(&x[r * w..(r + 1) * w], out, r % t, inverse));
        y
    }
}

impl CustomOp1 for RotaryQk {
    fn name(&self) -> &'static str {
        "hone-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, t, w) = self.dims(l.shape())?;
        let out = float_op!(s, l, "rope", |x| storage(self.apply(x, t, w, false)));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (_, t, w) = self.dims(x.shape())?;
        with_float_data!("rope", x.dtype(), [dy] => |[g]| grad(self.apply(g, t, w, true), x))
    }
}

/// Rotates the queries and keys of the packed `qkv` (B, T, (H + 2·KV)·hd), positions 0..T.
pub fn rope_qk(
    qkv: &Tensor,
    table: &Arc<RopeTable>,
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(RotaryQk { table: table.clone(), heads, head_dim })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Rope;
    use crate::model::gradcheck::{check, randn};

    #[test]
    fn rotates_queries_and_keys_by_position_and_its_gradient_is_right() {
        let table = RopeTable::new(&Rope { theta: 100.0, scaling: None }, 4, 8);
        // 2 query heads + 1 key head rotated, 1 value head copied.
        let x = randn(&[2, 5, 16], 1.0, 1);
        let y = rope_qk(x.as_tensor(), &table, 3, 4).unwrap();
        let (xs, ys) = (x.as_tensor().to_vec3::<f64>().unwrap(), y.to_vec3::<f64>().unwrap());
        assert_eq!(xs[1][0], ys[1][0], "position 0 is not rotated");
        assert_eq!(xs[1][3][12..], ys[1][3][12..], "values are copied");
        let mut one: Vec<f32> = xs[1][3][4..8].iter().map(|&v| v as f32).collect();
        let (c, s) = table.at(3);
        crate::model::rope::rotate(&mut one, c, s);
        for (a, b) in one.iter().zip(&ys[1][3][4..8]) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{a} vs {b}");
        }
        check(&[x], |v| rope_qk(v[0].as_tensor(), &table, 3, 4));
    }
}
