"""What a loss method works with: the step's batch and model behind ``LossContext``, and the
token-level helpers every method shares (NPO is DPO without a "win" side, KL is a sum over the
vocabulary, ...), so each plugin only writes its formula."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX

Batch = dict[str, dict[str, torch.Tensor]]


@dataclass
class LossOutput:
    """A loss plus named scalars to log beside it (e.g. ``{"forget_nll": ...}``)."""

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)

    def add_term(self, name: str, weight: float, term: Callable[[], torch.Tensor]) -> LossOutput:
        """Add ``weight * term()`` and log the term; a zero weight skips it (and its forward pass)."""
        if weight:
            value = term()
            self.loss = self.loss + weight * value
            self.logs[name] = value
        return self


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1."""
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``log p(label)`` (0 where masked) and the float mask of answer tokens, [B, T-1].

    Uses ``cross_entropy`` so no [B, T, V] log-softmax is kept for the backward pass.
    """
    logits, labels = shift(logits, labels)
    mask = labels != IGNORE_INDEX
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    return -nll, mask.to(nll.dtype)


def nll_from_logprobs(logp: torch.Tensor, mask: torch.Tensor, per_sequence: bool = False) -> torch.Tensor:
    """Mean NLL over answer tokens: of the whole batch (scalar), or of each sequence ([B])."""
    if per_sequence:
        return -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return -(logp * mask).sum() / mask.sum().clamp(min=1)


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``KL(p_ref || p_theta)`` summed over the vocabulary, averaged over answer positions."""
    ref_logits, shifted = shift(ref_logits, labels)
    logits, _ = shift(logits, labels)
    mask = (shifted != IGNORE_INDEX).float()
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


class LossContext:
    """One training step as a method sees it.

    ``batch`` is ``{"forget": {...}, "retain": {...}}`` (one split only for a method with its own
    ``schedule``); each split has ``input_ids``, ``attention_mask``, ``labels`` (prompt = -100),
    ``index`` (row position in its split, the key of the reference cache) and ``task``. Forward passes are memoised for the step, and reference-model
    quantities come from the trainer's single reference provider.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch: Batch,
        step: int,
        reference: ReferenceModel | None = None,
        run: Any = None,
    ) -> None:
        self.model = model
        self.batch = batch
        self.step = step
        self.run = run  # the RunContext (tokenised rows, per-run state); None in hand-made tests
        self._reference = reference
        self._outputs: dict[str, Any] = {}

    def has(self, split: str) -> bool:
        """Whether this batch holds ``split`` (methods with their own schedule alternate them)."""
        return split in self.batch

    def outputs(self, split: str, **kwargs: Any) -> Any:
        """The trained model's forward output on a split (memoised unless kwargs are given)."""
        if kwargs:
            return self.model(**self._inputs(split), **kwargs)
        if split not in self._outputs:
            self._outputs[split] = self.model(**self._inputs(split))
        return self._outputs[split]

    def token_logprobs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(label) per token, answer mask)`` under the trained model, [B, T-1]."""
        return token_logprobs(self.outputs(split).logits, self.batch[split]["labels"])

    def nll(self, split: str, per_sequence: bool = False) -> torch.Tensor:
        """Mean token NLL over the split's answer tokens (SPEC's ``NLL``), or one per sequence."""
        return nll_from_logprobs(*self.token_logprobs(split), per_sequence=per_sequence)

    def kl_to_reference(self, split: str) -> torch.Tensor:
        """``KL(p_ref || p_theta)`` on a split, summed over the vocabulary, mean over answer positions."""
        return kl_divergence(self.reference_logits(split), self.outputs(split).logits, self.batch[split]["labels"])

    def hidden_states(self, split: str, layer: int) -> torch.Tensor:
        """Output of decoder layer ``layer`` of the trained model, [B, T, H], with gradients.

        The forward pass stops after that layer, so later layers cost nothing.
        """
        return layer_output(self.model, self._inputs(split), layer)

    def reference_hidden_states(self, split: str, layer: int) -> torch.Tensor:
        """The same for the frozen reference model, without gradients."""
        return self._require_reference().hidden_states(self._inputs(split), layer)

    def reference_logits(self, split: str) -> torch.Tensor:
        """Logits of the frozen reference (the input model), without gradients."""
        return self._require_reference().logits(self._inputs(split))

    def reference_token_logprobs(self, split: str) -> torch.Tensor:
        """Reference ``log p(label)`` per token, [B, T-1]; computed once per row, then cached."""
        part = self.batch[split]
        return self._require_reference().token_logprobs(split, part, self._inputs(split))

    def _inputs(self, split: str) -> dict[str, torch.Tensor]:
        if split not in self.batch:
            raise KeyError(f"this batch has no {split!r} split (has {sorted(self.batch)}); is a retain set given?")
        part = self.batch[split]
        return {"input_ids": part["input_ids"], "attention_mask": part["attention_mask"]}

    @property
    def reference(self) -> ReferenceModel:
        """The frozen input model (loaded on first use), for inputs outside this batch."""
        return self._require_reference()

    def _require_reference(self) -> ReferenceModel:
        if self._reference is None:
            raise RuntimeError("this run has no reference model")
        return self._reference


class _StopForward(Exception):
    """Raised by a forward hook once the wanted layer has run."""


def layer_output(model: torch.nn.Module, inputs: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Hidden states after decoder layer ``layer`` (a forward hook; the rest of the pass is skipped)."""
    from .params import decoder_layers

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


