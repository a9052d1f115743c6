"""Writes two tiny HuggingFace model folders with random weights, in the layouts transformers
writes, for pipelines and tests that start from an existing checkpoint:

- `tiny-llama/`: `LlamaForCausalLM` shaped like a miniature SmolLM2 (hidden 64, 2 layers, 4 heads,
  2 KV heads, intermediate 160, 256 positions, rope_theta 100000, tied embeddings), with a
  byte-level BPE tokenizer whose special tokens are `<|endoftext|>` (0, padding), `<|im_start|>`
  (1, BOS) and `<|im_end|>` (2, EOS), and SmolLM2-Instruct's ChatML `chat_template` (with its
  default system message) in `tokenizer_config.json`;
- `tiny-gpt2/`: `GPT2LMHeadModel` (n_embd 64, 2 layers, 4 heads, 256 positions, HF's defaults
  otherwise: `gelu_new`, tied embeddings) with a byte-level BPE tokenizer whose only special
  token is `<|endoftext|>` (0: BOS, EOS and unknown), and no chat template, like GPT-2.

The weights are transformers' initialisation (`from_config`, float32) under a fixed seed. Both
tokenizers are trained with the `tokenizers` library (GPT-2's byte level without the prefix
space, every byte in the initial alphabet, min_frequency 2, as hone's `tokenizer` stage and
bench/tokenizer_hf.py) on `pipelines/data/text.parquet` (`text`) and
`pipelines/data/chat.parquet` (`messages`: the Llama tokenizer sees the conversations rendered
with its chat template, the GPT-2 one the message texts). They ask for 1000 tokens, but that data
has few distinct words and BPE runs out of pairs to merge at a few hundred; the models'
`vocab_size` is the tokenizer's. The tokenizers are saved by transformers
(`PreTrainedTokenizerFast(tokenizer_object=...).save_pretrained`, with `save_jinja_files=False`
so that the chat template is in `tokenizer_config.json`, where hone and most Hub checkpoints keep
it, rather than in the `chat_template.jinja` transformers 5 writes by default).

Run: `.ci/venv/bin/python pipelines/models/make.py` (torch, transformers, tokenizers, pyarrow);
it rewrites both folders, the same bytes on every run with the same library versions, and checks
that `AutoModelForCausalLM` and `AutoTokenizer` load them (and the Llama's `apply_chat_template`).
"""

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig,
                          PreTrainedTokenizerFast)

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
SEED = 1234
VOCAB_TARGET = 1000
POSITIONS = 256

END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2-Instruct's chat template.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SYSTEM + "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def render(messages, add_generation_prompt=False):
    """CHAT_TEMPLATE in Python."""
    out = "" if messages[0]["role"] == "system" else f"{IM_START}system\n{SYSTEM}{IM_END}\n"
    out += "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return out + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def texts():
    return pq.read_table(DATA / "text.parquet", columns=["text"]).column("text").to_pylist()


def conversations():
    return pq.read_table(DATA / "chat.parquet", columns=["messages"]).column("messages").to_pylist()


def train_bpe(docs, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_TARGET, min_frequency=2, show_progress=False,
                                  special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer)
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def fresh(name):
    out = HERE / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    return out


def save_model(cfg, out):
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(out)
    return model


def tiny_llama():
    out = fresh("tiny-llama")
    tok = train_bpe(texts() + [render(c) for c in conversations()], [END_OF_TEXT, IM_START, IM_END])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=IM_START, eos_token=IM_END, pad_token=END_OF_TEXT,
                                   unk_token=None, model_max_length=POSITIONS, chat_template=CHAT_TEMPLATE,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(out, save_jinja_files=False)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=POSITIONS, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True,
        bos_token_id=tok.token_to_id(IM_START), eos_token_id=tok.token_to_id(IM_END),
        pad_token_id=tok.token_to_id(END_OF_TEXT))
    save_model(cfg, out)
    return out


def tiny_gpt2():
    out = fresh("tiny-gpt2")
    tok = train_bpe(texts() + [m["content"] for c in conversations() for m in c], [END_OF_TEXT])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   unk_token=END_OF_TEXT, model_max_length=POSITIONS,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(out)
    eot = tok.token_to_id(END_OF_TEXT)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=POSITIONS, n_embd=64, n_layer=2, n_head=4,
                     bos_token_id=eot, eos_token_id=eot)
    save_model(cfg, out)
    return out


def check(out, chat):
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    convo = conversations()[0]
    ids = tok(convo[0]["content"], return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == convo[0]["content"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    if chat:
        text = tok.apply_chat_template(convo[:1], tokenize=False, add_generation_prompt=True)
        assert text == render(convo[:1], add_generation_prompt=True), text
        with_system = [{"role": "system", "content": "Be brief."}] + convo
        assert tok.apply_chat_template(with_system, tokenize=False) == render(with_system)
        chat_ids = tok.apply_chat_template(convo[:1], add_generation_prompt=True, return_dict=False)
        assert chat_ids[0] == tok.bos_token_id and chat_ids.count(tok.eos_token_id) == 2, chat_ids
        assert tok.pad_token_id == model.config.pad_token_id
    else:
        assert tok.chat_template is None
    assert tok.eos_token_id == model.config.eos_token_id
    files = sorted(out.iterdir())
    size = sum(f.stat().st_size for f in files)
    print(f"{out.relative_to(HERE.parent.parent)}: {model.num_parameters()} parameters, vocab {len(tok)}, "
          f"{size / 1e6:.2f} MB: {', '.join(f.name for f in files)}")


def main():
    check(tiny_llama(), chat=True)
    check(tiny_gpt2(), chat=False)


if __name__ == "__main__":
    main()
