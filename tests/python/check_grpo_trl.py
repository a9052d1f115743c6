#!/usr/bin/env python3
"""Checks that hone's GRPO loss equals TRL's `GRPOTrainer` loss on the same models and the same
batch, within 1e-5, for each of TRL's loss types (`dapo`, `grpo`, `bnpo`, `dr_grpo`), and that
the global norms of the gradients of the parameters hone trains agree (relative 1e-5).

Runs a small pipeline with the `hone` binary ($HONE_BIN, default target/release/hone): the smoke
pipeline's corpus, tokenizer, base and sft stages (a little larger, so that answers differ in
length), its RL prompts, and one `grpo` stage per loss
type that trains `sft` against `base` as the frozen reference (β 0.04, so the KL term counts) for
one step on one group of 8 answers to one prompt, rewarded by `reward_contains` (so the group's
rewards differ). The first step's loss is the loss of the whole group at the exported weights;
the group (prompt tokens, answer tokens, rewards, advantages) is in the stage's `rollout.jsonl`.

Then, in Python, TRL computes the same: the advantages from the rewards as
`GRPOTrainer._generate_and_score_completions` does (the group's mean and `nanstd`, + 1e-4), and
the loss with `GRPOTrainer._compute_loss` on hone's token ids, the reference's log-probs from
`GRPOTrainer._get_per_token_logps_and_entropies` on `base`, `num_items_in_batch` the group's
answer tokens. TRL takes the old log-probs as the policy's own (detached) at the first step; hone
takes the sampler's, which agree to float rounding.

`.ci/run` runs it in the venv `tests/python/check_dpo_trl.py` uses:

    HONE_BIN=target/release/hone .ci/venv/bin/python tests/python/check_grpo_trl.py
"""

import json
import sys
import tempfile
from pathlib import Path

try:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2LMHeadModel
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer.grpo_trainer import add_fused_lm_head
    from trl.trainer.utils import nanstd

    from hone_smoke import first_step, output, run, smoke_stages
except ImportError as e:
    print(f"FAIL: {e}: pip install torch transformers trl", file=sys.stderr)
    sys.exit(1)

BETA = 0.04
G = 8
MAX_NEW = 32
TEMPERATURE = 1.0
TOLERANCE = 1e-5
# The global norm of the gradient, relative: the whole backward pass, summed in another order.
GRAD_TOLERANCE = 1e-5
LOSS_TYPES = ["dapo", "grpo", "bnpo", "dr_grpo"]


def run_hone(ws: Path) -> None:
    stages, smoke = smoke_stages(["corpus", "tokenizer", "base", "chat", "sft", "rl_prompts"])
    # A base and SFT model a little larger than the smoke pipeline's, so that answers end at
    # `<|im_end|>` after differing numbers of tokens (with equal lengths every loss type is the
    # same and the policy term is 0 at the first step).
    stages["base"]["with"].update({"n_layer": 2, "n_embd": 64, "steps": 300})
    stages["sft"]["with"].update({"steps": 150})
    one_step = {"reward_contains": "e", "num_generations": G, "rollouts": G, "batch_size": G, "steps": 1,
                "beta": BETA, "temperature": TEMPERATURE, "max_new_tokens": MAX_NEW, "warmup_steps": 0,
                "eval_every": 0, "eval_prompts": 0, "threads": 1}
    for loss in LOSS_TYPES:
        stages[f"grpo_{loss}"] = {"uses": "grpo", "inputs": {"model": "sft", "prompts": "rl_prompts", "reference": "base"},
                                  "with": {**one_step, "loss_type": loss}}
    run(ws, "grpo-trl", stages, smoke)


def trl_advantages(rewards: torch.Tensor) -> torch.Tensor:
    # GRPOTrainer._generate_and_score_completions, scale_rewards="group".
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    return (rewards - mean) / (std + 1e-4)


