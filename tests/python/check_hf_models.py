#!/usr/bin/env python3
"""Checks hone against HuggingFace transformers on small random GPT-2, Llama and Qwen2 models:
the logits, greedy generation through hone's KV cache, and a read-then-export round trip.

    HONE_LOGITS=target/release/examples/hone_logits .ci/venv/bin/python tests/python/check_hf_models.py [-k NAME]

For each case below it builds the model from its config with random weights
(`AutoModelForCausalLM.from_config`, float32, a fixed seed), perturbs them so nothing is
trivial (norm gains 1 + 0.1*randn, biases 0.1*randn, matrices 0.2*randn, so that the logits are
a few units apart and a misplaced tensor shows), saves it with `save_pretrained` (safetensors)
in a temporary directory, and runs `hone_logits` ($HONE_LOGITS, default
target/release/examples/hone_logits: `cargo build --release --workspace --examples`) on it:

- logits: `hone_logits DIR ids` on 24 pseudo-random ids against `model(ids).logits`: the largest
  difference must be at most 1e-4;
- greedy: `hone_logits --greedy 16 DIR prompt` (8 prompt ids) against `model.generate(...,
  do_sample=False, max_new_tokens=16)` with no EOS (generate never stops early; `min_new_tokens`
  is not used, as it would mask the EOS logit that hone's plain argmax can pick): the 16 new
  tokens must be equal;
- roundtrip: `hone_logits --roundtrip DIR OUT` (read the folder into hone, export it again): OUT's
  `model.safetensors` and `config.json` must be the same bytes as DIR's (on failure it names the
  first differing tensor, or shows a diff of config.json).

Two more cases have no roundtrip: a Llama saved in shards (`max_shard_size="20KB"`, so
`model.safetensors.index.json` and several `model-0000i-of-0000n.safetensors`), and a Llama 3
model whose config.json is rewritten in the transformers 4 layout that Hub checkpoints (e.g.
SmolLM2) carry (see below). It prints one `ok:` or `FAIL:` line per check and exits 1 if any
failed, or if `hone_logits` does not exist (that is a failure, not a skip).

What transformers 5 writes in config.json (read by hone's loader):

- `"dtype": "float32"` (transformers 4 wrote `"torch_dtype"`), `"transformers_version": "5.25.0"`,
  keys sorted, two-space indent, a final newline.
- Llama and Qwen2: RoPE settings are in one object, `"rope_parameters"`; no top-level
  `rope_theta` or `rope_scaling`:
      "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}
      "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                          "original_max_position_embeddings": 64, "rope_theta": 500000.0,
                          "rope_type": "llama3"}
  transformers 4 files instead have top-level `"rope_theta": 100000.0` and `"rope_scaling": null`
  or `{"factor": 8.0, ..., "rope_type": "llama3"}` (older ones spell it `"type"`); transformers 5
  still reads those.
- Llama writes `head_dim`, `num_key_value_heads`, `attention_bias`, `mlp_bias`,
  `tie_word_embeddings`, `rms_norm_eps`, `hidden_act: "silu"`, `pretraining_tp`.
  Qwen2 has no `head_dim` (it is hidden_size / num_attention_heads) and no `attention_bias` (q,
  k and v always have biases, o does not); it writes `"use_sliding_window": false`,
  `"sliding_window": null`, `max_window_layers` and `"layer_types": ["full_attention", ...]`.
- GPT-2: `n_embd`, `n_head`, `n_layer`, `n_positions`, `n_inner: null` (4 * n_embd),
  `activation_function` ("gelu_new" by default, or "gelu"), `layer_norm_epsilon`,
  `tie_word_embeddings: true`.
- With tied embeddings, `model.safetensors` has no `lm_head.weight` (only the embedding). The
  safetensors header is `{"__metadata__":{"format":"pt"}, ...}` with tensors sorted by name,
  padded with spaces to a multiple of 8 bytes.
"""

import argparse
import difflib
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config
    from transformers.utils import logging as hf_logging
except ImportError as e:
    print(f"FAIL: {e}: this check needs torch and transformers (pip install torch transformers)")
    sys.exit(1)

ROOT = Path(__file__).resolve().parents[2]
HONE_LOGITS = os.environ.get("HONE_LOGITS", str(ROOT / "target" / "release" / "examples" / "hone_logits"))
TOLERANCE = 1e-4
N_IDS = 24
N_PROMPT = 8
N_NEW = 16


