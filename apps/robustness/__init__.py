"""``unlearn attack``: the attack plugins run on an unlearned model (and the oracle), each variant
scored by the benchmark's own evaluation, with the recovery and the robust numbers
(`unlearn.robustness.battery`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn.engine import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__, dict.fromkeys(["run_attacks", "recovery", "worst", "number", "Context", "RESULT"], ".battery")
)

if TYPE_CHECKING:
    from .battery import RESULT, Context, number, recovery, run_attacks, worst
