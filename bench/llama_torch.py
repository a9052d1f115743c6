#!/usr/bin/env python3
"""PyTorch's side of the Llama speed benchmarks: training steps and batched sampling of a
random `LlamaForCausalLM` (transformers, float32, CPU), for comparing with hone on the same shape.

    OMP_WAIT_POLICY=PASSIVE python bench/llama_torch.py --train SHAPE --batch B --seq T --steps N --threads K
    OMP_WAIT_POLICY=PASSIVE python bench/llama_torch.py --generate SHAPE --batch 64 --prompt P --new N --threads K
    python bench/llama_torch.py --save SHAPE DIR

Run it with OMP_WAIT_POLICY=PASSIVE: with the default (active) policy PyTorch's OpenMP threads
spin between parallel regions, which on a small shared machine slows everything else and makes
the timings depend on the other load.

Shapes:
- `smol`: SmolLM2-135M's (30 layers, hidden 576, 9 heads, 3 KV heads, intermediate 1536,
  vocab 49152, tied embeddings, rope_theta 100000, 8192 positions; 135M parameters);
- `small`: 4 layers, hidden 256, 4 heads, 2 KV heads, intermediate 640, vocab 8192, tied,
  rope_theta 100000, 1024 positions (4.9M parameters).

Modes:
- `--train`: one step is forward (`attn_implementation="sdpa"`) with the causal LM loss on random
  ids, backward, `clip_grad_norm_(1.0)` and an AdamW step (lr 3e-4, weight decay 0.1, PyTorch's
  default CPU implementation); 2 warm-up steps, then N timed ones. Prints
  {"ms_median", "ms_min", "cpu_ms_median", "peak_rss_mb", ...}: wall and process CPU
  milliseconds per step, and the process's peak resident memory (ru_maxrss, model and optimizer
  included; "baseline_rss_mb" is the peak before the model is built, torch and transformers
  loaded).
- `--generate`: `model.generate(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
  max_new_tokens=N, min_new_tokens=N)` with the KV cache under `torch.no_grad()`, on a batch of
  random prompts of P tokens (no stop token: every sequence gets N new tokens). One warm-up, then
  `--repeats` timed runs (default 3). Prints {"tokens_per_second": median of batch * N / wall
  seconds (prompt processing included), "tokens_per_cpu_second", "runs", "peak_rss_mb"}.
- `--save SHAPE DIR`: writes the random model of that shape (seed 0, the weights the other modes
  use) to DIR with `save_pretrained` (float32 safetensors, config.json, generation_config.json,
  no tokenizer), so hone can load the same weights. `--from DIR` makes `--train` and
  `--generate` load a saved folder instead of building one.
"""

import argparse
import json
import resource
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

SHAPES = {
    "smol": dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192,
                 initializer_range=0.041666666666666664),
    "small": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=640, vocab_size=8192, max_position_embeddings=1024),
}


def config(shape):
    return LlamaConfig(**SHAPES[shape], tie_word_embeddings=True, rms_norm_eps=1e-5, hidden_act="silu",
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                       bos_token_id=0, eos_token_id=0, pad_token_id=None)


def model_for(args, shape):
    if args.from_dir:
        return AutoModelForCausalLM.from_pretrained(args.from_dir, dtype=torch.float32, attn_implementation="sdpa")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config(shape), dtype=torch.float32, attn_implementation="sdpa")


BASELINE_RSS_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def train(args):
    model = model_for(args, args.train).train()
    vocab = model.config.vocab_size
    assert args.seq <= model.config.max_position_embeddings
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    walls, cpus = [], []
    for step in range(2 + args.steps):
        x = torch.randint(0, vocab, (args.batch, args.seq), generator=g)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if step >= 2:
            walls.append(wall * 1e3)
            cpus.append(cpu * 1e3)
    return {"mode": "train", "shape": args.train, "batch": args.batch, "seq": args.seq, "threads": args.threads,
            "ms_median": statistics.median(walls), "ms_min": min(walls), "cpu_ms_median": statistics.median(cpus),
            "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": BASELINE_RSS_MB, "last_loss": loss.item(), "steps_ms": walls}


def generate(args):
    model = model_for(args, args.generate).eval()
    assert args.prompt + args.new <= model.config.max_position_embeddings
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.prompt), generator=g)
    mask = torch.ones_like(ids)
    runs, cpu_runs = [], []
    with torch.no_grad():
        for i in range(args.repeats + 1):
            torch.manual_seed(i)
            t0, c0 = time.perf_counter(), time.process_time()
            out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=args.new, min_new_tokens=args.new, use_cache=True, pad_token_id=0)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert out.shape == (args.batch, args.prompt + args.new), out.shape
            if i > 0:
                runs.append(args.batch * args.new / secs)
                cpu_runs.append(args.batch * args.new / cpu)
    return {"mode": "generate", "shape": args.generate, "batch": args.batch, "prompt": args.prompt, "new": args.new,
            "threads": args.threads, "tokens_per_second": statistics.median(runs),
            "tokens_per_cpu_second": statistics.median(cpu_runs), "runs": runs, "peak_rss_mb": peak_rss_mb(),
            "baseline_rss_mb": BASELINE_RSS_MB}


def save(shape, out):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(shape), dtype=torch.float32)
    model.save_pretrained(out)
    return {"mode": "save", "shape": shape, "dir": out, "parameters": model.num_parameters()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", choices=SHAPES, metavar="SHAPE", help="time training steps (smol or small)")
    mode.add_argument("--generate", choices=SHAPES, metavar="SHAPE", help="time batched sampling")
    mode.add_argument("--save", nargs=2, metavar=("SHAPE", "DIR"), help="write the random model to DIR")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256, help="--train: tokens per sequence")
    ap.add_argument("--steps", type=int, default=10, help="--train: timed steps (after 2 warm-ups)")
    ap.add_argument("--prompt", type=int, default=16, help="--generate: prompt tokens")
    ap.add_argument("--new", type=int, default=48, help="--generate: new tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3, help="--generate: timed runs (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--from", dest="from_dir", metavar="DIR", help="load this folder instead of a random model")
    args = ap.parse_args()
    if args.save and args.save[0] not in SHAPES:
        ap.error(f"--save: unknown shape {args.save[0]!r} (choose from {', '.join(SHAPES)})")
    torch.set_num_threads(args.threads)
    if args.train:
        result = train(args)
    elif args.generate:
        result = generate(args)
    else:
        result = save(*args.save)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
