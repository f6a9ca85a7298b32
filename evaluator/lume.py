"""LUME (SemEval-2025 Task 4) as a benchmark plugin: the layout, generator and official scoring
this project started with, behind the same `unlearn.Benchmark` interface as TOFU and MUSE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn import hookimpl


class Lume:
    """The SemEval-2025 Task 4 benchmark (Ramakrishna et al. 2025): forget/retain rows of three
    tasks, the LOSS-attack MIA and a utility source; scored exactly as the organisers did."""

    name = "lume"
    summary = "SemEval-2025 Task 4 (LUME): regurgitation, knowledge, MIA and utility, the organisers' scoring"
    headline = {
        "aggregate-score": "higher",
        "harmonic-mean-task-aggregate": "higher",
        "mia_final_score": "higher",
        "mmlu_average": "higher",
    }
    utility = "mmlu_average"

    def synthesize(self, out: Path, seed: int, size: str) -> dict[str, int]:
        from unlearn.bench.synth import generate

        return generate(out, seed=seed, size=size)

    def evaluate(self, model: Path, data: Path, out: Path, **options: Any) -> dict[str, Any]:
        from .evaluate import evaluate_model

        return evaluate_model(model, data, out, **options)

    def rescore(self, folder: Path, data: Path, out: Path, **options: Any) -> dict[str, Any]:
        from .evaluate import rescore

        return rescore(folder, data, out, **options)

    def signals(self, data: Path, split: str, tokenizer: Any, rows: int) -> tuple[set[str], Any]:
        from .signals import lume_signals

        return lume_signals(data, split, tokenizer, rows)


@hookimpl
def register_benchmarks(register: Any) -> None:
    register(Lume())
