"""Gradient ascent (GA): push the forget set's likelihood down.

Loss: ``-NLL(F)``, the mean token negative log-likelihood of the forget answers (averaged over
every answer token of the batch), negated. Jang et al. 2023, "Knowledge Unlearning for
Mitigating Privacy Risks in Language Models" (arXiv:2210.01504). Unbounded: the loss falls
without limit, so keep the number of steps small; the trainer stops with a clear error if it
ever becomes NaN.
"""

from __future__ import annotations

from unlearn import Config, LossContext, LossOutput, Register, hookimpl


class GAConfig(Config):
    """GA has no settings of its own: learning rate and steps are ``trainer.*`` settings."""


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "ga", config=GAConfig, kind="loss", summary="Gradient ascent on the forget set: -NLL(F)", uses_retain=False
    )


@hookimpl
def compute_loss(method: str, config: GAConfig, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")
    return LossOutput(-forget_nll, {"forget_nll": forget_nll})
