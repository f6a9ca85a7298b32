"""The engine's side of ``unlearn.RunContext``: one run as the hooks see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn.config import Config
from unlearn.data import Encoded

from .reference_model import CachedReference
from .settings import RunConfig


@dataclass
class RunState:
    """One run as hooks see it (``run`` in ``select_parameters`` and ``post_process``, ``ctx.run``
    in ``compute_loss``): implements ``unlearn.RunContext`` and so ``unlearn.PostContext``."""

    config: RunConfig  # the resolved run config
    method_configs: dict[str, Config]  # each chosen method's validated config, by name
    tokenizer: Any
    work_dir: Path  # the run's staging folder
    forget: list[Encoded]  # the tokenised forget rows
    retain: list[Encoded] | None  # the tokenised retain rows; None when the loss does not use them
    is_main_process: bool = True
    state: dict[str, Any] = field(default_factory=dict)  # what a method computes once (RMU's coefficients)
    reference: CachedReference | None = None  # the frozen input model, which select_parameters may share
    inputs: list[Path] = field(default_factory=list)  # for post_process: [output_dir], the model just trained
    base_model: Path = field(init=False)  # the input model, config.model

    def __post_init__(self) -> None:
        self.base_model = Path(self.config.model)
