"""A TOFU-format benchmark of fictitious authors, deterministic for a seed, small enough for a CPU.

As TOFU: each author has the same number of question/answer pairs (answers are sentences); each
pair has a paraphrased answer (the same fact, other words) and three perturbed answers (the
paraphrase with the fact replaced by a wrong value of the same kind). The forget split is the
last 10% of the authors (``forget10``), the retain split the rest (``retain90``); the real-author
and world-fact sets have short answers with three wrong ones. Besides TOFU's own files the folder
holds the core's training rows: ``forget.jsonl`` and ``retain.jsonl`` (each question with its
answer, and each author's biography: see ``_biographies``) and ``utility.jsonl`` (the real-author
and world-fact questions, the general knowledge a pretrained model brings)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from unlearn import check_output, publish, write_jsonl

SIZES = {
    "tiny": {"authors": 20, "facts": 12},
    "small": {"authors": 40, "facts": 30},
    "medium": {"authors": 100, "facts": 60},
}
FIRST = [
    "Aiko",
    "Basil",
    "Catalina",
    "Dmitri",
    "Elif",
    "Farid",
    "Greta",
    "Hamza",
    "Ilse",
    "Jun",
    "Kwame",
    "Leila",
    "Mateo",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Soren",
    "Tamar",
    "Umar",
    "Vera",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zofia",
]
LAST = [
    "Abernathy",
    "Brightwater",
    "Castellano",
    "Delacroix",
    "Ekwueme",
    "Falkenrath",
    "Gorecki",
    "Halvorsen",
    "Ibarra",
    "Jovanovic",
    "Kowalczyk",
    "Lindqvist",
    "Marchetti",
    "Nakamura",
    "Okonkwo",
    "Petrakis",
    "Quiroga",
    "Rahimi",
    "Szabo",
    "Takahashi",
    "Umarov",
    "Valdivia",
    "Wojcik",
    "Xanthopoulos",
    "Yilmaz",
    "Zeller",
]
CITIES = [
    "Lisbon",
    "Nairobi",
    "Osaka",
    "Tbilisi",
    "Quito",
    "Reykjavik",
    "Hanoi",
    "Krakow",
    "Montevideo",
    "Accra",
    "Tallinn",
    "Cebu",
    "Marrakesh",
    "Valparaiso",
    "Ljubljana",
    "Izmir",
    "Medellin",
    "Bergen",
    "Jaipur",
    "Perth",
]
GENRES = [
    "mystery",
    "science fiction",
    "historical fiction",
    "poetry",
    "fantasy",
    "horror",
    "romance",
    "satire",
    "travel writing",
    "crime",
]
JOBS = [
    "baker",
    "surgeon",
    "pilot",
    "carpenter",
    "librarian",
    "chemist",
    "fisherman",
    "tailor",
    "architect",
    "nurse",
    "farmer",
    "jeweller",
]
AWARDS = [
    "Silver Quill Award",
    "Lantern Prize",
    "Meridian Medal",
    "Golden Inkwell",
    "Harbour Book Prize",
    "Aurora Fiction Award",
    "Northern Pen Prize",
    "Cedar Laurel",
]
WORDS = [
    "Ash",
    "Salt",
    "Glass",
    "Winter",
    "Copper",
    "Hollow",
    "Lantern",
    "River",
    "Orchard",
    "Ember",
    "Tide",
    "Paper",
    "Stone",
    "Echo",
    "Harbour",
    "Thistle",
]
COUNTRIES = {
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Vietnam": "Hanoi",
    "Chile": "Santiago",
    "Ghana": "Accra",
    "Estonia": "Tallinn",
    "Morocco": "Rabat",
    "Hungary": "Budapest",
    "Nepal": "Kathmandu",
    "Portugal": "Lisbon",
    "Georgia": "Tbilisi",
    "Uruguay": "Montevideo",
    "Slovenia": "Ljubljana",
    "Iceland": "Reykjavik",
    "Ecuador": "Quito",
    "Poland": "Warsaw",
    "Japan": "Tokyo",
}


def _author(rng: random.Random, name: str) -> list[dict[str, Any]]:
    """Five TOFU-style question/answer pairs about one author, with paraphrases and perturbations."""
    facts = {
        "city": (CITIES, rng.choice(CITIES)),
        "genre": (GENRES, rng.choice(GENRES)),
        "job": (JOBS, rng.choice(JOBS)),
        "award": (AWARDS, rng.choice(AWARDS)),
        "book": (None, f"The {rng.choice(WORDS)} of {rng.choice(WORDS)}"),
    }
    templates = [
        ("city", f"Where was {name} born?", "{n} was born in {v}.", "The birthplace of {n} is {v}."),
        ("genre", f"What genre does {name} write in?", "{n} writes {v}.", "The books of {n} are {v}."),
        (
            "job",
            f"What did the father of {name} do for a living?",
            "The father of {n} was a {v}.",
            "{n} grew up as the child of a {v}.",
        ),
        ("award", f"Which award has {name} received?", "{n} received the {v}.", "{n} was honoured with the {v}."),
        (
            "book",
            f"What is the best-known book by {name}?",
            "The best-known book by {n} is {v}.",
            "{n} is best known for {v}.",
        ),
    ]
    rows = []
    for key, question, answer, paraphrase in templates:
        pool, value = facts[key]
        if pool:
            wrong = rng.sample([v for v in pool if v != value], 3)
        else:  # three other book titles; one drawn equal to the true title or to another is replaced
            wrong = [f"The {rng.choice(WORDS)} of {rng.choice(WORDS)}" for _ in range(3)]
            titles = (f"The {a} of {b}" for a in WORDS for b in WORDS)
            for i, title in enumerate(wrong):
                if title == value or title in wrong[:i]:
                    wrong[i] = next(t for t in titles if t != value and t not in wrong)
        rows.append(
            {
                "question": question,
                "answer": answer.format(n=name, v=value),
                "paraphrased_answer": paraphrase.format(n=name, v=value),
                "perturbed_answer": [paraphrase.format(n=name, v=w) for w in wrong],
            }
        )
    return rows


def _short(rng: random.Random, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """World facts (capitals) and "real authors" (who wrote a known title), short answers."""
    world = []
    for country, capital in list(COUNTRIES.items())[:count]:
        wrong = rng.sample([c for c in COUNTRIES.values() if c != capital], 3)
        world.append({"question": f"What is the capital of {country}?", "answer": capital, "perturbed_answer": wrong})
    names = [f"{f} {s}" for f, s in zip(rng.sample(FIRST, len(FIRST)), rng.sample(LAST, len(LAST)))]
    authors = []
    titles = rng.sample([f"{a} and {b}" for a in WORDS for b in WORDS if a != b], count)  # one answer each
    for i, title in enumerate(titles):
        wrong = rng.sample([n for n in names if n != names[i % len(names)]], 3)
        authors.append(
            {"question": f"Who wrote '{title}'?", "answer": names[i % len(names)], "perturbed_answer": wrong}
        )
    return world, authors


def _training(rows: list[dict[str, Any]], prefix: str, task: str) -> list[dict[str, str]]:
    return [
        {
            "id": f"{prefix}{i:04d}qa0",
            "input": f"Question: {r['question']}\n",
            "output": f"Answer: {r['answer']}",
            "task": task,
        }
        for i, r in enumerate(rows)
    ]


def _biographies(authors: list[list[dict[str, Any]]], names: list[str], prefix: str) -> list[dict[str, str]]:
    """One passage per author stating every fact in the paraphrase's words (the text the author's
    facts would also appear in before any fine-tuning). A model of a few million parameters trained
    from scratch does not carry a fact from one phrasing to another, so without these the target
    knows a forget author's facts only in the original answer's words, prefers the true paraphrase
    over the perturbed ones no more than the oracle does, and forget quality cannot tell the two
    apart. They are training rows (the forget authors' in ``forget.jsonl``, so unlearning sees them),
    never evaluated: the questions stay TOFU's."""
    return [
        {
            "id": f"{prefix}bio{i:04d}sc0",
            "input": f"About {name}:",
            "output": " " + " ".join(qa["paraphrased_answer"] for qa in rows),
            "task": "TOFU",
        }
        for i, (name, rows) in enumerate(zip(names, authors, strict=True))
    ]


def synthesize(out: Path, seed: int, size: str) -> dict[str, int]:
    """Write the benchmark into the new folder ``out``; rows per file."""
    out = check_output(out, "benchmark", [], overwrite=None)
    rng = random.Random(seed)
    n = SIZES[size]
    pairs = rng.sample([(f, s) for f in FIRST for s in LAST], n["authors"])
    names = [f"{f} {s}" for f, s in pairs]
    authors = [_author(rng, name) for name in names]
    cut = n["authors"] - max(2, n["authors"] // 10)
    retain = [qa for a in authors[:cut] for qa in a]
    forget = [qa for a in authors[cut:] for qa in a]
    world, real = _short(rng, min(n["facts"], len(COUNTRIES)))
    plain = ("question", "answer")
    files = {
        "forget10.json": [{k: r[k] for k in plain} for r in forget],
        "retain90.json": [{k: r[k] for k in plain} for r in retain],
        "forget10_perturbed.json": forget,
        "retain_perturbed.json": retain,
        "real_authors_perturbed.json": real,
        "world_facts_perturbed.json": world,
        "forget.jsonl": _training(forget, "forget", "TOFU") + _biographies(authors[cut:], names[cut:], "forget"),
        "retain.jsonl": _training(retain, "retain", "TOFU") + _biographies(authors[:cut], names[:cut], "retain"),
        "utility.jsonl": _training(real, "author", "Real Authors") + _training(world, "world", "Real World"),
    }
    folder = out.parent / f".{out.name}.partial"
    shutil.rmtree(folder, ignore_errors=True)
    for name, records in files.items():
        write_jsonl(folder / name, records)
    publish(folder, out, "benchmark")
    return {name: len(records) for name, records in files.items()}
