"""Gradient ascent (GA): push the forget set's likelihood down.

Loss (SPEC.md section 3): ``-NLL(F)``, the mean token negative log-likelihood of the forget
answers, negated. Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy Risks in
Language Models" (arXiv:2210.01504). Unbounded: the loss falls without limit, so keep the
number of steps small; the trainer stops with a clear error if it ever becomes NaN.
"""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict

from unlearn import LossContext, LossOutput, hookimpl


class GAConfig(BaseModel):
    """GA has no settings of its own: learning rate and steps are ``trainer.*`` settings."""

    model_config = ConfigDict(extra="forbid")


@hookimpl
def register_methods(register: Callable[..., None]) -> None:
    register(
        "ga",
        config=GAConfig,
        kind="loss",
        summary="Gradient ascent on the forget set: -NLL(F)",
        uses_retain=False,
    )


@hookimpl
def compute_loss(method: str, config: GAConfig, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")
    return LossOutput(-forget_nll, {"forget_nll": forget_nll})
