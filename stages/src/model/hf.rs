//! The HuggingFace side of the Llama family (`LlamaForCausalLM`, `Qwen2ForCausalLM` and their
//! `…ForSequenceClassification`), beside GPT-2's in [`super::export`]:
//!
//! - [`llama_config`]: `config.json` → [`GptConfig`], in transformers 4's spelling
//!   (`rope_theta`, `rope_scaling`) and 5's (`rope_parameters`), every unsupported setting an
//!   error naming its field;
//! - [`llama_json`]: the reverse, over the `config.json` the model came from when there is one
//!   (its other keys kept), else a fresh one;
//! - [`python_json`]: JSON text as transformers writes it (`json.dumps(…, indent=2,
//!   sort_keys=True)`: Python's float repr, ASCII only), so that a config read and written
//!   back unchanged is the same bytes;
//! - [`read_weights`]: `model.safetensors`, or the shards a `model.safetensors.index.json`
//!   names, every one checked to be there.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value};

use super::config::{Arch, GptConfig, Rope, RopeScaling};
use super::{ModelError, Result};

pub const INDEX: &str = "model.safetensors.index.json";

/// The families hone reads, by `model_type`.
pub fn is_llama_family(model_type: &str) -> bool {
    matches!(model_type, "llama" | "qwen2")
}

/// `config.json` of a Llama-family model → hone's config.
pub fn llama_config(v: &Value, path: &Path) -> Result<GptConfig> {
    let bad = |field: &str, msg: String| ModelError::format(path, format!("`{field}`: {msg}"));
    let model_type = v["model_type"].as_str().unwrap_or_default().to_string();
    let num = |field: &str| -> Result<usize> {
        v.get(field)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| bad(field, "missing, or not a whole number".into()))
    };
    let opt_num = |field: &str| -> Result<Option<usize>> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| bad(field, format!("{x} is not a whole number"))),
        }
    };
    let float = |field: &str, default: f64| -> Result<f64> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| bad(field, format!("{x} is not a number"))),
        }
    };
    let flag = |field: &str, default: bool| -> Result<bool> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_bool().ok_or_else(|| bad(field, format!("{x} is not true or false"))),
        }
    };
    let unsupported = |field: &str, what: String| {
        bad(
            field,
            format!(
                "{what}: hone does not support this setting\n   = help: hone reads Llama and Qwen2 checkpoints with SiLU, no biases but Qwen2's q/k/v, and rotary positions of type default, linear or llama3"
            ),
        )
    };
    let (n_embd, n_head) = (num("hidden_size")?, num("num_attention_heads")?);
    if let Some(hd) = opt_num("head_dim")?
        && n_head > 0
        && hd * n_head != n_embd
    {
        return Err(unsupported(
            "head_dim",
            format!("{hd} × {n_head} heads is not hidden_size {n_embd}"),
        ));
    }
    let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
    if act != "silu" {
        return Err(unsupported("hidden_act", format!("{act:?}")));
    }
    for field in ["attention_bias", "mlp_bias"] {
        if flag(field, false)? {
            return Err(unsupported(field, "true".into()));
        }
    }
    if flag("use_sliding_window", false)? {
        return Err(unsupported("use_sliding_window", "true".into()));
    }
    if opt_num("pretraining_tp")?.is_some_and(|tp| tp != 1) {
        return Err(unsupported("pretraining_tp", format!("{}", v["pretraining_tp"])));
    }
    let rope = rope(v, path)?;
    let cfg = GptConfig {
        vocab_size: num("vocab_size")?,
        block_size: opt_num("max_position_embeddings")?.unwrap_or(2048),
        n_layer: num("num_hidden_layers")?,
        n_head,
        n_embd,
        bias: false,
        dropout: float("attention_dropout", 0.0)?,
        arch: Arch::Llama,
        n_kv_head: Some(opt_num("num_key_value_heads")?.unwrap_or(n_head)),
        n_inner: Some(num("intermediate_size")?),
        norm_eps: Some(float("rms_norm_eps", 1e-6)?),
        rope,
        tie_embeddings: flag("tie_word_embeddings", false)?,
        qkv_bias: model_type == "qwen2",
        ..Default::default()
    };
    if let Some((field, msg)) = cfg.problems().first() {
        return Err(bad(field, msg.clone()));
    }
    Ok(cfg)
}

