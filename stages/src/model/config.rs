//! [`GptConfig`]: the architecture of a decoder-only transformer, in nanoGPT's names, for
//! both families hone runs: GPT-2 ([`Arch::Gpt2`]: LayerNorm, learned positions, GELU MLP)
//! and the Llama family ([`Arch::Llama`]: RMSNorm, rotary positions, SwiGLU MLP, grouped-query
//! attention; SmolLM2, Llama 3, Qwen2 with its q/k/v biases).
//!
//! The fields past `dropout` are all optional in the serialised form and left out when they
//! hold GPT-2's defaults, so that a GPT-2 config reads and writes exactly as before (stage
//! keys and checkpoint fingerprints hash it).

use serde::{Deserialize, Serialize};

/// The model family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// GPT-2: pre-LayerNorm blocks, learned positions, GELU MLP (4× wide), tied head.
    #[default]
    Gpt2,
    /// Llama: pre-RMSNorm blocks, rotary positions, SwiGLU MLP, grouped-query attention.
    Llama,
}

/// GPT-2's activation: exact (erf) GELU, or the tanh approximation (`gelu_new`, GPT-2's own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Gelu,
    GeluNew,
}

/// Rotary position embeddings: the base period and an optional rescaling of the frequencies
/// for contexts longer than those trained on (the forms Llama 3 and linear scaling write).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rope {
    pub theta: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<RopeScaling>,
}

