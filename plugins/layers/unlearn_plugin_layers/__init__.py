"""Layer selection: train only chosen parameters, freeze the rest bit for bit.

Choose decoder layers by ``last`` k, ``first`` k or an inclusive ``layer_range`` [a, b], and/or
parameters by a name regex ``pattern`` (e.g. ``mlp\\.down_proj``). Embeddings stay frozen unless
``embeddings = true``. With no layer choice, every parameter but the embeddings is a candidate,
so ``{}`` alone means "freeze the embeddings". Frozen parameters get no gradient and are not
given to the optimiser, so weight decay cannot move them either.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from unlearn import Config, ConfigError, Register, RunContext, decoder_layers, hookimpl, train_only


class LayersConfig(Config):
    """Which parameters train. At most one of ``last``, ``first``, ``layer_range``."""

    last: int | None = Field(None, ge=1, description="Train the last k decoder layers (AILS-NTUA: 8).")
    first: int | None = Field(None, ge=1, description="Train the first k decoder layers (SHA256: 6, MLPs only).")
    layer_range: tuple[int, int] | None = Field(None, description="Train decoder layers a..b, both included.")
    pattern: str | None = Field(None, description=r"Regex searched in parameter names, e.g. 'mlp\.down_proj'.")
    embeddings: bool = Field(
        False, description="Let the input/output embeddings train too (only without a layer choice)."
    )

    @model_validator(mode="after")
    def _one_layer_choice(self) -> LayersConfig:
        given = [k for k in ("last", "first", "layer_range") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"choose layers one way, not {' and '.join(given)}")
        if self.layer_range is not None and not 0 <= self.layer_range[0] <= self.layer_range[1]:
            raise ValueError(f"layer_range must be [a, b] with 0 <= a <= b, got {list(self.layer_range)}")
        return self


def chosen_layers(config: LayersConfig, count: int) -> list[int] | None:
    """The decoder layers ``config`` selects in a model with ``count`` layers (None: no layer choice)."""
    if config.last is not None:
        return list(range(max(0, count - config.last), count))
    if config.first is not None:
        return list(range(min(config.first, count)))
    if config.layer_range is not None:
        start, end = config.layer_range
        if end >= count:
            raise ConfigError(
                f"config.layers.layer_range: layer {end} does not exist (the model has {count} layers, 0..{count - 1})"
            )
        return list(range(start, end + 1))
    return None


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "layers",
        config=LayersConfig,
        kind="parameters",
        summary="Train only the last/first k layers, a layer range or a name regex; embeddings frozen",
    )


@hookimpl
def select_parameters(method: str, config: LayersConfig, model: torch.nn.Module, run: RunContext) -> None:
    layers = chosen_layers(config, len(decoder_layers(model)))
    train_only(model, layers=layers, pattern=config.pattern, embeddings=config.embeddings)
