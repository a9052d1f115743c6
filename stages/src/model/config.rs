//! [`GptConfig`]: the architecture of a GPT, in nanoGPT's names.

use serde::{Deserialize, Serialize};

/// GPT-2 architecture: `n_layer` pre-LayerNorm blocks of causal self-attention and a GELU MLP
/// (4× wide), learned positions, the LM head tied to the token embedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest context (number of learned positions).
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Biases in the linear layers and layer norms (GPT-2: yes; nanoGPT's default: no).
    pub bias: bool,
    /// Dropout probability on embeddings, attention weights and residual branches.
    pub dropout: f64,
}

/// LayerNorm epsilon (PyTorch's and GPT-2's default).
pub const LN_EPS: f64 = 1e-5;
/// Standard deviation of the initial weights (nanoGPT, GPT-2).
pub const INIT_STD: f64 = 0.02;

impl GptConfig {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Problems with the numbers, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
        ] {
            if v == 0 {
                p.push((name, format!("`{name}` must be at least 1")));
            }
        }
        if self.n_head > 0 && !self.n_embd.is_multiple_of(self.n_head) {
            p.push((
                "n_embd",
                format!(
                    "`n_embd` ({}) must be a multiple of `n_head` ({})",
                    self.n_embd, self.n_head
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            p.push(("dropout", format!("`dropout` must be in [0, 1), not {}", self.dropout)));
        }
        p
    }

    /// Number of parameters (the tied head counted once).
    pub fn n_params(&self) -> usize {
        let (c, l) = (self.n_embd, self.n_layer);
        let b = usize::from(self.bias);
        let ln = c + b * c;
        let block = 2 * ln
            + (3 * c * c + b * 3 * c)
            + (c * c + b * c)
            + (4 * c * c + b * 4 * c)
            + (4 * c * c + b * c);
        self.vocab_size * c + self.block_size * c + l * block + ln
    }
}

#[cfg(test)]
pub(crate) fn tiny(vocab_size: usize, bias: bool) -> GptConfig {
    GptConfig { vocab_size, block_size: 8, n_layer: 2, n_head: 2, n_embd: 8, bias, dropout: 0.0 }
}
