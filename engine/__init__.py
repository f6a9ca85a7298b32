"""unlearn.engine: what runs the plugins, for the applications (the CLI, organiser mode, the
evaluator, the benchmark tools) and for tests: the plugin host, the run settings and the runner
(a run as named stages), the trainer, the cached reference model, evaluation during training,
devices and DeepSpeed presets, alternate answers. It builds on the plugin API (``unlearn``),
never the other way round. Names load on first use, as in ``unlearn``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            ["PluginHost", "PluginInfo", "Method", "get_host", "host_loaded", "ENTRY_POINT_GROUP"], ".host"
        ),
        **dict.fromkeys(
            [
                "RunConfig",
                "TrainerSettings",
                "ReferenceSettings",
                "AlternateSettings",
                "build_config",
                "read_config_file",
                "parse_value",
                "apply_override",
                "apply_sets",
                "describe_error",
            ],
            ".settings",
        ),
        **dict.fromkeys(["run", "run_identity", "STAGES", "CONFIG_FILE", "REPORT_FILE"], ".runner"),
        **dict.fromkeys(["free_port", "resolve_device", "claim_device", "zero3_layer_sizes"], ".devices"),
        "CachedReference": ".reference_model",
        "benchmarks": ".benchmarks",  # the module: what the applications ask of a benchmark
        **dict.fromkeys(["Expression", "Monitor"], ".monitor"),
        **dict.fromkeys(
            ["choose_alternates", "encode_alternates", "read_refusals", "rewrite", "REFUSALS_FILE"], ".alternates"
        ),
        # parts of the plugin API's modules that only the applications use
        **dict.fromkeys(["UnlearnError", "PluginError", "NonFiniteLossError"], "unlearn.errors"),
        **dict.fromkeys(["mark"], "unlearn.atomic"),
        **dict.fromkeys(["pad_token_id"], "unlearn.data"),
        "eval_mode": "unlearn.params",
        "lazy_exports": "unlearn.lazy",
        **dict.fromkeys(["answer_probe", "kl_divergence", "kl_from_logprobs", "topk_kl_divergence"], "unlearn.losses"),
    },
)


if TYPE_CHECKING:  # what type checkers and editors see (the names above)
    from unlearn.atomic import mark
    from unlearn.data import pad_token_id
    from unlearn.errors import NonFiniteLossError, PluginError, UnlearnError
    from unlearn.lazy import lazy_exports
    from unlearn.losses import answer_probe, kl_divergence, kl_from_logprobs, topk_kl_divergence
    from unlearn.params import eval_mode

    from . import benchmarks
    from .alternates import REFUSALS_FILE, choose_alternates, encode_alternates, read_refusals, rewrite
    from .devices import claim_device, free_port, resolve_device, zero3_layer_sizes
    from .host import Method, PluginHost, PluginInfo, get_host
    from .monitor import Expression, Monitor
    from .reference_model import CachedReference
    from .runner import CONFIG_FILE, REPORT_FILE, STAGES, run, run_identity
    from .settings import (
        AlternateSettings,
        ReferenceSettings,
        RunConfig,
        TrainerSettings,
        apply_override,
        apply_sets,
        build_config,
        describe_error,
        parse_value,
        read_config_file,
    )
