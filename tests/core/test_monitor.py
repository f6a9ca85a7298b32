"""Evaluation during training: the signals equal a direct computation, stop_when stops at the right
step, best_by keeps the best step's weights, a resumed run keeps its curve, bad settings are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import CrashOnce
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import ConfigError, hookimpl, load_rows
from unlearn.engine import RunConfig, build_config, run
from unlearn.evaluator.evaluate import evaluate_model


class Scripted:
    """A benchmark whose one signal ``x`` takes the scripted values, one per evaluation."""

    name, summary, headline = "scripted", "scripted signals", {"x": "lower"}

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = values, 0

    def synthesize(self, out, seed, size):  # pragma: no cover - never called here
        raise NotImplementedError

    evaluate = rescore = synthesize

    def signals(self, data, split, tokenizer, rows):
        def measure(model, full):
            self.calls += 1
            return {"x": self.values[self.calls - 1]}

        return {"x"}, measure


class ScriptedPlugin:
    def __init__(self, values: list[float]) -> None:
        self.benchmark = Scripted(values)

    @hookimpl
    def register_benchmarks(self, register):
        register(self.benchmark)


def _report(out: Path) -> dict:
    return json.loads((out / "unlearn_run.json").read_text())


def _answer_nll(model, tokenizer, rows) -> float:
    """Pooled answer-token NLL, computed plainly: one row at a time, the prompt's tokens masked."""
    total = count = 0.0
    for row in rows:
        prompt = len(tokenizer(row.input)["input_ids"])
        ids = torch.tensor([tokenizer(row.input + row.output)["input_ids"]])
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        token = -logp.gather(-1, ids[0, 1:, None])[:, 0]
        total += float(token[prompt - 1 :].sum())
        count += len(token) - (prompt - 1)
    return total / count


def test_signals_equal_a_direct_computation_and_the_evaluation(tiny_bench, tiny_target, tmp_path, host):
    target, _ = tiny_target
    cfg = RunConfig.model_validate(
        {
            "model": str(target),
            "data": str(tiny_bench),
            "method": "gd",
            "output_dir": str(tmp_path / "out"),
            "trainer": {"max_steps": 2, "batch_size": 2, "learning_rate": 3e-4, "progress": False}
            | {"eval_steps": 1, "score_steps": 2, "tensorboard": True},
        }
    )
    out = run(cfg, host=host)
    curve = _report(out)["monitor"]["curve"]
    assert [c["step"] for c in curve] == [0, 1, 2]
    assert "score" in curve[0] and "score" not in curve[1] and "score" in curve[2]
    # step 0 is the input model: the official evaluation of it on the validation split agrees
    evaluation = evaluate_model(target, tiny_bench, tmp_path / "eval", split="validation", progress=False)
    assert curve[0]["score"] == pytest.approx(evaluation["aggregate-score"], abs=1e-9)
    assert curve[0]["mia_auc"] == evaluation["mia_loss_acc"]
    assert curve[0]["utility"] == evaluation["mmlu_average"]
    # the last step is the written model: its NLLs, computed directly
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    for split in ("forget", "retain"):
        rows = load_rows(tiny_bench / f"{split}_validation.jsonl")
        with torch.no_grad():
            assert curve[2][f"{split}_nll"] == pytest.approx(_answer_nll(model, tokenizer, rows), rel=1e-4)
    with torch.no_grad():
        members = [json.loads(x)["document"] for x in (tiny_bench / "mia_member_validation.jsonl").open()]
        losses = [
            float(model(ids, labels=ids).loss) for ids in (tokenizer(d, return_tensors="pt").input_ids for d in members)
        ]
    assert curve[2]["member_nll"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_stop_when_stops_at_the_first_step_it_holds(host, make_config):
    plugin = ScriptedPlugin([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0])
    host.register(plugin, "scripted")
    cfg = make_config(
        trainer={"max_steps": 6, "eval_steps": 1, "eval_benchmark": "scripted", "stop_when": ["x <= 2", "x < 0"]}
    )
    report = _report(run(cfg, host=host))["monitor"]
    assert report["stopped"] == {"step": 3, "condition": "x <= 2"}
    assert [c["step"] for c in report["curve"]] == [0, 1, 2, 3]
    assert plugin.benchmark.calls == 4


def test_initial_values_enter_conditions(host, make_config):
    host.register(ScriptedPlugin([10.0, 9.0, 7.0, 4.0, 1.0]), "scripted")
    cfg = make_config(
        trainer={"max_steps": 4, "eval_steps": 1, "eval_benchmark": "scripted", "stop_when": ["x < 0.5 * initial_x"]}
    )
    assert _report(run(cfg, host=host))["monitor"]["stopped"]["step"] == 3


def test_best_by_keeps_the_best_steps_weights(host, make_config, tmp_path):
    host.register(ScriptedPlugin([9.0, 3.0, 1.0, 2.0, 5.0]), "scripted")
    trainer = {"max_steps": 4, "eval_steps": 1, "eval_benchmark": "scripted", "best_by": "x", "best_mode": "min"}
    out = run(make_config(trainer=trainer), host=host)
    assert _report(out)["monitor"]["best"] == {"by": "x", "mode": "min", "step": 2, "value": 1.0}
    two_steps = run(make_config(trainer={"max_steps": 2}, output_dir=str(tmp_path / "two")), host=host)
    four_steps = run(make_config(trainer={"max_steps": 4}, output_dir=str(tmp_path / "four")), host=host)
    best, two, four = (load_file(f / "model.safetensors") for f in (out, two_steps, four_steps))
    assert all(torch.equal(best[k], two[k]) for k in best)
    assert not all(torch.equal(best[k], four[k]) for k in best)


def test_a_resumed_run_keeps_its_curve(host, make_config):
    plugin = ScriptedPlugin([6.0, 5.0, 4.0, 3.0, 5.0, 4.0, 3.0, 2.0])
    host.register(plugin, "scripted")
    host.register(CrashOnce(), "crashy")
    trainer = {"max_steps": 5, "save_steps": 2, "eval_steps": 1, "eval_benchmark": "scripted"}
    cfg = make_config(method="crashy", trainer=trainer)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, host=host)
    report = _report(run(cfg, host=host))
    assert report["resumed_from"].endswith("checkpoint-2")
    # steps 0-2 from the checkpoint's log history; 3-5 measured again (no second step 0)
    assert [(c["step"], c["x"]) for c in report["monitor"]["curve"]] == [(0, 6), (1, 5), (2, 4), (3, 5), (4, 4), (5, 3)]


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"stop_when": ["mia_auc <"]}, "trainer.stop_when: item 0: 'mia_auc <' is not an expression"),
        ({"stop_when": ["x < 1", "__import__('os')"], "eval_steps": 1}, 'trainer.stop_when: item 1: "__import__'),
        ({"best_by": "a.b", "eval_steps": 1}, "trainer.best_by: expression: 'a.b' is not allowed"),
        ({"stop_when": ["x < 1"]}, "set eval_steps"),
    ],
)
def test_bad_conditions_are_errors_naming_the_field(trainer, message):
    config = {"model": "m", "data": "d", "method": "gd", "output_dir": "o", "trainer": trainer}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_config(config)


