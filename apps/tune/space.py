"""Search spaces: the ranges config fields declare with ``unlearn.search`` (the trainer's and each
chosen method's), checked against the fields' own bounds, plus the user's overrides."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from unlearn import ConfigError
from unlearn.engine import PluginHost, TrainerSettings


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``path`` as in ``--set`` (``trainer.learning_rate``,
    ``config.npo.beta``), drawn from ``low``..``high`` (``integer``, ``log``, ``step``) or from ``choices``."""

    path: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    integer: bool = False

    def suggest(self, trial: Any) -> Any:
        """Draw this setting for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.path, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.path, self.low, self.high, log=self.log, step=self.step)

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        scale = ", log" if self.log else f", step {self.step:g}" if self.step else ""
        return f"{self.low:g}..{self.high:g}{scale}{' (int)' if self.integer else ''}"


def check(path: str, spec: Any, config: type, field: str) -> Dimension:
    """A declared or given range as a :class:`Dimension`; anything malformed, or a bound the field
    itself refuses, is a ``ConfigError`` naming ``path``."""
    where = f"search space of {path}"
    if field not in config.model_fields:
        raise ConfigError(f"{where}: {config.__name__} has no field {field!r}")
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict) or not (set(spec) <= {"low", "high", "log", "step", "choices"}):
        raise ConfigError(f"{where}: give {{low, high[, log][, step]}} or a list of choices, not {spec!r}")

    def valid(value: Any, what: str) -> Any:
        try:
            return getattr(config.model_validate({field: value}), field)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ConfigError(f"{where}: {what} {value!r} is not a valid {field} ({reason})") from None

    if spec.get("choices") is not None:
        return _choices(path, spec["choices"], valid)
    return _range(path, spec, field, valid)


def _choices(path: str, choices: Any, valid: Any) -> Dimension:
    if not isinstance(choices, list | tuple) or not choices:
        raise ConfigError(f"search space of {path}: choices must be a non-empty list")
    for value in choices:
        valid(value, "choice")
    return Dimension(path, choices=tuple(choices))


def _range(path: str, spec: dict[str, Any], field: str, valid: Any) -> Dimension:
    where = f"search space of {path}"
    low, high, log, step = spec.get("low"), spec.get("high"), bool(spec.get("log")), spec.get("step")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite number, got {value!r}")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    if step is not None and (log or not isinstance(step, int | float) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive number, and not with log")
    integer = isinstance(valid(low, "low"), int) and not isinstance(valid(low, "low"), bool)
    valid(high, "high")
    if integer and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: {field} is an integer; low and high must be integers")
    return Dimension(path, low=low, high=high, log=log, step=step, integer=integer)


def declared(config: type, prefix: str) -> dict[str, Dimension]:
    """The ranges the fields of ``config`` declare (``json_schema_extra=unlearn.search(...)``)."""
    found = {}
    for name, info in config.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "search" in extra:
            found[f"{prefix}.{name}"] = check(f"{prefix}.{name}", extra["search"], config, name)
    return found


def search_space(host: PluginHost, methods: list[str], given: dict[str, Any]) -> dict[str, Dimension]:
    """The space of a study of ``methods`` (the loss method and its --with methods): the trainer's
    and each method's declared ranges, then ``given`` (path -> range, or ``false`` to keep the
    base config's value instead of searching it)."""
    configs = {"trainer": TrainerSettings} | {f"config.{m}": host.methods[m].config for m in methods}
    space: dict[str, Dimension] = {}
    for prefix, config in configs.items():
        space |= declared(config, prefix)
    for path, spec in given.items():
        prefix, _, field = path.rpartition(".")
        if prefix not in configs:
            raise ConfigError(f"search space of {path}: choose trainer.FIELD or config.METHOD.FIELD of {methods}")
        if spec is False:
            space.pop(path, None)
        else:
            space[path] = check(path, spec, configs[prefix], field)
    if not space:
        raise ConfigError("the search space is empty: no field of these methods declares a range; give --space")
    return space
