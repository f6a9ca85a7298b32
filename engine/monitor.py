"""Evaluation during training: a benchmark's signals every N steps, logged beside the loss, kept
as a curve in the run report, stopping conditions on them and the best step kept.

Signals come from the benchmark named by ``trainer.eval_benchmark`` (its ``signals`` method, see
``unlearn.hookspecs.Benchmark``). Conditions and the best-step criterion are arithmetic
expressions over signal names: ``abs(mia_auc - 0.5) <= 0.05``, ``forget_nll >= nonmember_nll``,
``retain_nll > 1.5 * initial_retain_nll`` (``initial_X`` is X of the input model, step 0).
An expression that cannot be evaluated at a step (a division by zero, an overflow) is false
there (a ``best_by`` value is skipped), said once (the ``unlearn`` logger) and kept in the run report.
"""

from __future__ import annotations

import ast
import logging
import math
import operator
from typing import Any

import torch
from transformers import TrainerCallback

from unlearn.errors import ConfigError
from unlearn.hookspecs import SignalFn
from unlearn.params import eval_mode

PREFIX = "eval_"  # signals are logged as eval_<name>: TensorBoard files them under eval/
FUNCTIONS = {"abs": abs, "min": min, "max": max}
_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.USub, ast.UAdd, ast.Not, ast.BinOp,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Compare, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Call,
    ast.Name, ast.Load, ast.Constant,
)  # fmt: skip


class Expression:
    """An arithmetic expression over signal names: numbers, + - * /, comparisons, and/or/not,
    abs/min/max. Anything else (attributes, subscripts, other calls) is refused when parsed."""

    def __init__(self, text: str, field: str) -> None:
        self.text, self.field = text, field
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConfigError(f"{field}: {text!r} is not an expression ({exc.msg})") from None
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED) or (
                isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS)
            ):
                raise ConfigError(
                    f"{field}: {ast.unparse(node)!r} is not allowed in {text!r} (numbers, signal names, "
                    "+ - * /, comparisons, and/or/not, abs/min/max)"
                )
            if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
                raise ConfigError(f"{field}: {text!r}: {node.value!r} is not a number")
        self.names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(FUNCTIONS)
        self._code = compile(tree, field, "eval")

    def check(self, known: set[str]) -> None:
        """Refuse names that are no signal (nor ``initial_`` of one), naming the field."""
        allowed = known | {f"initial_{k}" for k in known}
        unknown = sorted(self.names - allowed)
        if unknown:
            raise ConfigError(
                f"{self.field}: {unknown[0]!r} is not a signal of this run; signals: {', '.join(sorted(known))} "
                "(and initial_<signal>)"
            )

    def __call__(self, values: dict[str, float]) -> Any:
        """The value; raises `ArithmeticError` where it cannot be computed (a division by zero)."""
        return eval(self._code, {"__builtins__": {}}, {**FUNCTIONS, **values})  # noqa: S307 - nodes checked


def parse_conditions(conditions: list[str], best_by: str | None) -> tuple[list[Expression], Expression | None]:
    """The parsed ``trainer.stop_when`` and ``trainer.best_by`` (errors name the field)."""
    stops = [Expression(c, f"trainer.stop_when[{i}]") for i, c in enumerate(conditions)]
    return stops, Expression(best_by, "trainer.best_by") if best_by else None


