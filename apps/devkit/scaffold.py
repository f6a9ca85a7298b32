"""``unlearn plugins new NAME [--kind method|benchmark|attack]``: a ready-to-install plugin package that
passes ``unlearn plugins check`` once its placeholder summary is replaced."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from unlearn import ConfigError

from .conformance import PLACEHOLDER_SUMMARY

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "unlearn-plugin-$name"
version = "0.1.0"
description = "The $name $what for unlearn"
readme = "README.md"
requires-python = ">=3.11"
license = "Apache-2.0"  # choose your plugin's licence
dependencies = ["unlearn-core>=0.1"]

[project.entry-points.unlearn]
$name = "unlearn_plugin_$module"

[tool.setuptools]
packages = ["unlearn_plugin_$module"]
"""

_MODULE = '''\
"""The $name unlearning method.

Loss: describe the formula here and cite the paper it comes from.
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl


class ${cls}Config(Config):
    """Settings of $name; defaults come from the paper (unknown keys are errors)."""

    retain_weight: float = Field(1.0, ge=0, description="Weight of the retain NLL.")


@hookimpl
def register_methods(register: Register) -> None:
    # `unlearn plugins check` fails until this placeholder summary is replaced.
    register("$name", config=${cls}Config, kind="loss", summary="$summary", uses_retain=True)


@hookimpl
def compute_loss(method: str, config: ${cls}Config, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")  # scalar: mean over every answer token of the batch
    out = LossOutput(-forget_nll, {"forget_nll": forget_nll})
    return out.add_term("retain_nll", config.retain_weight, lambda: ctx.nll("retain"))
'''

_README = """\
# unlearn-plugin-$name

The `$name` unlearning method for unlearn (`unlearn-core`).

    pip install -e .
    unlearn plugins                      # lists $name
    unlearn run --method $name --model MODEL --data DATA --output OUT
    pytest tests

Describe the loss, its paper and its defaults here.
"""

_BENCHMARK_MODULE = '''\
"""The $name benchmark: describe its data, its metrics and the paper they come from.

This skeleton is complete and small: ``synthesize`` writes invented facts as forget and retain
rows, ``evaluate`` scores each row's answer NLL under the model (per row in ``rows.jsonl``, so
``rescore`` recomputes the results without a model), and ``signals`` gives the same numbers on a
model being trained (``trainer.eval_steps``, ``unlearn tune``). Replace the metrics with yours.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unlearn import Benchmark, Row, check_output, hookimpl, load_rows, publish, write_json, write_jsonl, write_text
from unlearn.evaluator import RESULTS, answer_nll, load_model, staging

SIZES = {"tiny": 6, "small": 40, "medium": 200}  # rows per file
PER_ROW = "rows.jsonl"  # the per-row file rescore reads


def _results(per_row: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers from the per-row NLLs: mean forget NLL; mean retain likelihood."""
    forget = [r["nll"] for r in per_row if r["split"] == "forget"]
    retain = [math.exp(-r["nll"]) for r in per_row if r["split"] == "retain"]
    return {
        "benchmark": "$name",
        "forget_nll": sum(forget) / len(forget),
        "retain_likelihood": sum(retain) / len(retain),
    }


def _publish(out: Path, per_row: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    results = {**_results(per_row), **extra}
    folder = staging(out)
    write_jsonl(folder / PER_ROW, per_row)
    write_json(folder / RESULTS, results)
    table = ["| number | value |", "| --- | --- |"]
    table += [f"| {k} | {results[k]:.4f} |" for k in ("forget_nll", "retain_likelihood")]
    write_text(folder / "summary.md", "\\n".join([*table, ""]))
    publish(folder, out, "evaluation")
    return results


class ${cls}Benchmark:
    """The $name benchmark."""

    name = "$name"
    summary = "$summary"
    headline = {"forget_nll": "higher", "retain_likelihood": "higher"}  # the first ranks entrants
    utility = "retain_likelihood"  # what unlearning must keep (organiser mode's gate)

    def synthesize(self, out: Path, seed: int, size: str) -> dict[str, int]:
        out = check_output(out, "benchmark", [], overwrite=None)
        pick = random.Random(seed)
        folder, n = staging(out), SIZES[size]
        counts = {}
        for split in ("forget", "retain"):
            rows = [
                {
                    "id": f"{split}-{i}",
                    "input": f"The code of item {split}-{i} is ",
                    "output": f"{pick.randrange(10**6):06d}",
                    "task": "$name",
                }
                for i in range(n)
            ]
            write_jsonl(folder / f"{split}.jsonl", rows)
            counts[f"{split}.jsonl"] = n
        publish(folder, out, "benchmark")
        return counts

    def evaluate(
        self, model: Path, data: Path, out: Path, *, device: str = "auto", batch_size: int = 8, progress: bool = True
    ) -> dict[str, Any]:
        out = check_output(out, "evaluation", [model, data], overwrite=None)
        net, tokenizer = load_model(model, "float32", device)
        per_row = []
        for split in ("forget", "retain"):
            rows = load_rows(data / f"{split}.jsonl", split)
            nll = answer_nll(net, tokenizer, rows, batch_size=batch_size)
            per_row += [{"id": r.id, "split": split, "nll": v} for r, v in zip(rows, nll, strict=True)]
        return _publish(out, per_row, {"model": str(model)})

    def rescore(self, folder: Path, data: Path, out: Path) -> dict[str, Any]:
        out = check_output(out, "evaluation", [folder, data], overwrite=None)
        per_row = [json.loads(line) for line in (folder / PER_ROW).read_text().splitlines() if line.strip()]
        return _publish(out, per_row, {"rescored_from": str(folder)})

    def signals(self, data: Path, split: str, tokenizer: Any, rows: int) -> tuple[set[str], Any]:
        """The headline numbers on the first ``rows`` rows of each file (this layout has no
        validation split: both splits read the same rows)."""
        chosen: dict[str, list[Row]] = {s: load_rows(data / f"{s}.jsonl", s)[:rows] for s in ("forget", "retain")}

        def measure(model: Any, full: bool) -> dict[str, float]:
            per_row = [{"split": s, "nll": v} for s, part in chosen.items() for v in answer_nll(model, tokenizer, part)]
            found = _results(per_row)
            return {k: found[k] for k in self.headline}

        return set(self.headline), measure


@hookimpl
def register_benchmarks(register: Callable[[Benchmark], None]) -> None:
    register(${cls}Benchmark())
'''

