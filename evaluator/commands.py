"""``unlearn evaluate``, registered through the ``register_commands`` hook like any plugin's command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from unlearn import ConfigError, hookimpl


def _refuse_untaken(method: Any, given: dict[str, Any], benchmark: str, others: dict[str, Any]) -> None:
    """One line for the first option the user gave that ``method`` does not name, saying which
    installed benchmarks take it."""
    from unlearn.engine import benchmarks

    refused = benchmarks.untaken(method, given, others)
    if refused is not None:
        flag, takers = "--" + refused[0].replace("_", "-"), refused[1]
        which = f" ({flag} is a {'/'.join(t.upper() for t in takers)} option)" if takers else ""
        raise ConfigError(f"{flag}: the {benchmark} benchmark does not take it{which}")


_out = Console()
# The options `evaluate` passes on, by the names the benchmark's evaluate and rescore take.
_PASSED = ("reference", "split", "mia", "utility", "baseline", "max_new_tokens", "batch_size", "mmlu_shots")
_PASSED += ("dtype", "mmlu_style", "official", "relearn", "nli")


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    cli.command()(evaluate)


def evaluate(
    model: Path | None = typer.Argument(None, help="The model folder to evaluate."),
    data: Path = typer.Option(..., "--data", "-d", help="The benchmark's data folder."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Where to write the evaluation."),
    benchmark: str = typer.Option("lume", help="lume | tofu | muse | any installed benchmark plugin."),
    reference: Path | None = typer.Option(
        None,
        help="The model retrained without the forget set (the oracle): its folder or its saved evaluation "
        "(TOFU forget quality, MUSE PrivLeak, LUME's oracle column).",
    ),
    split: str | None = typer.Option(
        None, help="LUME: evaluate {forget,retain}_SPLIT.jsonl when the folder has them (default train)."
    ),
    mia: Path | None = typer.Option(
        None, help="Folder with mia_member.jsonl and mia_nonmember.jsonl, or member.jsonl and nonmember.jsonl."
    ),
    utility: Path | None = typer.Option(
        None,
        help="An MMLU folder (test/, dev/), an open-instruct metrics.json, or a utility.jsonl "
        "(default: DATA/utility.jsonl).",
    ),
    baseline: Path | None = typer.Option(
        None, help="The evaluation of the model before unlearning (gate, before/after)."
    ),
    generations: Path | None = typer.Option(
        None, help="Rescore the generations of an earlier evaluation; no model needed."
    ),
    max_new_tokens: int | None = typer.Option(None, help="Default 256."),
    batch_size: int | None = typer.Option(None, help="Rows per forward pass (default 64)."),
    mmlu_shots: int | None = typer.Option(None, help="LUME with an MMLU folder: default 5."),
    dtype: str | None = typer.Option(None, help="float32 (default) | bfloat16 (the organisers') | float16"),
    mmlu_style: str | None = typer.Option(
        None, help="plain (default) | open-instruct (the organisers' MMLU prompts and parsing)"
    ),
    device: str = typer.Option("auto", help="auto (the first GPU when there is one) | cpu | cuda | cuda:N"),
    relearn: bool = typer.Option(
        False,
        "--relearn",
        help="LUME: add ReLearn's Knowledge Forgetting Rate, Knowledge Retention Rate and Linguistic Score.",
    ),
    nli: Path | None = typer.Option(
        None, help="With --relearn: a local NLI classifier folder (labels incl. 'contradiction') as ReLearn's judge."
    ),
    official: bool = typer.Option(
        False,
        "--official",
        help="The organisers' run: bfloat16, 256 new tokens, open-instruct MMLU, their CSV round trip, "
        "evaluation_results.jsonl; every generation and MIA loss as their one-at-a-time procedure.",
    ),
) -> None:
    """Score a model on a benchmark: by default LUME with the official SemEval-2025 Task 4
    metrics, plus the MIA suite. Under `torchrun --nproc_per_node N -m unlearn evaluate ...`
    LUME's rows are shared between the processes (one GPU each), and the result equals one
    process's."""
    given = {k: v for k, v in locals().items() if k in _PASSED and v is not None and v is not False}
    if (model is None) == (generations is None):
        raise ConfigError("give either a MODEL folder or --generations DIR")
    for flag, value, least in (("--max-new-tokens", max_new_tokens, 1), ("--batch-size", batch_size, 1)):
        if value is not None and value < least:  # not taken as "the default" (0 is falsy)
            raise ConfigError(f"{flag} {value}: must be at least {least}")
    if mmlu_shots is not None and mmlu_shots < 0:
        raise ConfigError(f"--mmlu-shots {mmlu_shots}: must be at least 0")
    _score(model, generations, data, out_dir, benchmark, device, given)


def _score(
    model: Path | None,
    generations: Path | None,
    data: Path,
    out_dir: Path,
    benchmark: str,
    device: str,
    given: dict[str, Any],
) -> None:
    """Evaluate ``model`` (or rescore ``generations``) with the options the user gave, refusing one
    the benchmark does not take; print its summary and headline numbers."""
    from unlearn.engine import benchmarks, get_host

    host = get_host()
    bench = host.benchmark(benchmark)
    others = {name: b for name, (_, b) in host.benchmarks.items()}
    method = bench.rescore if generations is not None else bench.evaluate
    _refuse_untaken(method, given, benchmark, others)
    if generations is None:
        given |= benchmarks.options_for(method, {"device": device})
    results = method(generations if generations is not None else model, data, out_dir, **given)
    if not results:
        return  # another rank of a multi-process evaluation: rank 0 reports
    if (out_dir / "summary.md").is_file():
        _out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in results.items() if k in bench.headline and v is not None)
    _out.print(f"{benchmark}: {shown}; results in {out_dir}")
