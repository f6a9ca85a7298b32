"""SHA256's SemEval-2025 Task 4 system: gradient difference with an adaptive retain multiplier,
training only the MLPs of the first decoder layers.

Loss (SHA256's system description, SemEval-2025 Task 4 task paper, arXiv:2504.02883)::

    -NLL(F) + m * NLL(R),   m = clip(round(0.3 * 6 ** dL + 0.8, 1), 1.2, 2.3)

The team did not publish ``dL``. Our choice: how far the retain NLL has drifted from the original
model's on the same retain batch, ``dL = NLL_theta(R) - NLL_ref(R)`` (cached reference
log-probs, no second forward of the frozen model after the first epoch), taken without gradient;
rounding to one decimal. At ``dL = 0`` the multiplier is 1.2 and it grows to 2.3 as the retain
set degrades, so retention pushes back harder exactly when it is being lost. SHA256 scored the
top task aggregate (0.964) but was disqualified for MMLU (0.275 < 0.371).
"""

from __future__ import annotations

import torch
from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, nll_from_logprobs, search, train_only


class SHA256Config(Config):
    """Settings of SHA256's adaptive gradient difference."""

    layers: list[int] = Field(
        default_factory=lambda: list(range(6)), description="Decoder layers whose MLPs train (SHA256: 0-5)."
    )
    pattern: str = Field(r"\.mlp\.", description="Regex of the parameter names that train within those layers.")
    min_multiplier: float = Field(1.2, gt=0)
    max_multiplier: float = Field(2.3, gt=0, json_schema_extra=search(1.5, 4))


def multiplier(drift: float, low: float = 1.2, high: float = 2.3) -> float:
    """``clip(round(0.3 * 6 ** dL + 0.8, 1), low, high)``."""
    return min(max(round(0.3 * 6.0**drift + 0.8, 1), low), high)


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "sha256",
        config=SHA256Config,
        kind="loss",
        summary="GD with an adaptive retain multiplier on the first layers' MLPs (SHA256)",
        uses_retain=True,
    )


@hookimpl
def select_parameters(method: str, config: SHA256Config, model: torch.nn.Module, run: object) -> None:
    train_only(model, layers=config.layers, pattern=config.pattern)


@hookimpl
def compute_loss(method: str, config: SHA256Config, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")
    retain_logp, mask = ctx.token_logprobs("retain")
    retain_nll = nll_from_logprobs(retain_logp, mask)
    drift = float(retain_nll.detach() - nll_from_logprobs(ctx.reference_token_logprobs("retain"), mask))
    m = multiplier(drift, config.min_multiplier, config.max_multiplier)
    return LossOutput(
        -forget_nll + m * retain_nll,
        {"forget_nll": forget_nll, "retain_nll": retain_nll, "retain_drift": drift, "multiplier": m},
    )
