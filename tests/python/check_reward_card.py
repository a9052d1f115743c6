#!/usr/bin/env python3
"""Check that a hone reward model's card (README.md) reproduces hone's scores in transformers.

    HONE_BIN=target/release/hone python3 tests/python/check_reward_card.py

A reward model trained with `likelihood: a` scores `head + a * mean log p(answer)`, which a
plain `AutoModelForSequenceClassification` (and so TRL or OpenRLHF) does not see: the `reward`
stage therefore writes a model card whose Python function computes the full score. This
check trains two small reward models with `pipelines/from-a-model.yaml` (on the tiny random
Llama with its own chat template, and on the tiny GPT-2 folder, which gets hone's ChatML),
runs the card's code block as written, and compares its `score(prompt, answer)` with `hone
score DIR -p PROMPT -a ANSWER --json` (tolerance 1e-4). It also reports how far the head
alone is from hone's score, which is why the card exists. Exits 1 on any difference, and
when torch or transformers is missing.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HONE = os.environ.get("HONE_BIN", os.path.join(ROOT, "target", "release", "hone"))
PIPELINE = os.path.join(ROOT, "pipelines", "from-a-model.yaml")
TEXTS = [
    ("What colour is Tom's ball?", "Tom's ball is red."),
    ("What is 7 plus 5?", "7 plus 5 is 12."),
    ("Where does Anna live?", "Anna lives in Lindenford."),
    ("Say something.", "I do not know."),
]
SMALL = ["vars.threads=1", "stages.sft.with.steps=10", "stages.sample.with.limit=32", "stages.reward.with.steps=20"]


def hone(*args):
    return subprocess.run([HONE, *args], cwd=ROOT, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


def reward_dir(ws, model):
    sets = [x for s in SMALL + [f"vars.model={model}"] for x in ("-s", s)]
    hone("run", PIPELINE, "--workspace", ws, "--until", "reward", *sets)
    show = json.loads(hone("show", "reward", PIPELINE, "--workspace", ws, "--json", *sets))
    return show["output"]


def check(name, folder):
    card = open(os.path.join(folder, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    if len(blocks) != 1 or "likelihood" not in card:
        print(f"FAIL: {name}: the card has {len(blocks)} python blocks")
        return False
    code = blocks[0].replace('FOLDER = "."', f"FOLDER = {folder!r}")
    env = {}
    exec(compile(code, f"{name}/README.md", "exec"), env)
    worst, head_gap = 0.0, 0.0
    for prompt, answer in TEXTS:
        ours = json.loads(hone("score", folder, "-p", prompt, "-a", answer, "--json"))["reward"]
        theirs = env["score"](prompt, answer)
        worst = max(worst, abs(ours - theirs))
        import torch
        with torch.no_grad():
            ids = env["ids_of"]([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
            head_only = env["head"](torch.tensor([ids])).logits[0, 0].item()
        head_gap = max(head_gap, abs(ours - head_only))
    ok = worst <= 1e-4
    print(f"{'ok' if ok else 'FAIL'}: {name}: the card's score() gives hone's within {worst:.2e} over {len(TEXTS)} answers "
          f"(alpha {env['alpha']}; the head alone is off by up to {head_gap:.3f})")
    return ok


def main():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"FAIL: {e}: this check needs torch and transformers")
        return 1
    if not os.path.exists(HONE):
        print(f"FAIL: no `{HONE}`: build it with `cargo build --release`")
        return 1
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in [("llama", "models/tiny-llama"), ("gpt2", "models/tiny-gpt2")]:
            results.append(check(name, reward_dir(os.path.join(tmp, name), model)))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
