"""What the applications ask of a benchmark (``unlearn.Benchmark``): its optional attributes,
with the defaults a benchmark without them gets, and which options its ``evaluate`` and
``rescore`` take (their signatures say)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from unlearn.hookspecs import Benchmark

GATE = 0.75  # the utility gate where none is given: a fraction of the target's (or the input model's) utility


def columns(bench: Benchmark) -> dict[str, str]:
    """The leaderboard's columns, name -> results key; the first ranks. Default: the headline keys."""
    return dict(getattr(bench, "columns", None) or {k: k for k in bench.headline})


def ranked_by(bench: Benchmark) -> tuple[str, str, str]:
    """``(column, results key, direction)`` of the number entrants are ranked by."""
    column, key = next(iter(columns(bench).items()))
    return column, key, bench.headline[key]


def knowledge(bench: Benchmark) -> dict[str, str]:
    """The numbers that show what a model still knows of the forget set, name -> results key (a
    dotted path into nested results). Default: the headline keys but the utility number."""
    found = getattr(bench, "knowledge", None)
    return dict(found) if found else {k: k for k in bench.headline if k != getattr(bench, "utility", None)}


def evaluates_rows(bench: Benchmark) -> bool:
    """Whether ``evaluate``'s ``data`` is a folder of the core's forget/retain rows."""
    return bool(getattr(bench, "evaluates_rows", False))


def required(bench: Benchmark) -> tuple[str, ...]:
    """The ``evaluate`` options a competition must give."""
    return tuple(getattr(bench, "required", ()) or ())


def takes(method: Callable[..., Any], option: str) -> bool:
    """Whether ``method`` names ``option`` (or takes any keyword)."""
    params = inspect.signature(method).parameters
    return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def options_for(method: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``method`` names (all of them if it takes any keyword)."""
    return {k: v for k, v in options.items() if takes(method, k)}


def untaken(
    method: Callable[..., Any], given: dict[str, Any], installed: dict[str, Benchmark]
) -> tuple[str, list[str]] | None:
    """The first option of ``given`` (a user's) that ``method`` (a benchmark's ``evaluate`` or
    ``rescore``) does not name, with the installed benchmarks whose same method names it (not
    merely ``**options``); None when it takes them all."""
    for option in given:
        if not takes(method, option):
            what = method.__name__
            return option, [n for n, b in installed.items() if option in inspect.signature(getattr(b, what)).parameters]
    return None


def tuning(bench: Benchmark) -> tuple[str, str, list[str]]:
    """``unlearn tune``'s defaults, ``(objective, direction, constraints)``: the benchmark's declared
    ``objective`` and ``constraints`` (expressions of its signals), else its first headline number
    in its direction (``abs(x)``, minimised, for ``zero``) and its ``utility`` number at least
    `GATE` x its initial value."""
    first = next(iter(bench.headline))
    objective = getattr(bench, "objective", None) or (f"abs({first})" if bench.headline[first] == "zero" else first)
    direction = "maximize" if bench.headline.get(objective, "higher") == "higher" else "minimize"
    utility = getattr(bench, "utility", None)
    constraints = getattr(bench, "constraints", None)
    if constraints is None:
        constraints = [f"{utility} >= {GATE} * initial_{utility}"] if utility else []
    return objective, direction, list(constraints)
