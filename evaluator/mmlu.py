"""MMLU from a local folder in the original Hendrycks format (``test/*_test.csv``, ``dev/*_dev.csv``):
k-shot prompts from ``dev``, the argmax over " A"/" B"/" C"/" D" of the next token after
"Answer:", micro-averaged over every test question.

Two styles. ``plain``: CSV cells as written, one space in the header, left-padded batches.
``open-instruct``: allenai/open-instruct's ``eval/mmlu/run_eval.py`` as the SemEval organisers
ran it: cells parsed by pandas (numbers and NA-like strings: "0.50" in a numeric column is
0.5, "None" is nan), "about  {subject}" with two spaces (its ``format_subject`` prefixes one),
few-shot examples dropped until the prompt fits 2048 tokens, and the argmax taken over the
softmax of the whole vocabulary in the model's dtype (bfloat16 ties resolve to the first
choice), each prompt unpadded."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearn import DataError
from unlearn.engine import eval_mode, pad_token_id

from .generation import left_pad, left_pad_positions, length_batches
from .ranks import SINGLE, Ranks

CHOICES = ("A", "B", "C", "D")
MAX_PROMPT_TOKENS = 2048  # open-instruct drops few-shot examples until a prompt fits
STYLES = ("plain", "open-instruct")


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


def _subject_files(folder: Path) -> list[tuple[str, Path | None, Path]]:
    """``(subject, dev file or None, test file)`` for every ``test/*_test.csv``, sorted."""
    tests = sorted((folder / "test").glob("*_test.csv"))
    if not tests:
        raise DataError(f"{folder}: no test/*_test.csv files (the original MMLU layout)")
    found = []
    for test in tests:
        subject = test.name[: -len("_test.csv")]
        dev = folder / "dev" / f"{subject}_dev.csv"
        found.append((subject, dev if dev.is_file() else None, test))
    return found


def load_mmlu(folder: Path) -> dict[str, tuple[list[Question], list[Question]]]:
    """``{subject: (dev questions, test questions)}`` from ``test/*_test.csv`` and ``dev/*_dev.csv``."""
    return {
        subject: (_read_csv(dev, subject) if dev else [], _read_csv(test, subject))
        for subject, dev, test in _subject_files(folder)
    }


def format_question(q: Question, with_answer: bool) -> str:
    text = q.question + "".join(f"\n{c}. {o}" for c, o in zip(CHOICES, q.options)) + "\nAnswer:"
    return text + (f" {q.answer}\n\n" if with_answer else "")


def prompt(q: Question, shots: list[Question]) -> str:
    subject = " ".join(q.subject.split("_"))
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return header + "".join(format_question(s, True) for s in shots) + format_question(q, False)


@torch.no_grad()
def evaluate_mmlu(
    model: Any,
    tokenizer: Any,
    folder: Path,
    shots: int = 5,
    batch_size: int = 8,
    style: str = "plain",
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Accuracy per subject and the micro average; ``predictions`` for rescoring. Under several
    ``ranks`` each runs its share of the batches and every rank returns the whole result."""
    if style not in STYLES:
        raise ValueError(f"MMLU style {style!r}: choose one of {', '.join(STYLES)}")
    if style == "open-instruct":
        return _evaluate_open_instruct(model, tokenizer, folder, shots, batch_size, ranks)
    choice_ids = _choice_ids(tokenizer)
    device = next(model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    subjects = list(load_mmlu(folder).items())
    batches = [
        (s, start, [tokenizer(prompt(q, dev[:shots]))["input_ids"] for q in test[start : start + batch_size]])
        for s, (_, (dev, test)) in enumerate(subjects)
        for start in range(0, len(test), batch_size)
    ]

    def answer(batch: tuple[int, int, list[list[int]]]) -> dict[tuple[int, int], dict[str, Any]]:
        s, start, prompts = batch
        subject, (_, test) = subjects[s]
        ids, mask = left_pad(prompts, pad_id)  # the last position answers
        positions = left_pad_positions(mask)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device))
        best = logits.logits[:, -1, choice_ids].argmax(-1).tolist()
        return {
            (s, start + row): {
                "subject": subject,
                "index": start + row,
                "prediction": CHOICES[b],
                "answer": test[start + row].answer,
            }
            for row, b in enumerate(best)
        }

    with eval_mode(model):
        predictions = ranks.share(batches, answer)
    return mmlu_summary([predictions[key] for key in sorted(predictions)])


def _choice_ids(tokenizer: Any) -> list[int]:
    return [tokenizer(f" {c}", add_special_tokens=False)["input_ids"][-1] for c in CHOICES]


def _read_frame(path: Path) -> Any:
    import pandas as pd

    try:
        frame = pd.read_csv(path, header=None)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a broken file
        raise DataError(f"{path}: not a readable CSV ({type(exc).__name__}: {str(exc)[:120]})") from None
    if frame.shape[1] != 6:
        raise DataError(f"{path}: expected 6 columns (question, A, B, C, D, answer), got {frame.shape[1]}")
    for number, (question, answer) in enumerate(zip(frame[0], frame[5]), start=1):
        if not isinstance(question, str):
            raise DataError(f"{path}, row {number}: question {question!r} is not text once pandas parses it")
        if answer not in CHOICES:
            raise DataError(f"{path}, row {number}: answer {answer!r} is not one of A, B, C, D")
    return frame


def _cell(value: Any) -> str:
    """A pandas cell as ``"{}".format`` writes it (open-instruct's formatting): nan, 0.5, 1.0."""
    return "{}".format(value)  # noqa: UP032 - the exact formatting is the point


def _example(frame: Any, i: int, with_answer: bool) -> str:
    row = frame.iloc[i]
    text = row[0] + "".join(f"\n{c}. {_cell(row[j + 1])}" for j, c in enumerate(CHOICES)) + "\nAnswer:"
    return text + (f" {_cell(row[5])}\n\n" if with_answer else "")


def open_instruct_prompts(tokenizer: Any, folder: Path, shots: int = 5) -> dict[str, tuple[list[str], list[str]]]:
    """``{subject: (prompts, answers)}`` exactly as open-instruct's ``run_eval.py`` builds them."""
    out = {}
    for subject, dev_file, test_file in _subject_files(folder):
        dev = _read_frame(dev_file)[:shots] if dev_file else None
        test = _read_frame(test_file)
        header = "The following are multiple choice questions (with answers) about {}.\n\n".format(
            "".join(" " + part for part in subject.split("_"))
        )
        prompts = []
        for i in range(len(test)):
            end = _example(test, i, with_answer=False)
            k = min(shots, 0 if dev is None else len(dev))
            while True:
                text = header + "".join(_example(dev, j, True) for j in range(k)) + end
                # open-instruct counts without special tokens; at 0 shots it would loop forever, so stop
                if k == 0 or len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= MAX_PROMPT_TOKENS:
                    break
                k -= 1
            prompts.append(text)
        out[subject] = (prompts, [_cell(a) for a in test[5]])
    return out


def _evaluate_open_instruct(
    model: Any, tokenizer: Any, folder: Path, shots: int, batch_size: int, ranks: Ranks
) -> dict[str, Any]:
    choice_ids = _choice_ids(tokenizer)
    device = next(model.parameters()).device
    subjects = list(open_instruct_prompts(tokenizer, folder, shots).items())
    encoded = [[tokenizer(p)["input_ids"] for p in prompts] for _, (prompts, _) in subjects]
    # unpadded: prompts of one token length share a forward pass (see `batch_invariant`)
    batches = [(s, rows) for s, enc in enumerate(encoded) for rows in length_batches(enc, batch_size)]

    def answer(batch: tuple[int, list[int]]) -> dict[tuple[int, int], dict[str, Any]]:
        s, rows = batch
        subject, (_, answers) = subjects[s]
        logits = model(input_ids=torch.tensor([encoded[s][i] for i in rows], device=device)).logits
        best = torch.softmax(logits[:, -1, :], dim=-1)[:, choice_ids].argmax(-1).tolist()
        return {
            (s, i): {"subject": subject, "index": i, "prediction": CHOICES[b], "answer": answers[i]}
            for i, b in zip(rows, best)
        }

    with eval_mode(model):
        predictions = ranks.share(batches, answer)
    return mmlu_summary([predictions[key] for key in sorted(predictions)])


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
