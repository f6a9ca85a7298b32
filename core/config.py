"""``Config``, the base of every method's settings (and of the run's, ``unlearn.engine.RunConfig``),
and ``search``, a field's tuning range. Unknown keys and bad values are errors that name the field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    """Base of every config: a method's settings, the trainer's, a run's. Unknown keys and NaN or
    infinite numbers are errors, so a typo in a config file is reported instead of silently ignored;
    assignments are validated.

    A method's config subclasses it, with each field's default taken from the paper and a
    ``description``::

        class NPOConfig(unlearn.Config):
            beta: float = Field(0.1, gt=0, description="Inverse temperature (Zhang et al. 2024).")
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def search(
    low: float | None = None,
    high: float | None = None,
    *,
    log: bool = False,
    step: float | None = None,
    choices: list[Any] | None = None,
) -> dict[str, Any]:
    """A field's tuning range for `unlearn tune`, as pydantic field metadata::

        beta: float = Field(0.1, gt=0, json_schema_extra=unlearn.search(0.01, 1.0, log=True))
        variant: str = Field("a", json_schema_extra=unlearn.search(choices=["a", "b"]))

    ``low``..``high`` both included (an int field draws ints; ``log``: uniform in log space;
    ``step``: a grid), or ``choices``. `unlearn tune` checks it against the field's own bounds."""
    spec = {"choices": choices} if choices is not None else {"low": low, "high": high, "log": log, "step": step}
    return {"search": spec}