/// Rotary settings: transformers 5's `rope_parameters`, or 4's `rope_theta` + `rope_scaling`.
fn rope(v: &Value, path: &Path) -> Result<Rope> {
    let (field, params) = match v.get("rope_parameters") {
        Some(p @ Value::Object(_)) => ("rope_parameters", p.clone()),
        _ => {
            let mut p = match v.get("rope_scaling") {
                Some(s @ Value::Object(_)) => s.clone(),
                _ => Value::Object(Map::new()),
            };
            if let Some(theta) = v.get("rope_theta") {
                p["rope_theta"] = theta.clone();
            }
            ("rope_scaling", p)
        }
    };
    let bad = |key: &str, msg: String| ModelError::format(path, format!("`{field}.{key}`: {msg}"));
    let f = |key: &str| -> Result<f64> {
        params[key].as_f64().ok_or_else(|| bad(key, "missing, or not a number".into()))
    };
    let theta = match params.get("rope_theta") {
        None | Some(Value::Null) => 10_000.0,
        Some(_) => f("rope_theta")?,
    };
    let kind = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: f("factor")? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: f("factor")?,
            low_freq_factor: f("low_freq_factor")?,
            high_freq_factor: f("high_freq_factor")?,
            original_max_position_embeddings: params["original_max_position_embeddings"]
                .as_u64()
                .ok_or_else(|| bad("original_max_position_embeddings", "missing".into()))?
                as usize,
        }),
        other => {
            return Err(bad(
                "rope_type",
                format!("{other:?} is not supported (hone knows default, linear and llama3)"),
            ));
        }
    };
    Ok(Rope { theta, scaling })
}

/// hone's config → a Llama-family `config.json`, over `base` (the config the model came from)
/// when given: its keys hone does not know are kept, the ones it does are set.
pub fn llama_json(
    cfg: &GptConfig,
    base: Option<&Value>,
    architecture: &str,
    bos: Option<u32>,
    eos: Option<u32>,
) -> Value {
    let qwen = cfg.qkv_bias;
    let mut v = match base {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => {
            let mut v = serde_json::json!({
                "attention_bias": false,
                "attention_dropout": cfg.dropout,
                "hidden_act": "silu",
                "initializer_range": super::config::INIT_STD,
                "mlp_bias": false,
                "model_type": if qwen { "qwen2" } else { "llama" },
                "pretraining_tp": 1,
                "use_cache": true,
                "bos_token_id": bos,
                "eos_token_id": eos,
            });
            if qwen {
                for k in ["attention_bias", "mlp_bias", "pretraining_tp"] {
                    v.as_object_mut().expect("object").remove(k);
                }
                v["use_sliding_window"] = false.into();
            }
            v
        }
    };
    let set = |v: &mut Value, k: &str, x: Value| {
        v[k] = x;
    };
    set(&mut v, "architectures", serde_json::json!([architecture]));
    set(&mut v, "vocab_size", cfg.vocab_size.into());
    set(&mut v, "hidden_size", cfg.n_embd.into());
    set(&mut v, "intermediate_size", cfg.inner().into());
    set(&mut v, "num_hidden_layers", cfg.n_layer.into());
    set(&mut v, "num_attention_heads", cfg.n_head.into());
    set(&mut v, "num_key_value_heads", cfg.kv_heads().into());
    set(&mut v, "max_position_embeddings", cfg.block_size.into());
    set(&mut v, "rms_norm_eps", cfg.eps().into());
    set(&mut v, "tie_word_embeddings", cfg.tie_embeddings.into());
    if v.get("head_dim").is_some_and(|h| !h.is_null()) {
        set(&mut v, "head_dim", cfg.head_dim().into());
    }
    let mut rope = serde_json::json!({ "rope_theta": cfg.rope.theta });
    match &cfg.rope.scaling {
        None => rope["rope_type"] = "default".into(),
        Some(RopeScaling::Linear { factor }) => {
            rope["rope_type"] = "linear".into();
            rope["factor"] = (*factor).into();
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            rope["rope_type"] = "llama3".into();
            rope["factor"] = (*factor).into();
            rope["low_freq_factor"] = (*low_freq_factor).into();
            rope["high_freq_factor"] = (*high_freq_factor).into();
            rope["original_max_position_embeddings"] = (*original_max_position_embeddings).into();
        }
    }
    // Written the way the base spells it (transformers 4 or 5), else as transformers 5 does.
    if v.get("rope_theta").is_some() && v.get("rope_parameters").is_none() {
        set(&mut v, "rope_theta", cfg.rope.theta.into());
        let scaling = rope.as_object_mut().expect("object");
        scaling.remove("rope_theta");
        let same = base.and_then(|b| b.get("rope_scaling")).map(|s| rope_equal(s, &rope));
        if cfg.rope.scaling.is_none() {
            if !matches!(v.get("rope_scaling"), None | Some(Value::Null)) && same != Some(true) {
                set(&mut v, "rope_scaling", Value::Null);
            }
        } else if same != Some(true) {
            set(&mut v, "rope_scaling", rope);
        }
    } else {
        let same = base.and_then(|b| b.get("rope_parameters")).map(|p| rope_equal(p, &rope));
        if same != Some(true) {
            set(&mut v, "rope_parameters", rope);
        }
    }
    v
}

/// Whether two rope settings say the same (numbers compared as numbers).
fn rope_equal(a: &Value, b: &Value) -> bool {
    let norm = |v: &Value| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k != "type")
                    .map(|(k, x)| (k.clone(), x.as_f64().map_or(x.to_string(), |f| f.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    norm(a) == norm(b)
}

/// JSON text as Python's `json.dumps(v, indent=2, sort_keys=True)` writes it, plus a newline
/// (transformers' `to_json_string`).
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, 0, &mut out);
    out.push('\n');
    out
}

