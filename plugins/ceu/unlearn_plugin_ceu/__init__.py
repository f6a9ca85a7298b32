"""CE-U, cross-entropy unlearning (Yang et al. 2025, "CE-U: Cross Entropy Unlearning",
arXiv:2503.01224). The model is trained towards its own (detached) next-token distribution
with the true token removed: a bounded, well-conditioned alternative to gradient ascent whose
gradient at each position is ``softmax(z) - target``, never large when p(true token) is near 1::

    target_t = softmax(stopgrad(z_theta_t) with z[y_t] = -inf)
    CE-U     = mean over answer tokens t (but the first ``ignore_first_n_answer_tokens`` of
               each answer) of  CE(softmax(z_theta_t), target_t)

The paper's footnote skips the first answer token; there is no retain term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearn import IGNORE_INDEX, Config, LossContext, Register, answer_positions, hookimpl, search


class CEUConfig(Config):
    """Settings of CE-U; defaults from the paper (the first answer token is not unlearned)."""

    ignore_first_n_answer_tokens: int = Field(
        1, ge=0, description="Answer tokens skipped at the start of each answer.", json_schema_extra=search(0, 3)
    )


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor, skip: int = 1) -> torch.Tensor:
    """CE-U on logits [B, T, V] and labels [B, T] (-100 on prompt and padding), averaged over the
    answer tokens left after skipping the first ``skip`` of each answer (0 if none is left)."""
    answer = labels != IGNORE_INDEX
    labels = labels.masked_fill(answer & (answer.cumsum(-1) <= skip), IGNORE_INDEX)
    student, targets = answer_positions(logits, labels)
    if not len(targets):
        return logits.sum() * 0.0
    target_logits = student.detach().float().clone()
    target_logits[torch.arange(len(targets)), targets] = float("-inf")
    return F.cross_entropy(student.float(), target_logits.softmax(-1))


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "ceu",
        config=CEUConfig,
        kind="loss",
        summary="CE-U: cross-entropy towards the model's own distribution with the true token removed",
        uses_retain=False,
    )


@hookimpl
def compute_loss(method: str, config: CEUConfig, ctx: LossContext) -> torch.Tensor:
    return ceu_loss(ctx.outputs("forget").logits, ctx.batch["forget"]["labels"], config.ignore_first_n_answer_tokens)
