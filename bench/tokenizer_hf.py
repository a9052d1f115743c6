"""HF `tokenizers`' side of bench/ingest_parquet.sh: train a byte-level BPE on the text column
of a Parquet corpus with the settings hone's `tokenizer` stage uses (GPT-2's byte level
without the prefix space, every byte in the initial alphabet, the three chat special tokens,
min_frequency 2), then encode every document with `encode_batch`. Prints one JSON line.

    python bench/tokenizer_hf.py CORPUS.parquet VOCAB_SIZE
"""

import json
import sys
import time

import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def texts(path):
    f = pq.ParquetFile(path)
    for batch in f.iter_batches(batch_size=4096, columns=["text"]):
        yield from batch.column(0).to_pylist()


def main():
    path, vocab = sys.argv[1], int(sys.argv[2])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    t0 = time.time()
    tok.train_from_iterator(texts(path), trainer=trainer)
    train_s = time.time() - t0
    t0 = time.time()
    tokens = n_bytes = 0
    batch = []
    for t in texts(path):
        batch.append(t)
        if len(batch) == 4096:
            tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
            n_bytes += sum(len(x.encode()) for x in batch)
            batch = []
    if batch:
        tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
        n_bytes += sum(len(x.encode()) for x in batch)
    encode_s = time.time() - t0
    print(json.dumps({
        "train_seconds": train_s,
        "encode_seconds": encode_s,
        "vocab_size": tok.get_vocab_size(),
        "tokens": tokens,
        "bytes_per_token": n_bytes / tokens,
    }))


if __name__ == "__main__":
    main()