def test_an_unknown_signal_is_an_error_naming_the_field(host, make_config, tiny_model):
    host.register(ScriptedPlugin([1.0]), "scripted")
    cfg = make_config(trainer={"eval_steps": 1, "eval_benchmark": "scripted", "stop_when": ["x < 1", "mia_acu < 1"]})
    with pytest.raises(ConfigError, match=r"trainer.stop_when\[1\]: 'mia_acu' is not a signal of this run; signals: x"):
        run(cfg, host=host)
    assert not cfg.output_dir.exists()


def test_the_curve_ends_at_the_trained_model(host, make_config):
    host.register(ScriptedPlugin([3.0, 2.0, 1.0]), "scripted")
    cfg = make_config(trainer={"max_steps": 3, "eval_steps": 2, "eval_benchmark": "scripted", "best_by": "-x"})
    report = _report(run(cfg, host=host))["monitor"]
    assert [(c["step"], c["x"]) for c in report["curve"]] == [(0, 3), (2, 2), (3, 1)]
    assert report["best"]["step"] == 3  # the last step is best: its weights are the output, no checkpoint needed


def test_a_condition_that_cannot_be_evaluated_is_false_and_said_once(host, make_config, caplog):
    """A division by zero ends nothing: the condition is false at that step, the run goes on to
    its end (no traceback, no staging folder left), and the report keeps why."""
    host.register(ScriptedPlugin([4.0, 3.0, 2.0, 1.0, 0.0]), "scripted")
    trainer = {
        "max_steps": 4,
        "eval_steps": 1,
        "eval_benchmark": "scripted",
        "stop_when": ["x / (x - x) > 1", "x < 1"],
        "best_by": "1 / (x - 2)",
        "best_mode": "min",
    }
    cfg = make_config(trainer=trainer)
    out = run(cfg, host=host)
    report = _report(out)["monitor"]
    assert report["stopped"] == {"step": 4, "condition": "x < 1"}  # the other condition never held
    assert report["unevaluable"] == {
        "x / (x - x) > 1": "step 1: ZeroDivisionError (float division by zero)",
        "1 / (x - 2)": "step 2: ZeroDivisionError (float division by zero)",
    }
    assert report["best"]["step"] == 3 and report["best"]["value"] == -1.0  # step 2 skipped, not chosen
    said = [r.getMessage() for r in caplog.records if "cannot be evaluated" in r.getMessage()]
    assert said == [
        "warning: trainer.stop_when[0]: 'x / (x - x) > 1' cannot be evaluated at step 1: ZeroDivisionError "
        "(float division by zero); false where it cannot",
        "warning: trainer.best_by: '1 / (x - 2)' cannot be evaluated at step 2: ZeroDivisionError "
        "(float division by zero); skipped where it cannot",
    ]
    assert not list(out.parent.glob(f".{out.name}*"))