fn write_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => out.push_str(&i.to_string()),
            (_, Some(u)) => out.push_str(&u.to_string()),
            _ => out.push_str(&py_float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => write_str(s, out),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                write_value(x, indent + 2, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push(']');
        }
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                write_str(k, out);
                out.push_str(": ");
                write_value(&m[k.as_str()], indent + 2, out);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
    }
}

/// A string as Python's json writes it with `ensure_ascii`.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that read back, positional for exponents in
/// [-4, 16), else `d.ddde±XX`.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{x:e}"); // shortest round-trip digits, e.g. "1.5e-5"
    let (mant, exp) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// The tensors of a model folder: `model.safetensors`, or every shard its index names (each
/// checked to exist and to hold the tensors the index puts in it), as f32.
pub fn read_weights(dir: &Path, weights: &str) -> Result<HashMap<String, Tensor>> {
    let single = dir.join(weights);
    let index = dir.join(INDEX);
    let load = |path: &Path| -> Result<HashMap<String, Tensor>> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            ModelError::format(
                path,
                format!("{e}\n   = help: the file is damaged or not safetensors"),
            )
        })?;
        t.into_iter()
            .map(|(n, t)| {
                Ok((n, if t.dtype() == DType::F32 { t } else { t.to_dtype(DType::F32)? }))
            })
            .collect()
    };
    if single.exists() {
        return load(&single);
    }
    if !index.exists() {
        return Err(ModelError::format(
            dir,
            format!(
                "no `{weights}` and no `{INDEX}`: the folder has no weights hone can read (hone reads safetensors, not PyTorch `.bin` files)\n   = help: save the model with `save_pretrained(dir, safe_serialization=True)`"
            ),
        ));
    }
    let text = std::fs::read_to_string(&index).map_err(ModelError::io(&index))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| ModelError::format(&index, e.to_string()))?;
    let map = v["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::format(&index, "`weight_map`: missing, or not an object"))?;
    let mut shards: Vec<&str> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            ModelError::format(&index, format!("`weight_map.{name}`: not a file name"))
        })?;
        if !shards.contains(&file) {
            shards.push(file);
        }
    }
    shards.sort_unstable();
    let mut all = HashMap::new();
    for file in shards {
        let path = dir.join(file);
        if !path.exists() {
            return Err(ModelError::format(
                &index,
                format!(
                    "`weight_map` names the shard `{file}`, which is not in the folder: the checkpoint is incomplete\n   = help: copy every shard the index lists"
                ),
            ));
        }
        all.extend(load(&path)?);
    }
    for (name, file) in map {
        if !all.contains_key(name) {
            return Err(ModelError::format(
                dir.join(file.as_str().unwrap_or_default()),
                format!("`{name}` is not in this shard, but `{INDEX}` says it is"),
            ));
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_prints_them() {
        for (x, want) in [
            (1e-5, "1e-05"),
            (1e-6, "1e-06"),
            (0.02, "0.02"),
            (10000.0, "10000.0"),
            (500000.0, "500000.0"),
            (1e16, "1e+16"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (8.0, "8.0"),
            (0.1, "0.1"),
        ] {
            assert_eq!(py_float(x), want);
        }
        let v = serde_json::json!({"b": [1, 2.5], "a": {"z": null, "y": "é\n"}, "c": []});
        assert_eq!(
            python_json(&v),
            "{\n  \"a\": {\n    \"y\": \"\\u00e9\\n\",\n    \"z\": null\n  },\n  \"b\": [\n    1,\n    2.5\n  ],\n  \"c\": []\n}\n"
        );
    }

    #[test]
    fn llama_configs_read_in_both_spellings_and_bad_fields_are_named() {
        let v4 = serde_json::json!({
            "model_type": "llama", "vocab_size": 50, "hidden_size": 16, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            "tie_word_embeddings": true
        });
        let cfg = llama_config(&v4, Path::new("config.json")).unwrap();
        assert_eq!((cfg.kv_heads(), cfg.inner(), cfg.block_size), (2, 40, 64));
        assert!(matches!(cfg.rope.scaling, Some(RopeScaling::Llama3 { .. })));
        let mut v5 = v4.clone();
        let o = v5.as_object_mut().unwrap();
        o.remove("rope_scaling");
        o.remove("rope_theta");
        o.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
        );
        assert_eq!(llama_config(&v5, Path::new("config.json")).unwrap(), cfg);
        for (key, value, says) in [
            ("hidden_act", serde_json::json!("gelu"), "`hidden_act`"),
            ("num_key_value_heads", serde_json::json!(3), "`n_kv_head`"),
            ("rope_scaling", serde_json::json!({"rope_type": "yarn", "factor": 4.0}), "yarn"),
            ("attention_bias", serde_json::json!(true), "`attention_bias`"),
            ("hidden_size", serde_json::json!("16"), "`hidden_size`"),
            ("head_dim", serde_json::json!(8), "`head_dim`"),
        ] {
            let mut v = v4.clone();
            v[key] = value;
            let err = llama_config(&v, Path::new("m/config.json")).unwrap_err().to_string();
            assert!(err.contains("m/config.json") && err.contains(says), "{key}: {err}");
        }
    }
}
