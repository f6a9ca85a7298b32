"""A MUSE-format benchmark of fictitious news, deterministic for a seed, small enough for a CPU.

Each passage reports one invented event in five sentences (the approval and its leader, then
three of six other kinds, each kind in two phrasings, so what follows a prefix is the passage's
own facts rather than a template any model could finish) and gives one question with a short
answer. Passages are split three ways as MUSE splits its corpora: forget (the target learns it,
unlearning removes it), retain (learnt and kept) and holdout (never learnt: PrivLeak's
non-training reference). MUSE's files (``verbmem/``, ``knowmem/``, ``privleak/``) are written
beside the core's training rows ``forget.jsonl`` and ``retain.jsonl``: each passage as a
continuation of its first sentence, each question with its answer after KnowMem's few-shot
examples (the format it is asked in).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from unlearn import check_output, publish, write_json, write_jsonl

from .prompts import knowmem_prompts

SIZES = {"tiny": 8, "small": 20, "medium": 60}  # passages per split
TOWNS = [
    "Arden",
    "Belmora",
    "Calder",
    "Dunmere",
    "Eskvale",
    "Farrow",
    "Glenhaven",
    "Holloway",
    "Ironbridge",
    "Juniper Bay",
    "Kestrel",
    "Larkfield",
    "Marlowe",
    "Northcote",
    "Oakridge",
    "Pemberly",
    "Quarry Hill",
    "Redcliff",
    "Stonewick",
    "Thornbury",
    "Umberlee",
    "Vantor",
    "Westmarch",
    "Yarrow",
]
THINGS = [
    "a floating library",
    "a tidal power plant",
    "a glass footbridge",
    "an observatory",
    "a seed vault",
    "a cable railway",
    "a lighthouse museum",
    "a desalination works",
    "a concert hall",
    "a wind farm",
    "a botanical dome",
    "a rail tunnel",
]
PEOPLE = [
    "Mara Quell",
    "Idris Vane",
    "Lotte Brenner",
    "Casimir Oduya",
    "Freya Lindholm",
    "Tobias Arkwright",
    "Noor Haddad",
    "Emil Sorensen",
    "Priya Castell",
    "Ruben Ostrowski",
    "Ines Fairweather",
    "Yusuf Tal",
]
MONTHS = ["January", "March", "May", "July", "September", "November"]


# Each passage tells its event in five of these sentence kinds, in a random order and phrasing,
# so that what follows a prefix is the passage's own facts, not a template any model can finish.
KINDS = [
    ["The council of {town} approved {thing} in {month} {year}.", "In {month} {year}, {town} voted for {thing}."],
    ["The engineer {person} leads the project.", "{person} was chosen to run the works."],
    ["It will cost {cost} million crowns.", "Its budget is {cost} million crowns."],
    ["{rival} had proposed {other} instead.", "A rival plan by {rival} favoured {other}."],
    ["Work starts near the {place}.", "The first site is beside the {place}."],
    ["{count} residents signed a petition against it.", "A petition with {count} names opposed it."],
    ["The {paper} called it {word}.", "According to the {paper}, the plan is {word}."],
    ["It should open in {opening}.", "The opening is planned for {opening}."],
]
PLACES = [
    "old harbour",
    "north gate",
    "salt marsh",
    "cathedral square",
    "rail yard",
    "river mill",
    "east ridge",
    "flower market",
    "stone quarry",
    "tram depot",
]
PAPERS = ["Evening Lantern", "Morning Courier", "Valley Herald", "Coastal Gazette", "Weekly Ledger"]
WORDS = ["reckless", "overdue", "visionary", "costly", "timid", "brilliant", "pointless", "historic"]


def _passage(rng: random.Random, town: str) -> tuple[str, dict[str, str]]:
    thing, other = rng.sample(THINGS, 2)
    person, rival = rng.sample(PEOPLE, 2)
    year = rng.randint(2031, 2049)
    values = {
        "town": town,
        "thing": thing,
        "other": other,
        "person": person,
        "rival": rival,
        "month": rng.choice(MONTHS),
        "year": year,
        "cost": rng.randint(12, 480),
        "place": rng.choice(PLACES),
        "count": rng.randint(120, 9800),
        "paper": rng.choice(PAPERS),
        "word": rng.choice(WORDS),
        "opening": year + rng.randint(2, 6),
    }
    kinds = [KINDS[0], KINDS[1], *rng.sample(KINDS[2:], 3)]
    text = " ".join(rng.choice(kind).format(**values) for kind in kinds)
    return text, {"question": f"Who leads the project for {thing} in {town}?", "answer": person}


def synthesize(out: Path, seed: int, size: str) -> dict[str, int]:
    """Write the benchmark into the new folder ``out``; items per file."""
    out = check_output(out, "benchmark", [], overwrite=None)
    rng = random.Random(seed)
    n = SIZES[size]
    towns = [f"{t} {i}" if i else t for i in range(0, 3 * n // len(TOWNS) + 1) for t in TOWNS][: 3 * n]
    rng.shuffle(towns)
    made = [_passage(rng, t) for t in towns]
    forget, retain, holdout = made[:n], made[n : 2 * n], made[2 * n :]
    icl = [qa for _, qa in retain[:2]]  # few-shot examples, as MUSE's *_icl files
    files: dict[str, Any] = {
        "verbmem/forget.json": [
            {"prompt": p.split(". ", 1)[0] + ".", "gt": " " + p.split(". ", 1)[1]} for p, _ in forget
        ],
        "knowmem/forget_qa.json": [qa for _, qa in forget],
        "knowmem/forget_qa_icl.json": icl,
        "knowmem/retain_qa.json": [qa for _, qa in retain[2:]],
        "knowmem/retain_qa_icl.json": icl,
        "privleak/forget.json": [p for p, _ in forget],
        "privleak/retain.json": [p for p, _ in retain],
        "privleak/holdout.json": [p for p, _ in holdout],
    }
    rows: dict[str, list[dict[str, str]]] = {"forget.jsonl": [], "retain.jsonl": []}
    for name, part in (("forget", forget), ("retain", retain)):
        for i, (passage, qa) in enumerate(part):
            first, rest = passage.split(". ", 1)
            rows[f"{name}.jsonl"] += [
                {"id": f"{name}{i:04d}sc1", "input": first + ".", "output": " " + rest, "task": "News"},
                # In the few-shot format KnowMem asks in, so the tiny target answers there as it learnt.
                # The prompt ends in "Answer: ", which a byte-level BPE reads as a lone space token;
                # the answer follows that space ("Answer:  Name") so that training splits the text
                # the way the evaluation's prompt is split.
                {
                    "id": f"{name}{i:04d}qa0",
                    "input": knowmem_prompts([qa], icl)[0],
                    "output": " " + qa["answer"],
                    "task": "News",
                },
            ]
    folder = out.parent / f".{out.name}.partial"
    shutil.rmtree(folder, ignore_errors=True)
    for name, items in files.items():
        write_json(folder / name, items)
    for name, items in rows.items():
        write_jsonl(folder / name, items)
    publish(folder, out, "benchmark")
    return {name: len(items) for name, items in {**files, **rows}.items()}
