"""The plugin author's kit: tiny rows and models, hand-made logits and batches, the end-to-end NLL
check, the conformance checks, the plugin skeleton, and pytest fixtures (through the ``pytest11``
entry point, so any project with ``unlearn-core`` installed gets them).

In a plugin's own tests::

    from unlearn.devkit import assert_conforms

    def test_conforms(tmp_path):
        assert_conforms("myplugin", tmp_path)

``unlearn plugins check NAME`` runs the same checks from the command line.
"""

from .conformance import CheckResult, assert_conforms, check_method, check_plugin
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

__all__ = [
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
    "CheckResult",
    "check_method",
    "check_plugin",
    "assert_conforms",
]
