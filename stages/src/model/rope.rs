//! Rotary position embeddings' tables: `cos` and `sin` of `position · inv_freq[i]` for every
//! position and each half of a head, computed as transformers' `LlamaRotaryEmbedding` does
//! (in f32: `inv_freq = 1 / theta^(2i / hd)`, the product `position · inv_freq` one f32
//! multiplication), with Llama 3's and linear frequency scaling. The training kernel
//! ([`super::kernels::rope`]) and the decoder read the same table.

use std::sync::Arc;

use super::config::{Rope, RopeScaling};

/// `cos` and `sin` for positions `0..len`, `half` = head_dim / 2 values each.
#[derive(Debug)]
pub struct RopeTable {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// The rotary frequencies `inv_freq[i]`, `i < head_dim / 2`, scaled as `rope.scaling` says.
pub fn inv_freq(rope: &Rope, head_dim: usize) -> Vec<f32> {
    let base = rope.theta as f32;
    let raw = (0..head_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect::<Vec<f32>>();
    match &rope.scaling {
        None => raw,
        Some(RopeScaling::Linear { factor }) => raw.iter().map(|f| f / *factor as f32).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let (factor, lo, hi) =
                (*factor as f32, *low_freq_factor as f32, *high_freq_factor as f32);
            let old = *original_max_position_embeddings as f32;
            let (low_wavelen, high_wavelen) = (old / lo, old / hi);
            raw.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                    if medium {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect()
        }
    }
}

impl RopeTable {
    pub fn new(rope: &Rope, head_dim: usize, len: usize) -> Arc<RopeTable> {
        let inv = inv_freq(rope, head_dim);
        let half = inv.len();
        let (mut cos, mut sin) = (Vec::with_capacity(len * half), Vec::with_capacity(len * half));
        for pos in 0..len {
            for &f in &inv {
                let angle = f64::from(pos as f32 * f);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Arc::new(RopeTable { half, cos, sin })
    }

    /// Position `pos`'s (cos, sin), `half` each.
    pub fn at(&self, pos: usize) -> (&[f32], &[f32]) {
        let r = pos * self.half..(pos + 1) * self.half;
        (&self.cos[r.clone()], &self.sin[r])
    }

    pub fn len(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.cos.is_empty()
    }
}

/// Rotates one head's vector `x` (head_dim) in place by position's (cos, sin), the halves
/// paired as transformers' `rotate_half` pairs them: `(a, b) → (a·cos − b·sin, b·cos + a·sin)`.
#[inline(always)]
pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = x.split_at_mut(half);
    for (((a, b), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(cos).zip(sin) {
        let (x1, x2) = (*a, *b);
        *a = x1 * c + -x2 * s;
        *b = x2 * c + x1 * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_short_wavelengths_and_divides_long_ones() {
        let plain = Rope { theta: 500_000.0, scaling: None };
        let scaled = Rope {
            theta: 500_000.0,
            scaling: Some(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
        };
        let (a, b) = (inv_freq(&plain, 64), inv_freq(&scaled, 64));
        assert_eq!(a[0], b[0], "the highest frequency is kept");
        assert!((b[31] - a[31] / 8.0).abs() <= 1e-12 * a[31].abs().max(1.0), "the lowest divided");
        assert!(b.iter().zip(&a).all(|(x, y)| x <= y));
    }

    #[test]
    fn position_zero_is_the_identity_and_rotation_keeps_the_norm() {
        let t = RopeTable::new(&Rope::default(), 8, 5);
        let mut x = [1.0f32, -2.0, 0.5, 3.0, 0.25, 1.5, -1.0, 2.0];
        let orig = x;
        let (c, s) = t.at(0);
        rotate(&mut x, c, s);
        assert_eq!(x, orig);
        let (c, s) = t.at(4);
        rotate(&mut x, c, s);
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&x) - n(&orig)).abs() < 1e-4);
        assert_ne!(x, orig);
    }
}
