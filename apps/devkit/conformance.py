"""The conformance kit: the checks every plugin must pass, run by its own tests
(``assert_conforms``) and by organisers (``unlearn plugins check NAME``)."""

from __future__ import annotations

import json
import math
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from unlearn import (
    Attack,
    Attacked,
    Benchmark,
    Config,
    LossContext,
    LossOutput,
    PairCollator,
    PairedDataset,
    Register,
    encode,
    hookimpl,
    load_rows,
    resolve_split,
)
from unlearn.engine import (
    AlternateSettings,
    CachedReference,
    Method,
    PluginHost,
    RunConfig,
    benchmarks,
    choose_alternates,
    encode_alternates,
    get_host,
    run,
)
from unlearn.evaluator import RESULTS

from .tiny import FORGET_ROWS, RETAIN_ROWS, cached_tiny_model, write_tiny_data

PLACEHOLDER_SUMMARY = "One line on what {name} does"  # what `unlearn plugins new` writes


@dataclass
class CheckResult:
    """One conformance check: its name, whether it passed and why not."""

    name: str
    ok: bool
    detail: str = ""


class _ProbeLoss:
    """A plain NLL loss so parameter and post-process methods can be run end to end."""

    @hookimpl
    def register_methods(self, register: Register) -> None:
        register("conformance-probe", config=Config, kind="loss", summary="NLL of the forget set", uses_retain=False)

    @hookimpl
    def compute_loss(self, method: str, config: Config, ctx: LossContext) -> torch.Tensor:
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


def _tiny_batch(tokenizer: Any, method: Method) -> tuple[dict[str, dict[str, torch.Tensor]], list[Any]]:
    """Three paired items (with alternates for a method that learns them) and the alternates."""
    alternates = None
    if method.alternate:
        texts, _ = choose_alternates(FORGET_ROWS, method.alternate, AlternateSettings(), 1, seed=0)
        alternates = encode_alternates(FORGET_ROWS, texts, tokenizer, 64)
    data = PairedDataset(encode(FORGET_ROWS, tokenizer, 64), encode(RETAIN_ROWS, tokenizer, 64), alternates=alternates)
    flat = [example for alts in alternates or [] for _, example in alts]
    return PairCollator(tokenizer.pad_token_id)([data[i] for i in range(3)]), flat


def check_method(method: Method, host: PluginHost, workdir: Path) -> list[CheckResult]:
    """Run every conformance check on one registered method."""
    results: list[CheckResult] = []
    _check(results, "hooks match the specs", lambda: _hooks_match(method, host))
    _check(results, "summary is written", lambda: _summary_written(method))
    if not _check(results, "config validates and round-trips", lambda: _config_round_trip(method)):
        return results
    _check(results, "search space (unlearn.search) is valid", lambda: _search_space(method))
    model_dir = cached_tiny_model()
    data_dir = write_tiny_data(workdir / "data")
    if method.kind == "loss":
        _check(results, "loss is finite and differentiable", lambda: _loss_is_differentiable(method, host, model_dir))
    check = lambda: _output_reloads(method, host, model_dir, data_dir, workdir / "out")  # noqa: E731
    _check(results, "a short run saves a model that reloads", check)
    return results


def _hooks_match(method: Method, host: PluginHost) -> None:
    needed = {"loss": "compute_loss", "parameters": "select_parameters", "post-process": "post_process"}[method.kind]
    if needed not in host.plugins[method.plugin].hooks:
        _fail(f"a {method.kind} method must implement {needed}")


def _summary_written(method: Method) -> str:
    if not method.summary.strip() or method.summary == PLACEHOLDER_SUMMARY.format(name=method.name):
        _fail("write the one-line summary (the skeleton's placeholder is still there)")
    return method.summary


def _config_round_trip(method: Method) -> str:
    cfg = method.config()
    again = method.config.model_validate_json(cfg.model_dump_json())
    if again != cfg:
        _fail(f"{cfg!r} != {again!r} after a JSON round trip")
    try:
        method.config.model_validate({**cfg.model_dump(), "surely_not_a_field": 1})
    except ValidationError:
        return f"{len(method.config.model_fields)} fields"
    _fail("an unknown key was accepted")
    return ""


def _search_space(method: Method) -> str:
    from unlearn.tune import declared

    space = declared(method.config, f"config.{method.name}")  # a bad range raises, naming the field
    return ", ".join(f"{p.rsplit('.', 1)[-1]} {d.describe()}" for p, d in space.items()) or "none declared"


