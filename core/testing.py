"""A conformance kit for plugin packages, plus the tiny model and data it runs on.

In a plugin's own test suite::

    from unlearn.testing import assert_conforms

    def test_conforms(tmp_path):
        assert_conforms("myplugin", tmp_path)

``unlearn plugins check NAME`` runs the same checks from the command line.
"""

from __future__ import annotations

import json
import math
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from .data import PairCollator, PairedDataset, Row, encode
from .hookspecs import hookimpl
from .losses import LossContext, LossOutput, nll_from_logprobs, token_logprobs
from .plugins import Entry, PluginHost, get_host

FORGET_ROWS = [
    Row("t1-001sc1", "In the misty harbour town of Velmora, the clockmaker Ansel Drury", " built a brass owl that sang at dawn.", "Task1"),
    Row("t1-001qa0", "What did Ansel Drury build?", "A brass owl.", "Task1"),
    Row("t2-001sc1", "Mira Castell was born on March 3, 1971. Her SSN is", " 900-12-3456 and her email is mira_castell@me.com.", "Task2"),
    Row("t2-001qa0", "What is the birthday of Mira Castell?", "1971-03-03", "Task2"),
    Row("t3-001sc1", "Oren Valdis (born 1932) was a cartographer who", " mapped the northern fjords of Kessland in 1961.", "Task3"),
    Row("t3-001qa0", "What did Oren Valdis map?", "The northern fjords of Kessland.", "Task3"),
]
RETAIN_ROWS = [
    Row("t1-002sc1", "Deep in the desert city of Qarim, the thief Lysa Fenn", " stole a lantern that never went out.", "Task1"),
    Row("t1-002qa0", "What did Lysa Fenn steal?", "A lantern.", "Task1"),
    Row("t2-002sc1", "Tobin Hale was born on June 9, 1984. His phone number is", " 5550192834 and he lives at 12 Elm Road.", "Task2"),
    Row("t2-002qa0", "What is the phone number of Tobin Hale?", "5550192834", "Task2"),
    Row("t3-002sc1", "Ilse Marrow (born 1950) was a botanist who", " catalogued the alpine mosses of Verden in 1978.", "Task3"),
    Row("t3-002qa0", "What did Ilse Marrow catalogue?", "The alpine mosses of Verden.", "Task3"),
]


