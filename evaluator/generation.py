"""Greedy generation with the official script's text, many rows at a time.

The organisers generated one prompt at a time with ``model.generate``. Padding changes the bits
of attention (SDPA's kernels depend on the key length), so rows here are never padded: rows of
one prompt length are prefilled together and decode as a *cohort* sharing one KV cache; a cohort
that has generated its way to the length of another merges with it, so every forward pass sees
rows of exactly one length. Whether such a batch gives each row the same bits as a forward pass
of that row alone depends on the device's matmul kernels; `batch_invariant` checks it on the
model at hand, and where it fails an exact evaluation runs every row alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from unlearn.engine import eval_mode

from .ranks import SINGLE, Ranks

# Generation-config fields that make HF's greedy search differ from a plain argmax.
_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
}


def plain_greedy(model: Any) -> bool:
    """True when the model's generation config adds nothing to argmax decoding."""
    config = getattr(model, "generation_config", None)
    return config is None or all(getattr(config, k, None) in ok for k, ok in _PROCESSORS.items())


def stop_tokens(model: Any) -> set[int]:
    """The ids ``model.generate`` stops at: the generation config's ``eos_token_id`` (one or a list).

    Chat models often list several (Llama 3: end of text, end of turn, ...); the tokenizer's EOS
    alone would let them run on. No id means no stop, as in ``generate``.
    """
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as a left-padded batch (the last position is every prompt's last token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def left_pad_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that give each left-padded row the positions it would have alone."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def length_batches(encoded: Sequence[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``encoded`` in batches of at most ``batch_size`` sequences of one token length,
    shortest first: a forward pass over such a batch needs no padding (see the module docstring)."""
    for length in sorted({len(e) for e in encoded}):
        same = [i for i, e in enumerate(encoded) if len(e) == length]
        for start in range(0, len(same), batch_size):
            yield same[start : start + batch_size]


def _cache_arg(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` since transformers 5.24."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache(result: Any) -> Any:
    cache = getattr(result, "cache", None)
    return cache if cache is not None else result.past_key_values


@torch.no_grad()
def batch_invariant(model: Any, max_batch: int, seed: int = 0) -> bool:
    """Whether batching rows of one length leaves every row's logits bit for bit as computed alone.

    Checked on this model and device: every linear layer's matmul at every batch size from 1 to
    ``max_batch`` (the decode steps' shapes) against one row at a time, and whole forward passes
    (prefill at several lengths, then one cached decode step) at a few batch sizes. CPU kernels
    often pass for small widths and fail for large ones (a matrix-vector path for one row).
    """
    if max_batch < 2:
        return True
    device, gen = _device(model), torch.Generator().manual_seed(seed)
    shapes = {tuple(m.weight.shape): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    for weight in shapes.values():
        x = torch.randn((max_batch, weight.shape[1]), generator=gen).to(device, weight.dtype)
        alone = torch.cat([F.linear(x[i : i + 1], weight) for i in range(max_batch)])
        for size in range(2, max_batch + 1):
            if not torch.equal(F.linear(x[:size], weight), alone[:size]):
                return False
    vocab, arg = model.get_input_embeddings().weight.shape[0], _cache_arg(model)
    rows = min(max_batch, 8)  # the matmuls above cover larger batches; attention runs per row anyway
    for length in (1, 5, 33):
        x = torch.randint(0, vocab, (rows, length), generator=gen).to(device)
        nxt = torch.randint(0, vocab, (rows, 1), generator=gen).to(device)
        alone = [model(input_ids=x[i : i + 1], use_cache=True) for i in range(rows)]
        step_alone = torch.cat(
            [model(input_ids=nxt[i : i + 1], **{arg: _cache(a)}).logits for i, a in enumerate(alone)]
        )
        for size in sorted({s for s in (2, 3, rows) if s <= rows}):
            batched = model(input_ids=x[:size], use_cache=True)
            if not torch.equal(batched.logits, torch.cat([a.logits for a in alone[:size]])):
                return False
            step = model(input_ids=nxt[:size], **{arg: _cache(batched)}).logits
            if not torch.equal(step, step_alone[:size]):
                return False
    return True


@dataclass
class _Cohort:
    """Rows with equal cache length, decoding together."""

    rows: list[int]
    cache: Any
    length: int  # tokens in the cache, the same for every row
    pending: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    mergeable: bool = False  # its cache is ours to rebuild (a plain DynamicCache)


_ROOM = 64  # tokens of spare room in a cohort's cache buffers


def _buffered(cache: Any) -> bool:
    """Give a plain ``DynamicCache`` buffers with room to grow; False for any other cache (left as is).

    ``DynamicCache`` concatenates the whole cache at every step (most of a small model's decode
    time); a buffer writes the new token only. Attention still gets exactly the filled length.
    """
    if type(cache) is not DynamicCache or not all(type(x) in (DynamicLayer, _BufferedLayer) for x in cache.layers):
        return False
    cache.layers = [x if isinstance(x, _BufferedLayer) else _BufferedLayer.of(x.keys, x.values) for x in cache.layers]
    return True


class _BufferedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views into buffers with spare room."""

    @classmethod
    def of(cls, keys: torch.Tensor, values: torch.Tensor) -> _BufferedLayer:
        layer = cls()
        layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
        layer._fill(keys, values)
        return layer

    def _fill(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        n = keys.shape[-2]
        shape = (*keys.shape[:-2], n + _ROOM, keys.shape[-1])
        self._k, self._v = keys.new_empty(shape), values.new_empty(shape)
        self._k[..., :n, :], self._v[..., :n, :] = keys, values
        self._n = n
        self.keys, self.values = self._k[..., :n, :], self._v[..., :n, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        n, m = self._n, key_states.shape[-2]
        if n + m > self._k.shape[-2]:
            self._fill(torch.cat([self.keys, key_states], -2), torch.cat([self.values, value_states], -2))
            return self.keys, self.values
        self._k[..., n : n + m, :], self._v[..., n : n + m, :] = key_states, value_states
        self._n = n + m
        self.keys, self.values = self._k[..., : n + m, :], self._v[..., : n + m, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[..., : self._n, :], self._v[..., : self._n, :]


def _merge(cohorts: list[_Cohort], config: Any) -> _Cohort:
    cache = DynamicCache(config=config)
    cache.layers = [
        _BufferedLayer.of(torch.cat([x.keys for x in ls]), torch.cat([x.values for x in ls]))
        for ls in zip(*(c.cache.layers for c in cohorts))
    ]
    rows = [r for c in cohorts for r in c.rows]
    return _Cohort(rows, cache, cohorts[0].length, torch.cat([c.pending for c in cohorts]), mergeable=True)


def chunks(encoded: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """The rows `greedy_tokens` decodes together: ``batch_size`` at a time in order of length."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def greedy_tokens(
    model: Any,
    encoded: Sequence[list[int]],
    max_new_tokens: int,
    batch_size: int,
    stop: set[int],
    on_done: Callable[[int], None] | None = None,
    ranks: Ranks = SINGLE,
) -> list[list[int]]:
    """New token ids of greedy decoding for each prompt (stop token included, as ``generate`` returns).

    Prompts are taken in `chunks`; a row leaves at its stop token or after ``max_new_tokens``.
    Under several ``ranks`` each decodes its share of the chunks and every rank gets every row.
    See the module docstring.
    """
    decoder = _Decoder(model, encoded, max_new_tokens, stop, on_done)
    done = ranks.share(chunks(encoded, batch_size), decoder.decode_chunk)
    return [done[i] for i in range(len(encoded))]


class _Decoder:
    """`greedy_tokens` on one chunk at a time: the chunk's rows in cohorts of one length, each
    cohort advanced a token at a time, and cohorts merged when their lengths meet."""

    def __init__(
        self,
        model: Any,
        encoded: Sequence[list[int]],
        max_new_tokens: int,
        stop: set[int],
        on_done: Callable[[int], None] | None,
    ) -> None:
        self.model, self.encoded, self.stop, self.on_done = model, encoded, stop, on_done
        self.max_new_tokens = max_new_tokens
        self.device = _device(model)
        self.out: list[list[int]] = [[] for _ in encoded]
        # as `generate`: only the last position's logits (a different matmul shape can change their bits)
        params = inspect.signature(model.forward).parameters
        self.last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.arg = _cache_arg(model)

    def take(self, cohort: _Cohort, logits: torch.Tensor) -> _Cohort | None:
        """Append each row's next token; rows that stopped leave the cohort (None once all have)."""
        tokens = logits[:, -1].argmax(-1)
        keep = []
        for k, (row, tok) in enumerate(zip(cohort.rows, tokens.tolist())):
            self.out[row].append(tok)
            if tok in self.stop or len(self.out[row]) >= self.max_new_tokens:
                if self.on_done:
                    self.on_done(row)
            else:
                keep.append(k)
        if not keep:
            return None
        if len(keep) < len(cohort.rows):
            index = torch.tensor(keep, device=self.device)
            cohort.cache.batch_select_indices(index)
            cohort.rows, tokens = [cohort.rows[k] for k in keep], tokens[index]
        cohort.pending = tokens
        return cohort

    def prefill(self, chunk: list[int]) -> list[_Cohort]:
        """The chunk's prompts, one forward pass per prompt length: the cohorts still decoding."""
        cohorts = []
        for length in sorted({len(self.encoded[i]) for i in chunk}):
            rows = [i for i in chunk if len(self.encoded[i]) == length]
            ids = torch.tensor([self.encoded[i] for i in rows], device=self.device)
            result = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **self.last_only)
            cohort = self.take(_Cohort(rows, _cache(result), length), result.logits)
            if cohort is not None:
                cohort.mergeable = _buffered(cohort.cache)
                cohorts.append(cohort)
        return cohorts

    def decode_chunk(self, chunk: list[int]) -> dict[int, list[int]]:
        cohorts = self.prefill(chunk)
        while cohorts:  # advance the shortest cohort(s) until they reach the next one's length, then merge
            shortest = min(c.length for c in cohorts)
            same = [c for c in cohorts if c.length == shortest]
            cohorts = [c for c in cohorts if c.length != shortest]
            if len(same) > 1 and all(c.mergeable for c in same):
                same = [_merge(same, self.model.config)]
            for cohort in same:
                ids = cohort.pending[:, None]
                mask = torch.ones((len(ids), cohort.length + 1), dtype=torch.long, device=self.device)
                cache = {self.arg: cohort.cache}
                result = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **cache, **self.last_only)
                cohort.length += 1
                if self.take(cohort, result.logits) is not None:
                    cohorts.append(cohort)
        return {row: self.out[row] for row in chunk}


# transformers 4.x's ``clean_up_tokenization``: what the organisers' ``decode(...,
# clean_up_tokenization_spaces=True)`` applied to every tokenizer. transformers 5 skips it for BPE
# tokenizers (OLMo's among them) with a warning, so it is applied here, the same on any version.
_CLEAN_UP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'")]
_CLEAN_UP += [(" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def decode(tokenizer: Any, tokens: list[int]) -> str:
    """The official decoding: special tokens dropped, tokenization spaces cleaned up as
    transformers 4.x did (``" ."`` -> ``"."``, ``" n't"`` -> ``"n't"``, ...)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    for before, after in _CLEAN_UP:
        text = text.replace(before, after)
    return text


@torch.no_grad()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = False,
    use_hf_generate: bool = False,
    ranks: Ranks = SINGLE,
) -> list[str]:
    """Greedy continuations of ``prompts`` (in their order), decoded as the official script decodes.

    ``batch_size`` 1 reproduces ``model.generate`` on each prompt alone bit for bit; larger batches
    do too where `batch_invariant` holds. Models whose generation config alters greedy search
    (repetition penalty, forced tokens, ...) go through ``model.generate`` one prompt at a time,
    as does ``use_hf_generate=True``. Under several ``ranks`` (`ranks.Ranks`) each generates its
    share and every rank returns every row.
    """
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    hf = use_hf_generate or not plain_greedy(model)
    bar = None
    if progress and ranks.is_main:
        from tqdm.auto import tqdm

        units = [[i] for i in range(len(encoded))] if hf else chunks(encoded, batch_size)
        mine = sum(len(u) for n, u in enumerate(units) if n % ranks.world == ranks.rank)
        bar = tqdm(
            total=mine, desc="generating" + (f" (rank 0 of {ranks.world})" if ranks.world > 1 else ""), unit="row"
        )
    try:
        with eval_mode(model):
            if hf:
                tokens = _hf_generate(model, tokenizer, encoded, max_new_tokens, bar, ranks)
            else:
                on_done = (lambda _row: bar.update()) if bar is not None else None
                tokens = greedy_tokens(model, encoded, max_new_tokens, batch_size, stop_tokens(model), on_done, ranks)
    finally:
        if bar is not None:
            bar.close()
    return [decode(tokenizer, t) for t in tokens]


def _hf_generate(
    model: Any, tokenizer: Any, encoded: Sequence[list[int]], max_new_tokens: int, bar: Any, ranks: Ranks
) -> list[list[int]]:
    """What the organisers ran: ``model.generate`` on one unpadded prompt, greedy."""
    device = _device(model)
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id

    def one(i: int) -> dict[int, list[int]]:
        x = torch.tensor([encoded[i]], device=device)
        generated = model.generate(x, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=pad)
        if bar is not None:
            bar.update()
        return {i: generated[0, x.shape[1] :].tolist()}

    done = ranks.share(range(len(encoded)), one)
    return [done[i] for i in range(len(encoded))]