class Monitor(TrainerCallback):
    """Computes the signals at step 0, every ``every`` steps and at the last step (the
    generation-based ones every ``score_every`` and at the last step), logs them as ``eval_<name>``
    through the trainer (console, TensorBoard, the checkpointed log history, so a resumed run keeps
    its curve), stops training at the first step where a ``stop_when`` condition holds, and marks
    the best step by ``best_by`` for a checkpoint that the run loads at the end (HF's
    ``best_model_checkpoint``; the last step, if best, needs none)."""

    def __init__(
        self,
        signals: SignalFn,
        every: int,
        score_every: int,
        stop_when: list[Expression],
        best_by: Expression | None,
        best_mode: str,
        known: set[str],
    ) -> None:
        for expr in [*stop_when, *([best_by] if best_by else [])]:
            expr.check(known)
        self.signals, self.every, self.score_every = signals, every, score_every
        self.stop_when, self.best_by, self.best_mode = stop_when, best_by, best_mode
        self.trainer: Any = None  # set by the runner: logging and stopping go through it
        self.stopped: dict[str, Any] | None = None
        self.unevaluable: dict[str, str] = {}  # expression -> why, at the first step it failed

    def _value(self, expr: Expression, scope: dict[str, float], step: int) -> Any:
        """``expr`` on ``scope``, or None where it cannot be computed (said once per expression)."""
        try:
            return expr(scope)
        except ArithmeticError as exc:
            if expr.text not in self.unevaluable and self.trainer.is_world_process_zero():
                self.unevaluable[expr.text] = why = f"step {step}: {type(exc).__name__} ({exc})"
                taken = "skipped" if expr.field == "trainer.best_by" else "false"
                logging.getLogger("unlearn").warning(f"warning: {expr.field}: {expr.text!r} cannot be evaluated at "
                                                     f"{why}; {taken} where it cannot")  # fmt: skip
            return None

    def curve(self) -> list[dict[str, float]]:
        """Every evaluation so far: ``{"step": n, <signal>: value, ...}``."""
        return [
            {"step": entry["step"], **{k[len(PREFIX) :]: v for k, v in entry.items() if k.startswith(PREFIX)}}
            for entry in self.trainer.state.log_history
            if any(k.startswith(PREFIX) for k in entry)
        ]

    def _measure(self, model: torch.nn.Module, full: bool) -> dict[str, float]:
        with eval_mode(model):
            values = {k: float(v) for k, v in self.signals(model, full).items()}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shared = [values]  # every rank measured (ZeRO-3 needs all in each forward); rank 0 decides
            torch.distributed.broadcast_object_list(shared, src=0)
            values = shared[0]
        return values

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.curve():  # a resumed run has step 0 in its restored log history
            self._evaluate(state, control, model, full=self.score_every > 0)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step
        full = self.score_every > 0 and step % self.score_every == 0
        if full or (self.every and step % self.every == 0):
            self._evaluate(state, control, model, full)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.curve()[-1]["step"] != state.global_step:  # the curve ends at the trained model
            self._evaluate(state, control, model, full=self.score_every > 0, last=True)

    def _evaluate(self, state: Any, control: Any, model: torch.nn.Module, full: bool, last: bool = False) -> None:
        values = self._measure(model, full)
        self.trainer.log({f"{PREFIX}{k}": v for k, v in values.items()})
        step = state.global_step
        initial = {f"initial_{k}": v for k, v in self.curve()[0].items() if k != "step"}
        scope = {**initial, **values}
        if step == 0:
            return
        if self.best_by is not None and self.best_by.names <= set(scope):
            found = self._value(self.best_by, scope, step)
            value = math.nan if found is None else float(found)
            better = operator.gt if self.best_mode == "max" else operator.lt
            if math.isfinite(value) and (state.best_metric is None or better(value, state.best_metric)):
                state.best_metric, state.best_global_step = value, step
                control.should_save = True  # the checkpoint HF keeps as best_model_checkpoint
                if last:
                    state.best_model_checkpoint = None  # the weights in hand are the best
        for expr in self.stop_when:
            if expr.names <= set(scope) and self._value(expr, scope, step):
                self.stopped = {"step": step, "condition": expr.text}
                control.should_training_stop = True
                break

    def report(self) -> dict[str, Any]:
        """The run report's ``monitor`` block."""
        state = self.trainer.state
        best = None
        if self.best_by is not None and state.best_global_step:
            best = {"by": self.best_by.text, "mode": self.best_mode, "step": state.best_global_step}
            best["value"] = state.best_metric
        return {"curve": self.curve(), "stopped": self.stopped, "best": best, "unevaluable": self.unevaluable}


def build_monitor(trainer: Any, data: Any, host: Any, tokenizer: Any) -> Monitor:
    """The monitor of a run whose trainer settings are ``trainer``, reading ``data`` (a folder)."""
    from pathlib import Path

    if data is None:
        raise ConfigError("trainer.eval_steps: the signals are read from the `data` folder; give `data`")
    benchmark = host.benchmark(trainer.eval_benchmark)
    if not callable(getattr(benchmark, "signals", None)):
        raise ConfigError(f"trainer.eval_benchmark: the benchmark {trainer.eval_benchmark!r} gives no training signals")
    names, fn = benchmark.signals(Path(data), trainer.eval_split, tokenizer, trainer.eval_rows)
    stops, best = parse_conditions(trainer.stop_when, trainer.best_by)
    return Monitor(fn, trainer.eval_steps, trainer.score_steps, stops, best, trainer.best_mode, set(names))
