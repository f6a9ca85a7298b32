"""MUSE's KnowMem prompt (``metrics/knowmem.py``), shared by the evaluation and the generator."""

from __future__ import annotations

STOPS = ("\n\n", "\nQuestion", "Question:")  # MUSE cuts the answer at the next question


def knowmem_prompts(qa: list[dict[str, str]], icl: list[dict[str, str]]) -> list[str]:
    """Few-shot ``Question: ...\nAnswer: ...`` examples, then each question."""
    shots = "".join(f"Question: {d['question']}\nAnswer: {d['answer']}\n\n" for d in icl)
    return [f"{shots}Question: {d['question']}\nAnswer: " for d in qa]


def cut_answer(text: str) -> str:
    """The answer up to the first of MUSE's stop strings."""
    for stop in STOPS:
        text = text.split(stop)[0]
    return text
