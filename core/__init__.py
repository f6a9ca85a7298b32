"""unlearn: a plugin-based registry and runner for LLM unlearning methods.

This package is the plugin API: everything a plugin uses is named in ``__all__`` and importable
from ``unlearn`` itself (the modules behind it may change). Plugin authors start with
``core/hookspecs.py`` (``unlearn.hookspecs``) and CONTRIBUTING.md. The engine that runs plugins
(the runner, trainer, plugin host, devices) is ``unlearn.engine``, for the applications.

Names load on first use, so ``import unlearn`` costs nothing (no torch until a name needs it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from .lazy import lazy_exports

# name -> the module that defines it
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["hookimpl", "Register", "Benchmark", "Attack", "command_group"], ".hookspecs"),
        **dict.fromkeys(["Attacked", "AttackContext"], ".attacks"),
        **dict.fromkeys(["Config", "search"], ".config"),
        **dict.fromkeys(["LossContext", "RunContext", "PostContext"], ".context"),
        **dict.fromkeys(
            [
                "LossOutput",
                "token_logprobs",
                "nll_from_logprobs",
                "preference_loss",
                "answer_positions",
                "shift",
                "layer_output",
            ],
            ".losses",
        ),
        **dict.fromkeys(["decoder_layers", "train_only"], ".params"),
        **dict.fromkeys(
            [
                "IGNORE_INDEX",
                "Row",
                "Encoded",
                "encode",
                "load_rows",
                "read_records",
                "resolve_split",
                "PairCollator",
                "PairedDataset",
                "RetainCycle",
                "ScheduledDataset",
            ],
            ".data",
        ),
        **dict.fromkeys(["ConfigError", "DataError", "RunError"], ".errors"),
        **dict.fromkeys(["write_text", "write_json", "write_jsonl", "check_output", "publish"], ".atomic"),
    },
)

try:
    __version__ = version("unlearn-core")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"


if TYPE_CHECKING:  # what type checkers and editors see (the names above)
    from .atomic import check_output, publish, write_json, write_jsonl, write_text
    from .attacks import AttackContext, Attacked
    from .config import Config, search
    from .context import LossContext, PostContext, RunContext
    from .data import (
        IGNORE_INDEX,
        Encoded,
        PairCollator,
        PairedDataset,
        RetainCycle,
        Row,
        ScheduledDataset,
        encode,
        load_rows,
        read_records,
        resolve_split,
    )
    from .errors import ConfigError, DataError, RunError
    from .hookspecs import Attack, Benchmark, Register, command_group, hookimpl
    from .losses import (
        LossOutput,
        answer_positions,
        layer_output,
        nll_from_logprobs,
        preference_loss,
        shift,
        token_logprobs,
    )
    from .params import decoder_layers, train_only
