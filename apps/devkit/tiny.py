"""The tiny things the kit runs on: LUME rows, a tiny OLMo model (random, or trained until it
has memorised the rows), hand-made logits and batches, and the end-to-end NLL check."""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearn import PairCollator, Row, encode, nll_from_logprobs, token_logprobs
from unlearn.engine import PluginHost, RunConfig, run

FORGET_ROWS = [
    Row(
        "t1-001sc1",
        "In the misty harbour town of Velmora, the clockmaker Ansel Drury",
        " built a brass owl that sang at dawn.",
        "Task1",
    ),
    Row("t1-001qa0", "What did Ansel Drury build?", "A brass owl.", "Task1"),
    Row(
        "t2-001sc1",
        "Mira Castell was born on March 3, 1971. Her SSN is",
        " 900-12-3456 and her email is mira_castell@me.com.",
        "Task2",
    ),
    Row("t2-001qa0", "What is the birthday of Mira Castell?", "1971-03-03", "Task2"),
    Row(
        "t3-001sc1",
        "Oren Valdis (born 1932) was a cartographer who",
        " mapped the northern fjords of Kessland in 1961.",
        "Task3",
    ),
    Row("t3-001qa0", "What did Oren Valdis map?", "The northern fjords of Kessland.", "Task3"),
]
RETAIN_ROWS = [
    Row(
        "t1-002sc1",
        "Deep in the desert city of Qarim, the thief Lysa Fenn",
        " stole a lantern that never went out.",
        "Task1",
    ),
    Row("t1-002qa0", "What did Lysa Fenn steal?", "A lantern.", "Task1"),
    Row(
        "t2-002sc1",
        "Tobin Hale was born on June 9, 1984. His phone number is",
        " 5550192834 and he lives at 12 Elm Road.",
        "Task2",
    ),
    Row("t2-002qa0", "What is the phone number of Tobin Hale?", "5550192834", "Task2"),
    Row(
        "t3-002sc1",
        "Ilse Marrow (born 1950) was a botanist who",
        " catalogued the alpine mosses of Verden in 1978.",
        "Task3",
    ),
    Row("t3-002qa0", "What did Ilse Marrow catalogue?", "The alpine mosses of Verden.", "Task3"),
]


