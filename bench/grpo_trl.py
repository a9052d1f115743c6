"""TRL's side of the GRPO speed benchmark (bench/grpo_speed.sh runs it beside hone's `grpo` stage).

Runs TRL's GRPOTrainer on the CPU on a hone-exported chat model with the settings of the hone
run it is compared with: each iteration (one generation batch) samples `--group` answers to each
of `--prompts-per-iter` prompts (`num_generations`, `steps_per_generation` = answers per
iteration / `--batch`, so one iteration is that many optimizer steps), scores them with the
reward "+1 when the answer contains `--contains`" (hone's `reward_contains`), computes the
reference's log-probs (β > 0) and updates. An iteration's time is the time between the ends of
its last step and of the previous iteration's (generation, reference, reward, the steps); the
first is left out of the median. Also TRL's mean answer length (tokens, EOS included).
Output: one JSON line.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sft", help="the SFT model directory (hone export)")
    ap.add_argument("prompts", help="JSONL with a `prompt` field per line (ChatML-rendered)")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompts-per-iter", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--contains", default="is")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2LMHeadModel, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(a.sft, padding_side="left")
    policy = GPT2LMHeadModel.from_pretrained(a.sft, dtype=torch.float32)
    prompts = [json.loads(l)["prompt"] for l in open(a.prompts) if l.strip()]
    per_iter = a.group * a.prompts_per_iter
    steps_per_gen = per_iter // a.batch

    def reward(completions, **kw):
        return [1.0 if a.contains in c else 0.0 for c in completions]

    args = GRPOConfig(
        output_dir="/tmp/hone-grpo-trl", per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
        steps_per_generation=steps_per_gen, num_generations=a.group, max_completion_length=a.max_new,
        temperature=a.temperature, beta=a.beta, learning_rate=3e-5, max_steps=steps_per_gen * a.iterations,
        report_to="none", use_cpu=True, bf16=False, save_strategy="no", logging_steps=steps_per_gen, seed=1234,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    ends, lengths = [], []

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % steps_per_gen == 0:
                ends.append(time.perf_counter())

    trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                          callbacks=[Clock()])
    trainer.train()
    iters = [b - a_ for a_, b in zip(ends, ends[1:])]
    print(json.dumps({"iteration_s": iters, "median_iteration_s": statistics.median(iters[1:] or iters),
                      "answers_per_iteration": per_iter,
                      "mean_answer_length": statistics.mean(lengths) if lengths else None, "steps_per_iteration": steps_per_gen}))


if __name__ == "__main__":
    main()