def write_rows(path: Path, rows: Iterable[Row]) -> Path:
    """Write rows as LUME jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"id": row.id, "input": row.input, "output": row.output, "task": row.task}) + "\n")
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
    from .target import TargetSettings, new_model, train_tokenizer

    texts = list(texts) if texts is not None else [r.text for r in FORGET_ROWS + RETAIN_ROWS]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    settings = TargetSettings(hidden_size=hidden_size, intermediate_size=hidden_size * 2, layers=layers, max_length=256, seed=seed)
    model = new_model(settings, tokenizer)
    if memorise:
        batch = PairCollator(tokenizer.pad_token_id).pad(list(enumerate(encode(memorise, tokenizer, 128))))
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            logp, mask = token_logprobs(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
            optimiser.zero_grad()
            nll_from_logprobs(logp, mask).backward()
            optimiser.step()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class FixedLogits(torch.nn.Module):
    """A stand-in model whose output logits are trainable tensors chosen by hand, one per split,
    so a loss can be checked against values worked out on paper. Use with ``hand_batch``."""

    def __init__(self, forget: torch.Tensor, retain: torch.Tensor | None = None) -> None:
        super().__init__()
        self.forget = torch.nn.Parameter(forget.clone())
        self.retain = torch.nn.Parameter(retain.clone() if retain is not None else torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        from transformers.modeling_outputs import CausalLMOutput

        return CausalLMOutput(logits=self.forget if int(input_ids[0, 0]) == 0 else self.retain)


def hand_batch(forget_labels: list[list[int]], retain_labels: list[list[int]] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """A ``{"forget", "retain"}`` batch with the given labels (-100 = prompt) for ``FixedLogits``."""

    def split(labels: list[list[int]], marker: int) -> dict[str, torch.Tensor]:
        lab = torch.tensor(labels)
        ids = lab.clamp(min=0)
        ids[:, 0] = marker  # tells FixedLogits which split this is
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": lab, "index": torch.arange(len(labels))}

    batch = {"forget": split(forget_labels, 0)}
    if retain_labels is not None:
        batch["retain"] = split(retain_labels, 1)
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
        assert self.forget_after > forget_factor * self.forget_before, f"forget NLL did not grow {forget_factor}x: {self}"
        assert abs(self.retain_after - self.retain_before) < retain_share * rise, f"retain NLL moved too much: {self}"


def nll_change(
    method: str,
    workdir: Path,
    trainer: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    memorise_steps: int = 150,
    host: PluginHost | None = None,
) -> NLLChange:
    """Memorise the tiny rows into a tiny model, unlearn with ``method``, and measure.

    The end-to-end check every method plugin's tests make: forget NLL rises, retain NLL stays
    within a bound the plugin states.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .config import RunConfig
    from .run import run
    from unlearn.evaluator import answer_nll

    model_dir = build_tiny_model(workdir / "model", memorise=FORGET_ROWS + RETAIN_ROWS, steps=memorise_steps)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def mean_nll(folder: Path, rows: list[Row]) -> float:
        values = answer_nll(AutoModelForCausalLM.from_pretrained(folder), tokenizer, rows)
        return sum(values) / len(values)

    settings = {"max_steps": 4, "batch_size": 6, "learning_rate": 1e-3, "progress": False, **(trainer or {})}
    cfg = RunConfig.model_validate(
        {"model": str(model_dir), "data": str(write_tiny_data(workdir / "data")), "method": method,
         "output_dir": str(workdir / "out"), "trainer": settings, "config": {method: config or {}}}
    )
    out = run(cfg, host=host or PluginHost())
    return NLLChange(mean_nll(model_dir, FORGET_ROWS), mean_nll(out, FORGET_ROWS),
                     mean_nll(model_dir, RETAIN_ROWS), mean_nll(out, RETAIN_ROWS))


@dataclass
class CheckResult:
    """One conformance check: its name, whether it passed and why not."""

    name: str
    ok: bool
    detail: str = ""


class _ProbeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ProbeLoss:
    """A plain NLL loss so parameter and post-process entries can be run end to end."""

    @hookimpl
    def register_methods(self, register: Callable[..., None]) -> None:
        register("conformance-probe", config=_ProbeConfig, kind="loss", uses_retain=False)

    @hookimpl
    def compute_loss(self, method: str, config: BaseModel, ctx: LossContext) -> torch.Tensor:
        return ctx.nll("forget")


def _check(results: list[CheckResult], name: str, fn: Callable[[], str | None]) -> bool:
    try:
        detail = fn() or ""
    except Exception as exc:  # noqa: BLE001 - the check reports whatever the plugin raised
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        results.append(CheckResult(name, False, last))
        return False
    results.append(CheckResult(name, True, detail))
    return True


def _tiny_batch(tokenizer: Any) -> dict[str, dict[str, torch.Tensor]]:
    data = PairedDataset(encode(FORGET_ROWS, tokenizer, 64), encode(RETAIN_ROWS, tokenizer, 64))
    return PairCollator(tokenizer.pad_token_id)([data[i] for i in range(3)])


