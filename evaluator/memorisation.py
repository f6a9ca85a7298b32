"""How much a model has memorised a LUME-format benchmark (the target card's figures): the
official per-task scores of every split file, the LOSS-attack AUC and utility exact match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn import load_rows

from .generation import greedy_generate
from .metrics import exact_match, row_score
from .mia import attack_aucs, document_scores, load_documents
from .scoring import split_summary

SPLIT_FILES = ("forget_train", "forget_validation", "retain_train", "retain_validation", "forget", "retain")


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
            block, _ = split_summary(rows, [row_score(r.id, r.output, g) for r, g in zip(rows, generations)], name)
            report["tasks"][name] = {k: v for k, v in block.items() if not k.startswith("overall")}
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