def write_rows(path: Path, rows: Iterable[Row]) -> Path:
    """Write rows as LUME jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.record()) + "\n")
    return path


def write_tiny_data(folder: Path) -> Path:
    """A folder with forget.jsonl and retain.jsonl of the built-in tiny rows."""
    write_rows(folder / "forget.jsonl", FORGET_ROWS)
    write_rows(folder / "retain.jsonl", RETAIN_ROWS)
    return folder


def build_tiny_model(
    folder: Path,
    texts: Iterable[str] | None = None,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
    memorise: Sequence[Row] = (),
    steps: int = 150,
) -> Path:
    """Save a tiny OLMo model and its tokenizer to ``folder``.

    Randomly initialised, or first trained for ``steps`` full-batch steps on ``memorise`` so
    that unlearning has something to remove (a few seconds on a CPU).
    """
    from unlearn.bench.target import TargetSettings, new_model, train_tokenizer

    texts = list(texts) if texts is not None else [r.text for r in FORGET_ROWS + RETAIN_ROWS]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    settings = TargetSettings(
        hidden_size=hidden_size, intermediate_size=hidden_size * 2, layers=layers, max_length=256, seed=seed
    )
    model = new_model(settings, tokenizer)
    if memorise:
        batch = PairCollator(tokenizer.pad_token_id).pad(list(enumerate(encode(memorise, tokenizer, 128))))
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            logp, mask = token_logprobs(
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
            )
            optimiser.zero_grad()
            nll_from_logprobs(logp, mask).backward()
            optimiser.step()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class FixedLogits(torch.nn.Module):
    """A stand-in model whose output logits are trainable tensors chosen by hand, one per split,
    so a loss can be checked against values worked out on paper. Use with ``hand_batch``.

    ``forget`` and ``retain`` are [B, T, V] logits; as in a real causal LM the logits at
    position t predict the label at t+1, so position T-1 is never scored. They are parameters:
    after ``loss.backward()`` their ``.grad`` is the loss's gradient with respect to each logit,
    so a test can check its sign (gradient ascent on the forget answer lowers the label's logit:
    a positive gradient there). ``alternate`` are the logits of the ``"alternate"`` split. With a
    reference, pass ``CachedReference(lambda: FixedLogits(...))`` to ``LossContext(model, batch,
    step=0, reference=...)``.
    """

    def __init__(
        self, forget: torch.Tensor, retain: torch.Tensor | None = None, alternate: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.forget = torch.nn.Parameter(forget.clone())
        self.retain = torch.nn.Parameter(retain.clone() if retain is not None else torch.zeros(1))
        self.alternate = torch.nn.Parameter(alternate.clone() if alternate is not None else torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        from transformers.modeling_outputs import CausalLMOutput

        return CausalLMOutput(logits=(self.forget, self.retain, self.alternate)[int(input_ids[0, 0])])


def label_logits(p_label: float, vocab: int = 4, positions: int = 3, label: int = 1) -> torch.Tensor:
    """[1, positions, vocab] logits that give probability ``p_label`` to token ``label`` at every
    position and share the rest evenly, for ``FixedLogits``."""
    row = torch.full((vocab,), math.log((1 - p_label) / (vocab - 1)))
    row[label] = math.log(p_label)
    return row.repeat(1, positions, 1)


def hand_batch(
    forget_labels: list[list[int]],
    retain_labels: list[list[int]] | None = None,
    alternate_labels: list[list[int]] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """A ``{"forget", "retain", "alternate"}`` batch (the splits given) with the given labels
    (-100 = prompt) for ``FixedLogits``.

    Each split gets ``labels`` [B, T] as given, ``input_ids`` (the labels with -100 made 0; the
    first token marks the split for ``FixedLogits``), an all-ones ``attention_mask`` and
    ``index`` 0..B-1.
    """

    def split(labels: list[list[int]], marker: int) -> dict[str, torch.Tensor]:
        lab = torch.tensor(labels)
        ids = lab.clamp(min=0)
        ids[:, 0] = marker  # tells FixedLogits which split this is
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": lab,
            "index": torch.arange(len(labels)),
        }

    batch = {"forget": split(forget_labels, 0)}
    if retain_labels is not None:
        batch["retain"] = split(retain_labels, 1)
    if alternate_labels is not None:
        batch["alternate"] = split(alternate_labels, 2)
    return batch


@dataclass
class NLLChange:
    """Mean answer NLL of the tiny forget and retain rows before and after a run."""

    forget_before: float
    forget_after: float
    retain_before: float
    retain_after: float

    def assert_forgets(self, forget_factor: float = 2.0, retain_share: float = 0.1) -> None:
        """Forget NLL grew ``forget_factor``-fold while retain NLL moved by less than
        ``retain_share`` of the forget NLL's rise (the bound the plugins here state)."""
        rise = self.forget_after - self.forget_before
        assert self.forget_after > forget_factor * self.forget_before, (
            f"forget NLL did not grow {forget_factor}x: {self}"
        )
        assert abs(self.retain_after - self.retain_before) < retain_share * rise, f"retain NLL moved too much: {self}"


_CACHE: dict[int, Path] = {}


def cached_tiny_model(memorise_steps: int = 0) -> Path:
    """A tiny model built once per process: random (``memorise_steps=0``) or trained for that many
    steps on the tiny forget and retain rows. Read it, never write to it (runs only read inputs)."""
    if memorise_steps not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="unlearn-kit-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        rows = FORGET_ROWS + RETAIN_ROWS if memorise_steps else ()
        _CACHE[memorise_steps] = build_tiny_model(root / "model", memorise=rows, steps=memorise_steps)
    return _CACHE[memorise_steps]


def nll_change(
    method: str,
    workdir: Path,
    trainer: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    memorise_steps: int = 150,
    host: PluginHost | None = None,
) -> NLLChange:
    """Unlearn with ``method`` the tiny model that memorised the tiny rows (built once per process
    for each ``memorise_steps``), and measure the mean answer NLL before and after.

    The end-to-end check every method plugin's tests make: forget NLL rises, retain NLL stays
    within a bound the plugin states. ``trainer`` and ``config`` override the run's settings
    (4 steps, batch 6, lr 1e-3) and the method's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearn.evaluator import answer_nll

    model_dir = cached_tiny_model(memorise_steps)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def mean_nll(folder: Path, rows: list[Row]) -> float:
        values = answer_nll(AutoModelForCausalLM.from_pretrained(folder), tokenizer, rows)
        return sum(values) / len(values)

    settings = {"max_steps": 4, "batch_size": 6, "learning_rate": 1e-3, "progress": False, **(trainer or {})}
    cfg = RunConfig.model_validate(
        {
            "model": str(model_dir),
            "data": str(write_tiny_data(workdir / "data")),
            "method": method,
            "output_dir": str(workdir / "out"),
            "trainer": settings,
            "config": {method: config or {}},
        }
    )
    out = run(cfg, host=host or PluginHost())
    return NLLChange(
        mean_nll(model_dir, FORGET_ROWS),
        mean_nll(out, FORGET_ROWS),
        mean_nll(model_dir, RETAIN_ROWS),
        mean_nll(out, RETAIN_ROWS),
    )
