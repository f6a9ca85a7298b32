"""What an attack plugin works with (`unlearn.hookspecs.Attack`): the context it is given and the
attacked variants it returns, which the benchmark's own evaluation then scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Attacked:
    """One variant an attack made, for the benchmark to score: ``model`` evaluated on ``data``.

    :param label: names the variant in reports, e.g. ``int4`` or ``steps=10``.
    :param model: the model folder to evaluate: one the attack wrote under ``ctx.work``, or the
        attacked model itself (an attack on the queries).
    :param data: the benchmark folder to evaluate on: the benchmark's own, or a copy the attack
        wrote under ``ctx.work`` (rephrased queries, the held-out rows).
    :param plain: the folder the unattacked models are scored on to compare with (default
        ``data``): the original queries where ``data`` rephrases them.
    :param x: the variant's place on a curve (relearning steps), or None.
    """

    label: str
    model: Path
    data: Path
    plain: Path | None = None
    x: float | None = None


class AttackContext(Protocol):
    """What an attack is given besides the model and the data (the application implements it).

    :ivar seed: the seed every random choice of the attack derives from.
    :ivar device: where to compute: ``cpu`` or ``cuda:N``.
    :ivar work: a fresh folder of this attack's own for the models and data it writes (removed
        after scoring unless the user keeps the models).
    :ivar benchmark: the benchmark that scores the variants (`unlearn.Benchmark`), e.g. to ask
        whether it ``evaluates_rows``.
    """

    seed: int
    device: str
    work: Path
    benchmark: Any