def trl_step(ws: Path, loss_type: str, rollout: list) -> tuple[float, float]:
    """TRL's loss of the group and the global norm of its gradient."""
    sft, base = output(ws, "sft"), output(ws, "base")
    policy = GPT2LMHeadModel.from_pretrained(sft, torch_dtype=torch.float32).eval()
    reference = GPT2LMHeadModel.from_pretrained(base, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(sft)
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, beta=BETA, loss_type=loss_type, num_generations=G,
                          per_device_train_batch_size=G, max_completion_length=MAX_NEW, temperature=TEMPERATURE,
                          epsilon=0.2, report_to="none", use_cpu=True, bf16=False, save_strategy="no",
                          logging_strategy="no", seed=0)
        trainer = GRPOTrainer(model=policy, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                              args=args, train_dataset=Dataset.from_dict({"prompt": ["x"] * G}),
                              processing_class=tok)
        # TRL patches its models' forward to return log-probs at the temperature (its reference
        # too): the same patch on `base`.
        add_fused_lm_head(reference, temperature=TEMPERATURE, cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
        trainer.model.eval()
        prompt = torch.tensor([r["prompt_tokens"] for r in rollout])
        width = max(len(r["tokens"]) for r in rollout)
        completion = torch.tensor([r["tokens"] + [tok.pad_token_id or 0] * (width - len(r["tokens"])) for r in rollout])
        mask = torch.tensor([[1] * len(r["tokens"]) + [0] * (width - len(r["tokens"])) for r in rollout])
        rewards = torch.tensor([r["reward"] for r in rollout], dtype=torch.float32)
        advantages = trl_advantages(rewards)
        hone_adv = torch.tensor([r["advantage"] for r in rollout], dtype=torch.float32)
        if (advantages - hone_adv).abs().max() > TOLERANCE:
            sys.exit(f"FAIL: advantages differ: hone {hone_adv.tolist()}, TRL {advantages.tolist()}")
        if advantages.abs().max() == 0:
            sys.exit("FAIL: every answer got the same reward: pick another `reward_contains`")
        input_ids = torch.cat([prompt, completion], dim=1)
        attention = torch.cat([torch.ones_like(prompt), mask], dim=1)
        if len({len(r["tokens"]) for r in rollout}) < 2:
            sys.exit("FAIL: every answer has the same length: the loss types cannot differ")
        with torch.no_grad():
            ref, _, _ = trainer._get_per_token_logps_and_entropies(reference, input_ids, attention, width)
        inputs = {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
                  "completion_mask": mask, "advantages": advantages, "ref_per_token_logps": ref,
                  "num_items_in_batch": mask.sum()}
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
        # The parameters hone trains: without biases (`"hone": {"bias": false}` in config.json)
        # transformers' GPT-2 still has them, at zero, and differentiates them too.
        bias = json.loads((sft / "config.json").read_text()).get("hone", {}).get("bias", True)
        grads = [p.grad for n, p in trainer.model.named_parameters()
                 if p.grad is not None and (bias or not n.endswith(".bias"))]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        return float(loss), float(norm)


def main() -> None:
    failed = False
    with tempfile.TemporaryDirectory() as d:
        ws = Path(d)
        run_hone(ws)
        for loss_type in LOSS_TYPES:
            out = output(ws, f"grpo_{loss_type}")
            rollout = [json.loads(l) for l in (out / "rollout.jsonl").read_text().splitlines()]
            step = first_step(out)
            (h, hg), (t, tg) = (step["loss"], step["grad_norm"]), trl_step(ws, loss_type, rollout)
            ok = abs(h - t) <= TOLERANCE and abs(hg - tg) <= GRAD_TOLERANCE * tg
            failed |= not ok
            print(f"{'ok' if ok else 'FAIL'}: {loss_type}: loss hone {h:.8f}, TRL {t:.8f}, |diff| {abs(h - t):.2e}; "
                  f"gradient norm hone {hg:.6f}, TRL {tg:.6f}, relative diff {abs(hg - tg) / tg:.1e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
