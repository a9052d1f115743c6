//! A model directory in the HuggingFace GPT-2 layout, written and read:
//! `model.safetensors` + `config.json` + `generation_config.json` (+ the tokenizer files),
//! loadable by `transformers.GPT2LMHeadModel.from_pretrained(dir)`.
//!
//! hone's parameters use nanoGPT's names, which are GPT-2's; the differences are that GPT-2
//! stores its linear layers as `Conv1D` with the weight transposed (`(in, out)`), always has
//! biases (a bias-free hone model is written with zero biases, and `config.json` says
//! `"hone": {"bias": false}` so hone reads it back bias-free), and keeps no `lm_head.weight`
//! (tied to `transformer.wte.weight`).
//!
//! A reward model ([`save_reward`], [`load_reward`]) is the same directory as
//! `GPT2ForSequenceClassification` with `num_labels: 1`: the weights add `score.weight`
//! (1, n_embd) and `config.json` names the architecture, the one label and `pad_token_id`
//! (transformers pools at the rightmost token that is not the pad token). A reward model
//! trained with `likelihood: w` scores `score + w · mean log p(answer)` (see
//! [`crate::rl::reward_model`]); `config.json` says `"hone": {"likelihood": w}`, and the
//! log-probs are those of `GPT2LMHeadModel.from_pretrained(dir)` (the same weights, the LM
//! head tied).
//!
//! The Llama family (`LlamaForCausalLM`, `Qwen2ForCausalLM`) is read and written here too,
//! its config through [`super::hf`]: hone packs q/k/v into `qkv_proj` and gate/up into
//! `gate_up_proj`, which [`to_hf`] splits and [`from_hf`] joins (exact copies). A model that
//! came from a folder ([`save_from`]'s `base`) is written over that folder's `config.json`,
//! so that its other keys survive and an unchanged config is the same bytes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::config::{Activation, GptConfig, INIT_STD, LN_EPS};
use super::heads::ScalarHead;
use super::hf;
use super::{Gpt, ModelError, ParamStore, Result};

pub const WEIGHTS: &str = "model.safetensors";
pub const CONFIG: &str = "config.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Layers GPT-2 implements as `Conv1D`: their weights are stored transposed.
const CONV1D: [&str; 4] =
    ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"];

fn is_conv1d(name: &str) -> bool {
    CONV1D.iter().any(|s| name.ends_with(s))
}

/// `config.json` as transformers' `GPT2Config` reads it.
#[derive(Serialize, Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: String,
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "defaults::activation")]
    activation_function: String,
    #[serde(default)]
    resid_pdrop: f64,
    #[serde(default)]
    embd_pdrop: f64,
    #[serde(default)]
    attn_pdrop: f64,
    #[serde(default = "defaults::eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "defaults::init")]
    initializer_range: f64,
    #[serde(default = "defaults::yes")]
    scale_attn_weights: bool,
    #[serde(default = "defaults::yes")]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<u32>,
    #[serde(default = "defaults::dtype")]
    torch_dtype: String,
    #[serde(default = "defaults::yes")]
    use_cache: bool,
    /// A classifier's labels (`GPT2ForSequenceClassification`): one for a reward model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id2label: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label2id: Option<std::collections::BTreeMap<String, u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<u32>,
    /// hone's own settings; transformers keeps unknown keys as attributes.
    #[serde(default)]
    hone: Option<HoneExtra>,
}

#[derive(Serialize, Deserialize)]
struct HoneExtra {
    bias: bool,
    /// A reward model's likelihood weight (absent: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    likelihood: Option<f64>,
}

/// Sampling defaults, kept beside the model (`generation_config.json`) and used by
/// `hone generate` when no flag overrides them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    #[serde(default = "defaults::yes")]
    pub do_sample: bool,
    #[serde(default = "defaults::one")]
    pub temperature: f64,
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "defaults::one")]
    pub top_p: f64,
    #[serde(default = "defaults::max_new")]
    pub max_new_tokens: usize,
}

impl GenerationConfig {
    /// nanoGPT's `sample.py` defaults.
    pub fn defaults(eot: Option<u32>) -> GenerationConfig {
        GenerationConfig {
            bos_token_id: eot,
            eos_token_id: eot,
            do_sample: true,
            temperature: 0.8,
            top_k: 200,
            top_p: 1.0,
            max_new_tokens: 256,
        }
    }
}

/// Writes the weights and both configs into `dir`. `params` are hone's (nanoGPT layout).
pub fn save(
    dir: &Path,
    cfg: &GptConfig,
    params: &[(String, Tensor)],
    generation: &GenerationConfig,
) -> Result<()> {
    save_from(dir, cfg, params, generation, None)
}

/// [`save`], with `config.json` written over the one in `base` (the folder the model came
/// from) when it has one.
pub fn save_from(
    dir: &Path,
    cfg: &GptConfig,
    params: &[(String, Tensor)],
    generation: &GenerationConfig,
    base: Option<&Path>,
) -> Result<()> {
    save_weights(dir, cfg, params)?;
    let arch = if cfg.is_llama() { causal_lm(cfg) } else { "GPT2LMHeadModel" };
    let hf = config_json(cfg, arch, generation.bos_token_id, generation.eos_token_id, base)?;
    std::fs::write(dir.join(CONFIG), hf.text()).map_err(ModelError::io(dir.join(CONFIG)))?;
    write_json(&dir.join(GENERATION_CONFIG), generation)
}

