"""The token-level helpers every method shares (NPO is DPO without a "win" side, KL is a sum over
the vocabulary, ...), so each plugin only writes its formula.

Shapes: logits are [B, T, V] and labels [B, T] with -100 on prompt and padding positions. Logits
at position t predict the label at t+1, so every per-token result is [B, T-1].
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX
from .params import decoder_layers, eval_mode


@dataclass
class LossOutput:
    """A loss plus named scalars to log beside it (e.g. ``{"forget_nll": ...}``)."""

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)

    def add_term(self, name: str, weight: float, term: Callable[[], torch.Tensor]) -> LossOutput:
        """Add ``weight * term()`` and log the term; a zero weight skips it (and its forward pass).

        Add terms last and return this object: under ``trainer.backward = "per-term"`` a term's
        new forward pass first backpropagates what was added before it (see `TermBackward`)."""
        if weight:
            terms = PER_TERM.get()
            if terms is not None:
                terms.output = self
            value = term()
            self.loss = self.loss + weight * value
            self.logs[name] = value
        return self


class TermBackward:
    """``trainer.backward = "per-term"``: once a method calls `LossOutput.add_term`, a new forward
    pass of the trained model first backpropagates the loss built so far (freeing the activations
    of the passes behind it); the trainer backpropagates the rest. DPO then holds two of its three
    passes at a time. Same gradients, summed in another order. ``backward``: the trainer's."""

    def __init__(self, backward: Callable[[torch.Tensor], None]) -> None:
        self.backward = backward
        self.output: LossOutput | None = None  # set by add_term: the loss being built
        self.groups = 0  # backward passes run this step

    def flush(self) -> bool:
        """Backpropagate the loss built so far, if it has a graph; True if it did."""
        out = self.output
        if out is None or not out.loss.requires_grad:
            return False
        self.backward(out.loss)
        out.loss = out.loss.detach()
        self.groups += 1
        return True


# The trainer sets it while a method's compute_loss runs under trainer.backward = "per-term".
PER_TERM: ContextVar[TermBackward | None] = ContextVar("unlearn_per_term", default=None)


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with the label at t+1: ``([B, T-1, V], [B, T-1])``."""
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, mask)``, both float32 [B, T-1]: ``log p(label)`` of each answer token (0 where
    masked) and the mask (1.0 on answer tokens, 0.0 on prompt and padding positions).

    Uses ``cross_entropy`` so no [B, T, V] log-softmax is kept for the backward pass.
    """
    logits, labels = shift(logits, labels)
    mask = labels != IGNORE_INDEX
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    return -nll, mask.to(nll.dtype)


def nll_from_logprobs(logp: torch.Tensor, mask: torch.Tensor, per_sequence: bool = False) -> torch.Tensor:
    """Mean NLL over answer tokens.

    Default: a scalar, the sum of every answer token's NLL in the batch divided by the number of
    answer tokens in the batch (a token average, so longer answers weigh more; not a mean of
    per-sequence means). ``per_sequence``: [B], each sequence's own token average.
    """
    if per_sequence:
        return -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return -(logp * mask).sum() / mask.sum().clamp(min=1)


def answer_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict answer tokens and those tokens: ``([N, V], [N])``, N the number
    of answer tokens in the batch (shifted as ``shift``; prompt and padding dropped)."""
    logits, labels = shift(logits, labels)
    keep = labels != IGNORE_INDEX
    return logits[keep], labels[keep]


def preference_loss(win: torch.Tensor | None, lose: torch.Tensor, beta: float) -> torch.Tensor:
    """``-(2/beta) * logsigmoid(beta * (win - lose))``, averaged over the batch: DPO as TOFU and
    open-unlearning write it, where ``win`` and ``lose`` are [B] log-ratios ``log pi_theta(y|x) -
    log pi_ref(y|x)`` of the preferred and the dispreferred answer. ``win=None`` drops the
    preferred side: NPO, ``-(2/beta) * logsigmoid(-beta * lose)``."""
    margin = -lose if win is None else win - lose
    return (-(2.0 / beta) * F.logsigmoid(beta * margin)).mean()


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``KL(p_ref || p_theta)``: a scalar, summed over the vocabulary at each answer position,
    then averaged over every answer position of the batch (as ``nll_from_logprobs``).
    ``ref_logits`` and ``logits`` are [B, T, V], ``labels`` [B, T]."""
    ref_logits, _ = shift(ref_logits, labels)
    return kl_from_logprobs(F.log_softmax(ref_logits.float(), dim=-1), logits, labels)


def kl_from_logprobs(ref_logp: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``kl_divergence`` from the reference's next-token log-probs, float32 [B, T-1, V] (already
    shifted: position t predicts token t+1; any finite value where masked), e.g. the cached ones
    of ``ReferenceModel.answer_logprobs``. The same bits as ``kl_divergence`` on logits whose
    ``log_softmax`` they are."""
    logits, shifted = shift(logits, labels)
    mask = (shifted != IGNORE_INDEX).float()
    logp = F.log_softmax(logits.float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def topk_kl_divergence(
    ref_logp: torch.Tensor, ref_ids: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """``KL(p_ref || p_theta)`` over k + 1 outcomes: the reference's k most likely tokens at each
    position, and "any other token" with the remaining mass of each distribution. A scalar,
    averaged over every answer position of the batch (as ``kl_divergence``).

    Merging outcomes never increases a KL divergence, so this is a lower bound of the exact KL,
    equal to it where the reference puts no mass outside its top k, and zero exactly when the
    model gives the top-k tokens the reference's probabilities. ``ref_logp`` and ``ref_ids`` are
    [B, T-1, k] (``ReferenceModel.topk_logprobs``), ``logits`` [B, T, V], ``labels`` [B, T].
    """
    logits, shifted = shift(logits, labels)
    mask = (shifted != IGNORE_INDEX).float()
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, ref_ids)  # [B, T-1, k]
    p_ref = ref_logp.exp()
    head = (p_ref * (ref_logp - logp)).sum(-1)
    rest_ref = (1 - p_ref.sum(-1)).clamp(min=0)
    rest_model = (1 - logp.exp().sum(-1)).clamp(min=1e-12)
    per_token = head + torch.xlogy(rest_ref, rest_ref) - rest_ref * rest_model.log()
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


class _StopForward(Exception):
    """Raised by a forward hook once the wanted layer has run."""


def layer_output(model: torch.nn.Module, inputs: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Hidden states after decoder layer ``layer`` (a forward hook; the rest of the pass is skipped)."""
    captured: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = decoder_layers(getattr(model, "module", model))[layer].register_forward_hook(hook)
    try:
        model(**inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]


def answer_probe(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """How well ``model`` (in eval mode) knows the answers of ``batches`` (collated rows): their mean
    token ``nll`` and how many rows it ``reproduces`` (greedy decoding would give every answer token:
    each is the argmax at its teacher-forced position)."""
    device = next(model.parameters()).device
    total = count = reproduced = 0.0
    with eval_mode(model):
        for batch in batches:
            labels = batch["labels"].to(device)
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
            logp, mask = token_logprobs(logits, labels)
            total, count = total - float((logp * mask).sum()), count + float(mask.sum())
            hits = shift(logits, labels)[0].argmax(-1) == labels[:, 1:]
            reproduced += int((hits | (mask == 0)).all(-1).sum())
    return {"nll": total / max(count, 1.0), "reproduces": reproduced}