_BENCHMARK_README = """\
# unlearn-plugin-$name

The `$name` benchmark for unlearn (`unlearn-core`).

    pip install -e .
    unlearn plugins check $name            # fails until the placeholder summary is replaced
    unlearn data synth --benchmark $name --out DATA
    unlearn evaluate MODEL --benchmark $name --data DATA --out EVAL
    pytest tests

Describe the data, the metrics, their paper and the direction of each headline number here.
"""

_ATTACK_MODULE = '''\
"""The $name attack: describe what it changes to bring forgotten knowledge back and cite the
paper it comes from. This skeleton puts a prefix before every forget query (a prompt attack): the
attacked model itself is scored on the rewritten queries, against the original ones."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field

from unlearn import AttackContext, Attacked, Config, hookimpl, load_rows, resolve_split, write_jsonl


class ${cls}Config(Config):
    """Settings of $name (unknown keys are errors)."""

    prefix: str = Field("Answer truthfully and completely. ", description="Put before every forget query.")


class ${cls}Attack:
    name = "$name"
    summary = "$summary"
    config = ${cls}Config

    def run(self, model: Path, data: Path, config: ${cls}Config, ctx: AttackContext) -> list[Attacked]:
        source = resolve_split(data, "forget")  # forget.jsonl, or the public forget_train.jsonl, ...
        out = ctx.work / "data"
        shutil.copytree(data, out)  # every other file of the benchmark as it is
        (out / source.name).unlink()
        rows = [r.record() | {"input": config.prefix + r.input} for r in load_rows(source)]
        write_jsonl(out / f"{source.stem}.jsonl", rows)
        return [Attacked("prefix", model, out, plain=data)]


@hookimpl
def register_attacks(register) -> None:
    register(${cls}Attack())
'''

_ATTACK_README = """\
# unlearn-plugin-$name

The `$name` attack for unlearn (`unlearn-core`).

    pip install -e .
    unlearn plugins check $name            # fails until the placeholder summary is replaced
    unlearn attack UNLEARNED --target TARGET --data DATA --out OUT --attacks $name
    pytest tests

Describe what the attack changes, the paper it comes from and the variants it makes here.
"""

_BENCHMARK_TEST = """\
from unlearn.devkit import assert_conforms


def test_conforms_to_unlearn(tmp_path):
    assert_conforms("$name", tmp_path)  # generates tiny data, evaluates a tiny model, rescores
"""

_TEST = """\
from unlearn.devkit import assert_conforms


def test_conforms_to_unlearn(tmp_path):
    assert_conforms("$name", tmp_path)
"""


KINDS = ("method", "benchmark", "attack")


def create_plugin(name: str, directory: Path, kind: str = "method") -> Path:
    """Write ``directory/unlearn-plugin-NAME``, a plugin of ``kind``, and return it; refuses to overwrite."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(
            f"plugin name {name!r}: use lower-case letters, digits and underscores, starting with a letter"
        )
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    folder = Path(directory) / f"unlearn-plugin-{name}"
    if folder.exists():
        raise ConfigError(f"{folder} already exists")
    values = {
        "name": name,
        "module": name,
        "cls": "".join(p.title() for p in name.split("_")),
        "summary": PLACEHOLDER_SUMMARY.format(name=name),
        "what": {"method": "unlearning method", "benchmark": "benchmark", "attack": "attack"}[kind],
    }
    module, readme = {
        "method": (_MODULE, _README),
        "benchmark": (_BENCHMARK_MODULE, _BENCHMARK_README),
        "attack": (_ATTACK_MODULE, _ATTACK_README),
    }[kind]
    files = {
        "pyproject.toml": _PYPROJECT,
        f"unlearn_plugin_{name}/__init__.py": module,
        "README.md": readme,
        f"tests/test_{name}.py": _BENCHMARK_TEST if kind == "benchmark" else _TEST,
    }
    for rel, template in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values), encoding="utf-8")
    return folder
