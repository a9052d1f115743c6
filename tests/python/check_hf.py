#!/usr/bin/env python3
"""Check that a hone model loads in HuggingFace transformers and gives hone's logits.

    python3 tests/python/check_hf.py [MODEL_DIR] [--ids 1,2,3] [--tol 1e-4]

Without MODEL_DIR it makes a small random model with biases (hone_logits --random) in a
temporary directory. hone's logits come from the `hone_logits` example binary
($HONE_LOGITS, default target/release/examples/hone_logits: `cargo build --release --workspace
--examples`); the model is loaded with `GPT2LMHeadModel.from_pretrained(dir)`. Exits 0 when the
largest difference is within the tolerance, 1 when not or when torch or transformers is not
installed. `bench/hf_export.sh` runs it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


HONE_LOGITS = os.environ.get("HONE_LOGITS", os.path.join(ROOT, "target", "release", "examples", "hone_logits"))


def hone_logits(*args):
    if not os.path.exists(HONE_LOGITS):
        sys.exit(f"FAIL: no `{HONE_LOGITS}`: build it with `cargo build --release --workspace --examples`")
    return subprocess.run([HONE_LOGITS, *args], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--ids", default=None, help="comma-separated token ids (default: a fixed pseudo-random list)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    try:
        import torch
        from transformers import GPT2LMHeadModel
    except ImportError as e:
        print(f"FAIL: {e}: this check needs torch and transformers (pip install torch transformers)", file=sys.stderr)
        return 1

    tmp = None
    model_dir = args.model
    if model_dir is None:
        tmp = tempfile.TemporaryDirectory()
        model_dir = tmp.name
        hone_logits("--random", model_dir)
    config = json.load(open(os.path.join(model_dir, "config.json")))
    n = min(config["n_positions"], 24)
    ids = args.ids or ",".join(str((i * 7919 + 13) % config["vocab_size"]) for i in range(n))

    ours = json.loads(hone_logits(model_dir, ids))
    model = GPT2LMHeadModel.from_pretrained(model_dir)
    model.eval()
    with torch.no_grad():
        theirs = model(torch.tensor([ours["ids"]])).logits[0]
    ours_t = torch.tensor(ours["logits"])
    if ours_t.shape != theirs.shape:
        print(f"FAIL: shapes differ: hone {tuple(ours_t.shape)}, transformers {tuple(theirs.shape)}")
        return 1
    diff = (ours_t - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    verdict = "ok" if diff <= args.tol else "FAIL"
    print(f"{verdict}: max |hone - transformers| = {diff:.3e} over {ours_t.numel()} logits (max |logit| {scale:.2f}, tolerance {args.tol})")
    return 0 if diff <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
