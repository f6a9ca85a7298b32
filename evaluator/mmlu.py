"""MMLU from a local folder in the original Hendrycks format, scored as open-instruct's run_eval
(and hence the SemEval organisers): k-shot prompts from ``dev``, argmax of the next-token logits
of " A"/" B"/" C"/" D" after "Answer:", micro-averaged over every test question."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearn import DataError, pad_token_id

from .generation import left_pad, left_pad_positions

CHOICES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str


def _read_csv(path: Path, subject: str) -> list[Question]:
    questions = []
    with path.open(newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            if len(row) != 6:
                raise DataError(
                    f"{path}, row {number}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}"
                )
            if row[5].strip() not in CHOICES:
                raise DataError(f"{path}, row {number}: answer {row[5]!r} is not one of A, B, C, D")
            questions.append(Question(subject, row[0], (row[1], row[2], row[3], row[4]), row[5].strip()))
    if not questions:
        raise DataError(f"{path}: no rows (empty file)")
    return questions


def load_mmlu(folder: Path) -> dict[str, tuple[list[Question], list[Question]]]:
    """``{subject: (dev questions, test questions)}`` from ``test/*_test.csv`` and ``dev/*_dev.csv``."""
    tests = sorted((folder / "test").glob("*_test.csv"))
    if not tests:
        raise DataError(f"{folder}: no test/*_test.csv files (the original MMLU layout)")
    subjects = {}
    for test in tests:
        subject = test.name[: -len("_test.csv")]
        dev = folder / "dev" / f"{subject}_dev.csv"
        subjects[subject] = (_read_csv(dev, subject) if dev.is_file() else [], _read_csv(test, subject))
    return subjects


def format_question(q: Question, with_answer: bool) -> str:
    text = q.question + "".join(f"\n{c}. {o}" for c, o in zip(CHOICES, q.options)) + "\nAnswer:"
    return text + (f" {q.answer}\n\n" if with_answer else "")


def prompt(q: Question, shots: list[Question]) -> str:
    subject = " ".join(q.subject.split("_"))
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return header + "".join(format_question(s, True) for s in shots) + format_question(q, False)


@torch.no_grad()
def evaluate_mmlu(model: Any, tokenizer: Any, folder: Path, shots: int = 5, batch_size: int = 8) -> dict[str, Any]:
    """Accuracy per subject and the micro average; ``predictions`` for rescoring."""
    choice_ids = [tokenizer(f" {c}", add_special_tokens=False)["input_ids"][-1] for c in CHOICES]
    device = next(model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    was_training = model.training
    model.eval()
    predictions = []
    try:
        for subject, (dev, test) in load_mmlu(folder).items():
            prompts = [tokenizer(prompt(q, dev[:shots]))["input_ids"] for q in test]
            for start in range(0, len(prompts), batch_size):
                ids, mask = left_pad(prompts[start : start + batch_size], pad_id)  # the last position answers
                positions = left_pad_positions(mask)
                logits = model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)
                )
                logits = logits.logits[:, -1, choice_ids]
                for row, best in enumerate(logits.argmax(-1).tolist()):
                    q = test[start + row]
                    predictions.append(
                        {"subject": subject, "index": start + row, "prediction": CHOICES[best], "answer": q.answer}
                    )
    finally:
        model.train(was_training)
    return mmlu_summary(predictions)


def mmlu_summary(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    per_subject: dict[str, list[int]] = {}
    for p in predictions:
        per_subject.setdefault(p["subject"], []).append(int(p["prediction"] == p["answer"]))
    total = [c for cs in per_subject.values() for c in cs]
    return {
        "average_acc": sum(total) / len(total),
        "subjects": {s: sum(cs) / len(cs) for s, cs in per_subject.items()},
        "predictions": predictions,
    }
