"""Writes the small datasets `pipelines/byo-data.yaml` reads by default, with the libraries
people bring their data from (pyarrow, HF `datasets`), in the layouts those write:

- `text.parquet`: web-style documents (`text`, `id`, `url`), as FineWeb ships them;
- `chat.parquet`: conversations (`messages`: a list of {role, content}), as `Dataset.to_parquet`;
- `preferences/`: a `save_to_disk` folder (`train` and `test` splits) of TRL's conversational
  preference form with an explicit prompt (`prompt`, `chosen`, `rejected`: message lists).

The content is small and templated (sums, colours, greetings) so a tiny model learns it in
minutes. Run: `.ci/venv/bin/python pipelines/data/make.py` (pyarrow and datasets installed);
the data files (Parquet and Arrow) are the same bytes on every run (`state.json`
carries a random fingerprint, which hone does not read).
"""

import random
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
rng = random.Random(7)

NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana"]
PETS = ["cat", "dog", "bird", "fish"]
COLOURS = {"sky": "blue", "grass": "green", "sun": "yellow", "snow": "white", "coal": "black"}


def sum_qa():
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {a + b + rng.choice([1, 2, 3])}."


def colour_qa():
    thing = rng.choice(list(COLOURS))
    wrong = rng.choice([c for c in COLOURS.values() if c != COLOURS[thing]])
    return f"What colour is the {thing}?", f"The {thing} is {COLOURS[thing]}.", f"The {thing} is {wrong}."


def greeting_qa():
    name = rng.choice(NAMES)
    return f"Hello, I am {name}.", f"Hello {name}! How can I help you today?", "Go away."


def pet_qa():
    name, pet = rng.choice(NAMES), rng.choice(PETS)
    return f"{name} has a {pet}. What pet does {name} have?", f"{name} has a {pet}.", "I do not know."


def qa():
    return rng.choice([sum_qa, sum_qa, colour_qa, greeting_qa, pet_qa])()


def main():
    docs = []
    for i in range(1500):
        sentences = []
        for _ in range(rng.randint(2, 5)):
            q, good, _ = qa()
            sentences.append(good)
        docs.append({"text": " ".join(sentences), "id": f"doc-{i:05d}", "url": f"https://example.org/{i}"})
    pq.write_table(pa.Table.from_pylist(docs), HERE / "text.parquet", row_group_size=500)

    chats = []
    for _ in range(800):
        q, good, _ = qa()
        chats.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": good}]})
    datasets.Dataset.from_list(chats).to_parquet(str(HERE / "chat.parquet"))

    def pairs(n):
        out = []
        for _ in range(n):
            q, good, bad = qa()
            out.append(
                {
                    "prompt": [{"role": "user", "content": q}],
                    "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}],
                }
            )
        return out

    prefs = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(pairs(400)), "test": datasets.Dataset.from_list(pairs(40))}
    )
    prefs.save_to_disk(str(HERE / "preferences"))


if __name__ == "__main__":
    main()
