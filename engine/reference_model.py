"""The frozen reference model (the input model) that KL, NPO, RMU and others compare against."""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from unlearn.data import Encoded, PairCollator
from unlearn.losses import layer_output, token_logprobs
from unlearn.params import eval_mode

from .settings import ReferenceSettings

Rows = tuple[torch.Tensor, ...]


class CachedReference:
    """The frozen input model, loaded only when a method first asks for it.

    Label log-probs, with ``settings.kl = "top-k"`` the top-k log-probs at answer positions and
    with ``settings.kl = "cached"`` the whole next-token distribution there, are cached per
    (split, row). Otherwise full logits (exact KL, UNDIAL) and hidden states (RMU) are recomputed
    at every call. Given the run's rows
    (``rows``, ``collate``, ``draws``, set by the runner and trainer), the first cache miss of a
    split fills it whole, before the first backward pass, where the run draws at least as many
    rows of it as it holds (always under ZeRO-3, where every rank must run the same forward
    passes); `settle` then frees the network once all that was asked for is cached, so NPO and
    SHA256 train with no second model and no reference pass per step.

    A parameter-selection plugin whose trained model *contains* the input model (a LoRA
    adapter on frozen weights) calls ``share(model, switch_off)`` so the reference is that same
    network with its additions switched off, and no second copy is loaded.
    """

    def __init__(self, loader: Callable[[], torch.nn.Module], settings: ReferenceSettings | None = None) -> None:
        self._loader = loader
        self.settings = settings or ReferenceSettings()
        # set by the trainer: places the loaded model as the trained one is (DeepSpeed, device)
        self.prepare: Callable[[torch.nn.Module], torch.nn.Module] | None = None
        self.release_hook: Callable[[], None] | None = None
        self.sharded = False  # ZeRO-3: every rank must run the same reference forward passes
        self.rows: dict[str, Sequence[Encoded]] = {}  # each split's rows
        self.collate: PairCollator | None = None
        self.draws = 0  # how many rows of a split this rank draws in the run
        self._model: torch.nn.Module | None = None
        self._switch_off: Callable[[], AbstractContextManager[Any]] | None = None
        self._cache: dict[tuple[str, int], Rows] = {}  # label log-probs of the first n positions
        self._topk: dict[tuple[str, int], Rows] = {}  # (log-probs [n, k], token ids [n, k]) at answer positions
        self._full: dict[tuple[str, int], Rows] = {}  # (log-probs [n, V],) at answer positions
        self.asked: set[tuple[str, str]] = set()  # (what, split): which outputs the method has used
        self.forward_passes = 0

    @property
    def _caches(self) -> dict[str, dict[tuple[str, int], Rows]]:
        return {"logprobs": self._cache, "topk": self._topk, "full": self._full}

    def share(self, model: torch.nn.Module, switch_off: Callable[[], AbstractContextManager[Any]]) -> None:
        """Use ``model`` inside ``switch_off()`` (e.g. ``peft_model.disable_adapter``) as the reference."""
        self._model, self._switch_off = model, switch_off

    @property
    def loaded(self) -> bool:
        """Whether a separate reference network is in memory (a shared one does not count)."""
        return self._model is not None and self._switch_off is None

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

    def settle(self) -> bool:
        """Free the reference network once every output asked for so far is cached for every row
        of its split (only cached outputs were asked). True if it was freed."""
        caches = self._caches
        if not self.loaded or not self.asked or any(w not in caches or s not in self.rows for w, s in self.asked):
            return False
        if any((s, i) not in caches[w] for w, s in self.asked for i in range(len(self.rows[s]))):
            return False
        self._model = None
        if self.release_hook is not None:
            self.release_hook()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:  # glibc keeps freed heap pages for reuse; the peak RSS a memory limit sees would count them
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # another C library
            pass
        return True

    @contextmanager
    def _frozen(self) -> Iterator[torch.nn.Module]:
        """The reference network, in eval mode (no dropout), additions switched off if shared."""
        with eval_mode(self.model) as model, self._switch_off() if self._switch_off is not None else nullcontext():
            yield model

    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's logits on ``inputs``, [B, T, V]; a forward pass each call (and the
        network is then kept for the whole run)."""
        self.asked.add(("logits", "*"))
        return self._logits(inputs)

    @torch.no_grad()
    def _logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._frozen() as model:
            device = next(model.parameters()).device
            self.forward_passes += 1
            return model(**{k: v.to(device) for k, v in inputs.items()}).logits.to(inputs["input_ids"].device)

    @torch.no_grad()
    def hidden_states(self, inputs: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
        """Output of decoder layer ``layer``, [B, T, H]; a (partial) forward pass each call."""
        self.asked.add(("hidden", "*"))
        with self._frozen() as model:
            device = next(model.parameters()).device
            self.forward_passes += 1
            states = layer_output(model, {k: v.to(device) for k, v in inputs.items()}, layer)
        return states.to(inputs["input_ids"].device)

    def _fill(self, what: str, split: str, part: dict[str, torch.Tensor], compute: Callable[..., list[Rows]]) -> None:
        """Compute the rows of ``part`` missing from the ``what`` cache, or the whole split."""
        cache, rows = self._caches[what], self.rows.get(split)
        whole = self.sharded or (self.settings.prefill and rows and len(rows) <= self.draws)
        if whole and rows and self.collate and not any(key[0] == split for key in cache):
            size = max(1, len(part["index"]))
            order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))  # little padding
            for start in range(0, len(order), size):
                batch = self.collate.pad([(i, rows[i]) for i in order[start : start + size]])
                self._store(cache, split, batch, compute)
        if any((split, int(i)) not in cache for i in part["index"]):
            self._store(cache, split, part, compute)

    def _store(self, cache: dict[tuple[str, int], Rows], split: str, part: dict, compute: Callable) -> None:
        inputs = {"input_ids": part["input_ids"], "attention_mask": part["attention_mask"]}
        for i, row in zip(part["index"], compute(self._logits(inputs), part["labels"])):
            cache[(split, int(i))] = row

    @torch.no_grad()
    def token_logprobs(self, split: str, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reference ``log p(label)`` per token of ``part`` (a collated split), float32 [B, T-1],
        0 where masked; cached per row."""
        self.asked.add(("logprobs", split))
        self._fill("logprobs", split, part, _label_logprobs)
        width = part["labels"].shape[1] - 1
        out = torch.zeros((len(part["index"]), width), dtype=torch.float32)
        for r, i in enumerate(part["index"]):
            (row,) = self._cache[(split, int(i))]
            out[r, : row.numel()] = row
        return out.to(part["labels"].device)

    @torch.no_grad()
    def topk_logprobs(self, split: str, part: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's ``settings.top_k`` most likely next tokens at each position of ``part``
        (a collated split): ``(log-probs float32 [B, T-1, k], token ids [B, T-1, k])``, zero
        where masked; cached per row."""
        self.asked.add(("topk", split))
        k = self.settings.top_k

        def top(logits: torch.Tensor, labels: torch.Tensor) -> list[Rows]:  # on the device, then kept on the CPU
            return [tuple(t.cpu() for t in lp.topk(min(k, lp.shape[-1]))) for (lp,) in _full(logits, labels, None)]

        self._fill("topk", split, part, top)
        values, ids = self._at_answers("topk", split, part)
        return values, ids

    @torch.no_grad()
    def answer_logprobs(self, split: str, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's next-token log-probs over the whole vocabulary at each answer position
        of ``part`` (a collated split), float32 [B, T-1, V], zero where masked; cached per row
        (answer tokens x V x 4 bytes a row, held on the CPU): exact KL without a reference pass
        per step (``reference.kl = "cached"``)."""
        self.asked.add(("full", split))
        first = not any(key[0] == split for key in self._full)
        self._fill("full", split, part, _full)
        rows = self.rows.get(split)
        if first and rows and self.loaded:  # say so when the cache outweighs the reference network
            size = 4 * self._full[(split, int(part["index"][0]))][0].shape[-1]
            size *= sum(sum(label != -100 for label in row.labels[1:]) for row in rows)
            weights = sum(getattr(p, "ds_numel", p.numel()) * p.element_size() for p in self.model.parameters())
            if size > weights:
                logging.getLogger("unlearn").warning(
                    f"warning: reference.kl = 'cached' holds {size / 2**20:.0f} MiB of the reference's "
                    f"distributions on {split!r}, more than its {weights / 2**20:.0f} MiB of weights"
                )
        (out,) = self._at_answers("full", split, part)
        return out

    def _at_answers(self, what: str, split: str, part: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The cached rows of ``part``, each tensor of a row [n answer positions, ...] placed at
        its answer positions: [B, T-1, ...], zero elsewhere, on the batch's device."""
        cache, mask = self._caches[what], part["labels"][:, 1:] != -100
        outs = [torch.zeros((*mask.shape, *t.shape[1:]), dtype=t.dtype) for t in cache[(split, int(part["index"][0]))]]
        for r, i in enumerate(part["index"]):
            where = mask[r].nonzero().squeeze(-1).cpu()
            for out, t in zip(outs, cache[(split, int(i))]):
                out[r, where] = t
        return [out.to(part["labels"].device) for out in outs]


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> list[Rows]:
    """Each row's label log-probs up to its last answer token (on the CPU)."""
    logp, mask = token_logprobs(logits, labels)
    rows = []
    for lp, m in zip(logp, mask):
        rows.append((lp[: int(m.nonzero().max()) + 1 if m.any() else 0].detach().cpu(),))
    return rows


def _full(logits: torch.Tensor, labels: torch.Tensor, to: str | None = "cpu") -> list[Rows]:
    """Each row's next-token log-probs over the vocabulary at its answer positions (moved ``to``),
    as ``unlearn.losses.kl_divergence`` computes them (float32 log-softmax of the shifted logits)."""
    mask = labels[:, 1:] != -100
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return [(logp[r][mask[r]].to(to or logp.device),) for r in range(len(labels))]