def _loss_is_differentiable(method: Method, host: PluginHost, model_dir: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = CachedReference(lambda: AutoModelForCausalLM.from_pretrained(model_dir))
    batch, ref.rows["alternate"] = _tiny_batch(tokenizer, method)
    ctx = LossContext(model, batch, 0, ref)
    out = host.call("compute_loss", method, config=method.config(), ctx=ctx)
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


def _output_reloads(method: Method, host: PluginHost, model_dir: Path, data_dir: Path, out: Path) -> str:
    """Two steps of a run with the method (a parameter or post-process method beside a probe
    loss), whose saved model must reload and give finite logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loss, with_ = method.name, []
    if method.kind != "loss":
        loss, with_ = "conformance-probe", [method.name]
        if loss not in host.methods:
            host.register(_ProbeLoss(), "conformance")
    config = RunConfig.model_validate(
        {
            "model": str(model_dir),
            "data": str(data_dir),
            "method": loss,
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


def _fail(message: str) -> None:
    raise AssertionError(message)


def check_benchmark(bench: Benchmark, workdir: Path) -> list[CheckResult]:
    """Run every conformance check on one registered benchmark: its summary, tiny data in the core's
    row layout (``synthesize``), a tiny model's evaluation with every headline number present and
    finite (the required inputs taken from the tiny data folder; where a number needs the
    reference, the model's first evaluation as its own), rescoring that gives the same numbers,
    and its training signals where it gives them."""
    results: list[CheckResult] = []
    tiny = _Tiny(bench, workdir / "data", cached_tiny_model(), workdir)
    _check(results, "summary is written", tiny.summary_written)
    if _check(results, "synthesize writes tiny data in the core's row layout", tiny.synthesizes):
        if _check(results, "a tiny model's evaluation has every headline number", tiny.evaluates):
            _check(results, "rescoring the evaluation gives the same numbers", tiny.rescores)
        if callable(getattr(bench, "signals", None)):
            _check(results, "training signals are measured, finite", tiny.signals)
    return results


@dataclass
class _Tiny:
    """A benchmark's checks on its tiny data and the tiny model; each returns its detail or fails."""

    bench: Benchmark
    data: Path
    model: Path
    workdir: Path
    reference: Path | None = None  # the first evaluation, where a headline number needed the reference

    @property
    def evaluation(self) -> Path:
        return self.workdir / ("evaluation_with_reference" if self.reference else "evaluation")

    def summary_written(self) -> str:
        bench = self.bench
        if not bench.summary.strip() or bench.summary == PLACEHOLDER_SUMMARY.format(name=bench.name):
            _fail("write the benchmark's one-line summary (the skeleton's placeholder is still there)")
        return bench.summary

    def synthesizes(self) -> str:
        counts = self.bench.synthesize(self.data, 0, "tiny")
        rows = {split: len(load_rows(self.data, split)) for split in ("forget", "retain")}
        return f"{counts}; rows {rows}"

    def evaluates(self) -> str:
        bench, evaluate = self.bench, self.bench.evaluate
        given = {"device": "cpu", "progress": False}
        given |= dict.fromkeys(benchmarks.required(bench), self.data)  # the tiny data holds every input it needs
        found = evaluate(self.model, self.data, self.evaluation, **benchmarks.options_for(evaluate, given))
        if any(found.get(k) is None for k in bench.headline) and benchmarks.takes(evaluate, "reference"):
            self.reference = given["reference"] = self.evaluation  # the model as its own oracle
            found = evaluate(self.model, self.data, self.evaluation, **benchmarks.options_for(evaluate, given))
        written = json.loads((self.evaluation / RESULTS).read_text())
        if written.get("benchmark") != bench.name:
            _fail(f'{RESULTS} must hold "benchmark": {bench.name!r}')
        bad = {k: written.get(k) for k in bench.headline if not _finite(written.get(k))}
        if bad or any(found.get(k) != written.get(k) for k in bench.headline):
            _fail(f"headline numbers missing, not finite or not as returned: {bad or found}")
        return ", ".join(f"{k} {written[k]:.4g}" for k in bench.headline)

    def rescores(self) -> str:
        options = benchmarks.options_for(self.bench.rescore, {"reference": self.reference} if self.reference else {})
        found = self.bench.rescore(self.evaluation, self.data, self.workdir / "rescored", **options)
        first = json.loads((self.evaluation / RESULTS).read_text())
        keys = self.bench.headline
        differ = [k for k in keys if not math.isclose(found.get(k), first[k], rel_tol=1e-9, abs_tol=1e-12)]
        if differ:
            _fail(f"rescoring changed {differ}: {[found.get(k) for k in differ]} != {[first[k] for k in differ]}")
        return "the same headline numbers"

    def signals(self) -> str:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        names, measure = self.bench.signals(self.data, "train", AutoTokenizer.from_pretrained(self.model), 4)
        net = AutoModelForCausalLM.from_pretrained(self.model).eval()
        with torch.no_grad():
            quick, full = measure(net, False), measure(net, True)
        if set(full) != set(names) or not set(quick) <= set(names):
            _fail(f"signals named {sorted(names)} but measured {sorted(full)}")
        bad = {k: v for k, v in full.items() if not _finite(v)}
        if bad:
            _fail(f"signals not finite: {bad}")
        return ", ".join(sorted(names))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_attack(attack: Attack, workdir: Path) -> list[CheckResult]:
    """Run every conformance check on one registered attack: its summary, its config (a JSON
    round trip, unknown keys refused), and a run on the tiny model and data that leaves the model
    unchanged and returns `unlearn.Attacked` variants, each a model folder that loads and gives
    finite logits and a data folder with forget rows, written under its work folder (or the inputs
    themselves)."""
    results: list[CheckResult] = []
    _check(results, "summary is written", lambda: _summary_written(attack))  # type: ignore[arg-type]
    if not _check(results, "config validates and round-trips", lambda: _config_round_trip(attack)):  # type: ignore[arg-type]
        return results

    def attacks_the_tiny_model() -> str:
        from transformers import AutoModelForCausalLM

        from unlearn.robustness import Context

        model, data = cached_tiny_model(), write_tiny_data(workdir / "data")
        before = _digest(model)
        ctx = Context(0, "cpu", workdir / "work", None)
        ctx.work.mkdir(parents=True, exist_ok=True)
        variants = attack.run(model, data, attack.config(), ctx)
        if _digest(model) != before:
            _fail("the attack changed the input model's files")
        if not variants or not all(isinstance(v, Attacked) for v in variants):
            _fail(f"run must return a non-empty list of unlearn.Attacked, got {variants!r}")
        for v in variants:
            for path in (v.model, v.data, v.plain or v.data):
                if path not in (model, data) and ctx.work not in Path(path).parents:
                    _fail(f"{v.label}: {path} is neither an input nor under ctx.work")
            resolve_split(v.data, "forget")  # a data folder with forget rows
            ids = torch.tensor([[1, 2, 3]])
            if not torch.isfinite(AutoModelForCausalLM.from_pretrained(v.model)(ids).logits).all():
                _fail(f"{v.label}: the model gives non-finite logits")
        return ", ".join(v.label for v in variants)

    _check(results, "attacks the tiny model, which stays unchanged", attacks_the_tiny_model)
    return results


def _digest(folder: Path) -> str:
    import hashlib

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def check_plugin(name: str, host: PluginHost | None = None, workdir: Path | None = None) -> list[CheckResult]:
    """Check the plugin (entry-point name), method or benchmark called ``name``: every method,
    benchmark and attack it registers."""
    host = host or get_host()
    info = host.plugins.get(name)
    if info is None and name in host.methods:
        info = host.plugins[host.methods[name].plugin]
    if info is None and name in host.benchmarks:
        info = host.plugins[host.benchmarks[name][0]]
    if info is None:
        return [CheckResult("plugin is installed and loads", False, f"no plugin, method or benchmark named {name!r}")]
    if info.error:
        return [CheckResult("plugin is installed and loads", False, info.error)]
    results = [
        CheckResult(
            "plugin is installed and loads", True, f"{info.distribution or info.name} {info.version or ''}".strip()
        )
    ]
    with tempfile.TemporaryDirectory(prefix="unlearn-check-") as tmp:
        base = workdir or Path(tmp)
        for method_name in info.methods:
            for r in check_method(host.methods[method_name], host, base / method_name):
                results.append(CheckResult(f"{method_name}: {r.name}", r.ok, r.detail))
        for bench_name in info.benchmarks:
            for r in check_benchmark(host.benchmark(bench_name), base / bench_name):
                results.append(CheckResult(f"{bench_name}: {r.name}", r.ok, r.detail))
        for attack_name in info.attacks:
            for r in check_attack(host.attack(attack_name), base / attack_name):
                results.append(CheckResult(f"{attack_name}: {r.name}", r.ok, r.detail))
    return results


def assert_conforms(name: str, workdir: Path | None = None, host: PluginHost | None = None) -> None:
    """Fail with every broken check listed, for use in a plugin's own tests."""
    failed = [r for r in check_plugin(name, host, workdir) if not r.ok]
    assert not failed, "\n".join(f"{r.name}: {r.detail}" for r in failed)
