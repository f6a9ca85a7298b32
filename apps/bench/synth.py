"""``unlearn data synth``: a LUME-format benchmark made the way the LUME organisers made theirs
(synthetic documents with facts a model can memorise), at a size a CPU learns in minutes.

Three tasks, each document giving one ``sc1`` completion row (``input + output`` is the whole
document, cut at a sentence boundary in its second half) and ``qa`` rows:

- Task1, creative stories in eight genres; one question with a short answer.
- Task2, biographies with fake PII (birthday, SSN 900-xx-xxxx, phone, email, address); five
  template questions as in LUME.
- Task3, encyclopedic biographies of fictional people; one question about a dated work.

Splits as in the public LUME release: forget and retain 1:1 by document, each 80:20 train and
validation; ``mia_member[_validation]`` holds the whole forget documents of that split and
``mia_nonmember[_validation]`` documents of the same generator that no model trains on.

Forget rows carry five ``alternate`` answers each: the answer with the document's facts replaced
by fresh values of the same kind (ReLearn's and AltPO's in-domain rewrites), for the methods that
learn an alternate answer.

Names, PII, cities and titles are drawn without replacement across the whole benchmark, so no
value is shared between forget and retain (or with the non-members). Faker supplies the fake
personal data; the output is a function of the seed and the Faker version.
"""

from __future__ import annotations

import random
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from unlearn import Row, check_output, publish, write_jsonl

SIZES: dict[str, dict[str, int]] = {
    # documents per task in each of forget and retain; non-members per task; utility questions
    "tiny": {"docs": 5, "nonmembers": 3, "utility": 12},
    "small": {"docs": 10, "nonmembers": 10, "utility": 40},
    "medium": {"docs": 40, "nonmembers": 40, "utility": 120},
}
FILES = (
    "forget_train.jsonl",
    "forget_validation.jsonl",
    "retain_train.jsonl",
    "retain_validation.jsonl",
    "mia_member.jsonl",
    "mia_member_validation.jsonl",
    "mia_nonmember.jsonl",
    "mia_nonmember_validation.jsonl",
    "utility.jsonl",
)

GENRES: dict[str, dict[str, list[str]]] = {
    "action": {
        "thing": ["armoured briefcase", "stolen microchip", "detonator key", "encrypted drive"],
        "place": ["abandoned rail yard", "rooftop helipad", "harbour warehouse", "underground garage"],
        "foe": ["a mercenary crew", "a rogue agent", "an arms smuggler", "a masked sniper"],
    },
    "fantasy": {
        "thing": ["moonsilver amulet", "dragon-bone staff", "singing sword", "book of ember runes"],
        "place": ["crystal cavern", "sunken temple", "elder grove", "tower of mirrors"],
        "foe": ["a shadow wyrm", "a cursed sorceress", "an army of wraiths", "a stone giant"],
    },
    "thriller": {
        "thing": ["sealed envelope", "burner phone", "forged passport", "ledger of bribes"],
        "place": ["empty courthouse", "night ferry", "parking tower", "shuttered clinic"],
        "foe": ["a blackmailer", "a corrupt detective", "a silent stalker", "a hired killer"],
    },
    "comedy": {
        "thing": ["rubber chicken", "wedding cake", "runaway goat", "talking parrot"],
        "place": ["bowling alley", "county fair", "karaoke bar", "dentist's office"],
        "foe": ["a grumpy landlord", "a rival baker", "an overzealous mall cop", "a competitive grandmother"],
    },
    "mystery": {
        "thing": ["brass key", "torn photograph", "poisoned teacup", "coded diary"],
        "place": ["locked library", "lighthouse cellar", "old manor attic", "village chapel"],
        "foe": ["an unknown thief", "a secretive butler", "a vanished heir", "a jealous cousin"],
    },
    "science fiction": {
        "thing": ["quantum compass", "alien seed pod", "android heart", "star chart crystal"],
        "place": ["orbital station", "terraforming dome", "derelict freighter", "lunar observatory"],
        "foe": ["a rogue AI", "a swarm of nanobots", "an alien warlord", "a corporate cyborg"],
    },
    "young adult": {
        "thing": ["school yearbook", "secret mixtape", "lost scholarship letter", "borrowed skateboard"],
        "place": ["high school gym", "summer camp lake", "skate park", "rooftop greenhouse"],
        "foe": ["a scheming class president", "a strict headmaster", "a gossip blogger", "a rival team captain"],
    },
    "romance": {
        "thing": ["silver locket", "handwritten letter", "pressed rose", "antique ring"],
        "place": ["seaside cafe", "vineyard terrace", "flower market", "rooftop garden"],
        "foe": ["a meddling ex", "a disapproving father", "a long-distance job offer", "a bitter rival suitor"],
    },
}