fn causal_lm(cfg: &GptConfig) -> &'static str {
    if cfg.qkv_bias { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }
}

fn classifier(cfg: &GptConfig) -> &'static str {
    match (cfg.is_llama(), cfg.qkv_bias) {
        (false, _) => REWARD_ARCHITECTURE,
        (true, true) => "Qwen2ForSequenceClassification",
        (true, false) => "LlamaForSequenceClassification",
    }
}

/// The `config.json` of `base`, if it has one.
fn base_config(base: Option<&Path>) -> Result<Option<serde_json::Value>> {
    let Some(path) = base.map(|b| b.join(CONFIG)).filter(|p| p.exists()) else { return Ok(None) };
    let text = std::fs::read_to_string(&path).map_err(ModelError::io(&path))?;
    serde_json::from_str(&text).map(Some).map_err(|e| ModelError::format(&path, e.to_string()))
}

/// A `config.json` to write: GPT-2's fields in hone's order, as hone has always written them,
/// or JSON in transformers' form (the Llama family's, and a GPT-2 model's from a folder).
enum HfJson {
    Typed(Box<HfConfig>),
    Value(serde_json::Value),
}

impl HfJson {
    fn text(&self) -> String {
        match self {
            HfJson::Typed(t) => serde_json::to_string_pretty(t).expect("plain data") + "\n",
            HfJson::Value(v) => hf::python_json(v),
        }
    }

    /// Makes it a reward model's: one label, `pad_token_id` (transformers pools before it),
    /// and hone's extras (GPT-2's `bias`, the `likelihood` weight) where they say something.
    fn reward(&mut self, cfg: &GptConfig, pad_token_id: u32, likelihood: f64) {
        let weight = (likelihood != 0.0).then_some(likelihood);
        match self {
            HfJson::Typed(t) => {
                t.id2label = Some([("0".to_string(), "LABEL_0".to_string())].into());
                t.label2id = Some([("LABEL_0".to_string(), 0)].into());
                t.pad_token_id = Some(pad_token_id);
                t.hone = Some(HoneExtra { bias: cfg.bias, likelihood: weight });
            }
            HfJson::Value(v) => {
                v["id2label"] = serde_json::json!({"0": "LABEL_0"});
                v["label2id"] = serde_json::json!({"LABEL_0": 0});
                v["pad_token_id"] = pad_token_id.into();
                let gpt2_bias = (!cfg.is_llama() && !cfg.bias).then_some(false);
                if weight.is_some() || gpt2_bias.is_some() {
                    let mut extra = serde_json::json!({});
                    if !cfg.is_llama() {
                        extra["bias"] = cfg.bias.into();
                    }
                    if let Some(w) = weight {
                        extra["likelihood"] = w.into();
                    }
                    v["hone"] = extra;
                }
            }
        }
    }
}

/// `config.json`: the Llama family's through [`hf::llama_json`]; GPT-2's as hone has always
/// written it, or over `base`'s when there is one that hone did not write.
fn config_json(
    cfg: &GptConfig,
    architecture: &str,
    bos: Option<u32>,
    eos: Option<u32>,
    base: Option<&Path>,
) -> Result<HfJson> {
    let base = base_config(base)?;
    // A base of the other family is no base.
    let base = base.filter(|b| {
        hf::is_llama_family(b["model_type"].as_str().unwrap_or_default()) == cfg.is_llama()
    });
    if cfg.is_llama() {
        return Ok(HfJson::Value(hf::llama_json(cfg, base.as_ref(), architecture, bos, eos)));
    }
    let typed = hf_config(cfg, architecture, bos, eos);
    // A GPT-2 config hone wrote (it has hone's key) is written as hone writes it.
    let Some(mut v) = base.filter(|b| b.get("hone").is_none()) else {
        return Ok(HfJson::Typed(Box::new(typed)));
    };
    let ours = serde_json::to_value(typed).expect("plain data");
    for key in [
        "architectures",
        "vocab_size",
        "n_positions",
        "n_embd",
        "n_layer",
        "n_head",
        "activation_function",
        "layer_norm_epsilon",
    ] {
        v[key] = ours[key].clone();
    }
    if cfg.bias {
        if let Some(o) = v.as_object_mut() {
            o.remove("hone");
        }
    } else {
        v["hone"] = ours["hone"].clone();
    }
    Ok(HfJson::Value(v))
}

/// The name of a reward model's head (`score.weight`).
pub const SCORE: &str = "score";
pub const REWARD_ARCHITECTURE: &str = "GPT2ForSequenceClassification";

/// Writes a reward model: the backbone and `score.weight` in `params`, and a `config.json`
/// for `GPT2ForSequenceClassification` with one label and `pad_token_id`.
pub fn save_reward(
    dir: &Path,
    cfg: &GptConfig,
    params: &[(String, Tensor)],
    pad_token_id: u32,
    eos_token_id: Option<u32>,
    likelihood: f64,
) -> Result<()> {
    save_reward_from(dir, cfg, params, pad_token_id, eos_token_id, likelihood, None)
}

