"""The frozen reference model (the input model) that KL, NPO, RMU and others compare against."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from .losses import layer_output, token_logprobs


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
        # set by the trainer: places the loaded model as the trained one is (DeepSpeed, device)
        self.prepare: Callable[[torch.nn.Module], torch.nn.Module] | None = None
        self._model: torch.nn.Module | None = None
        self._switch_off: Callable[[], AbstractContextManager[Any]] | None = None
        self._cache: dict[tuple[str, int], torch.Tensor] = {}

    def share(self, model: torch.nn.Module, switch_off: Callable[[], AbstractContextManager[Any]]) -> None:
        """Use ``model`` inside ``switch_off()`` (e.g. ``peft_model.disable_adapter``) as the reference."""
        self._model, self._switch_off = model, switch_off

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            model = self._loader()
            if self.prepare is not None:
                model = self.prepare(model)
            model.eval()
            model.requires_grad_(False)
            self._model = model
        return self._model

    @contextmanager
    def _frozen(self) -> Iterator[torch.nn.Module]:
        """The reference network, in eval mode (no dropout), additions switched off if shared."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with self._switch_off() if self._switch_off is not None else nullcontext():
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
    def token_logprobs(
        self, split: str, part: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
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
