"""``unlearn tune``: Optuna studies over a method's settings (`study`), with search spaces the
config fields declare (`space`, ``unlearn.search``)."""

from .space import Dimension, declared, search_space
from .study import Study, TuneSettings, best_trial, prepare, run_workers, write_outputs

__all__ = [
    "Dimension",
    "declared",
    "search_space",
    "Study",
    "TuneSettings",
    "best_trial",
    "prepare",
    "run_workers",
    "write_outputs",
]