def gpt2(vocab, embd, positions, **kw):
    # bos = eos = the last id, as in GPT-2 itself.
    return GPT2Config(vocab_size=vocab, n_embd=embd, n_layer=2, n_head=4, n_positions=positions,
                      bos_token_id=vocab - 1, eos_token_id=vocab - 1, **kw)


def llama(vocab, hidden, kv_heads, positions, tied, eps, rope, intermediate=None):
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or hidden * 5 // 2,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                       max_position_embeddings=positions, tie_word_embeddings=tied, rms_norm_eps=eps,
                       attention_bias=False, rope_parameters=rope)


def qwen2(vocab, hidden, kv_heads, positions, tied):
    return Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 5 // 2, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=positions,
                       tie_word_embeddings=tied, rms_norm_eps=1e-6, use_sliding_window=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6})


# Llama 3.1's frequency scaling. original_max_position_embeddings is 64 (not 32) so that with
# head_dim 16 and theta 500000 the three branches all occur: a wavelength below 64/4 (kept), one
# between 16 and 64 (smoothed) and six above 64 (divided by 8). `check_llama3_branches` checks it.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

# name -> (config, seed)
CASES = {
    "gpt2-gelu": (gpt2(211, 32, 64, activation_function="gelu"), 1),
    "gpt2-gelu_new": (gpt2(256, 64, 128, activation_function="gelu_new"), 2),
    "gpt2-eps1e-6-pos48": (gpt2(163, 48, 48, layer_norm_epsilon=1e-6), 3),
    "gpt2-defaults": (gpt2(128, 32, 64), 4),  # everything else (tie_word_embeddings, gelu_new) as HF's default
    "llama-mha-tied": (llama(193, 64, 4, 64, True, 1e-5, {"rope_type": "default", "rope_theta": 10000.0}), 5),
    "llama-gqa-untied": (llama(256, 64, 2, 128, False, 1e-6, {"rope_type": "default", "rope_theta": 10000.0}), 6),
    "llama-mqa-theta1e5": (llama(149, 32, 1, 96, True, 1e-5, {"rope_type": "default", "rope_theta": 100000.0}), 7),
    "llama3-rope": (llama(240, 64, 2, 128, False, 1e-5, dict(LLAMA3_ROPE)), 8),
    "qwen2-gqa-tied": (qwen2(173, 48, 2, 96, True), 9),
    "qwen2-gqa-untied": (qwen2(230, 64, 2, 128, False), 10),
}
SHARDED = ("llama-sharded", llama(256, 64, 2, 128, False, 1e-5, {"rope_type": "default", "rope_theta": 100000.0}), 11)
V4_CONFIG = ("llama3-v4-config", llama(240, 64, 2, 128, True, 1e-5, dict(LLAMA3_ROPE)), 12)


class HoneError(Exception):
    pass