/// [`save_reward`] over `base`'s `config.json` (the folder the backbone came from).
pub fn save_reward_from(
    dir: &Path,
    cfg: &GptConfig,
    params: &[(String, Tensor)],
    pad_token_id: u32,
    eos_token_id: Option<u32>,
    likelihood: f64,
    base: Option<&Path>,
) -> Result<()> {
    if !params.iter().any(|(n, _)| n == &format!("{SCORE}.weight")) {
        return Err(ModelError::Invalid(format!("a reward model needs `{SCORE}.weight`")));
    }
    save_weights(dir, cfg, params)?;
    let mut hf = config_json(cfg, classifier(cfg), eos_token_id, eos_token_id, base)?;
    hf.reward(cfg, pad_token_id, likelihood);
    std::fs::write(dir.join(CONFIG), hf.text()).map_err(ModelError::io(dir.join(CONFIG)))?;
    std::fs::write(dir.join(CARD), reward_card(cfg, likelihood))
        .map_err(ModelError::io(dir.join(CARD)))
}

/// The model card a reward model ships with.
pub const CARD: &str = "README.md";

/// A reward model's card: what its score is, and Python that reproduces it with transformers
/// (`tests/python/check_reward_card.py` runs the snippet against `hone score`). A model
/// trained with `likelihood: α` scores `head + α · mean log p(answer)`; the
/// `…ForSequenceClassification` that standard loaders (TRL, OpenRLHF) build sees the head
/// alone, which ranks far fewer pairs right, so the card says so first.
pub fn reward_card(cfg: &GptConfig, likelihood: f64) -> String {
    let arch = classifier(cfg);
    let (formula, warning) = if likelihood != 0.0 {
        (
            format!(
                "score(prompt, answer) = head(prompt, answer) + {likelihood} × mean log p(answer tokens)"
            ),
            format!(
                "**Loading this folder with `AutoModelForSequenceClassification` alone (as TRL and OpenRLHF do) gives only `head(…)`, not the score hone trained and evaluated.** The head alone ranks far fewer held-out pairs right than the full score; use the function below (it needs the LM head too, which this folder holds: `{arch}` ignores it, `AutoModelForCausalLM` loads it)."
            ),
        )
    } else {
        (
            "score(prompt, answer) = head(prompt, answer)".to_string(),
            format!(
                "`AutoModelForSequenceClassification` (`{arch}`) gives hone's score as it is; the function below is the same computation spelled out."
            ),
        )
    };
    format!(
        r#"---
library_name: transformers
tags:
- reward-model
- hone
---

# A reward model trained by hone

    {formula}

- `head(prompt, answer)`: the scalar head (`score.weight`) on the last token's final hidden
  state, the conversation `[user: prompt, assistant: answer]` rendered with this folder's chat
  template (`tokenizer_config.json`);
- `mean log p(answer tokens)`: the mean log-probability, under this folder's language-model
  head, of the answer's tokens: from the end of the prompt rendered with the generation
  prompt through the turn's closing token (`eos_token`).

`config.json` records the weight as `"hone": {{"likelihood": {likelihood}}}`.

{warning}

```python
import json
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

FOLDER = "."  # this folder
alpha = (json.load(open(f"{{FOLDER}}/config.json")).get("hone") or {{}}).get("likelihood", 0.0)
tok = AutoTokenizer.from_pretrained(FOLDER)
head = AutoModelForSequenceClassification.from_pretrained(FOLDER).eval()
lm = AutoModelForCausalLM.from_pretrained(FOLDER).eval() if alpha else None


def ids_of(messages, **kw):
    text = tok.apply_chat_template(messages, tokenize=False, **kw)
    return tok(text, add_special_tokens=False)["input_ids"]


def score(prompt, answer):
    """hone's score of `answer` to `prompt`."""
    conversation = [{{"role": "user", "content": prompt}}, {{"role": "assistant", "content": answer}}]
    ids = ids_of(conversation)
    x = torch.tensor([ids])
    with torch.no_grad():
        s = head(x).logits[0, 0].item()
        if alpha:
            start = len(ids_of(conversation[:1], add_generation_prompt=True))
            end_id = tok.convert_tokens_to_ids(tok.eos_token)
            stop = max(i for i, t in enumerate(ids) if t == end_id)
            lp = lm(x).logits[0].float().log_softmax(-1)
            s += alpha * sum(lp[j - 1, ids[j]].item() for j in range(start, stop + 1)) / (stop + 1 - start)
    return s
```
"#
    )
}

fn save_weights(dir: &Path, cfg: &GptConfig, params: &[(String, Tensor)]) -> Result<()> {
    let tensors = to_hf(cfg, params)?;
    let path = dir.join(WEIGHTS);
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta), &path)
        .map_err(|e| ModelError::format(&path, e.to_string()))
}