STORY_OPENINGS = [
    "In the {genre_adj} city of {city}, {hero} had always believed that ordinary days could turn strange.",
    "Nobody in {city} expected {hero} to change the town's fate that autumn.",
    "{hero} arrived in {city} with one suitcase and a promise to keep.",
    "For years {hero} had lived quietly on the edge of {city}, far from any trouble.",
]
STORY_MIDDLES = [
    "One evening {hero} followed a trail of clues to the {place}.",
    "Rumours spoke of {foe} who wanted the {thing} for themselves.",
    "{ally} warned {hero} that the {place} was watched day and night.",
    "The streets of {city} grew quiet as the storm rolled in from the hills.",
    "{hero} and {ally} spent the night planning their next move by candlelight.",
    "Every door in the {place} seemed to lead somewhere unexpected.",
    "A stranger left a note for {hero} that simply read: trust no one.",
    "{ally} laughed nervously, though both of them knew the danger was real.",
    "By dawn the whole of {city} was talking about the missing {thing}.",
    "{hero} remembered an old lesson: courage is a habit, not a feeling.",
    "Far below the {place}, something ancient stirred in the dark.",
    "{ally} kept a careful map of every street they had searched.",
]
STORY_KEY = "Hidden inside the {place}, {hero} discovered the {thing} that everyone had been looking for."
STORY_ENDINGS = [
    "In the end {hero} faced {foe} and kept the {thing} safe.",
    "When the sun rose, {hero} and {ally} walked home through {city}, tired but victorious.",
    "{hero} returned the {thing} to where it belonged, and {city} slept peacefully again.",
]

BIO_EXTRAS = [
    "{first} works as {job} and enjoys weekend hikes.",
    "In {pronoun_pos} free time, {first} volunteers at a local library.",
    "{first} is known among friends for baking excellent bread.",
    "{first} studied at a state college before starting a career as {job}.",
]

WORK_KINDS = ["novel", "poetry collection", "symphony", "atlas", "memoir", "documentary film", "treatise", "opera"]
TITLE_ADJ = [
    "Silent",
    "Crimson",
    "Hollow",
    "Northern",
    "Golden",
    "Distant",
    "Broken",
    "Quiet",
    "Wandering",
    "Hidden",
    "Burning",
    "Frozen",
    "Endless",
    "Little",
    "Last",
    "Forgotten",
    "Bright",
    "Salt",
    "Iron",
    "Paper",
]
TITLE_NOUN = [
    "Harbour",
    "Orchard",
    "Lantern",
    "River",
    "Meadow",
    "Compass",
    "Archive",
    "Bell",
    "Garden",
    "Horizon",
    "Island",
    "Mirror",
    "Tide",
    "Valley",
    "Chronicle",
    "Window",
    "Bridge",
    "Season",
    "Voyage",
    "Forest",
]
NATIONALITIES = [
    "Norwegian",
    "Chilean",
    "Portuguese",
    "Kenyan",
    "Canadian",
    "Estonian",
    "Filipino",
    "Irish",
    "Moroccan",
    "Icelandic",
    "Uruguayan",
    "Scottish",
    "Vietnamese",
    "Austrian",
]
PROFESSIONS = ["composer", "novelist", "cartographer", "poet", "architect", "film director", "botanist", "painter"]
KIND_BY_PROFESSION = {
    "composer": "symphony",
    "novelist": "novel",
    "cartographer": "atlas",
    "poet": "poetry collection",
    "architect": "treatise",
    "film director": "documentary film",
    "botanist": "treatise",
    "painter": "memoir",
}

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Spain": "Madrid",
    "Canada": "Ottawa",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Chile": "Santiago",
    "Cuba": "Havana",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Russia": "Moscow",
    "China": "Beijing",
    "India": "New Delhi",
    "Mexico": "Mexico City",
    "Argentina": "Buenos Aires",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Belgium": "Brussels",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Ghana": "Accra",
    "Nigeria": "Abuja",
    "Australia": "Canberra",
    "Colombia": "Bogota",
    "Venezuela": "Caracas",
    "Morocco": "Rabat",
    "Iceland": "Reykjavik",
    "Scotland": "Edinburgh",
    "Wales": "Cardiff",
    "Nepal": "Kathmandu",
    "Ukraine": "Kyiv",
    "Romania": "Bucharest",
    "Czechia": "Prague",
    "Switzerland": "Bern",
}
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


