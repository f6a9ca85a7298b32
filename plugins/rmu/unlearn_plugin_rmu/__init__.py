"""RMU (Representation Misdirection for Unlearning): push the forget set's hidden states at one
layer towards a fixed random direction, keep the retain set's where the frozen model had them,
training only a few MLP weights below that layer.

Loss (Li et al. 2024, "The WMDP Benchmark", arXiv:2403.03218)::

    MSE(h_theta(F), c * u) + alpha * MSE(h_theta(R), h_frozen(R))

at decoder layer ``layer``, over the tokens of each sequence (prompt and answer), with ``u`` a
fixed random unit vector; only ``pattern`` parameters of layers ``layer - layers_below .. layer``
train. WMDP: layer 7, alpha 100, c 20, lr 5e-5.

``adaptive = true`` is Mr. Snuffleupagus's SemEval-2025 variant: one ``u`` per task and
``c = adaptive_scale * mean norm of the frozen model's layer activations`` on that task's
forget rows (scale 5 for 7B, 3 for 1B; alpha 900; layers 24-26 ``mlp.down_proj``, hook at 26 on
7B, 12-14 on 1B).
"""

from __future__ import annotations

import zlib

import torch
from pydantic import Field

from unlearn import (
    Config,
    ConfigError,
    LossContext,
    LossOutput,
    PairCollator,
    Register,
    decoder_layers,
    hookimpl,
    search,
    train_only,
)


class RMUConfig(Config):
    """Settings of RMU; defaults are WMDP's, scaled to the depth of the model."""

    layer: int | None = Field(
        None,
        description="Decoder layer of the steering, from 0; negative counts from the last (-1: the last); "
        "None: 13/16 of the depth, i.e. 26 of 32 and 13 of 16.",
    )
    layers_below: int = Field(2, ge=0, description="Also train the layers this far below `layer` (WMDP: 2).")
    pattern: str = Field(r"mlp\.down_proj", description="Regex of the parameter names that train in those layers.")
    steering_coeff: float = Field(
        20.0,
        gt=0,
        description="c, the norm of the forget target c*u (WMDP: 20).",
        json_schema_extra=search(1, 100, log=True),
    )
    alpha: float = Field(
        100.0,
        ge=0,
        description="Weight of the retain representation loss (WMDP: 100; adaptive: 900).",
        json_schema_extra=search(1, 1000, log=True),
    )
    adaptive: bool = Field(False, description="One u per task, c from the activation norms (Mr. Snuffleupagus).")
    adaptive_scale: float = Field(5.0, gt=0, description="c = scale * mean activation norm (7B: 5, 1B: 3).")
    seed: int = Field(0, description="Seed of the random direction(s) u.")


def steering_layer(config: RMUConfig, model: torch.nn.Module) -> int:
    """The steering layer's index from 0; a negative ``layer`` counts from the last (-1: the last)."""
    count = len(decoder_layers(getattr(model, "module", model)))
    if config.layer is None:
        return min(count - 1, count * 13 // 16)
    layer = config.layer + count if config.layer < 0 else config.layer
    if not 0 <= layer < count:
        raise ConfigError(
            f"config.rmu.layer = {config.layer}: the model has {count} decoder layers (0..{count - 1}, or -1..-{count})"
        )
    return layer


def unit_vector(size: int, seed: int, task: str) -> torch.Tensor:
    """A fixed random unit vector per (seed, task): uniform in [0, 1), then normalised, as WMDP."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{task}".encode()))
    u = torch.rand(size, generator=generator)
    return u / u.norm()


def _masked_mse(states: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_token = (states.float() - target.float()).pow(2).mean(-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def _coefficients(config: RMUConfig, ctx: LossContext, layer: int) -> dict[str, float]:
    """Per-task c, computed once per run from the frozen model's forget activations."""
    state = ctx.run.state if ctx.run is not None else {}
    if "rmu_coefficients" not in state:
        norms: dict[str, list[float]] = {}
        collate = PairCollator(0)
        forget = ctx.run.forget if ctx.run is not None else []
        for start in range(0, len(forget), 16):
            batch = collate.pad(list(enumerate(forget[start : start + 16])))
            states = ctx.reference.hidden_states(
                {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, layer
            )
            for row, task in enumerate(batch["task"]):
                n = int(batch["attention_mask"][row].sum())
                norms.setdefault(task, []).append(float(states[row, :n].norm(dim=-1).mean()))
        state["rmu_coefficients"] = {t: config.adaptive_scale * sum(v) / len(v) for t, v in norms.items()}
    return state["rmu_coefficients"]


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "rmu",
        config=RMUConfig,
        kind="loss",
        uses_retain=True,
        summary="RMU: misdirect forget activations at one layer, train a few MLP weights "
        "(WMDP; adaptive SemEval variant)",
    )


@hookimpl
def select_parameters(method: str, config: RMUConfig, model: torch.nn.Module, run: object) -> None:
    layer = steering_layer(config, model)
    train_only(model, layers=range(max(0, layer - config.layers_below), layer + 1), pattern=config.pattern)


@hookimpl
def compute_loss(method: str, config: RMUConfig, ctx: LossContext) -> LossOutput:
    layer = steering_layer(config, ctx.model)
    forget = ctx.batch["forget"]
    states = ctx.hidden_states("forget", layer)
    size = states.shape[-1]
    if config.adaptive:
        coeffs = _coefficients(config, ctx, layer)
        targets = torch.stack(
            [coeffs.get(t, config.steering_coeff) * unit_vector(size, config.seed, t) for t in forget["task"]]
        )
    else:
        targets = (config.steering_coeff * unit_vector(size, config.seed, "")).expand(len(states), -1)
    targets = targets.to(states.device)[:, None, :].expand_as(states)
    forget_loss = _masked_mse(states, targets, forget["attention_mask"].float())
    retain_states = ctx.hidden_states("retain", layer)
    retain_loss = _masked_mse(
        retain_states, ctx.reference_hidden_states("retain", layer), ctx.batch["retain"]["attention_mask"].float()
    )
    return LossOutput(forget_loss + config.alpha * retain_loss, {"forget_mse": forget_loss, "retain_mse": retain_loss})
