"""The context each hook receives: ``LossContext`` (``compute_loss``), and the protocols
``RunContext`` (``select_parameters``, and ``ctx.run``), ``PostContext`` (``post_process``; runs and
recipe steps both satisfy it) and ``ReferenceModel`` (the frozen input model). The engine
(``unlearn.engine``) implements the protocols; a plugin needs only what is written here."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import torch

from . import losses
from .config import Config
from .data import Encoded
from .losses import kl_divergence, kl_from_logprobs, layer_output, nll_from_logprobs, token_logprobs, topk_kl_divergence

Batch = dict[str, dict[str, Any]]


class LossContext:
    """One training step as ``compute_loss`` sees it.

    ``batch`` is ``{"forget": {...}, "retain": {...}}`` (one split only for a method with its own
    ``schedule``, or without retain rows), plus ``"alternate"`` for a method registered with
    ``alternate``: row b of it is forget row b's prompt with one of its alternate answers (so
    ``ctx.nll("alternate")`` is the NLL of the alternates). Each split has ``input_ids``,
    ``attention_mask`` and ``labels`` [B, T] (right-padded; labels are -100 on prompt and padding), ``index`` [B] (the
    row's key in its split: its position, for alternates its position among all alternates; the
    key of the reference cache) and ``task`` (B strings).
    Forward passes are memoised for the step: ``ctx.nll("forget")`` twice costs one forward.

    :param model: the model being trained.
    :param batch: the step's batch, as above.
    :param step: the optimiser step (0-based).
    :param reference: the frozen input model, or None where a test needs none.
    :param run: the run (tokenised rows, per-run ``state``); None in hand-made tests.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch: Batch,
        step: int,
        reference: ReferenceModel | None = None,
        run: RunContext | None = None,
    ) -> None:
        self.model = model
        self.batch = batch
        self.step = step
        self.run = run
        self._reference = reference
        self._outputs: dict[str, Any] = {}

    def has(self, split: str) -> bool:
        """Whether this batch holds ``split`` (methods with their own schedule alternate them)."""
        return split in self.batch

    def outputs(self, split: str, **kwargs: Any) -> Any:
        """The trained model's forward output on a split (memoised unless kwargs are given)."""
        if kwargs:
            self._new_pass()
            return self.model(**self._inputs(split), **kwargs)
        if split not in self._outputs:
            self._new_pass()
            self._outputs[split] = self.model(**self._inputs(split))
        return self._outputs[split]

    def _new_pass(self) -> None:
        terms = losses.PER_TERM.get()
        if terms is not None and terms.flush():  # trainer.backward = "per-term" (losses.TermBackward)
            self._outputs.clear()  # their graphs are spent: a term that needs one runs its pass again

    def token_logprobs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logp, mask)`` under the trained model, both float32 [B, T-1]: see
        ``unlearn.token_logprobs`` (mask 1.0 on answer tokens, 0.0 on prompt and padding)."""
        return token_logprobs(self.outputs(split).logits, self.batch[split]["labels"])

    def nll(self, split: str, per_sequence: bool = False) -> torch.Tensor:
        """Mean token NLL of the split's answers: a scalar averaged over every answer token of the
        batch, or with ``per_sequence`` one token average per sequence, [B]
        (``unlearn.nll_from_logprobs``)."""
        return nll_from_logprobs(*self.token_logprobs(split), per_sequence=per_sequence)

    def kl_to_reference(self, split: str) -> torch.Tensor:
        """``KL(p_ref || p_theta)`` on a split: a scalar, summed over the vocabulary, averaged over
        every answer position of the batch. Costs a reference forward each call; with the run's
        ``reference.kl = "cached"`` the same KL from the reference's distributions computed once per
        row, with ``"top-k"`` `unlearn.losses.topk_kl_divergence` over the reference's top-k tokens, computed
        once per row."""
        labels, logits = self.batch[split]["labels"], self.outputs(split).logits
        if self.reference.settings.kl == "cached":
            return kl_from_logprobs(self.reference.answer_logprobs(split, self.batch[split]), logits, labels)
        if self.reference.settings.kl == "top-k":
            return topk_kl_divergence(*self.reference.topk_logprobs(split, self.batch[split]), logits, labels)
        return kl_divergence(self.reference_logits(split), logits, labels)

    def hidden_states(self, split: str, layer: int) -> torch.Tensor:
        """Output of decoder layer ``layer`` of the trained model, [B, T, H], with gradients.

        The forward pass stops after that layer, so later layers cost nothing.
        """
        self._new_pass()
        return layer_output(self.model, self._inputs(split), layer)

    def reference_hidden_states(self, split: str, layer: int) -> torch.Tensor:
        """The same for the frozen reference model, without gradients."""
        return self.reference.hidden_states(self._inputs(split), layer)

    def reference_logits(self, split: str) -> torch.Tensor:
        """Logits of the frozen reference (the input model), [B, T, V], without gradients."""
        return self.reference.logits(self._inputs(split))

    def reference_token_logprobs(self, split: str) -> torch.Tensor:
        """Reference ``log p(label)`` per token, float32 [B, T-1], 0 where masked (use the mask of
        ``token_logprobs``); computed once per row and split, then cached."""
        self._inputs(split)  # a clear error for a missing split
        return self.reference.token_logprobs(split, self.batch[split])

    def sequence_log_ratio(self, split: str) -> torch.Tensor:
        """``log pi_theta(y|x) - log pi_ref(y|x)`` of each answer, [B]: token log-probs summed over
        the answer (the reference's from the cache), as DPO and NPO compare an answer with the
        input model's."""
        logp, mask = self.token_logprobs(split)
        return ((logp - self.reference_token_logprobs(split)) * mask).sum(-1)

    def _inputs(self, split: str) -> dict[str, torch.Tensor]:
        if split not in self.batch:
            raise KeyError(f"this batch has no {split!r} split (has {sorted(self.batch)}); is a retain set given?")
        part = self.batch[split]
        return {"input_ids": part["input_ids"], "attention_mask": part["attention_mask"]}

    @property
    def reference(self) -> ReferenceModel:
        """The frozen input model (loaded on first use), for inputs outside this batch."""
        if self._reference is None:
            raise RuntimeError("this run has no reference model")
        return self._reference


class PostContext(Protocol):
    """What ``post_process`` may read about the run or recipe step it finishes (``RunContext`` and
    recipe steps satisfy it)."""

    base_model: Path  # the input model (the base of task vectors when merging)
    inputs: list[Path]  # the models to work on: the one just trained, or the step's named inputs
    work_dir: Path  # a scratch folder of the run or step
    is_main_process: bool  # True on the process that writes (rank 0)
    state: dict[str, Any]  # a place to keep what a method computes once


class RunContext(Protocol):
    """One run as hooks see it (``run`` in ``select_parameters`` and ``post_process``, ``ctx.run``
    in ``compute_loss``); satisfies ``PostContext``."""

    config: Any  # the resolved run config (unlearn.engine.RunConfig: model, data, trainer, seed, ...)
    method_configs: dict[str, Config]  # each chosen method's validated config, by name
    tokenizer: Any
    work_dir: Path  # the run's staging folder
    forget: list[Encoded]  # the tokenised forget rows
    retain: list[Encoded] | None  # the tokenised retain rows; None when the loss does not use them
    is_main_process: bool
    state: dict[str, Any]  # what a method computes once (RMU's coefficients)
    reference: ReferenceModel | None  # the frozen input model, which select_parameters may share
    inputs: list[Path]  # for post_process: [output_dir], the model just trained
    base_model: Path  # the input model, config.model


class ReferenceModel(Protocol):
    """The frozen input model (``ctx.reference``, ``run.reference``), loaded only when a method
    first asks for it. Label log-probs, and the top-k or whole next-token distributions at answer
    positions (the run's ``reference.kl``), are computed once per (split, row) and cached; logits
    and hidden states are a forward pass each call. Tensors come back on the batch's device."""

    settings: Any  # the run's reference settings (unlearn.engine.ReferenceSettings): kl, top_k, ...

    @property
    def model(self) -> torch.nn.Module:
        """The network itself (eval mode, no gradients), loaded on first use."""

    def share(self, model: torch.nn.Module, switch_off: Callable[[], AbstractContextManager[Any]]) -> None:
        """Use ``model`` inside ``switch_off()`` (e.g. ``peft_model.disable_adapter``) as the
        reference: a parameter selection whose trained model contains the input model (a LoRA
        adapter on frozen weights) calls it, so no second copy is loaded."""

    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's logits on ``inputs`` (``input_ids``, ``attention_mask``), [B, T, V]."""

    def hidden_states(self, inputs: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
        """Output of decoder layer ``layer``, [B, T, H]; a (partial) forward pass each call."""

    def token_logprobs(self, split: str, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reference ``log p(label)`` per token of ``part`` (a collated split), float32 [B, T-1],
        0 where masked; cached per row."""

    def topk_logprobs(self, split: str, part: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's ``settings.top_k`` most likely next tokens at each position of ``part``:
        ``(log-probs float32 [B, T-1, k], token ids [B, T-1, k])``, zero where masked; cached per row."""

    def answer_logprobs(self, split: str, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's next-token log-probs over the whole vocabulary at each answer position
        of ``part``, float32 [B, T-1, V], zero where masked; cached per row."""
