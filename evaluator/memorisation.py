"""How much a model has memorised a LUME-format benchmark (the target card's figures): the
official per-task scores of every split file, the LOSS-attack AUC and utility exact match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn import load_rows

from .generation import greedy_generate
from .metrics import exact_match, row_kind, row_score
from .mia import attack_aucs, document_scores, load_documents

SPLIT_FILES = ("forget_train", "forget_validation", "retain_train", "retain_validation", "forget", "retain")


def _per_task(rows: list[Any], scores: list[float | None]) -> dict[str, dict[str, float | None]]:
    """Mean regurgitation (``sc`` rows) and knowledge (``qa`` rows) per task, None for a kind a
    task lacks (other benchmarks' rows need not have both, unlike LUME's official aggregate)."""
    kinds: dict[str, dict[str, list[float]]] = {}
    for row, score in zip(rows, scores):
        kind = {"sc": "regurgitation-score", "qa": "knowledge-score"}.get(row_kind(row.id) or "")
        if kind is not None and score is not None:
            kinds.setdefault(row.task, {"regurgitation-score": [], "knowledge-score": []})[kind].append(score)
    return {t: {k: sum(v) / len(v) if v else None for k, v in found.items()} for t, found in sorted(kinds.items())}


def memorisation_report(
    model: Any, tokenizer: Any, data: Path, max_new_tokens: int = 256, progress: bool = False
) -> dict[str, Any]:
    """``{"tasks": {split file: {task: {"regurgitation-score", "knowledge-score"}}}, "mia_auc",
    "mia_member_nll", "mia_nonmember_nll", "utility_exact_match"}`` for what the folder holds."""
    report: dict[str, Any] = {"tasks": {}}
    for name in SPLIT_FILES:
        file = data / f"{name}.jsonl"
        if file.is_file():
            rows = load_rows(file)
            generations = greedy_generate(model, tokenizer, [r.input for r in rows], max_new_tokens, progress=progress)
            report["tasks"][name] = _per_task(rows, [row_score(r.id, r.output, g) for r, g in zip(rows, generations)])
    members, nonmembers = data / "mia_member.jsonl", data / "mia_nonmember.jsonl"
    if members.is_file() and nonmembers.is_file():
        m, n = (document_scores(model, tokenizer, [d for _, d in load_documents(f)]) for f in (members, nonmembers))
        report["mia_auc"] = attack_aucs(m, n)["loss"]
        report["mia_member_nll"] = sum(s["loss"] for s in m) / len(m)
        report["mia_nonmember_nll"] = sum(s["loss"] for s in n) / len(n)
    utility = data / "utility.jsonl"
    if utility.is_file():
        rows = load_rows(utility)
        generations = greedy_generate(model, tokenizer, [r.input for r in rows], max_new_tokens)
        report["utility_exact_match"] = sum(exact_match(r.output, g) for r, g in zip(rows, generations)) / len(rows)
    return report
