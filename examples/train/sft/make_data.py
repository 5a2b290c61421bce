"""Generate the SFT example task: extract a person's name, age and city from one sentence as compact JSON.

SmolLM2-135M-Instruct knows what JSON is but does not answer in exactly this format by itself (it adds prose,
renames keys, quotes the age, or drops a field), so a short LoRA fine-tune has something measurable to teach.
The held-out people and cities never appear in training, so the score measures the format, not memorized names.
Deterministic: the same files every run (seeded, no network).

    python examples/train/sft/make_data.py   # writes train.jsonl, heldout.jsonl, heldout_cases.jsonl here
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
PROMPT = "Extract the name, age and city as JSON.\n\n"
TEMPLATES = [
    "{name}, {age}, moved to {city} last spring.",
    "At {age}, {name} still runs a small bakery in {city}.",
    "{name} ({age}) was born and raised in {city}.",
    "Our new colleague {name} is {age} years old and lives in {city}.",
    "Police in {city} said {name}, aged {age}, found the missing dog.",
    "The prize went to {name} from {city}, who turned {age} this year.",
    "{city} resident {name}, {age}, opened a bookshop on Main Street.",
    "After twenty years abroad, {name} ({age}) returned home to {city}.",
]
FIRST = [
    "Maria",
    "James",
    "Aiko",
    "Pedro",
    "Fatima",
    "Lukas",
    "Chloe",
    "Ravi",
    "Ingrid",
    "Omar",
    "Sofia",
    "Daniel",
    "Mei",
    "Carlos",
    "Amara",
    "Henrik",
    "Lucia",
    "Tomasz",
    "Nadia",
    "Kwame",
    "Elena",
    "Jonas",
    "Priya",
    "Marco",
]
LAST = [
    "Lopez",
    "Smith",
    "Tanaka",
    "Silva",
    "Haddad",
    "Becker",
    "Martin",
    "Patel",
    "Larsen",
    "Farouk",
    "Rossi",
    "Cohen",
    "Chen",
    "Mendes",
    "Okafor",
    "Nilsson",
    "Garcia",
    "Nowak",
    "Petrova",
    "Mensah",
    "Ivanova",
    "Weber",
]
CITIES = [
    "Lisbon",
    "Leeds",
    "Osaka",
    "Recife",
    "Beirut",
    "Hamburg",
    "Lyon",
    "Pune",
    "Bergen",
    "Cairo",
    "Turin",
    "Haifa",
    "Wuhan",
    "Porto",
    "Lagos",
    "Malmo",
    "Seville",
    "Krakow",
    "Sofia",
    "Accra",
    "Kazan",
    "Graz",
    "Denver",
    "Quebec",
    "Hobart",
    "Cusco",
    "Bilbao",
    "Nagoya",
    "Tampere",
    "Dublin",
]
HELD_OUT = {"first": 6, "last": 6, "cities": 8}  # the last N of each list appear only in the held-out set


def example(rng: random.Random, first: list[str], last: list[str], cities: list[str]) -> tuple[str, str]:
    """One (user message, assistant answer) pair."""
    name, age, city = f"{rng.choice(first)} {rng.choice(last)}", rng.randint(18, 90), rng.choice(cities)
    text = rng.choice(TEMPLATES).format(name=name, age=age, city=city)
    return PROMPT + "Text: " + text, json.dumps({"name": name, "age": age, "city": city})


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def split(values: list[str], held: int) -> tuple[list[str], list[str]]:
    return values[:-held], values[-held:]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main(n_train: int = 320, n_heldout: int = 40) -> None:
    rng = random.Random(0)
    (f_train, f_test), (l_train, l_test), (c_train, c_test) = (
        split(FIRST, HELD_OUT["first"]),
        split(LAST, HELD_OUT["last"]),
        split(CITIES, HELD_OUT["cities"]),
    )
    train = [example(rng, f_train, l_train, c_train) for _ in range(n_train)]
    heldout = [example(rng, f_test, l_test, c_test) for _ in range(n_heldout)]
    write_jsonl(HERE / "train.jsonl", [chat(q, a) for q, a in train])
    write_jsonl(HERE / "heldout.jsonl", [chat(q, a) for q, a in heldout])
    cases = [
        {"id": f"heldout-{i:02d}", "messages": [{"role": "user", "content": q}], "reference": a}
        for i, (q, a) in enumerate(heldout)
    ]
    write_jsonl(HERE / "heldout_cases.jsonl", cases)


if __name__ == "__main__":
    main()
