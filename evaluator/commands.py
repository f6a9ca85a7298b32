"""``unlearn evaluate``, registered through the ``register_commands`` hook like any plugin's command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from unlearn import ConfigError, hookimpl


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    out = Console()

    @cli.command()
    def evaluate(
        model: Path | None = typer.Argument(None, help="The model folder to evaluate."),
        data: Path = typer.Option(..., "--data", "-d", help="Folder with the forget and retain rows."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Where to write the evaluation."),
        split: str = typer.Option("train", help="Evaluate {forget,retain}_SPLIT.jsonl when the folder has them."),
        mia: Path | None = typer.Option(
            None, help="Folder with mia_member.jsonl and mia_nonmember.jsonl (default: --data)."
        ),
        utility: Path | None = typer.Option(
            None, help="An MMLU folder (test/, dev/) or a utility.jsonl (default: DATA/utility.jsonl)."
        ),
        baseline: Path | None = typer.Option(
            None, help="The evaluation of the model before unlearning (gate, before/after)."
        ),
        generations: Path | None = typer.Option(
            None, help="Rescore the generations of an earlier evaluation; no model needed."
        ),
        max_new_tokens: int = typer.Option(256),
        batch_size: int = typer.Option(32),
        mmlu_shots: int = typer.Option(5),
        dtype: str = typer.Option("float32", help="float32 | bfloat16 (the organisers' choice) | float16"),
    ) -> None:
        """Score a model with the official SemEval-2025 Task 4 metrics, plus the MIA suite."""
        from unlearn.evaluator.evaluate import evaluate_model, rescore

        if (model is None) == (generations is None):
            raise ConfigError("give either a MODEL folder or --generations DIR")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype {dtype!r}: choose float32, bfloat16 or float16")
        if generations is not None:
            results = rescore(generations, data, out_dir, split=split, baseline=baseline)
        else:
            results = evaluate_model(
                model,
                data,
                out_dir,
                split=split,
                mia=mia,
                utility=utility,
                baseline=baseline,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                mmlu_shots=mmlu_shots,
                dtype=dtype,
            )
        out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False)
        out.print(f"final score {results['aggregate-score']:.4f}; results in {out_dir}")