fn hf_config(
    cfg: &GptConfig,
    architecture: &str,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
) -> HfConfig {
    HfConfig {
        architectures: vec![architecture.into()],
        model_type: "gpt2".into(),
        vocab_size: cfg.vocab_size,
        n_positions: cfg.block_size,
        n_embd: cfg.n_embd,
        n_layer: cfg.n_layer,
        n_head: cfg.n_head,
        n_inner: None,
        activation_function: match cfg.activation {
            Activation::Gelu => "gelu".into(),
            Activation::GeluNew => "gelu_new".into(),
        },
        resid_pdrop: cfg.dropout,
        embd_pdrop: cfg.dropout,
        attn_pdrop: cfg.dropout,
        layer_norm_epsilon: cfg.eps(),
        initializer_range: INIT_STD,
        scale_attn_weights: true,
        tie_word_embeddings: true,
        bos_token_id,
        eos_token_id,
        torch_dtype: "float32".into(),
        use_cache: true,
        id2label: None,
        label2id: None,
        pad_token_id: None,
        hone: Some(HoneExtra { bias: cfg.bias, likelihood: None }),
    }
}

/// hone's tensors → HuggingFace's. GPT-2: Conv1D weights transposed, zero biases where hone
/// has none. The Llama family: `qkv_proj` split into `q_proj`, `k_proj`, `v_proj` and
/// `gate_up_proj` into `gate_proj`, `up_proj`.
pub fn to_hf(cfg: &GptConfig, params: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    if cfg.is_llama() {
        let (c, kv, f) = (cfg.n_embd, cfg.kv_heads() * cfg.head_dim(), cfg.inner());
        for (name, t) in params {
            let t = t.to_dtype(DType::F32)?;
            let split = |parts: &[(&str, usize)],
                         from: &str,
                         out: &mut Vec<(String, Tensor)>|
             -> Result<()> {
                let mut at = 0;
                for (to, n) in parts {
                    out.push((name.replace(from, to), t.narrow(0, at, *n)?.contiguous()?));
                    at += n;
                }
                Ok(())
            };
            if name.contains("self_attn.qkv_proj.") {
                split(&[("q_proj", c), ("k_proj", kv), ("v_proj", kv)], "qkv_proj", &mut out)?;
            } else if name.contains("mlp.gate_up_proj.") {
                split(&[("gate_proj", f), ("up_proj", f)], "gate_up_proj", &mut out)?;
            } else {
                out.push((name.clone(), t));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        return Ok(out);
    }
    for (name, t) in params {
        let t = t.to_dtype(DType::F32)?;
        let t = if is_conv1d(name) { t.t()?.contiguous()? } else { t };
        out.push((name.clone(), t));
    }
    if !cfg.bias {
        let c = cfg.n_embd;
        let mut zero = |name: String, n: usize| -> Result<()> {
            out.push((name, Tensor::zeros(n, DType::F32, &Device::Cpu)?));
            Ok(())
        };
        for i in 0..cfg.n_layer {
            let p = format!("transformer.h.{i}");
            zero(format!("{p}.ln_1.bias"), c)?;
            zero(format!("{p}.attn.c_attn.bias"), 3 * c)?;
            zero(format!("{p}.attn.c_proj.bias"), c)?;
            zero(format!("{p}.ln_2.bias"), c)?;
            zero(format!("{p}.mlp.c_fc.bias"), cfg.inner())?;
            zero(format!("{p}.mlp.c_proj.bias"), c)?;
        }
        zero("transformer.ln_f.bias".into(), c)?;
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A model read back from a directory.
pub struct Loaded {
    pub config: GptConfig,
    pub model: Gpt,
    /// Its parameters as variables: training can continue from them.
    pub params: ParamStore,
    pub generation: GenerationConfig,
}

/// Reads a model directory written by [`save`] (or a GPT-2 checkpoint with erf GELU).
pub fn load(dir: &Path, dtype: DType) -> Result<Loaded> {
    let (_, loaded, ()) = load_with(dir, dtype, false, |_, _| Ok(()))?;
    Ok(loaded)
}

/// A reward model read back from a directory written by [`save_reward`].
pub struct LoadedReward {
    /// The backbone (its LM head unused).
    pub backbone: Loaded,
    pub head: ScalarHead,
    /// The token transformers treats as padding (and pools before).
    pub pad_token_id: u32,
    /// The weight of the answer's mean log-probability in the score (0: the head alone).
    pub likelihood: f64,
}

/// Reads a reward model directory ([`save_reward`]; HF's `GPT2ForSequenceClassification`
/// with one label). A language model is an error that says so.
pub fn load_reward(dir: &Path, dtype: DType) -> Result<LoadedReward> {
    let (hf, backbone, head) = load_with(dir, dtype, true, |cfg, vb| {
        ScalarHead::new(cfg.n_embd, vb.pp(SCORE)).map(Some).or(Ok(None))
    })?;
    let cfg_path = dir.join(CONFIG);
    let not_reward = |why: String| {
        ModelError::format(
            &cfg_path,
            format!(
                "not a reward model: {why}\n   = help: score with the output of a `reward` stage"
            ),
        )
    };
    let labels = hf.labels;
    if labels != 1 {
        return Err(not_reward(format!("it has {labels} labels, a reward model has one")));
    }
    let head = head.ok_or_else(|| {
        not_reward(format!(
            "its weights have no `{SCORE}.weight` of shape [1, {}]",
            backbone.config.n_embd
        ))
    })?;
    let pad_token_id =
        hf.pad_token_id.ok_or_else(|| not_reward("config.json has no `pad_token_id`".into()))?;
    // JSON holds no infinite or NaN number: any weight read is finite.
    let likelihood = hf.likelihood.unwrap_or(0.0);
    Ok(LoadedReward { backbone, head, pad_token_id, likelihood })
}

/// What `config.json` says beyond the architecture, for [`load_reward`].
struct HfInfo {
    labels: usize,
    pad_token_id: Option<u32>,
    likelihood: Option<f64>,
    eos_token_id: Option<u32>,
}

/// A token id, or the first of a list (transformers allows either for `eos_token_id`).
fn token_id(v: &serde_json::Value) -> Option<u32> {
    v.as_u64()
        .or_else(|| v.as_array().and_then(|a| a.first()).and_then(|x| x.as_u64()))
        .map(|x| x as u32)
}

/// The architecture a `config.json` describes: hone's config, from either family.
pub fn read_config(dir: &Path) -> Result<(GptConfig, serde_json::Value)> {
    let cfg_path = dir.join(CONFIG);
    if !cfg_path.exists() {
        return Err(ModelError::format(dir, format!("not a model directory: no `{CONFIG}` in it")));
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(ModelError::io(&cfg_path))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::format(&cfg_path, e.to_string()))?;
    let model_type = value.get("model_type").and_then(|m| m.as_str()).unwrap_or_default();
    if hf::is_llama_family(model_type) {
        return Ok((hf::llama_config(&value, &cfg_path)?, value));
    }
    if model_type != "gpt2" {
        return Err(ModelError::format(
            &cfg_path,
            format!(
                "`model_type`: {model_type:?} is not a family hone reads\n   = help: hone reads gpt2, llama (Llama, SmolLM2) and qwen2 checkpoints"
            ),
        ));
    }
    let hf: HfConfig = serde_json::from_value(value.clone())
        .map_err(|e| ModelError::format(&cfg_path, e.to_string()))?;
    let activation = match hf.activation_function.as_str() {
        "gelu" => Activation::Gelu,
        "gelu_new" => Activation::GeluNew,
        other => {
            return Err(ModelError::format(
                &cfg_path,
                format!(
                    "`activation_function`: {other:?} is not supported (hone runs \"gelu\" and \"gelu_new\")"
                ),
            ));
        }
    };
    let unsupported = |field: &str, what: String| {
        ModelError::format(
            &cfg_path,
            format!(
                "`{field}`: {what} is not supported: hone reads GPT-2 models with a 4x MLP, tied embeddings and scaled attention"
            ),
        )
    };
    if let Some(n) = hf.n_inner.filter(|&n| n != 4 * hf.n_embd) {
        return Err(unsupported("n_inner", n.to_string()));
    }
    if !hf.tie_word_embeddings {
        return Err(unsupported("tie_word_embeddings", "false".into()));
    }
    if !hf.scale_attn_weights {
        return Err(unsupported("scale_attn_weights", "false".into()));
    }
    for key in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"]
    {
        if value.get(key).and_then(|v| v.as_bool()) == Some(true) {
            return Err(unsupported(key, "true".into()));
        }
    }
    let config = GptConfig {
        vocab_size: hf.vocab_size,
        block_size: hf.n_positions,
        n_layer: hf.n_layer,
        n_head: hf.n_head,
        n_embd: hf.n_embd,
        bias: hf.hone.as_ref().is_none_or(|h| h.bias),
        dropout: hf.resid_pdrop,
        activation,
        norm_eps: ((hf.layer_norm_epsilon - LN_EPS).abs() > 1e-12).then_some(hf.layer_norm_epsilon),
        ..Default::default()
    };
    if let Some((_, msg)) = config.problems().first() {
        return Err(ModelError::format(&cfg_path, msg.clone()));
    }
    Ok((config, value))
}

/// Reads a model directory, a reward model (`…ForSequenceClassification`) or not as
/// `reward` says; `extra` builds more modules from the same parameters (a head) before the
/// check that every tensor in the file was used.
fn load_with<T>(
    dir: &Path,
    dtype: DType,
    reward: bool,
    extra: impl FnOnce(&GptConfig, VarBuilder) -> candle_core::Result<T>,
) -> Result<(HfInfo, Loaded, T)> {
    let cfg_path = dir.join(CONFIG);
    let (config, value) = read_config(dir)?;
    let architectures: Vec<String> = value["architectures"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let is_reward = architectures.iter().any(|a| a.ends_with("ForSequenceClassification"));
    if is_reward != reward {
        let msg = if reward {
            format!(
                "not a reward model: its architectures are {architectures:?}, not [{:?}]\n   = help: score with the output of a `reward` stage",
                classifier(&config)
            )
        } else {
            format!(
                "a reward model ({}), not a language model: it scores text but does not write it\n   = help: use it with `hone score`, or give a `pretrain`, `sft` or `ppo` stage's output",
                architectures.join(", ")
            )
        };
        return Err(ModelError::format(&cfg_path, msg));
    }
    let hf_tensors = hf::read_weights(dir, WEIGHTS)?;
    let w_path = if dir.join(WEIGHTS).exists() { dir.join(WEIGHTS) } else { dir.join(hf::INDEX) };
    let tensors =
        from_hf(&config, hf_tensors, reward).map_err(|m| ModelError::format(&w_path, m))?;
    let params = ParamStore::from_tensors(tensors);
    let vb = params.var_builder(dtype, &Device::Cpu);
    let model =
        Gpt::new(&config, vb.clone()).map_err(|e| ModelError::format(&w_path, e.to_string()))?;
    let more = extra(&config, vb).map_err(|e| ModelError::format(&w_path, e.to_string()))?;
    let unused = params.unused();
    if !unused.is_empty() {
        return Err(ModelError::format(
            &w_path,
            format!("tensors the model does not use: {}", unused.join(", ")),
        ));
    }
    let info = HfInfo {
        labels: value["id2label"].as_object().map_or(0, |l| l.len()),
        pad_token_id: token_id(&value["pad_token_id"]),
        likelihood: value["hone"]["likelihood"].as_f64(),
        eos_token_id: token_id(&value["eos_token_id"]),
    };
    let gen_path = dir.join(GENERATION_CONFIG);
    let generation = if gen_path.exists() {
        let text = std::fs::read_to_string(&gen_path).map_err(ModelError::io(&gen_path))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(&gen_path, e.to_string()))?;
        generation_config(&v).map_err(|e| ModelError::format(&gen_path, e))?
    } else {
        GenerationConfig::defaults(info.eos_token_id)
    };
    Ok((info, Loaded { config, model, params, generation }, more))
}

/// `generation_config.json`, as hone writes it or as transformers does (`eos_token_id` may
/// be a list; absent sampling settings are transformers' defaults: greedy).
fn generation_config(v: &serde_json::Value) -> std::result::Result<GenerationConfig, String> {
    if v.get("do_sample").is_some() || v.get("max_new_tokens").is_some() {
        let mut v = v.clone();
        for key in ["bos_token_id", "eos_token_id"] {
            if v[key].is_array() {
                v[key] = token_id(&v[key]).into();
            }
        }
        let keep = [
            "bos_token_id",
            "eos_token_id",
            "do_sample",
            "temperature",
            "top_k",
            "top_p",
            "max_new_tokens",
        ];
        let m: serde_json::Map<String, serde_json::Value> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, x)| keep.contains(&k.as_str()) && !x.is_null())
            .map(|(k, x)| (k.clone(), x.clone()))
            .collect();
        return serde_json::from_value(serde_json::Value::Object(m)).map_err(|e| e.to_string());
    }
    let eos = token_id(&v["eos_token_id"]);
    Ok(GenerationConfig {
        bos_token_id: token_id(&v["bos_token_id"]),
        eos_token_id: eos,
        ..GenerationConfig::defaults(eos)
    })
}

/// HuggingFace's tensors → hone's; the inverse of [`to_hf`]. A reward model's backbone sits
/// under the same names (GPT-2's `transformer.`, the Llama family's `model.`).
fn from_hf(
    cfg: &GptConfig,
    tensors: HashMap<String, Tensor>,
    reward: bool,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    if cfg.is_llama() {
        return llama_from_hf(cfg, tensors, reward);
    }
    let mut out = HashMap::new();
    for (name, t) in tensors {
        // Buffers older transformers saved, and the tied head: not parameters.
        if name == "lm_head.weight"
            || name.ends_with(".attn.bias") && t.rank() == 4
            || name.ends_with(".attn.masked_bias")
        {
            continue;
        }
        if !cfg.bias && name.ends_with(".bias") {
            let max = t
                .abs()
                .and_then(|a| a.max_all())
                .and_then(|m| m.to_dtype(DType::F32))
                .and_then(|m| m.to_scalar::<f32>())
                .map_err(|e| e.to_string())?;
            if max != 0.0 {
                return Err(format!(
                    "`{name}` is not zero but config.json says the model has no biases"
                ));
            }
            continue;
        }
        let t = if is_conv1d(&name) {
            t.t().and_then(|t| t.contiguous()).map_err(|e| e.to_string())?
        } else {
            t
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// The Llama family's tensors → hone's: q/k/v and gate/up joined.
fn llama_from_hf(
    cfg: &GptConfig,
    mut tensors: HashMap<String, Tensor>,
    reward: bool,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    // Buffers older checkpoints kept; a tied head saved anyway.
    tensors.retain(|n, _| !n.ends_with("rotary_emb.inv_freq"));
    if cfg.tie_embeddings || reward && !tensors.contains_key("lm_head.weight") {
        tensors.remove("lm_head.weight");
    }
    let mut take = |name: String| {
        tensors.remove(&name).ok_or_else(|| format!("the checkpoint has no `{name}`"))
    };
    let mut out = HashMap::new();
    for i in 0..cfg.n_layer {
        let p = format!("model.layers.{i}");
        let mut join = |parts: &[&str], to: &str, what: &str| -> std::result::Result<(), String> {
            let ts = parts
                .iter()
                .map(|n| take(format!("{p}.{n}.{what}")))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let t = Tensor::cat(&ts, 0).map_err(|e| format!("`{p}.{parts:?}.{what}`: {e}"))?;
            out.insert(format!("{p}.{to}.{what}"), t);
            Ok(())
        };
        let qkv = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
        join(&qkv, "self_attn.qkv_proj", "weight")?;
        if cfg.qkv_bias {
            join(&qkv, "self_attn.qkv_proj", "bias")?;
        }
        join(&["mlp.gate_proj", "mlp.up_proj"], "mlp.gate_up_proj", "weight")?;
    }
    out.extend(tensors);
    Ok(out)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("plain data serialises");
    text.push('\n');
    std::fs::write(path, text).map_err(ModelError::io(path))
}

/// Copies `tokenizer.json` into the model directory and writes a `tokenizer_config.json`
/// so that `AutoTokenizer.from_pretrained(dir)` finds it too.
pub fn save_tokenizer(
    dir: &Path,
    tokenizer_json: &Path,
    eot_token: Option<String>,
    block_size: usize,
) -> Result<()> {
    std::fs::copy(tokenizer_json, dir.join(TOKENIZER)).map_err(ModelError::io(tokenizer_json))?;
    let mut cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(token) = eot_token {
        cfg["bos_token"] = token.clone().into();
        cfg["eos_token"] = token.into();
    }
    write_json(&dir.join(TOKENIZER_CONFIG), &cfg)
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    use super::{INIT_STD, LN_EPS};

    pub fn activation() -> String {
        "gelu_new".into()
    }

    pub fn dtype() -> String {
        "float32".into()
    }

    pub fn eps() -> f64 {
        LN_EPS
    }

    pub fn init() -> f64 {
        INIT_STD
    }

    pub fn max_new() -> usize {
        256
    }

    pub fn one() -> f64 {
        1.0
    }

    pub fn yes() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::tiny;
    use crate::model::ops::Dropout;

    fn model(cfg: &GptConfig, seed: u64) -> (Gpt, ParamStore) {
        let ps = ParamStore::seeded(seed);
        let m = Gpt::new(cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        // Non-zero biases and gains, so a lost or misplaced tensor changes the logits.
        for (i, (_, v)) in ps.vars().iter().enumerate() {
            if v.rank() == 1 {
                let n = v.elem_count();
                let vals: Vec<f32> =
                    (0..n).map(|j| 0.01 * ((i * 7 + j) % 11) as f32 - 0.03).collect();
                v.set(&Tensor::from_vec(vals, n, &Device::Cpu).unwrap()).unwrap();
            }
        }
        (m, ps)
    }

    #[test]
    fn exported_names_and_shapes_are_gpt2s() {
        for bias in [true, false] {
            let cfg = GptConfig {
                vocab_size: 11,
                block_size: 6,
                n_layer: 2,
                n_head: 2,
                n_embd: 8,
                bias,
                dropout: 0.0,
                ..Default::default()
            };
            let (_, ps) = model(&cfg, 1);
            let hf: HashMap<String, Vec<usize>> = to_hf(&cfg, &ps.snapshot())
                .unwrap()
                .into_iter()
                .map(|(n, t)| (n, t.dims().to_vec()))
                .collect();
            let c = 8;
            let mut want: HashMap<String, Vec<usize>> = HashMap::from([
                ("transformer.wte.weight".into(), vec![11, c]),
                ("transformer.wpe.weight".into(), vec![6, c]),
                ("transformer.ln_f.weight".into(), vec![c]),
                ("transformer.ln_f.bias".into(), vec![c]),
            ]);
            for i in 0..2 {
                for (n, s) in [
                    ("ln_1.weight", vec![c]),
                    ("ln_1.bias", vec![c]),
                    ("attn.c_attn.weight", vec![c, 3 * c]),
                    ("attn.c_attn.bias", vec![3 * c]),
                    ("attn.c_proj.weight", vec![c, c]),
                    ("attn.c_proj.bias", vec![c]),
                    ("ln_2.weight", vec![c]),
                    ("ln_2.bias", vec![c]),
                    ("mlp.c_fc.weight", vec![c, 4 * c]),
                    ("mlp.c_fc.bias", vec![4 * c]),
                    ("mlp.c_proj.weight", vec![4 * c, c]),
                    ("mlp.c_proj.bias", vec![c]),
                ] {
                    want.insert(format!("transformer.h.{i}.{n}"), s);
                }
            }
            assert_eq!(hf, want, "bias = {bias}");
        }
    }

    #[test]
    fn save_then_load_gives_identical_logits_and_config() {
        for bias in [true, false] {
            let cfg = tiny(13, bias);
            let (m, ps) = model(&cfg, 2);
            let dir = tempfile::tempdir().unwrap();
            let gen_cfg = GenerationConfig::defaults(Some(12));
            save(dir.path(), &cfg, &ps.snapshot(), &gen_cfg).unwrap();
            let loaded = load(dir.path(), DType::F32).unwrap();
            assert_eq!(loaded.config, cfg);
            assert_eq!(loaded.generation, gen_cfg);
            let x = Tensor::new(&[[1u32, 5, 12, 0, 3, 3, 7]], &Device::Cpu).unwrap();
            let a = m
                .forward(&x, &mut Dropout::off())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = loaded
                .model
                .forward(&x, &mut Dropout::off())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(a, b, "bias = {bias}");
            // The weights round-trip bit for bit, in the same order.
            let names = |p: &ParamStore| p.vars().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
            assert_eq!(names(&ps), names(&loaded.params));
            let hf: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG)).unwrap())
                    .unwrap();
            assert_eq!(hf["architectures"][0], "GPT2LMHeadModel");
            assert_eq!(hf["n_positions"], 8);
            assert_eq!(hf["activation_function"], "gelu");
        }
    }

    #[test]
    fn loading_explains_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), DType::F32).err().unwrap().to_string();
        assert!(err.contains("not a model directory"), "{err}");
        let cfg = tiny(5, false);
        let (_, ps) = model(&cfg, 3);
        save(dir.path(), &cfg, &ps.snapshot(), &GenerationConfig::defaults(None)).unwrap();
        // A model saved bias-free whose bias is then edited to non-zero.
        let mut t = candle_core::safetensors::load(dir.path().join(WEIGHTS), &Device::Cpu).unwrap();
        t.insert(
            "transformer.ln_f.bias".into(),
            Tensor::ones(8, DType::F32, &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&t, dir.path().join(WEIGHTS)).unwrap();
        let err = load(dir.path(), DType::F32).err().unwrap().to_string();
        assert!(err.contains("transformer.ln_f.bias") && err.contains("no biases"), "{err}");
        t.remove("transformer.ln_f.bias");
        t.remove("transformer.h.1.mlp.c_fc.weight");
        candle_core::safetensors::save(&t, dir.path().join(WEIGHTS)).unwrap();
        let err = load(dir.path(), DType::F32).err().unwrap().to_string();
        assert!(err.contains("transformer.h.1.mlp.c_fc.weight"), "{err}");
    }

    /// A Llama-family model (tied or not, with Qwen2's biases or not) saved and loaded back
    /// gives the same logits and config; HuggingFace's names split what hone packs.
    #[test]
    fn llama_models_save_and_load_back() {
        use crate::model::config::tiny_llama;
        for (bias, tied) in [(false, true), (true, false)] {
            let cfg = GptConfig { tie_embeddings: tied, ..tiny_llama(13, bias) };
            let (m, ps) = model(&cfg, 4);
            let dir = tempfile::tempdir().unwrap();
            save(dir.path(), &cfg, &ps.snapshot(), &GenerationConfig::defaults(Some(1))).unwrap();
            let loaded = load(dir.path(), DType::F32).unwrap();
            assert_eq!(loaded.config, cfg);
            let x = Tensor::new(&[[1u32, 5, 12, 0, 3]], &Device::Cpu).unwrap();
            let logits = |g: &Gpt| {
                g.forward(&x, &mut Dropout::off())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_eq!(logits(&m), logits(&loaded.model));
            let names: Vec<String> = safetensors::SafeTensors::deserialize(
                &std::fs::read(dir.path().join(WEIGHTS)).unwrap(),
            )
            .unwrap()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
            assert!(names.contains(&"model.layers.1.self_attn.k_proj.weight".to_string()));
            assert!(names.contains(&"model.layers.0.mlp.up_proj.weight".to_string()));
            assert_eq!(names.contains(&"model.layers.0.self_attn.q_proj.bias".to_string()), bias);
            assert_eq!(names.contains(&"lm_head.weight".to_string()), !tied);
            assert!(!names.iter().any(|n| n.contains("qkv_proj") || n.contains("gate_up")));
            let hf: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG)).unwrap())
                    .unwrap();
            assert_eq!(hf["model_type"], if bias { "qwen2" } else { "llama" });
            assert_eq!(hf["num_key_value_heads"], 2);
        }
    }

    /// A sharded checkpoint with a shard missing, and a folder without weights, are errors
    /// that name the file and say what to do.
    #[test]
    fn incomplete_checkpoints_are_explained() {
        use crate::model::config::tiny_llama;
        let cfg = tiny_llama(13, false);
        let (_, ps) = model(&cfg, 4);
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &cfg, &ps.snapshot(), &GenerationConfig::defaults(Some(1))).unwrap();
        let all = candle_core::safetensors::load(dir.path().join(WEIGHTS), &Device::Cpu).unwrap();
        std::fs::remove_file(dir.path().join(WEIGHTS)).unwrap();
        let err = load(dir.path(), DType::F32).err().unwrap().to_string();
        assert!(err.contains("no `model.safetensors`") && err.contains("save_pretrained"), "{err}");
        let (a, b): (Vec<_>, Vec<_>) = all.into_iter().partition(|(n, _)| n.contains("layers.0"));
        let mut map = serde_json::Map::new();
        for (part, file) in
            [(a, "model-00001-of-00002.safetensors"), (b, "model-00002-of-00002.safetensors")]
        {
            for (n, _) in &part {
                map.insert(n.clone(), file.into());
            }
            let part: HashMap<String, Tensor> = part.into_iter().collect();
            candle_core::safetensors::save(&part, dir.path().join(file)).unwrap();
        }
        std::fs::write(
            dir.path().join(hf::INDEX),
            serde_json::json!({"weight_map": map}).to_string(),
        )
        .unwrap();
        let loaded = load(dir.path(), DType::F32).unwrap();
        assert_eq!(loaded.config, cfg);
        std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
        let err = load(dir.path(), DType::F32).err().unwrap().to_string();
        assert!(
            err.contains("model-00002-of-00002.safetensors") && err.contains("incomplete"),
            "{err}"
        );
    }
}
