#!/usr/bin/env python3
"""TRL's side of bench/dpo_speed.sh: DPOTrainer steps on an exported hone chat model.

usage: dpo_trl.py MODEL_DIR PAIRS.jsonl --batch B --steps N --threads T [--beta 0.1]

PAIRS.jsonl holds {"prompt", "chosen", "rejected"} (the prompt as ChatML text with the
assistant header, the answers as message content). The policy and the reference are both
MODEL_DIR (GPT2LMHeadModel); the reference's log-probs are computed before training
(`precompute_ref_log_probs`, as hone does). Prints one JSON line: the median seconds of a step
after the first, and every step's time.
"""
import argparse, json, statistics, sys, tempfile, time

import torch
from datasets import Dataset
from transformers import AutoTokenizer, GPT2LMHeadModel, TrainerCallback
from trl import DPOConfig, DPOTrainer

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("pairs")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--beta", type=float, default=0.1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
rows = [json.loads(l) for l in open(a.pairs)]
need = a.batch * a.steps
rows = (rows * (need // len(rows) + 1))[:need]
data = Dataset.from_dict({k: [r[k] for r in rows] for k in ["prompt", "chosen", "rejected"]})


class Timer(TrainerCallback):
    def __init__(self):
        self.times, self.t = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t)


timer = Timer()
with tempfile.TemporaryDirectory() as out:
    args = DPOConfig(output_dir=out, beta=a.beta, per_device_train_batch_size=a.batch, max_steps=a.steps,
                     learning_rate=1e-5, lr_scheduler_type="constant", report_to="none", use_cpu=True, bf16=False,
                     save_strategy="no", logging_strategy="no", precompute_ref_log_probs=True,
                     dataloader_num_workers=0, seed=0)
    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[timer])
    trainer.train()
print(json.dumps({"median_step_s": statistics.median(timer.times[1:]), "steps_s": timer.times}))
