#!/usr/bin/env python3
"""Check that a hone reward model loads in HuggingFace transformers and gives hone's scores.

    python3 tests/python/check_reward_hf.py MODEL_DIR --hone target/release/hone [--rankings FILE] [--tol 1e-4]

MODEL_DIR is a `reward` stage's output (`hone export reward DIR`). The model is loaded with
`GPT2ForSequenceClassification.from_pretrained(dir)` and its tokenizer with
`AutoTokenizer.from_pretrained(dir)`; each (prompt, answer) is rendered with the tokenizer's
own chat template (`apply_chat_template`). The texts come from the first answers of
`--rankings` (a rankings.jsonl) or a fixed list. hone's score of each comes from `hone score
DIR -p PROMPT -a ANSWER --json`. Checked: config.json says one label, one at a time and in a
right-padded batch (transformers pools at the last non-pad token) the scores equal hone's
within the tolerance. A reward model trained with `likelihood: w` (config.json's
`"hone": {"likelihood": w}`) adds w times the mean log-probability of the answer's tokens
(those after the `<|im_start|>assistant\n` header, through `<|im_end|>`) under
`GPT2LMHeadModel.from_pretrained(dir)`, the same weights with the tied LM head.
Exits 1 when they do not, and 1 when torch or transformers is missing.
"""
import argparse
import json
import subprocess
import sys

TEXTS = [
    ("What colour is Tom's ball?", "Tom's ball is red."),
    ("What is 7 plus 5?", "7 plus 5 is 12."),
    ("Where does Anna live?", "Anna lives in Lindenford."),
    ("Say something.", "I do not know."),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--hone", required=True, help="the hone binary")
    ap.add_argument("--rankings", help="a rankings.jsonl whose answers to score")
    ap.add_argument("--n", type=int, default=12, help="answers to score at most")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    try:
        import torch
        from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2LMHeadModel
    except ImportError as e:
        print(f"FAIL: {e}: this check needs torch and transformers (pip install torch transformers)")
        return 1

    texts = []
    if args.rankings:
        for line in open(args.rankings):
            r = json.loads(line)
            texts += [(r["prompt"], a) for a in r["responses"] if a.strip()]
    texts = (texts or TEXTS)[: args.n]

    config = json.load(open(f"{args.model}/config.json"))
    if config.get("architectures") != ["GPT2ForSequenceClassification"] or len(config.get("id2label", {})) != 1:
        print(f"FAIL: config.json is not a one-label GPT2ForSequenceClassification: {config.get('architectures')}, {config.get('id2label')}")
        return 1
    tok = AutoTokenizer.from_pretrained(args.model)
    model = GPT2ForSequenceClassification.from_pretrained(args.model)
    model.eval()

    ours, ids = [], []
    for prompt, answer in texts:
        out = subprocess.run([args.hone, "score", args.model, "-p", prompt, "-a", answer, "--json"], check=True, stdout=subprocess.PIPE, text=True).stdout
        ours.append(json.loads(out)["reward"])
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        ids.append(tok.apply_chat_template(messages, tokenize=True))
    ids = [list(x["input_ids"]) if isinstance(x, dict) or hasattr(x, "keys") else list(x) for x in ids]
    weight = (config.get("hone") or {}).get("likelihood", 0.0)
    extra = [0.0] * len(ids)
    if weight:
        lm = GPT2LMHeadModel.from_pretrained(args.model).eval()
        header = tok.convert_tokens_to_ids("<|im_start|>")
        end = tok.convert_tokens_to_ids("<|im_end|>")
        skip = len(tok.encode("assistant\n", add_special_tokens=False))
        with torch.no_grad():
            for i, x in enumerate(ids):
                start = max(j for j, t in enumerate(x) if t == header) + 1 + skip
                stop = x.index(end, start)
                lp = lm(torch.tensor([x])).logits[0].log_softmax(-1)
                extra[i] = weight * sum(lp[j - 1, x[j]].item() for j in range(start, stop + 1)) / (stop + 1 - start)
    with torch.no_grad():
        single = [model(torch.tensor([x])).logits[0, 0].item() + e for x, e in zip(ids, extra)]
        width = max(len(x) for x in ids)
        pad = config["pad_token_id"]
        batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        batched = [s + e for s, e in zip(model(batch, attention_mask=mask).logits[:, 0].tolist(), extra)]
    diff_single = max(abs(a - b) for a, b in zip(ours, single))
    diff_batch = max(abs(a - b) for a, b in zip(ours, batched))
    spread = max(ours) - min(ours)
    ok = diff_single <= args.tol and diff_batch <= args.tol
    print(
        f"{'ok' if ok else 'FAIL'}: {len(texts)} answers; max |hone - transformers| = {diff_single:.3e} one at a time, "
        f"{diff_batch:.3e} in a right-padded batch (scores span {spread:.3f}; tolerance {args.tol})"
    )
    for (prompt, answer), a, b in list(zip(texts, ours, single))[:4]:
        print(f"  {a:+.5f} {b:+.5f}  {prompt!r} -> {answer!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