class ReferenceModel:
    """The frozen input model, loaded only when a method first asks for it.

    Per-token label log-probs are cached by (split, row index): a fixed example needs the
    reference once, not once per epoch. Full logits (for KL) are recomputed, as caching
    [T, V] per row would cost more memory than the second model.

    A parameter-selection plugin whose trained model *contains* the input model (a LoRA
    adapter on frozen weights) calls ``share(model, switch_off)`` so the reference is that same
    network with its additions switched off, and no second copy is loaded.
    """

    def __init__(self, loader: Callable[[], torch.nn.Module]) -> None:
        self._loader = loader
        self._model: torch.nn.Module | None = None
        self._switch_off: Callable[[], ContextManager[Any]] | None = None
        self._cache: dict[tuple[str, int], torch.Tensor] = {}

    def share(self, model: torch.nn.Module, switch_off: Callable[[], ContextManager[Any]]) -> None:
        """Use ``model`` inside ``switch_off()`` (e.g. ``peft_model.disable_adapter``) as the reference."""
        self._model, self._switch_off = model, switch_off

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            model = self._loader()
            model.eval()
            model.requires_grad_(False)
            self._model = model
        return self._model

    @contextmanager
    def _frozen(self) -> Iterator[torch.nn.Module]:
        """The reference network, in eval mode (no dropout), additions switched off if shared."""
        model = self.model
        if self._switch_off is None:
            yield model
            return
        was_training = model.training
        model.eval()
        try:
            with self._switch_off():
                yield model
        finally:
            model.train(was_training)

    @torch.no_grad()
    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._frozen() as model:
            device = next(model.parameters()).device
            return model(**{k: v.to(device) for k, v in inputs.items()}).logits.to(inputs["input_ids"].device)

    @torch.no_grad()
    def hidden_states(self, inputs: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
        with self._frozen() as model:
            device = next(model.parameters()).device
            states = layer_output(model, {k: v.to(device) for k, v in inputs.items()}, layer)
        return states.to(inputs["input_ids"].device)

    @torch.no_grad()
    def token_logprobs(self, split: str, part: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        keys = [(split, int(i)) for i in part["index"]]
        width = part["labels"].shape[1] - 1
        if all(k in self._cache for k in keys):
            rows = [self._cache[k] for k in keys]
        else:
            logp, mask = token_logprobs(self.logits(inputs), part["labels"])
            rows = []
            for k, lp, m in zip(keys, logp, mask):
                row = lp[: int(m.nonzero().max()) + 1 if m.any() else 0].detach().cpu()
                self._cache[k] = row
                rows.append(row)
        out = torch.zeros((len(rows), width), dtype=torch.float32)
        for r, row in enumerate(rows):
            out[r, : row.numel()] = row
        return out.to(part["labels"].device)