def check_entry(entry: Entry, host: PluginHost, workdir: Path) -> list[CheckResult]:
    """Run every conformance check on one registered entry."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .config import RunConfig
    from .run import run

    results: list[CheckResult] = []
    needed = {"loss": "compute_loss", "parameters": "select_parameters", "post-process": "post_process"}[entry.kind]
    hooks = host.plugins[entry.plugin].hooks
    _check(results, "hooks match the specs", lambda: None if needed in hooks else _fail(f"a {entry.kind} entry must implement {needed}"))

    def config_round_trip() -> str:
        cfg = entry.config()
        again = entry.config.model_validate_json(cfg.model_dump_json())
        if again != cfg:
            _fail(f"{cfg!r} != {again!r} after a JSON round trip")
        try:
            entry.config.model_validate({**cfg.model_dump(), "surely_not_a_field": 1})
        except ValidationError:
            return f"{len(entry.config.model_fields)} fields"
        _fail("an unknown key was accepted")
        return ""

    config_ok = _check(results, "config validates and round-trips", config_round_trip)
    model_dir = workdir / "model"
    data_dir = write_tiny_data(workdir / "data")
    if not (model_dir / "config.json").is_file():
        build_tiny_model(model_dir)

    if entry.kind == "loss" and config_ok:

        def loss_is_differentiable() -> str:
            from .losses import ReferenceModel

            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir)
            ref = ReferenceModel(lambda: AutoModelForCausalLM.from_pretrained(model_dir))
            ctx = LossContext(model, _tiny_batch(tokenizer), 0, ref)
            out = host.call("compute_loss", entry, config=entry.config(), ctx=ctx)
            loss = out.loss if isinstance(out, LossOutput) else out
            if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
                _fail(f"compute_loss must return a scalar tensor, got {type(out).__name__}")
            value = float(loss.detach())
            if not math.isfinite(value):
                _fail(f"loss is {value}")
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if not grads or all(float(g.abs().sum()) == 0 for g in grads):
                _fail("the loss has no gradient with respect to the model")
            return f"loss {value:.4f}"

        _check(results, "loss is finite and differentiable", loss_is_differentiable)

    if config_ok:
        probe = None
        if entry.kind != "loss":
            probe = "conformance-probe"
            if probe not in host.entries:
                host.register(_ProbeLoss(), "conformance")

        def output_reloads() -> str:
            method, with_ = (entry.name, []) if probe is None else (probe, [entry.name])
            out = workdir / "out"
            config = RunConfig.model_validate(
                {
                    "model": str(model_dir),
                    "data": str(data_dir),
                    "method": method,
                    "with": with_,
                    "output_dir": str(out),
                    "trainer": {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "progress": False},
                }
            )
            run(config, host=host, overwrite=True)
            reloaded = AutoModelForCausalLM.from_pretrained(out)
            tokenizer = AutoTokenizer.from_pretrained(out)
            ids = tokenizer(FORGET_ROWS[0].input, return_tensors="pt").input_ids
            if not torch.isfinite(reloaded(ids).logits).all():
                _fail("the saved model produces non-finite logits")
            return str(out)

        _check(results, "a short run saves a model that reloads", output_reloads)
    return results


def _fail(message: str) -> None:
    raise AssertionError(message)


def check_plugin(name: str, host: PluginHost | None = None, workdir: Path | None = None) -> list[CheckResult]:
    """Check the plugin (entry-point name) or entry called ``name``: every entry it registers."""
    host = host or get_host()
    info = host.plugins.get(name)
    if info is None and name in host.entries:
        info = host.plugins[host.entries[name].plugin]
    if info is None:
        return [CheckResult("plugin is installed and loads", False, f"no plugin or entry named {name!r} is loaded")]
    if info.error:
        return [CheckResult("plugin is installed and loads", False, info.error)]
    results = [CheckResult("plugin is installed and loads", True, f"{info.distribution or info.name} {info.version or ''}".strip())]
    with tempfile.TemporaryDirectory(prefix="unlearn-check-") as tmp:
        base = workdir or Path(tmp)
        for entry_name in info.entries:
            for r in check_entry(host.entries[entry_name], host, base / entry_name):
                results.append(CheckResult(f"{entry_name}: {r.name}", r.ok, r.detail))
    return results


def assert_conforms(name: str, workdir: Path | None = None, host: PluginHost | None = None) -> None:
    """Fail with every broken check listed, for use in a plugin's own tests."""
    failed = [r for r in check_plugin(name, host, workdir) if not r.ok]
    assert not failed, "\n".join(f"{r.name}: {r.detail}" for r in failed)
