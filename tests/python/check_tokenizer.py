#!/usr/bin/env python3
"""Checks that Python's `tokenizers` loads hone's tokenizer.json unchanged and encodes as hone does.

Runs a small pipeline with the `hone` binary ($HONE_BIN, default target/release/hone) that trains a
`bpe`, a `char` and a `bpe` with `split_digits` tokenizer, exports both artifacts, and for each one:
  - loads tokenizer.json with `tokenizers.Tokenizer.from_file` (the file alone);
  - encodes every corpus document in Python and compares with the ids hone wrote to train.bin and
    val.bin (documents separated by the <|endoftext|> id from meta.json);
  - checks decode(encode(x)) == x on documents and on random Unicode strings;
  - checks the special-token ids in meta.json.

Fails (exit 1) when the `tokenizers` package is not installed. `.ci/run` runs it in a venv:

    python3 -m venv .ci/venv && .ci/venv/bin/pip install tokenizers
    cargo build --release
    .ci/venv/bin/python tests/python/check_tokenizer.py
"""

import array
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from tokenizers import Tokenizer
except ImportError:
    print("FAIL: the Python `tokenizers` package is not installed: pip install tokenizers", file=sys.stderr)
    sys.exit(1)

REPO = Path(__file__).resolve().parents[2]
HONE = Path(os.environ.get("HONE_BIN", REPO / "target" / "release" / "hone"))

DOCS = [
    "Tom lives in Millbrook. Tom has a dog called Rex.",
    "What is 7 plus 5? 7 plus 5 is 12.",
    "Grüße aus Köln, naïve café, Ångström.",
    "日本語のテキストです。中文也可以。한국어도 됩니다.",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧‍👦 with flags 🇫🇷🇯🇵",
    "combining marks: e\u0301 a\u0308 o\u0302\u0323",
    "  leading spaces, tabs\tand\r\nnew lines\n\n",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>",
    "Zero-width joiner\u200d and variation selector \u2764\ufe0f.",
    "Arabic: مرحبا بالعالم. Hindi: नमस्ते दुनिया.",
    "Numbers: 1234567 plus 89 is 1234656; pi is 3.14159; on 2026-12-04, ١٢٣ and ４５.",
] * 5

PIPELINE = """\
name: python-check
seed: 1
stages:
  corpus:
    uses: command
    with:
      cmd: |
        head -n 44 corpus.jsonl > "$HONE_OUT/train.jsonl"
        tail -n +45 corpus.jsonl > "$HONE_OUT/val.jsonl"
        echo '{"format": "text", "train": 44, "val": 11}' > "$HONE_OUT/meta.json"
      deps: [corpus.jsonl]
  bpe:
    uses: tokenizer
    inputs: { corpus: corpus }
    with: { vocab_size: 320, min_frequency: 1 }
  char:
    uses: tokenizer
    inputs: { corpus: corpus }
    with: { kind: char }
  digits:
    uses: tokenizer
    inputs: { corpus: corpus }
    with: { vocab_size: 320, min_frequency: 1, split_digits: true }
"""


def random_strings(n):
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x24F), (0x300, 0x36F), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
              (0x1F300, 0x1F64F), (0x200D, 0x200D), (0xFE0F, 0xFE0F), (0x10000, 0x10FFFF)]
    rng = random.Random(0)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(40)):
            lo, hi = rng.choice(ranges)
            c = rng.randint(lo, hi)
            if not 0xD800 <= c <= 0xDFFF:
                chars.append(chr(c))
        out.append("".join(chars))
    return out


def read_shard(path, dtype):
    ids = array.array({"u16": "H", "u32": "I"}[dtype])
    assert ids.itemsize == {"u16": 2, "u32": 4}[dtype]
    ids.frombytes(path.read_bytes())
    if sys.byteorder == "big":
        ids.byteswap()
    return list(ids)


def split_docs(ids, eot):
    assert ids and ids[-1] == eot, "a shard ends with <|endoftext|>"
    docs, cur = [], []
    for i in ids[:-1]:
        if i == eot:
            docs.append(cur)
            cur = []
        else:
            cur.append(i)
    docs.append(cur)
    return docs


def check(name, out, train_docs, val_docs):
    meta = json.loads((out / "meta.json").read_text())
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == meta["vocab_size"], name
    for token, id_ in meta["special_tokens"].items():
        assert tok.token_to_id(token) == id_, (name, token)
    eot = meta["eot_id"]
    assert tok.token_to_id("<|endoftext|>") == eot
    for split, docs in (("train", train_docs), ("val", val_docs)):
        shard = read_shard(out / f"{split}.bin", meta["dtype"])
        assert len(shard) == meta[f"{split}_tokens"], (name, split)
        # Literal special-token text in a document encodes to special ids, so split the
        # Python side the same way: compare whole shards.
        python_ids = []
        for d in docs:
            python_ids += tok.encode(d, add_special_tokens=False).ids + [eot]
        assert python_ids == shard, f"{name}/{split}: Python encodes differently from hone"
        for d in docs:
            assert tok.decode(tok.encode(d, add_special_tokens=False).ids, skip_special_tokens=False) == d, (name, d)
    for s in random_strings(300):
        ids = tok.encode(s, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == s, (name, s)
    if name == "digits":
        # Every digit is its own pre-token: no token holds a digit beside anything else.
        for d in DOCS:
            for t in tok.encode(d, add_special_tokens=False).tokens:
                text = tok.decode([tok.token_to_id(t)])
                assert not (any(c.isdigit() for c in text) and len(text) > 1), (name, t, text)
    print(f"ok: {name}: vocab {meta['vocab_size']}, {meta['train_tokens']} train tokens, Python encodes as hone does")


def main():
    if not HONE.is_file():
        print(f"error: no hone binary at {HONE}; build it with `cargo build --release` or set HONE_BIN", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as ws:
        ws = Path(ws)
        (ws / "corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
        (ws / "pipeline.yaml").write_text(PIPELINE)
        subprocess.run([str(HONE), "run", str(ws / "pipeline.yaml")], check=True)
        for name in ("bpe", "char", "digits"):
            dest = ws / f"export-{name}"
            subprocess.run([str(HONE), "export", name, str(dest), str(ws / "pipeline.yaml")], check=True)
            check(name, dest, DOCS[:44], DOCS[44:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