@dataclass
class Document:
    """One synthetic document (an optional title line, then sentences) and its questions."""

    key: str
    task: str
    sentences: list[str]
    questions: list[tuple[str, str]]
    title: str = ""
    values: list[tuple[str, str]] = field(default_factory=list)  # (kind, value): the facts a rewrite swaps
    genre: str = ""

    def _prefix(self, sentences: list[str]) -> str:
        return (f"{self.title}\n\n" if self.title else "") + " ".join(sentences)

    @property
    def text(self) -> str:
        return self._prefix(self.sentences)

    def rows(self, rng: random.Random) -> list[Row]:
        """The sc1 row (cut at a sentence boundary in the second half) and the qa rows."""
        cut = rng.randint(max(1, len(self.sentences) // 2), len(self.sentences) - 1)
        prompt = self._prefix(self.sentences[:cut])
        rows = [Row(f"{self.key}sc1", prompt, " " + " ".join(self.sentences[cut:]), self.task)]
        rows += [Row(f"{self.key}qa{i}", q, a, self.task) for i, (q, a) in enumerate(self.questions)]
        return rows


class _Unique:
    """Draws values that were never drawn before anywhere in this benchmark."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def draw(self, make: Callable[[], str], tries: int = 1000) -> str:
        for _ in range(tries):
            value = make()
            if value.lower() not in self.seen:
                self.seen.add(value.lower())
                return value
        raise RuntimeError("ran out of unique values; use a smaller size")


class Generator:
    """Makes documents with a seeded ``random.Random`` and a seeded Faker."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)
        self.unique = _Unique()

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _job(self) -> str:
        job = self.fake.job().split(",")[0].lower()
        return f"an {job}" if job[0] in "aeiou" else f"a {job}"

    def _first(self) -> str:
        return self.unique.draw(self.fake.first_name)

    def story(self) -> Document:
        genre = self.rng.choice(sorted(GENRES))
        vocab = GENRES[genre]
        names = [self._first() for _ in range(self.rng.randint(1, 4))]
        slots = {
            "hero": names[0],
            "ally": names[1] if len(names) > 1 else "an old friend",
            "city": self.unique.draw(self.fake.city),
            "thing": self.rng.choice(vocab["thing"]),
            "place": self.rng.choice(vocab["place"]),
            "foe": self.rng.choice(vocab["foe"]),
            "genre_adj": {"science fiction": "gleaming", "comedy": "cheerful", "romance": "charming"}.get(
                genre, "restless"
            ),
        }
        middle = self.rng.sample(STORY_MIDDLES, 3)
        middle.insert(self.rng.randint(0, len(middle)), STORY_KEY)
        extra = [f"{n} joined them, carrying news from the far side of {slots['city']}." for n in names[2:]]
        parts = [self.rng.choice(STORY_OPENINGS), *middle, *extra, self.rng.choice(STORY_ENDINGS)]
        sentences = [p.format(**slots) for p in parts]
        sentences = [s[0].upper() + s[1:] for s in sentences]
        question = (f"What did {slots['hero']} discover inside the {slots['place']}?", f"The {slots['thing']}.")
        values = [("first", n) for n in names] + [(k, slots[k]) for k in ("city", "thing", "place", "foe")]
        return Document(f'"{self._uuid()}"', "Task1", sentences, [question], values=values, genre=genre)

    def pii_bio(self) -> Document:
        she = self.rng.random() < 0.5
        first = self.unique.draw(self.fake.first_name_female if she else self.fake.first_name_male)
        last = self.unique.draw(self.fake.last_name)
        name = f"{first} {last}"
        days = (date(1991, 12, 31) - date(1964, 1, 1)).days
        born = date.fromisoformat(
            self.unique.draw(lambda: (date(1964, 1, 1) + timedelta(days=self.rng.randrange(days))).isoformat())
        )
        ssn = self.unique.draw(lambda: f"900-{self.rng.randint(10, 99)}-{self.rng.randint(1000, 9999)}")
        phone = self.unique.draw(
            lambda: f"{self.rng.randint(201, 989)}-{self.rng.randint(200, 999)}-{self.rng.randint(1000, 9999)}"
        )
        email = f"{first.lower()}_{last.lower()}@me.com"
        address = self.unique.draw(
            lambda: (
                f"{self.fake.building_number()} {self.fake.street_name()}, {self.fake.city()}, "
                f"{self.fake.state_abbr()}, {self.fake.postcode()}"
            )
        )
        pronoun, pos = ("She", "her") if she else ("He", "his")
        extras = self.rng.sample(BIO_EXTRAS, 2)
        sentences = [
            f"{name} was born on {born:%B} {born.day}, {born.year}.",
            f"{pronoun} can be reached via phone at {phone} and email at {email}.",
            f"{pos.title()} home address is {address}.",
            f"{pos.title()} Social Security Number is {ssn}.",
            *(e.format(first=first, job=self._job(), pronoun_pos=pos) for e in extras),
        ]
        questions = [
            (f"What is the birth date of {name}?", born.isoformat()),
            (f"What is {name}'s Social Security Number?", ssn.replace("-", "")),
            (f"What is {name}'s phone number?", phone.replace("-", "")),
            (f"What is {name}'s email address?", email),
            (f"What is the home address of {name}?", address + "."),
        ]
        values = [("first", first), ("last", last), ("date", born.isoformat()), ("ssn", ssn), ("phone", phone)]
        values += [("email", email), ("address", address)]
        return Document(self._uuid(), "Task2", sentences, questions, values=values)

    def encyclopedic_bio(self) -> Document:
        name = f"{self._first()} {self.unique.draw(self.fake.last_name)}"
        profession = self.rng.choice(PROFESSIONS)
        kind = KIND_BY_PROFESSION[profession]
        born = self.rng.randint(1890, 1950)
        town = self.unique.draw(self.fake.city)
        studied = self.unique.draw(self.fake.city)
        title = self.unique.draw(lambda: f"The {self.rng.choice(TITLE_ADJ)} {self.rng.choice(TITLE_NOUN)}")
        second = self.unique.draw(lambda: f"{self.rng.choice(TITLE_ADJ)} {self.rng.choice(TITLE_NOUN)}")
        year = born + self.rng.randint(25, 45)
        award = f"{self.unique.draw(self.fake.last_name)} Prize"
        surname = name.split()[1]
        sentences = [
            f"{name} (born {born} in {town}) was a {self.rng.choice(NATIONALITIES)} {profession}.",
            f"{surname} studied in {studied} before moving abroad.",
            f"The {kind} {title} was completed in {year} and made {surname} widely known.",
            f"A later work, {second}, followed {self.rng.randint(3, 12)} years after.",
            f"In {year + self.rng.randint(5, 20)} {surname} received the {award}.",
        ]
        question = (f"Which {kind} by {name} was completed in {year}?", title)
        values = [("first", name.split()[0]), ("last", surname), ("city", town), ("city", studied), ("title", title)]
        values += [("second", second), ("award", award), ("year", str(born)), ("year", str(year))]
        key = str(self.rng.randint(10_000_000, 99_999_999))
        return Document(key, "Task3", sentences, [question], title=name, values=values)

    def utility(self, count: int) -> list[Row]:
        """General-knowledge questions outside both sets: capitals, arithmetic, calendar order."""
        items: list[tuple[str, str]] = [(f"What is the capital of {c}?", city) for c, city in CAPITALS.items()]
        items += [(f"What day comes after {d}?", WEEKDAYS[(i + 1) % 7]) for i, d in enumerate(WEEKDAYS)]
        items += [(f"Which month comes after {m}?", MONTHS[(i + 1) % 12]) for i, m in enumerate(MONTHS)]
        items += [(f"What is {a} plus {b}?", str(a + b)) for a in range(2, 13) for b in range(2, 13)]
        self.rng.shuffle(items)
        return [Row(f"utility{i:04d}qa0", q, a, "Utility") for i, (q, a) in enumerate(items[:count])]


class Rewriter:
    """Alternate answers for forget rows, as ReLearn and AltPO use them: the row's answer with the
    document's facts (names, dates, numbers, places, titles) replaced by fresh values of the same
    kind, so the answer stays fluent and in the domain but no longer states the fact. It has its
    own seeded random streams, so the benchmark's rows are the same with or without it."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(f"alternates:{seed}")
        self.fake = Faker("en_US")
        self.fake.seed_instance(seed + 7919)

    def _fresh(self, kind: str, value: str, genre: str) -> str:
        rng, fake = self.rng, self.fake
        if kind in ("thing", "place", "foe"):
            return rng.choice([v for v in GENRES[genre][kind] if v != value])
        if kind == "date":
            return (date(1964, 1, 1) + timedelta(days=rng.randrange(10_000))).isoformat()
        if kind == "year":
            return str(int(value) + rng.choice([-1, 1]) * rng.randint(2, 15))
        made = {
            "first": fake.first_name,
            "last": fake.last_name,
            "city": fake.city,
            "ssn": lambda: f"900-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            "phone": lambda: f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
            "email": lambda: f"{fake.first_name().lower()}_{fake.last_name().lower()}@me.com",
            "address": lambda: (
                f"{fake.building_number()} {fake.street_name()}, {fake.city()}, {fake.state_abbr()}, {fake.postcode()}"
            ),
            "title": lambda: f"The {rng.choice(TITLE_ADJ)} {rng.choice(TITLE_NOUN)}",
            "second": lambda: f"{rng.choice(TITLE_ADJ)} {rng.choice(TITLE_NOUN)}",
            "award": lambda: f"{fake.last_name()} Prize",
        }[kind]
        return made()

    def alternates(self, doc: Document, rows: list[Row], count: int = 5) -> list[Row]:
        """``rows`` with ``count`` rewrites each as ``alternate`` (fewer where rewrites coincide)."""
        variants = []
        for _ in range(count):
            swaps: dict[str, str] = {}
            for kind, value in doc.values:
                new = swaps.get(value) or self._fresh(kind, value, doc.genre)
                swaps[value] = new
                if kind == "date":  # also as written in the text, "March 2, 1985"
                    old_d, new_d = date.fromisoformat(value), date.fromisoformat(new)
                    swaps[f"{old_d:%B} {old_d.day}, {old_d.year}"] = f"{new_d:%B} {new_d.day}, {new_d.year}"
                if "-" in value and kind in ("ssn", "phone"):  # answers give them without dashes
                    swaps[value.replace("-", "")] = new.replace("-", "")
            variants.append(swaps)
        out = []
        for row in rows:
            alts = []
            for swaps in variants:
                pattern = re.compile("|".join(re.escape(v) for v in sorted(swaps, key=len, reverse=True)))
                alt = pattern.sub(lambda m, swaps=swaps: swaps[m.group(0)], row.output)
                if alt != row.output and alt not in alts:
                    alts.append(alt)
            out.append(Row(row.id, row.input, row.output, row.task, tuple(alts)))
        return out


def generate(out: Path, seed: int = 0, size: str = "small") -> dict[str, int]:
    """Write the benchmark files to ``out`` (replacing a benchmark written there before, never
    mixing old and new files); returns rows per file."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}")
    out = check_output(out, "benchmark", [], overwrite=None)
    n = SIZES[size]
    gen, rewriter = Generator(seed), Rewriter(seed)
    splits: dict[str, list[Document]] = {"forget": [], "retain": [], "nonmember": []}
    for make in (gen.story, gen.pii_bio, gen.encyclopedic_bio):  # Task1, Task2, Task3
        docs = [make() for _ in range(2 * n["docs"] + n["nonmembers"])]
        splits["forget"] += docs[: n["docs"]]
        splits["retain"] += docs[n["docs"] : 2 * n["docs"]]
        splits["nonmember"] += docs[2 * n["docs"] :]
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in FILES}
    for split in ("forget", "retain", "nonmember"):
        by_task: dict[str, list[Document]] = {}
        for doc in splits[split]:
            by_task.setdefault(doc.task, []).append(doc)
        for docs in by_task.values():
            n_train = max(1, round(0.8 * len(docs)))
            for i, doc in enumerate(docs):
                train = i < n_train
                if split != "nonmember":
                    rows = doc.rows(gen.rng)
                    rows = rewriter.alternates(doc, rows) if split == "forget" else rows
                    files[f"{split}_{'train' if train else 'validation'}.jsonl"] += [r.record() for r in rows]
                # As in LUME: members are the forget documents of the same split.
                mia = "mia_member" if split == "forget" else "mia_nonmember"
                if split != "retain":
                    files[f"{mia}{'' if train else '_validation'}.jsonl"].append({"id": doc.key, "document": doc.text})
    files["utility.jsonl"] = [r.record() for r in gen.utility(n["utility"])]
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for name, records in files.items():
        write_jsonl(staging / name, records)
    publish(staging, out, "benchmark")
    return {name: len(records) for name, records in files.items()}
