#!/usr/bin/env python3
"""Checks that hone's DPO and IPO losses equal TRL's `DPOTrainer` losses on the same models
and the same batch, within 1e-5.

Runs a small pipeline with the `hone` binary ($HONE_BIN, default target/release/hone): the smoke
pipeline's corpus, tokenizer, base and sft stages, a fixed set of preference pairs (one pair per
ranked prompt), and two `dpo` stages (`loss: sigmoid` and `loss: ipo`) that train `sft` against
`base` as the reference for one step over all the pairs (so the first step's loss is the loss
of the whole batch at the exported weights). Then, in Python, it loads the same `sft` (policy)
and `base` (reference) folders with transformers, builds TRL's `DPOTrainer` on the same pairs
(the standard format: the ChatML prompt as text, each answer as text; TRL appends the EOS
token, `<|im_end|>`, as hone's answer span ends with it) and computes the loss of the same
batch with `trainer.compute_loss`.

`.ci/run` runs it in a venv with torch, transformers and trl:

    .ci/venv/bin/pip install torch transformers trl
    HONE_BIN=target/release/hone .ci/venv/bin/python tests/python/check_dpo_trl.py
"""

import json
import sys
import tempfile
from pathlib import Path

try:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer

    from hone_smoke import first_step, output, run, smoke_stages
except ImportError as e:
    print(f"FAIL: {e}: pip install torch transformers trl", file=sys.stderr)
    sys.exit(1)

BETA = 0.3
TOLERANCE = 1e-5

# (prompt, chosen, rejected): tinyworld-like questions with a right and a wrong answer.
PAIRS = [
    ("What colour is Tom's ball?", "Tom's ball is blue.", "Tom has a dog."),
    ("What is 3 plus 4?", "3 plus 4 is 7.", "3 plus 4 is 8."),
    ("What sound does a dog make?", "A dog says woof.", "A dog says market."),
    ("Where does Lena live?", "Lena lives in Millbrook.", "Lena lives in a red lamp."),
    ("What is 9 minus 3?", "9 minus 3 is 6.", "10 minus 3 is 8."),
    ("Hi!", "Hello! How can I help?", "Hello hello hello hello."),
]


def run_hone(ws: Path) -> None:
    stages, smoke = smoke_stages(["corpus", "tokenizer", "base", "chat", "sft"])
    with open(ws / "rankings.jsonl", "w") as out:
        for prompt, chosen, rejected in PAIRS:
            out.write(json.dumps({"prompt": prompt, "responses": [chosen, rejected], "ranking": [[0], [1]]}) + "\n")
    stages["ranked"] = {"uses": "command", "with": {"cmd": "cp rankings.jsonl $HONE_OUT/", "deps": ["rankings.jsonl"]}}
    one_step = {"beta": BETA, "steps": 1, "batch_size": len(PAIRS), "val_fraction": 0.0, "warmup_steps": 0,
                "eval_every": 0, "threads": 1}
    for name, loss in [("dpo", "sigmoid"), ("ipo", "ipo")]:
        stages[name] = {"uses": "dpo", "inputs": {"model": "sft", "rankings": "ranked", "reference": "base"},
                        "with": {**one_step, "loss": loss}}
    run(ws, "dpo-trl", stages, smoke)


def trl_loss(ws: Path, loss_type: str) -> float:
    sft, base = output(ws, "sft"), output(ws, "base")
    policy = GPT2LMHeadModel.from_pretrained(sft, torch_dtype=torch.float32).eval()
    reference = GPT2LMHeadModel.from_pretrained(base, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(sft)
    # The prompt as hone's chat template renders it with the assistant header; the answers as
    # their message content (the template puts one space before it).
    rows = {
        "prompt": [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                   for p, _, _ in PAIRS],
        "chosen": [" " + c for _, c, _ in PAIRS],
        "rejected": [" " + r for _, _, r in PAIRS],
    }
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, beta=BETA, loss_type=[loss_type], per_device_train_batch_size=len(PAIRS),
                         report_to="none", use_cpu=True, bf16=False, save_strategy="no", logging_strategy="no",
                         precompute_ref_log_probs=False, max_length=None, seed=0)
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_dict(rows),
                             processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        assert batch["input_ids"].shape[0] == 2 * len(PAIRS), "one batch holds every pair"
        trainer.model.eval()
        with torch.no_grad():
            return float(trainer.compute_loss(trainer.model, batch))


def main() -> None:
    failed = False
    with tempfile.TemporaryDirectory() as d:
        ws = Path(d)
        run_hone(ws)
        for stage, loss_type in [("dpo", "sigmoid"), ("ipo", "ipo")]:
            h, t = first_step(output(ws, stage))["loss"], trl_loss(ws, loss_type)
            ok = abs(h - t) <= TOLERANCE
            failed |= not ok
            print(f"{'ok' if ok else 'FAIL'}: {loss_type}: hone {h:.8f}, TRL {t:.8f}, |diff| {abs(h - t):.2e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
