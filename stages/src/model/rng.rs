//! [`Rng`]: the seeded random stream behind initialisation, batches, dropout and sampling.
//!
//! ChaCha8 because its whole state is three numbers (seed, stream, word position), so a
//! checkpoint can store it exactly and a resumed run draws the same numbers an
//! uninterrupted one would. Separate purposes use separate streams of the same seed, so
//! that, say, evaluating more often never changes the training batches.

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Which stream of a seed a generator draws from.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Init = 0,
    Train = 1,
    Eval = 2,
    Sample = 3,
}

#[derive(Clone, Debug)]
pub struct Rng(ChaCha8Rng);

/// The exact position of an [`Rng`], for checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte ChaCha key, hex.
    pub key: String,
    pub stream: u64,
    /// A u128, as a decimal string (JSON numbers lose precision above 2^53).
    pub word_pos: String,
}

impl Rng {
    pub fn new(seed: u64, stream: Stream) -> Rng {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(stream as u64);
        Rng(r)
    }

    pub fn state(&self) -> RngState {
        RngState {
            key: self.0.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: self.0.get_stream(),
            word_pos: self.0.get_word_pos().to_string(),
        }
    }

    pub fn from_state(s: &RngState) -> Option<Rng> {
        if s.key.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.key.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let mut r = ChaCha8Rng::from_seed(key);
        r.set_stream(s.stream);
        r.set_word_pos(s.word_pos.parse().ok()?);
        Some(Rng(r))
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        self.0.random::<f32>()
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_state_continues_the_same_stream() {
        let mut a = Rng::new(7, Stream::Train);
        for _ in 0..13 {
            a.below(1000);
            a.normal();
        }
        let mut b = Rng::from_state(&a.state()).unwrap();
        let xs: Vec<usize> = (0..50).map(|_| a.below(1 << 30)).collect();
        let ys: Vec<usize> = (0..50).map(|_| b.below(1 << 30)).collect();
        assert_eq!(xs, ys);
        assert_ne!(
            Rng::new(7, Stream::Train).below(1 << 30),
            Rng::new(7, Stream::Eval).below(1 << 30)
        );
    }
}
