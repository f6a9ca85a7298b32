"""Choosing which parameters train: the helpers parameter-selection hooks share."""

from __future__ import annotations

import re
from typing import Iterable

import torch

from .errors import ConfigError


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM (``model.model.layers`` for Llama/OLMo, ``transformer.h``
    for GPT-2 style): the ``ModuleList`` as long as ``config.num_hidden_layers``."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"cannot find the {count} decoder layers of {type(model).__name__}")


def layer_index(model: torch.nn.Module) -> dict[str, int]:
    """Parameter name -> the decoder layer it belongs to (parameters outside layers are absent)."""
    layers = decoder_layers(model)
    owner = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    return {name: owner[id(p)] for name, p in model.named_parameters() if id(p) in owner}


def train_only(model: torch.nn.Module, layers: Iterable[int] | None = None, pattern: str | None = None) -> list[str]:
    """Freeze everything but the parameters in ``layers`` (all if None) whose name matches
    ``pattern`` (any if None); returns the names left trainable, and refuses an empty choice."""
    wanted = set(layers) if layers is not None else None
    index = layer_index(model)
    regex = re.compile(pattern) if pattern else None
    chosen = []
    for name, param in model.named_parameters():
        in_layer = name in index and (wanted is None or index[name] in wanted)
        keep = in_layer and (regex is None or regex.search(name) is not None)
        param.requires_grad_(keep)
        if keep:
            chosen.append(name)
    if not chosen:
        raise ConfigError(
            f"no parameter matches layers {sorted(wanted) if wanted is not None else 'all'} and pattern {pattern!r} "
            f"(the model has {len(decoder_layers(model))} decoder layers)"
        )
    return chosen
