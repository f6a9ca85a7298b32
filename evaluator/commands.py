"""``unlearn evaluate``, registered through the ``register_commands`` hook like any plugin's command."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from unlearn import ConfigError, hookimpl


def _taken(method: Any, options: dict[str, Any], benchmark: str) -> dict[str, Any]:
    """``options`` if ``method`` takes them all; a one-line error naming the first it lacks."""
    params = inspect.signature(method).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options
    for name in options:
        if name not in params and name != "device":
            raise ConfigError(f"--{name.replace('_', '-')}: the {benchmark} benchmark does not take it")
    return {k: v for k, v in options.items() if k in params}


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    out = Console()

    @cli.command()
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
            None,
            help="With --relearn: a local NLI classifier folder (labels incl. 'contradiction') as ReLearn's judge.",
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
        from unlearn.engine import get_host
        from unlearn.evaluator.official import PRESET

        if (model is None) == (generations is None):
            raise ConfigError("give either a MODEL folder or --generations DIR")
        for flag, value, least in (("--max-new-tokens", max_new_tokens, 1), ("--batch-size", batch_size, 1)):
            if value is not None and value < least:  # not taken as "the default" (0 is falsy)
                raise ConfigError(f"{flag} {value}: must be at least {least}")
        if mmlu_shots is not None and mmlu_shots < 0:
            raise ConfigError(f"--mmlu-shots {mmlu_shots}: must be at least 0")
        bench = get_host().benchmark(benchmark)
        if benchmark != "lume":
            lume_only = {"--mia": mia, "--utility": utility, "--baseline": baseline}
            lume_only |= {"--mmlu-shots": mmlu_shots, "--mmlu-style": mmlu_style, "--official": official or None}
            lume_only |= {"--relearn": relearn or None, "--nli": nli}
            given = [flag for flag, value in lume_only.items() if value is not None]
            if given:
                raise ConfigError(f"{given[0]} is a LUME option; the {benchmark} benchmark does not take it")
            common = {"reference": reference, "split": split, "batch_size": batch_size, "dtype": dtype}
            common = {k: v for k, v in (common | {"max_new_tokens": max_new_tokens}).items() if v is not None}
            if generations is not None:
                call, common = bench.rescore, {k: v for k, v in common.items() if k == "reference"}
                results = call(generations, data, out_dir, **_taken(call, common, benchmark))
            else:
                common["device"] = device
                results = bench.evaluate(model, data, out_dir, **_taken(bench.evaluate, common, benchmark))
                if not results:
                    return  # another rank of a multi-process evaluation: rank 0 reports
            out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in results.items() if k in bench.headline and v is not None)
            out.print(f"{benchmark}: {shown}; results in {out_dir}")
            return
        if dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype {dtype!r}: choose float32, bfloat16 or float16")
        given = {"dtype": dtype, "max_new_tokens": max_new_tokens, "mmlu_style": mmlu_style}
        if official:
            for key, value in given.items():
                if value is not None and value != PRESET[key]:
                    flag = "--" + key.replace("_", "-")
                    raise ConfigError(f"{flag} {value}: --official fixes it to {PRESET[key]} (the organisers' run)")
        if generations is not None and (relearn or nli) and not (generations / "relearn" / "forget.jsonl").is_file():
            raise ConfigError(
                f"--relearn needs the model (perplexities) or an evaluation made with --relearn; {generations} has none"
            )
        if generations is not None:  # an evaluation made with --relearn is rescored with it
            results = bench.rescore(
                generations,
                data,
                out_dir,
                split=split or "train",
                baseline=baseline,
                official=official,
                reference=reference,
            )
        else:
            results = bench.evaluate(
                model,
                data,
                out_dir,
                split=split or "train",
                reference=reference,
                mia=mia,
                utility=utility,
                baseline=baseline,
                max_new_tokens=256 if max_new_tokens is None else max_new_tokens,
                batch_size=64 if batch_size is None else batch_size,
                mmlu_shots=5 if mmlu_shots is None else mmlu_shots,
                dtype=dtype or ("bfloat16" if official else "float32"),
                official=official,
                mmlu_style=mmlu_style or ("open-instruct" if official else "plain"),
                device=device,
                relearn=relearn,
                nli=nli,
            )
            if not results:
                return  # another rank of a multi-process evaluation: rank 0 reports
        out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False)
        fixed = results.get("official_mmlu_threshold")
        if fixed and fixed["warning"]:
            out.print(fixed["warning"], markup=False, highlight=False)
        out.print(f"final score {results['aggregate-score']:.4f}; results in {out_dir}")