impl Default for Rope {
    fn default() -> Rope {
        Rope { theta: 10_000.0, scaling: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's: long wavelengths divided by `factor`, short ones kept, a smooth blend
    /// between (transformers' `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// serde helpers for fields left out at their defaults (here and in stage params).
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn is_true(v: &bool) -> bool {
    *v
}

/// A decoder-only transformer: `n_layer` pre-norm blocks of causal self-attention and an MLP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest context (GPT-2: the number of learned positions).
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Biases in every linear layer and norm (GPT-2: yes; nanoGPT's default: no). The Llama
    /// family has none ([`GptConfig::qkv_bias`] is Qwen2's exception).
    pub bias: bool,
    /// Dropout probability on embeddings, attention weights and residual branches.
    pub dropout: f64,
    #[serde(default, skip_serializing_if = "is_default")]
    pub arch: Arch,
    /// Key/value heads (grouped-query attention; Llama only); absent: `n_head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_kv_head: Option<usize>,
    /// The MLP's hidden width; absent: 4 · `n_embd` (GPT-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_inner: Option<usize>,
    /// The norms' epsilon; absent: [`LN_EPS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    /// GPT-2's activation.
    #[serde(default, skip_serializing_if = "is_default")]
    pub activation: Activation,
    /// Rotary positions (Llama only).
    #[serde(default, skip_serializing_if = "is_default")]
    pub rope: Rope,
    /// The LM head shares the token embedding (GPT-2 always; Llama models either way).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub tie_embeddings: bool,
    /// Biases on the query, key and value projections only (Qwen2).
    #[serde(default, skip_serializing_if = "is_default")]
    pub qkv_bias: bool,
}

impl Default for GptConfig {
    /// GPT-2 with every size 0: for `..Default::default()` after the sizes.
    fn default() -> GptConfig {
        GptConfig {
            vocab_size: 0,
            block_size: 0,
            n_layer: 0,
            n_head: 0,
            n_embd: 0,
            bias: false,
            dropout: 0.0,
            arch: Arch::Gpt2,
            n_kv_head: None,
            n_inner: None,
            norm_eps: None,
            activation: Activation::Gelu,
            rope: Rope::default(),
            tie_embeddings: true,
            qkv_bias: false,
        }
    }
}

/// LayerNorm epsilon (PyTorch's and GPT-2's default).
pub const LN_EPS: f64 = 1e-5;
/// Standard deviation of the initial weights (nanoGPT, GPT-2).
pub const INIT_STD: f64 = 0.02;

impl GptConfig {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// The MLP's hidden width.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn eps(&self) -> f64 {
        self.norm_eps.unwrap_or(LN_EPS)
    }

    pub fn is_llama(&self) -> bool {
        self.arch == Arch::Llama
    }

    /// Columns of the packed query/key/value projection: `(n_head + 2 · kv_heads) · head_dim`.
    pub fn qkv_width(&self) -> usize {
        (self.n_head + 2 * self.kv_heads()) * self.head_dim()
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
        if let Some(kv) = self.n_kv_head
            && (kv == 0 || !self.n_head.is_multiple_of(kv))
        {
            p.push((
                "n_kv_head",
                format!(
                    "`n_kv_head` ({kv}) must divide `n_head` ({}): each key/value head serves a group of query heads",
                    self.n_head
                ),
            ));
        }
        if self.n_inner == Some(0) {
            p.push(("n_inner", "`n_inner` must be at least 1".to_string()));
        }
        if self.norm_eps.is_some_and(|e| !(e > 0.0 && e < 1.0)) {
            p.push(("norm_eps", "`norm_eps` must be in (0, 1)".to_string()));
        }
        if self.is_llama() {
            if !self.head_dim().is_multiple_of(2) {
                p.push((
                    "n_embd",
                    format!(
                        "rotary positions need an even head size, not {} (`n_embd` / `n_head`)",
                        self.head_dim()
                    ),
                ));
            }
            if !(self.rope.theta > 1.0 && self.rope.theta.is_finite()) {
                p.push((
                    "rope_theta",
                    format!("`rope_theta` must be > 1, not {}", self.rope.theta),
                ));
            }
            if self.bias {
                p.push((
                    "bias",
                    "the Llama family has no biases but q/k/v's (`qkv_bias`)".to_string(),
                ));
            }
            if self.activation != Activation::Gelu {
                p.push(("activation", "the Llama family's MLP is SwiGLU".to_string()));
            }
        } else {
            if self.n_kv_head.is_some_and(|kv| kv != self.n_head) {
                p.push(("n_kv_head", "GPT-2 has one key/value head per query head".to_string()));
            }
            if !self.tie_embeddings {
                p.push(("tie_embeddings", "GPT-2's LM head is the token embedding".to_string()));
            }
            if self.qkv_bias || self.rope != Rope::default() {
                p.push((
                    "arch",
                    "q/k/v biases and rotary positions are Llama-family settings (`arch: llama`)"
                        .to_string(),
                ));
            }
        }
        p
    }

    /// Number of parameters (a tied head counted once).
    pub fn n_params(&self) -> usize {
        let (c, l, f) = (self.n_embd, self.n_layer, self.inner());
        if self.is_llama() {
            let qkv = self.qkv_width();
            let block = 2 * c + qkv * c + usize::from(self.qkv_bias) * qkv + c * c + 3 * c * f;
            let head = if self.tie_embeddings { 0 } else { self.vocab_size * c };
            return self.vocab_size * c + l * block + c + head;
        }
        let b = usize::from(self.bias);
        let ln = c + b * c;
        let block =
            2 * ln + (3 * c * c + b * 3 * c) + (c * c + b * c) + (f * c + b * f) + (f * c + b * c);
        self.vocab_size * c + self.block_size * c + l * block + ln
    }
}

#[cfg(test)]
pub(crate) fn tiny(vocab_size: usize, bias: bool) -> GptConfig {
    GptConfig {
        vocab_size,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias,
        ..Default::default()
    }
}

/// A tiny Llama: 4 query heads over 2 key/value heads, untied, q/k/v biases as `qkv_bias`.
#[cfg(test)]
pub(crate) fn tiny_llama(vocab_size: usize, qkv_bias: bool) -> GptConfig {
    GptConfig {
        vocab_size,
        block_size: 8,
        n_layer: 2,
        n_head: 4,
        n_embd: 16,
        arch: Arch::Llama,
        n_kv_head: Some(2),
        n_inner: Some(24),
        norm_eps: Some(1e-6),
        tie_embeddings: false,
        qkv_bias,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpt2_config_serialises_as_before() {
        let cfg = tiny(13, true);
        assert_eq!(
            serde_json::to_string(&cfg).unwrap(),
            r#"{"vocab_size":13,"block_size":8,"n_layer":2,"n_head":2,"n_embd":8,"bias":true,"dropout":0.0}"#
        );
        let llama = tiny_llama(13, true);
        let back: GptConfig =
            serde_json::from_str(&serde_json::to_string(&llama).unwrap()).unwrap();
        assert_eq!(back, llama);
    }

    #[test]
    fn grouped_heads_must_divide_the_query_heads() {
        let cfg = GptConfig { n_kv_head: Some(3), ..tiny_llama(9, false) };
        assert!(cfg.problems().iter().any(|(f, m)| *f == "n_kv_head" && m.contains("divide")));
        assert!(tiny_llama(9, false).problems().is_empty());
        let gpt = GptConfig { tie_embeddings: false, ..tiny(9, false) };
        assert!(gpt.problems().iter().any(|(f, _)| *f == "tie_embeddings"));
    }
}