def hone_logits(*args):
    p = subprocess.run([HONE_LOGITS, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if p.returncode != 0:
        tail = "\n    ".join(p.stderr.strip().splitlines()[-5:])
        raise HoneError(f"`hone_logits {' '.join(map(str, args))}` exited {p.returncode}:\n    {tail}")
    return p.stdout


def ids_for(cfg, n, salt):
    """n pseudo-random ids below the vocabulary size, the same on every run."""
    rng = random.Random(salt * 1_000_003 + cfg.vocab_size)
    return [rng.randrange(cfg.vocab_size) for _ in range(min(n, cfg.max_position_embeddings))]


def build(cfg, seed):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights come once
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif p.dim() == 1:  # LayerNorm / RMSNorm gains
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model.eval()


def check_llama3_branches(model):
    cfg = model.config
    rope = cfg.rope_parameters
    head_dim = cfg.head_dim
    inv = [rope["rope_theta"] ** (-2 * i / head_dim) for i in range(head_dim // 2)]
    wavelen = [2 * math.pi / f for f in inv]
    hi = rope["original_max_position_embeddings"] / rope["high_freq_factor"]
    lo = rope["original_max_position_embeddings"] / rope["low_freq_factor"]
    kinds = {"kept" if w < hi else "divided" if w > lo else "smoothed" for w in wavelen}
    assert kinds == {"kept", "divided", "smoothed"}, f"llama3 rope case covers only {kinds}"


def check_logits(name, model, d):
    ids = ids_for(model.config, N_IDS, 1)
    ours = json.loads(hone_logits(d, ",".join(map(str, ids))))
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0]
    ours_t = torch.tensor(ours["logits"], dtype=torch.float32)
    if ours["ids"] != ids:
        return False, f"hone echoed ids {ours['ids']}, sent {ids}"
    if ours_t.shape != theirs.shape:
        return False, f"shapes differ: hone {tuple(ours_t.shape)}, transformers {tuple(theirs.shape)}"
    diff = (ours_t - theirs).abs()
    worst = diff.max().item()
    pos, tok = divmod(int(diff.argmax()), theirs.shape[1])
    msg = (f"max |hone - transformers| = {worst:.2e} over {ours_t.numel()} logits (at position {pos}, token {tok}; "
           f"logits span {theirs.min().item():.2f}..{theirs.max().item():.2f}; tolerance {TOLERANCE})")
    return worst <= TOLERANCE, msg


def check_greedy(name, model, d):
    prompt = ids_for(model.config, N_PROMPT, 2)
    assert len(prompt) + N_NEW <= model.config.max_position_embeddings
    ours = json.loads(hone_logits("--greedy", N_NEW, d, ",".join(map(str, prompt))))["tokens"]
    x = torch.tensor([prompt])
    # No stop token: generate always gives max_new_tokens, as `hone_logits --greedy` does. (Set
    # on the model's generation_config, which generate falls back to for what it is not given;
    # the folder hone reads was saved before, as transformers wrote it.)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_NEW, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    theirs = out[0, len(prompt):].tolist()
    if len(theirs) != N_NEW:
        return False, f"transformers generated {len(theirs)} tokens, not {N_NEW} (did it stop on an EOS?)"
    if ours == theirs:
        return True, f"{N_NEW} greedy tokens equal: {theirs}"
    # Where they part, how far apart the two choices were in transformers' logits.
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    detail = ""
    if k < len(ours) and k < len(theirs) and 0 <= ours[k] < model.config.vocab_size:
        with torch.no_grad():
            last = model(torch.tensor([prompt + theirs[:k]])).logits[0, -1]
        detail = (f"; at step {k} transformers' logit for its token {theirs[k]} is {last[theirs[k]].item():.6f}, "
                  f"for hone's {ours[k]} {last[ours[k]].item():.6f}")
    return False, f"tokens differ from step {k}: hone {ours}, transformers {theirs}{detail}"


def safetensors_header(path):
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    return b, n, json.loads(b[8:8 + n])


def safetensors_difference(a, b):
    """A sentence on how two safetensors files differ, for a failure message."""
    ba, na, ha = safetensors_header(a)
    bb, nb, hb = safetensors_header(b)
    if ha.get("__metadata__") != hb.get("__metadata__"):
        return f"__metadata__ differs: {ha.get('__metadata__')} vs {hb.get('__metadata__')}"
    ka, kb = [k for k in ha if k != "__metadata__"], [k for k in hb if k != "__metadata__"]
    if set(ka) != set(kb):
        return (f"tensor names differ: only in original {sorted(set(ka) - set(kb))}, "
                f"only in hone's {sorted(set(kb) - set(ka))}")
    for k in sorted(ka):
        ea, eb = ha[k], hb[k]
        if (ea["dtype"], ea["shape"]) != (eb["dtype"], eb["shape"]):
            return f"tensor {k}: {ea['dtype']}{ea['shape']} vs {eb['dtype']}{eb['shape']}"
        sa, sb = ea["data_offsets"], eb["data_offsets"]
        if ba[8 + na + sa[0]:8 + na + sa[1]] != bb[8 + nb + sb[0]:8 + nb + sb[1]]:
            return f"tensor {k}: the values differ"
    if ka != kb:
        first = next(i for i, (x, y) in enumerate(zip(ka, kb)) if x != y)
        return f"same tensors, different order: tensor {first} is {ka[first]} vs {kb[first]}"
    for k in ka:
        if ha[k]["data_offsets"] != hb[k]["data_offsets"]:
            return f"same tensors, different layout: {k} at {ha[k]['data_offsets']} vs {hb[k]['data_offsets']}"
    return f"same tensors, different header bytes (length {na} vs {nb}): {ba[8:8 + na]!r} vs {bb[8:8 + nb]!r}"


def check_roundtrip(name, model, d, out):
    hone_logits("--roundtrip", d, out)
    problems = []
    for f in ["model.safetensors", "config.json"]:
        a, b = Path(d) / f, Path(out) / f
        if not b.exists():
            problems.append(f"hone wrote no {f} (wrote {sorted(p.name for p in Path(out).iterdir())})")
        elif a.read_bytes() != b.read_bytes():
            if f == "config.json":
                diff = difflib.unified_diff(a.read_text().splitlines(), b.read_text().splitlines(),
                                            "original/config.json", "hone/config.json", lineterm="")
                problems.append("config.json differs:\n    " + "\n    ".join(diff))
            else:
                problems.append(f"model.safetensors differs: {safetensors_difference(a, b)}")
    if problems:
        return False, "; ".join(problems)
    return True, "model.safetensors and config.json are the same bytes after hone's read and export"


def to_v4_config(d):
    """Rewrites d/config.json as transformers 4 wrote it: torch_dtype, top-level rope_theta and rope_scaling."""
    path = Path(d) / "config.json"
    c = json.loads(path.read_text())
    rope = c.pop("rope_parameters")
    c["rope_theta"] = rope.pop("rope_theta")
    c["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    c["torch_dtype"] = c.pop("dtype")
    c["transformers_version"] = "4.46.0"
    path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="only the cases whose name contains this")
    args = ap.parse_args()
    if not os.path.exists(HONE_LOGITS):
        print(f"FAIL: no `{HONE_LOGITS}`: build it with `cargo build --release --workspace --examples` "
              "or set HONE_LOGITS")
        return 1
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    def report(name, check, fn, *a):
        try:
            ok, msg = fn(name, *a)
        except HoneError as e:
            ok, msg = False, str(e)
        print(f"{'ok' if ok else 'FAIL'}: {name} {check}: {msg}", flush=True)
        return ok

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cfg, seed) in CASES.items():
            if args.k not in name:
                continue
            model = build(cfg, seed)
            if name.startswith("llama3"):
                check_llama3_branches(model)
            d, out = os.path.join(tmp, name), os.path.join(tmp, name + "-hone")
            model.save_pretrained(d)
            results.append(report(name, "logits", check_logits, model, d))
            results.append(report(name, "greedy", check_greedy, model, d))
            results.append(report(name, "roundtrip", check_roundtrip, model, d, out))

        name, cfg, seed = SHARDED
        if args.k in name:
            model = build(cfg, seed)
            d = os.path.join(tmp, name)
            model.save_pretrained(d, max_shard_size="20KB")
            shards = sorted(p.name for p in Path(d).glob("model-*.safetensors"))
            assert (Path(d) / "model.safetensors.index.json").exists() and len(shards) > 1, os.listdir(d)
            results.append(report(f"{name} ({len(shards)} shards)", "logits", check_logits, model, d))

        name, cfg, seed = V4_CONFIG
        if args.k in name:
            model = build(cfg, seed)
            d = os.path.join(tmp, name)
            model.save_pretrained(d)
            to_v4_config(d)
            reread = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).config.rope_parameters
            assert reread == model.config.rope_parameters, (reread, model.config.rope_parameters)
            results.append(report(name, "logits", check_logits, model, d))
            results.append(report(name, "greedy", check_greedy, model, d))

        # bf16 weights (as SmolLM2 and Llama 3 ship): hone reads them into f32; transformers
        # runs the same bf16-rounded weights in f32.
        name = "llama-bf16"
        if args.k in name:
            model = build(llama(256, 64, 2, 128, True, 1e-5, {"rope_type": "default", "rope_theta": 100000.0}), 13)
            d = os.path.join(tmp, name)
            model.to(torch.bfloat16).save_pretrained(d)
            assert json.load(open(os.path.join(d, "config.json")))["dtype"] == "bfloat16"
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
            results.append(report(name, "logits", check_logits, model, d))
            results.append(report(name, "greedy", check_greedy, model, d))

    failed = results.count(False)
    print(f"{len(results) - failed} of {len(results)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
