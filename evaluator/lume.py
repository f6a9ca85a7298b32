"""LUME (SemEval-2025 Task 4) as a benchmark plugin: the layout, generator and official scoring
this project started with, behind the same `unlearn.Benchmark` interface as TOFU and MUSE. What is
LUME's alone (its options, the organisers' preset, its leaderboard columns) is written here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from unlearn import Benchmark, ConfigError, hookimpl

DTYPES = ("float32", "bfloat16", "float16")


def _preset(official: bool, dtype: str | None, max_new_tokens: int | None, mmlu_style: str | None) -> dict[str, Any]:
    """The generation settings: the organisers' with ``official`` (any other value given is an
    error), else the given ones or the defaults (float32, 256 new tokens, plain MMLU prompts)."""
    from .official import PRESET

    if dtype not in (None, *DTYPES):
        raise ConfigError(f"--dtype {dtype!r}: choose {', '.join(DTYPES[:-1])} or {DTYPES[-1]}")
    given = {"dtype": dtype, "max_new_tokens": max_new_tokens, "mmlu_style": mmlu_style}
    if official:
        for key, value in given.items():
            if value is not None and value != PRESET[key]:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(f"{flag} {value}: --official fixes it to {PRESET[key]} (the organisers' run)")
        return {key: PRESET[key] for key in given}
    defaults = {"dtype": "float32", "max_new_tokens": 256, "mmlu_style": "plain"}
    return {key: defaults[key] if value is None else value for key, value in given.items()}


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
    evaluates_rows = True  # its data folder is the forget/retain rows themselves
    required = ("mia",)  # the MIA is a third of the official final score
    # unlearn tune's defaults, in its training signals' names (evaluator/signals.py)
    objective = "score"
    constraints = ("utility >= 0.75 * initial_utility",)
    # what `unlearn attack` measures recovery on: the forget set's terms of the official score
    knowledge = {
        "forget_regurgitation": "forget-set.overall-regurgitation-score",
        "forget_knowledge": "forget-set.overall-knowledge-score",
    }
    columns = {
        "final_score": "aggregate-score",
        "task_aggregate": "harmonic-mean-task-aggregate",
        "mia_score": "mia_final_score",
        "utility": "mmlu_average",
    }

    def synthesize(self, out: Path, seed: int, size: str) -> dict[str, int]:
        from unlearn.bench.synth import generate

        return generate(out, seed=seed, size=size)

    def evaluate(
        self,
        model: Path,
        data: Path,
        out: Path,
        *,
        split: str | None = None,
        reference: Path | None = None,
        mia: Path | None = None,
        utility: Path | None = None,
        baseline: Path | None = None,
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
        mmlu_shots: int | None = None,
        dtype: str | None = None,
        mmlu_style: str | None = None,
        official: bool = False,
        device: str = "auto",
        relearn: bool = False,
        nli: Path | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """`evaluate.evaluate_model`, with the organisers' preset under ``official`` (None: the default)."""
        from .evaluate import evaluate_model

        return evaluate_model(
            model,
            data,
            out,
            split=split or "train",
            reference=reference,
            mia=mia,
            utility=utility,
            baseline=baseline,
            batch_size=64 if batch_size is None else batch_size,
            mmlu_shots=5 if mmlu_shots is None else mmlu_shots,
            official=official,
            device=device,
            relearn=relearn,
            nli=nli,
            progress=progress,
            **_preset(official, dtype, max_new_tokens, mmlu_style),
        )

    def rescore(
        self,
        folder: Path,
        data: Path,
        out: Path,
        *,
        split: str | None = None,
        reference: Path | None = None,
        baseline: Path | None = None,
        official: bool = False,
        relearn: bool = False,
        nli: Path | None = None,
    ) -> dict[str, Any]:
        """`evaluate.rescore`; an evaluation made with ``relearn`` is rescored with it."""
        from .evaluate import rescore

        if (relearn or nli) and not (folder / "relearn" / "forget.jsonl").is_file():
            raise ConfigError(
                f"--relearn needs the model (perplexities) or an evaluation made with --relearn; {folder} has none"
            )
        return rescore(
            folder, data, out, split=split or "train", baseline=baseline, official=official, reference=reference
        )

    def signals(self, data: Path, split: str, tokenizer: Any, rows: int) -> tuple[set[str], Any]:
        from .signals import lume_signals

        return lume_signals(data, split, tokenizer, rows)


@hookimpl
def register_benchmarks(register: Callable[[Benchmark], None]) -> None:
    register(Lume())
