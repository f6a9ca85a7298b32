"""How much a model has memorised a LUME-format benchmark: greedy generations scored the
official way per split and task, the LOSS-attack AUC, and utility exact match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn.data import Row, load_documents, load_rows

from .generation import greedy_generate
from .likelihood import document_nll
from .metrics import auc, exact_match, row_score

SPLIT_FILES = ("forget_train", "forget_validation", "retain_train", "retain_validation", "forget", "retain")


def score_rows(model: Any, tokenizer: Any, rows: list[Row], max_new_tokens: int = 256, progress: bool = False) -> list[float]:
    """The official per-row score of the model's greedy answer to each row."""
    generations = greedy_generate(model, tokenizer, [r.input for r in rows], max_new_tokens, progress=progress)
    return [row_score(r.id, r.output, g) for r, g in zip(rows, generations)]


def by_task(rows: list[Row], scores: list[float]) -> dict[str, dict[str, float]]:
    """Mean regurgitation (sc rows) and knowledge (qa rows) per task."""
    out: dict[str, dict[str, list[float]]] = {}
    for row, score in zip(rows, scores):
        kind = "knowledge" if row.id[-3:-1] == "qa" else "regurgitation"
        out.setdefault(row.task, {"regurgitation": [], "knowledge": []})[kind].append(score)
    return {
        task: {kind: (sum(v) / len(v) if v else float("nan")) for kind, v in kinds.items()}
        for task, kinds in sorted(out.items())
    }


def memorisation_report(model: Any, tokenizer: Any, data: Path, max_new_tokens: int = 256, progress: bool = False) -> dict[str, Any]:
    """Scores per split file and task, MIA AUC (if MIA files exist), utility EM (if present)."""
    report: dict[str, Any] = {"tasks": {}}
    for name in SPLIT_FILES:
        file = data / f"{name}.jsonl"
        if file.is_file():
            rows = load_rows(file)
            report["tasks"][name] = by_task(rows, score_rows(model, tokenizer, rows, max_new_tokens, progress))
    members, nonmembers = data / "mia_member.jsonl", data / "mia_nonmember.jsonl"
    if members.is_file() and nonmembers.is_file():
        m = document_nll(model, tokenizer, [d for _, d in load_documents(members)])
        n = document_nll(model, tokenizer, [d for _, d in load_documents(nonmembers)])
        report["mia_auc"] = auc([-x for x in m], [-x for x in n])
        report["mia_member_nll"] = sum(m) / len(m)
        report["mia_nonmember_nll"] = sum(n) / len(n)
    utility = data / "utility.jsonl"
    if utility.is_file():
        rows = load_rows(utility)
        generations = greedy_generate(model, tokenizer, [r.input for r in rows], max_new_tokens)
        report["utility_exact_match"] = sum(exact_match(r.output, g) for r, g in zip(rows, generations)) / len(rows)
    return report
