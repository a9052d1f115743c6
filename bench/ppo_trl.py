"""TRL's side of the PPO speed benchmark (bench/ppo_speed.sh runs it beside hone's `ppo` stage).

Runs TRL's PPOTrainer on the CPU on hone-exported models, with the configuration of
/work/shared/rlhf-notes.md ("Side-by-side with TRL on the CPU"):

- policy and reference: two `GPT2LMHeadModel`s loaded from the SFT model directory;
- reward and value: two `GPT2ForSequenceClassification(num_labels=1)` loaded from the reward
  model directory. Given a plain LM directory instead (no reward model yet), the score head is
  added here (seeded normal init, as TRL's and hone's reward heads), so the harness runs;
- the tokenizer from the SFT directory, padding on the left, pad `<|endoftext|>` (not EOS,
  which is `<|im_end|>` for a chat model), each prompt rendered with the chat template.

It times, per PPO iteration, rollout (generation), scoring (the no-gradient forward passes of
the reference, value and reward models on the rollout) and update (the rest: GAE, the epochs
over minibatches, logging), by wrapping TRL's own `batch_generation`, `forward` and
`get_reward`; the first `--warmup` iterations are left out of the medians. Output: one JSON
object (settings, per-iteration times and medians, TRL's metrics), to stdout or `--out`.

Needs a TRL that still ships PPO (`trl.experimental.ppo`, removed after 1.0): with
`/work/venv` (trl 1.16), install 1.0 beside it and put it first on the path:
    pip install --no-deps --target /tmp/trl-ppo trl==1.0.0
    PYTHONPATH=/tmp/trl-ppo python bench/ppo_trl.py --policy DIR --reward DIR --prompts FILE
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the SFT model directory (hone export)")
    ap.add_argument("--reward", required=True, help="the reward model directory, or an LM directory to add a score head to")
    ap.add_argument("--prompts", required=True, help="JSONL with a `prompt` field per line")
    ap.add_argument("--batch", type=int, default=16, help="responses per iteration")
    ap.add_argument("--mini-batches", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="PPO epochs per iteration")
    ap.add_argument("--response-length", type=int, default=24, help="new tokens per response at most")
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1, help="first iterations left out of the medians")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--lr", type=float, default=3e-6)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", help="write the JSON here (default: stdout)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback

    try:
        import trl.experimental.ppo.ppo_trainer as ppo_mod
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError as e:
        sys.exit(f"this TRL ({__import__('trl').__version__}) has no PPO trainer ({e}); see the docstring: "
                 "pip install --no-deps --target /tmp/trl-ppo trl==1.0.0, then PYTHONPATH=/tmp/trl-ppo")

    tok = AutoTokenizer.from_pretrained(a.policy, padding_side="left")
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        sys.exit(f"{a.policy}: the tokenizer needs a pad token other than EOS (pad {tok.pad_token!r}, eos {tok.eos_token!r})")

    def lm():
        return GPT2LMHeadModel.from_pretrained(a.policy, dtype=torch.float32)

    def scorer():
        cfg = json.load(open(os.path.join(a.reward, "config.json")))
        is_rm = "GPT2ForSequenceClassification" in cfg.get("architectures", [])
        torch.manual_seed(a.seed)
        m = GPT2ForSequenceClassification.from_pretrained(a.reward, num_labels=1, dtype=torch.float32)
        if not is_rm:  # an LM directory: give the head the reward model's init
            torch.nn.init.normal_(m.score.weight, std=1 / (m.config.n_embd + 1) ** 0.5)
        m.config.pad_token_id = tok.pad_token_id
        return m, is_rm

    policy, ref = lm(), lm()
    reward, is_rm = scorer()
    value, _ = scorer()

    with open(a.prompts) as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in prompts]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    # As hone's ppo stage: only prompts that leave room for the answer and the reward model's
    # closing `<|im_end|>\n` in the context (left padding makes a batch as long as its longest).
    room = policy.config.n_positions - a.response_length - 2
    ids = [x for x in ids if len(x) <= room]
    if len(ids) < a.batch:
        sys.exit(f"{a.prompts}: {len(ids)} prompts fit in {room} tokens, fewer than the batch of {a.batch}")
    train = Dataset.from_dict({"input_ids": ids})
    evalset = Dataset.from_dict({"input_ids": ids[: a.batch]})

    cfg = PPOConfig(
        output_dir="/tmp/hone-ppo-trl",
        per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1,
        num_mini_batches=a.mini_batches,
        num_ppo_epochs=a.epochs,
        response_length=a.response_length,
        total_episodes=a.batch * a.iterations,
        local_rollout_forward_batch_size=a.batch,
        stop_token="eos",
        temperature=a.temperature,
        learning_rate=a.lr,
        num_sample_generations=0,
        report_to="none",
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=a.seed,
        logging_steps=1,
        disable_tqdm=True,
    )

    # Phase timing by wrapping TRL's own functions (looked up as module globals at call time).
    phase = {"rollout": 0.0, "scoring": 0.0}

    def timed(fn, name):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            if name == "rollout" or not torch.is_grad_enabled():  # scoring passes run under no_grad
                phase[name] += time.perf_counter() - t0
            return out
        return wrapper

    ppo_mod.batch_generation = timed(ppo_mod.batch_generation, "rollout")
    ppo_mod.forward = timed(ppo_mod.forward, "scoring")
    ppo_mod.get_reward = timed(ppo_mod.get_reward, "scoring")

    iters, metrics = [], []

    class Clock(TrainerCallback):
        def __init__(self):
            self.t = None

        def on_train_begin(self, *args, **kw):
            self.t = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "objective/scores" in logs:
                metrics.append({k: v for k, v in logs.items() if isinstance(v, (int, float))})

        def on_step_end(self, *args, **kw):
            now = time.perf_counter()
            total = now - self.t
            iters.append({"total_s": total, "rollout_s": phase["rollout"], "scoring_s": phase["scoring"],
                          "update_s": total - phase["rollout"] - phase["scoring"]})
            phase["rollout"] = phase["scoring"] = 0.0
            self.t = now

    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=train, eval_dataset=evalset, callbacks=[Clock()])
    trainer.train()

    timed_iters = iters[a.warmup:] or iters
    med = {k: statistics.median(i[k] for i in timed_iters) for k in ("total_s", "rollout_s", "scoring_s", "update_s")}
    out = {
        "side": "trl",
        "trl": __import__("trl").__version__,
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(a).items() if k not in ("out",)},
        "reward_model": "reward model" if is_rm else "LM + score head added in Python",
        "prompt_tokens_max": max(len(x) for x in ids),
        "iterations": iters,
        "median": med,
        "metrics": metrics,
    }
    text = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
