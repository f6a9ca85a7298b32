"""Choosing which parameters train (the helpers parameter-selection hooks share), and running a
model for measurement (`eval_mode`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from .errors import ConfigError


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout) and without gradients inside the block; its own mode
    (training or not) is restored afterwards, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


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


def embedding_parameters(model: torch.nn.Module) -> set[int]:
    """``id`` of the input and output embedding weights (the same tensor when tied)."""
    found = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is not None:
            found.update(id(p) for p in module.parameters())
    return found


def train_only(
    model: torch.nn.Module, layers: Iterable[int] | None = None, pattern: str | None = None, embeddings: bool = False
) -> list[str]:
    """Freeze everything but the chosen parameters; returns the names left trainable.

    With ``layers``, only parameters inside those decoder layers are chosen; with None, every
    parameter (final norm included) except the embeddings unless ``embeddings``. ``pattern``
    (a regex searched in the parameter name) narrows either choice. An empty choice is refused.
    """
    wanted = set(layers) if layers is not None else None
    index = layer_index(model)
    regex = re.compile(pattern) if pattern else None
    frozen = set() if embeddings else embedding_parameters(model)
    chosen = []
    for name, param in model.named_parameters():
        if wanted is None:
            keep = id(param) not in frozen
        else:
            keep = name in index and index[name] in wanted
        keep = keep and (regex is None or regex.search(name) is not None)
        param.requires_grad_(keep)
        if keep:
            chosen.append(name)
    if not chosen:
        raise ConfigError(
            f"no parameter matches layers {sorted(wanted) if wanted is not None else 'all'} and pattern {pattern!r} "
            f"(the model has {len(decoder_layers(model))} decoder layers)"
        )
    return chosen
