"""The plugin author's kit: tiny rows and models, hand-made logits and batches, the end-to-end NLL
check, the conformance checks, the plugin skeleton, and pytest fixtures (through the ``pytest11``
entry point, so any project with ``unlearn-core`` installed gets them).

In a plugin's own tests::

    from unlearn.devkit import assert_conforms

    def test_conforms(tmp_path):
        assert_conforms("myplugin", tmp_path)

``unlearn plugins check NAME`` runs the same checks from the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn.engine import lazy_exports

# names load on first use (unlearn.engine.lazy_exports), so importing the package costs nothing
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            [
                "FORGET_ROWS",
                "RETAIN_ROWS",
                "write_rows",
                "write_tiny_data",
                "build_tiny_model",
                "cached_tiny_model",
                "FixedLogits",
                "hand_batch",
                "label_logits",
                "NLLChange",
                "nll_change",
            ],
            ".tiny",
        ),
        **dict.fromkeys(
            ["CheckResult", "check_method", "check_benchmark", "check_plugin", "assert_conforms"], ".conformance"
        ),
    },
)

if TYPE_CHECKING:  # what type checkers and editors see
    from .conformance import CheckResult, assert_conforms, check_benchmark, check_method, check_plugin
    from .tiny import (
        FORGET_ROWS,
        RETAIN_ROWS,
        FixedLogits,
        NLLChange,
        build_tiny_model,
        cached_tiny_model,
        hand_batch,
        label_logits,
        nll_change,
        write_rows,
        write_tiny_data,
    )
