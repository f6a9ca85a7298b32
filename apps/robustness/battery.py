"""``unlearn attack``: does the forgetting survive someone trying to undo it?

Each attack plugin (`unlearn.hookspecs.Attack`) turns the unlearned model into variants (a
quantized copy, a relearned copy, rephrased queries); the benchmark's own ``evaluate`` scores
every variant, and the unattacked model and the target on the same data. For each number that
shows what a model knows of the forget set (the benchmark's ``knowledge``), the **recovery** is

    recovery = (attacked - unlearned) / (target - unlearned), clipped to [0, 1]

(0: the attack brought nothing back; 1: it brought back everything unlearning removed; undefined
where unlearning did not move the number), in the spirit of the relearning and quantization
studies (Lynch et al. 2024, arXiv 2402.16835; Zhang et al. 2024, arXiv 2410.16454). A variant's
recovery is the mean over those numbers, an attack's the worst (largest) over its variants, and
the **robust** value of each headline number is its worst value over every variant run (in the
number's direction). With ``reference`` (the model retrained without the forget set) the same
attacks run on it too: its recovery is how much an attack "recovers" from a model that never
knew, the floor a method is compared with.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from unlearn import Attacked, ConfigError, check_output, publish, write_json, write_text
from unlearn.engine import (
    PluginHost,
    UnlearnError,
    benchmarks,
    claim_device,
    describe_error,
    get_host,
    mark,
    resolve_device,
)

RESULT = "attack_results.json"
_TINY = 1e-9  # unlearning "did not move" a number that changed by less


@dataclass
class Context:
    """The `unlearn.AttackContext` an attack runs with (here and in the plugin kit's check)."""

    seed: int
    device: str
    work: Path
    benchmark: Any


def number(results: dict[str, Any], key: str) -> float | None:
    """The number at ``key`` of ``results`` (a dotted path reaches into nested results), or None."""
    found: Any = results
    for part in key.split(".") if key not in results else [key]:
        found = found.get(part) if isinstance(found, dict) else None
    return float(found) if isinstance(found, int | float) and not isinstance(found, bool) else None


def recovery(attacked: float | None, unlearned: float | None, target: float | None) -> float | None:
    """``(attacked - unlearned) / (target - unlearned)`` clipped to [0, 1]; None where a number is
    missing or unlearning did not move it (``|target - unlearned| <= 1e-9``)."""
    if attacked is None or unlearned is None or target is None or abs(target - unlearned) <= _TINY:
        return None
    return min(1.0, max(0.0, (attacked - unlearned) / (target - unlearned)))


def worst(values: list[float], direction: str) -> float:
    """The worst of ``values`` for a number that is better ``higher``, ``lower`` or nearest ``zero``."""
    if direction == "higher":
        return min(values)
    if direction == "lower":
        return max(values)
    return max(values, key=abs)


def run_attacks(
    model: Path,
    data: Path,
    out: Path,
    target: Path,
    *,
    benchmark: str = "lume",
    attacks: list[str] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    reference: Path | None = None,
    seed: int = 0,
    device: str = "auto",
    keep_models: bool = False,
    options: dict[str, Any] | None = None,
    host: PluginHost | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``attacks`` (default: every installed one) on ``model`` and, with ``reference``, on the
    oracle; score every variant with ``benchmark`` against ``target`` (the model before
    unlearning); write ``attack_results.json``, ``report.md`` and ``recovery.png`` into ``out``
    (resumed: evaluations already made are reused). Returns the results."""
    host = host or get_host()
    bench = host.benchmark(benchmark)
    chosen = {name: host.attack(name) for name in (attacks or sorted(host.attacks))}
    if not chosen:
        raise ConfigError("no attack is installed; try `unlearn plugins --available`")
    configs = _configs(chosen, settings or {})
    claim_device(device)
    out = check_output(out, "attack", [model, data, target, reference], overwrite=None)
    staging = out.parent / f".{out.name}.partial"
    staging.mkdir(parents=True, exist_ok=True)
    mark(staging, "attack")
    scorer = _Scorer(bench, staging / "evaluations", {**(options or {}), "device": device}, say)
    subjects = {"unlearned": model, **({"oracle": reference} if reference is not None else {})}
    results: dict[str, Any] = {"benchmark": benchmark, "model": str(model), "target": str(target)}
    settings_used = {name: config.model_dump(mode="json") for name, config in configs.items()}
    results |= {"reference": str(reference) if reference else None, "seed": seed, "settings": settings_used}
    place = str(resolve_device(device))
    for subject, path in subjects.items():
        results[subject] = {}
        for name, attack in chosen.items():
            ctx = Context(seed, place, staging / "work" / subject / name, bench)
            results[subject][name] = _attack(attack, configs[name], path, data, target, ctx, scorer, subject)
    results["robust"] = _robust(bench, results["unlearned"], scorer.plain(model, data))
    if not keep_models:
        shutil.rmtree(staging / "work", ignore_errors=True)
    write_json(staging / RESULT, results)
    from .report import write_report

    write_report(staging, results, bench)
    publish(staging, out, "attack")
    return results


def _configs(chosen: dict[str, Any], settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each chosen attack's validated settings (``attack.NAME.field`` named in an error)."""
    stray = sorted(set(settings) - set(chosen))
    if stray:
        raise ConfigError(f"attack.{stray[0]}: settings for an attack that is not run (running {sorted(chosen)})")
    found = {}
    for name, attack in chosen.items():
        try:
            found[name] = attack.config.model_validate(settings.get(name, {}))
        except ValidationError as exc:
            raise ConfigError(describe_error(exc, prefix=f"attack.{name}")) from None
    return found


class _Scorer:
    """The benchmark's evaluations of the attacked variants and of the unattacked models, each
    made once (kept in ``folder``, so a re-run reuses them)."""

    def __init__(self, bench: Any, folder: Path, options: dict[str, Any], say: Callable[[str], None]) -> None:
        self.bench, self.folder, self.say = bench, folder, say
        self.options = benchmarks.options_for(bench.evaluate, {**options, "progress": False})

    def evaluate(self, model: Path, data: Path, name: str) -> dict[str, Any]:
        from unlearn.evaluator import RESULTS

        where = self.folder / name
        if not (where / RESULTS).is_file():
            self.say(f"evaluating {name}")
            where.parent.mkdir(parents=True, exist_ok=True)
            self.bench.evaluate(model, data, where, **self.options)
        return json.loads((where / RESULTS).read_text())

    def plain(self, model: Path, data: Path) -> dict[str, Any]:
        """``model`` unattacked on ``data`` (keyed by both paths)."""
        key = hashlib.sha256(f"{Path(model).resolve()}\0{Path(data).resolve()}".encode()).hexdigest()[:16]
        return self.evaluate(model, data, f"plain/{Path(model).name}-{key}")


def _attack(
    attack: Any, config: Any, model: Path, data: Path, target: Path, ctx: Context, scorer: _Scorer, subject: str
) -> dict[str, Any]:
    """One attack on one model: its variants' numbers and recoveries, or why it was skipped."""
    shutil.rmtree(ctx.work, ignore_errors=True)
    ctx.work.mkdir(parents=True)
    try:
        variants = attack.run(model, data, config, ctx)
    except UnlearnError as exc:
        scorer.say(f"{attack.name} on the {subject} model: skipped: {exc}")
        return {"skipped": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a third party's attack fails alone, with its traceback kept
        write_text(scorer.folder.parent / f"{subject}-{attack.name}-error.txt", traceback.format_exc())
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        scorer.say(f"{attack.name} on the {subject} model: failed: {last}")
        return {"failed": last}
    keys = benchmarks.knowledge(scorer.bench)
    rows = []
    for variant in variants:
        if not isinstance(variant, Attacked):
            raise ConfigError(f"attack {attack.name!r}: run must return unlearn.Attacked variants")
        plain = variant.plain or variant.data
        found = scorer.evaluate(variant.model, variant.data, f"{subject}/{attack.name}/{variant.label}")
        before, ideal = scorer.plain(model, plain), scorer.plain(target, plain)
        numbers = {
            k: {"attacked": number(found, key), "unlearned": number(before, key), "target": number(ideal, key)}
            for k, key in keys.items()
        }
        for n in numbers.values():
            n["recovery"] = recovery(n["attacked"], n["unlearned"], n["target"])
        defined = [n["recovery"] for n in numbers.values() if n["recovery"] is not None]
        headline = {k: number(found, k) for k in scorer.bench.headline}
        row = {"label": variant.label, "x": variant.x, "knowledge": numbers, "headline": headline}
        rows.append({**row, "recovery": sum(defined) / len(defined) if defined else None})
    known = [r["recovery"] for r in rows if r["recovery"] is not None]
    return {"variants": rows, "recovery": max(known) if known else None}


def _robust(bench: Any, attacked: dict[str, Any], surface: dict[str, Any]) -> dict[str, Any]:
    """The worst value of each headline number over the surface evaluation and every variant of
    every attack run on the unlearned model, and the worst recovery."""
    robust: dict[str, Any] = {}
    variants = [v for a in attacked.values() for v in a.get("variants", [])]
    for key, direction in bench.headline.items():
        values = [v for v in [number(surface, key), *(r["headline"][key] for r in variants)] if v is not None]
        robust[key] = worst(values, direction) if values else None
    found = [a["recovery"] for a in attacked.values() if a.get("recovery") is not None]
    robust["recovery"] = max(found) if found else None
    robust["surface"] = {key: number(surface, key) for key in bench.headline}
    return robust
