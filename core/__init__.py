"""unlearn: a plugin-based registry and runner for LLM unlearning methods.

This is the published API: everything a plugin or an application may use is named in
``__all__`` and importable from ``unlearn`` itself; the modules behind it may change. Plugin
authors start with ``unlearn/hookspecs.py`` and CONTRIBUTING.md.
"""

from importlib.metadata import PackageNotFoundError, version

from .alternates import REFUSALS_FILE, choose_alternates, encode_alternates, read_refusals, rewrite
from .atomic import check_output, mark, publish, write_json, write_jsonl, write_text
from .config import (
    AlternateSettings,
    Config,
    ReferenceSettings,
    RunConfig,
    TrainerSettings,
    apply_override,
    apply_sets,
    build_config,
    describe_error,
    parse_value,
    read_config_file,
    search,
)
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
    pad_token_id,
    read_records,
    resolve_split,
)
from .errors import ConfigError, DataError, NonFiniteLossError, PluginError, RunError, UnlearnError
from .hookspecs import Benchmark, Direction, Item, Kind, Register, hookimpl
from .host import Method, PluginHost, PluginInfo, command_group, get_host
from .losses import (
    LossOutput,
    answer_positions,
    answer_probe,
    kl_divergence,
    kl_from_logprobs,
    layer_output,
    nll_from_logprobs,
    preference_loss,
    shift,
    token_logprobs,
    topk_kl_divergence,
)
from .monitor import Expression, Monitor
from .params import decoder_layers, embedding_parameters, layer_index, train_only
from .reference import ReferenceModel
from .runner import (
    CONFIG_FILE,
    REPORT_FILE,
    claim_device,
    free_port,
    resolve_device,
    run,
    run_identity,
    zero3_layer_sizes,
)

try:
    __version__ = version("unlearn-core")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    # writing a plugin: hooks, configs, contexts, loss helpers
    "hookimpl",
    "Register",
    "Kind",
    "Item",
    "Benchmark",
    "Direction",
    "Config",
    "LossContext",
    "LossOutput",
    "RunContext",
    "PostContext",
    "ReferenceModel",
    "token_logprobs",
    "nll_from_logprobs",
    "preference_loss",
    "answer_positions",
    "answer_probe",
    "kl_divergence",
    "kl_from_logprobs",
    "topk_kl_divergence",
    "shift",
    "layer_output",
    "IGNORE_INDEX",
    # parameter selection
    "decoder_layers",
    "layer_index",
    "embedding_parameters",
    "train_only",
    # data
    "Row",
    "Encoded",
    "encode",
    "load_rows",
    "read_records",
    "resolve_split",
    "pad_token_id",
    "PairCollator",
    "PairedDataset",
    # alternate answers (refusals, rewrites) for methods that learn one
    "AlternateSettings",
    "choose_alternates",
    "encode_alternates",
    "read_refusals",
    "rewrite",
    "REFUSALS_FILE",
    "RetainCycle",
    "ScheduledDataset",
    # errors
    "UnlearnError",
    "ConfigError",
    "DataError",
    "PluginError",
    "RunError",
    "NonFiniteLossError",
    # building on the core: host, configs, runs, recipes, writing results
    "PluginHost",
    "PluginInfo",
    "Method",
    "get_host",
    "command_group",
    "RunConfig",
    "TrainerSettings",
    "search",
    "Expression",
    "Monitor",
    "ReferenceSettings",
    "build_config",
    "read_config_file",
    "parse_value",
    "apply_override",
    "apply_sets",
    "describe_error",
    "run",
    "free_port",
    "resolve_device",
    "claim_device",
    "run_identity",
    "zero3_layer_sizes",
    "CONFIG_FILE",
    "REPORT_FILE",
    "write_text",
    "write_json",
    "write_jsonl",
    "publish",
    "check_output",
    "mark",
    "__version__",
]
