"""``unlearn tune``: Optuna studies over a method's settings (`study`), with search spaces the
config fields declare (`space`, ``unlearn.search``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn.engine import lazy_exports

# names load on first use (unlearn.engine.lazy_exports), so importing the package costs nothing
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["Dimension", "declared", "search_space"], ".space"),
        **dict.fromkeys(["Study", "TuneSettings", "best_trial", "prepare", "run_workers", "write_outputs"], ".study"),
    },
)

if TYPE_CHECKING:  # what type checkers and editors see
    from .space import Dimension, declared, search_space
    from .study import Study, TuneSettings, best_trial, prepare, run_workers, write_outputs
