"""The LUME-format benchmark generator: determinism, schema, splits, no PII shared."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import cli

from unlearn import load_rows
from unlearn.bench.synth import FILES, generate
from unlearn.evaluator.mia import load_documents


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    generate(out, seed=3, size="small")
    return out


def _docs(rows):
    return {re.sub(r"(sc1|qa\d)$", "", r.id) for r in rows}


def test_same_seed_same_files_other_seed_other_files(bench, tmp_path):
    generate(tmp_path / "again", seed=3, size="small")
    generate(tmp_path / "other", seed=4, size="small")
    for name in FILES:
        assert (bench / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert (bench / "forget_train.jsonl").read_bytes() != (tmp_path / "other" / "forget_train.jsonl").read_bytes()


def test_schema_ids_and_splits(bench):
    for split in ("forget", "retain"):
        train, val = load_rows(bench / f"{split}_train.jsonl"), load_rows(bench / f"{split}_validation.jsonl")
        rows = train + val
        assert {r.task for r in rows} == {"Task1", "Task2", "Task3"}
        for task, questions in (("Task1", 1), ("Task2", 5), ("Task3", 1)):
            task_rows = [r for r in rows if r.task == task]
            docs = _docs(task_rows)
            assert len(docs) == 10  # small: 10 documents per task and split
            assert sum(r.id.endswith("sc1") for r in task_rows) == len(docs)
            assert sum(bool(re.search(r"qa[0-4]$", r.id)) for r in task_rows) == questions * len(docs)
            assert len(_docs([r for r in train if r.task == task])) == 8  # 80:20 by document
        assert all(r.id.startswith('"') for r in rows if r.task == "Task1")  # LUME's quoted UUIDs
    assert all(r.task == "Utility" and r.id.endswith("qa0") for r in load_rows(bench / "utility.jsonl"))


def test_completion_rows_are_whole_documents_cut_in_the_second_half(bench):
    members = dict(load_documents(bench / "mia_member.jsonl")) | dict(
        load_documents(bench / "mia_member_validation.jsonl")
    )
    rows = load_rows(bench / "forget_train.jsonl") + load_rows(bench / "forget_validation.jsonl")
    completions = [r for r in rows if r.id.endswith("sc1")]
    assert len(members) == len(completions) == 30
    assert {r.id[:-3] for r in load_rows(bench / "forget_train.jsonl") if r.id.endswith("sc1")} == set(
        dict(load_documents(bench / "mia_member.jsonl"))
    )
    for r in completions:
        doc = members[r.id[:-3]]
        assert r.input + r.output == doc
        assert len(r.input) >= len(doc) * 0.3 and r.output.startswith(" ")


def _pii(rows) -> set[str]:
    """Names, emails, SSNs, phones and addresses mentioned in Task2 answers and questions."""
    values = set()
    for r in rows:
        if r.task == "Task2" and r.id[-3:-1] == "qa":
            values.add(r.output.lower())
            name = r.input.rstrip("?").split(" of ")[-1] if " of " in r.input else r.input[8:].split("'s ")[0]
            values.add(name.lower())
    return values


def test_no_name_or_pii_value_is_shared_between_forget_retain_and_nonmembers(bench):
    forget = load_rows(bench / "forget_train.jsonl") + load_rows(bench / "forget_validation.jsonl")
    retain = load_rows(bench / "retain_train.jsonl") + load_rows(bench / "retain_validation.jsonl")
    pii = _pii(forget)
    assert len(pii) == 10 * 6  # a name and five values per biography, all distinct
    nonmembers = load_documents(bench / "mia_nonmember.jsonl") + load_documents(
        bench / "mia_nonmember_validation.jsonl"
    )
    others = " ".join(r.text.lower() for r in retain) + " ".join(d.lower() for _, d in nonmembers)
    assert not [v for v in pii if v in others]
    # Task3 people (the title line) and Task1 heroes are unique too.
    names = {r.input.split("\n\n")[0].lower() for r in forget if r.task == "Task3" and r.id.endswith("sc1")}
    assert len(names) == 10 and not [n for n in names if n in others]
    assert not set(dict(load_documents(bench / "mia_member.jsonl"))) & set(dict(nonmembers))


def test_cli_writes_every_file(tmp_path):
    res = cli("data", "synth", "--out", str(tmp_path / "b"), "--size", "tiny", "--seed", "1")
    assert res.returncode == 0, res.stderr
    for name in FILES:
        assert (tmp_path / "b" / name).stat().st_size > 0
    assert json.loads((tmp_path / "b" / "utility.jsonl").read_text().splitlines()[0])["task"] == "Utility"
    assert cli("data", "synth", "--out", str(tmp_path / "c"), "--size", "huge").returncode == 2


def test_synth_replaces_an_existing_benchmark_only_with_overwrite(tmp_path):
    """Also through a symlink to it (the data folder a target was built from): refused, untouched."""
    first = tmp_path / "b"
    assert cli("data", "synth", "--out", str(first), "--size", "tiny", "--seed", "1").returncode == 0
    (tmp_path / "link").symlink_to(first)
    before = {f.name: f.read_bytes() for f in first.iterdir()}
    for out in (first, tmp_path / "link"):
        res = cli("data", "synth", "--out", str(out), "--size", "tiny", "--seed", "2")
        assert res.returncode == 2 and "already holds a benchmark; pass --overwrite to replace it" in res.stderr
        assert {f.name: f.read_bytes() for f in first.iterdir()} == before
    res = cli("data", "synth", "--out", str(tmp_path / "link"), "--size", "tiny", "--seed", "2", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert (first / "forget_train.jsonl").read_bytes() != before["forget_train.jsonl"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    res = cli("data", "synth", "--out", str(tmp_path / "mine"), "--size", "tiny", "--overwrite")
    assert res.returncode == 2 and "holds files but is not a benchmark that unlearn wrote" in res.stderr


def test_forget_rows_carry_rewrites_without_their_facts(bench):
    forget = load_rows(bench / "forget_train.jsonl") + load_rows(bench / "forget_validation.jsonl")
    assert all(1 <= len(r.alternate) <= 5 and r.output not in r.alternate for r in forget)
    assert not any(r.alternate for r in load_rows(bench / "retain_train.jsonl"))
    pii = [r for r in forget if r.task == "Task2" and r.id.endswith("qa1")]  # the SSN questions
    assert pii and all(r.output not in " ".join(r.alternate) for r in pii)
    assert all(re.fullmatch(r"900\d{6}", a) for r in pii for a in r.alternate)  # still an SSN, another one
    story = next(r for r in forget if r.task == "Task1" and r.id.endswith("qa0"))  # "The <thing>."
    assert all(a.startswith("The ") and a.endswith(".") for a in story.alternate)
