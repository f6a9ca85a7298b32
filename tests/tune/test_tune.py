"""`unlearn tune`: declared search spaces, their errors, and a real study on the tiny target that
resumes after its process is killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import REPO, SMALL_NET, cli
from pydantic import Field

from unlearn import Config, ConfigError, search
from unlearn.engine import Expression, PluginHost
from unlearn.tune import declared, search_space
from unlearn.tune.study import GRACE_S, constraint_value, core_groups


def test_every_installed_method_declares_a_valid_space(plugin_host: PluginHost):
    loss = [m for m in plugin_host.methods.values() if m.kind == "loss"]
    assert len(loss) >= 18
    for method in loss:
        space = search_space(plugin_host, [method.name], {})
        assert {"trainer.learning_rate", "trainer.epochs"} <= set(space), method.name
    assert "config.npo.beta" in search_space(plugin_host, ["npo"], {})
    lora = search_space(plugin_host, ["gd", "lora"], {})
    assert lora["config.lora.rank"].choices == (8, 16, 32)
    assert lora["trainer.learning_rate"].log and not lora["trainer.epochs"].integer


class Bad(Config):
    weight: float = Field(1.0, ge=0, json_schema_extra=search(-1, 2))
    scale: float = Field(1.0, gt=0, json_schema_extra=search(0, 2, log=True))
    layers: int = Field(2, ge=1, json_schema_extra=search(1.5, 4))
    kind: str = Field("a", pattern="^(a|b)$", json_schema_extra=search(choices=["a", "c"]))
    upside: float = Field(1.0, json_schema_extra=search(3, 1))


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("weight", r"search space of x.weight: low -1 is not a valid weight \(Input should be greater than or equal"),
        ("scale", r"search space of x.scale: a log scale needs low > 0, got 0"),
        ("layers", r"search space of x.layers: low 1.5 is not a valid layers"),
        ("kind", r"search space of x.kind: choice 'c' is not a valid kind"),
        ("upside", r"search space of x.upside: low \(3\) must be below high \(1\)"),
    ],
)
def test_a_bad_declaration_is_an_error_naming_the_field(field, message):
    only = type(
        "Only", (Config,), {"__annotations__": {field: Bad.__annotations__[field]}, field: Bad.model_fields[field]}
    )
    with pytest.raises(ConfigError, match=message):
        declared(only, "x")


def test_given_ranges_are_checked_and_can_fix_a_field(plugin_host):
    space = search_space(plugin_host, ["npo"], {"config.npo.beta": False, "trainer.epochs": [2, 4, 8]})
    assert "config.npo.beta" not in space and space["trainer.epochs"].choices == (2, 4, 8)
    with pytest.raises(ConfigError, match=r"search space of config.npo.bta: NPOConfig has no field 'bta'"):
        search_space(plugin_host, ["npo"], {"config.npo.bta": {"low": 0.1, "high": 1}})
    with pytest.raises(ConfigError, match=r"search space of config.gd.x: choose trainer.FIELD or config.METHOD.FIELD"):
        search_space(plugin_host, ["npo"], {"config.gd.x": [1]})
    with pytest.raises(ConfigError, match=r"search space of trainer.learning_rate: low 0 is not a valid"):
        search_space(plugin_host, ["npo"], {"trainer.learning_rate": {"low": 0, "high": 1}})


def test_constraints_in_optunas_form():
    scope = {"utility": 0.6, "initial_utility": 1.0}
    assert constraint_value(Expression("utility >= 0.75 * initial_utility", "c"), scope) == pytest.approx(0.15)
    assert constraint_value(Expression("utility <= 0.7", "c"), scope) == pytest.approx(-0.1)
    assert constraint_value(Expression("utility > 0.5 and utility < 0.7", "c"), scope) == 0.0


def test_jobs_get_disjoint_cores():
    cores = sorted(os.sched_getaffinity(0))
    groups = core_groups(len(cores))
    assert sorted(c for g in groups for c in g) == cores and all(len(g) == 1 for g in groups)
    with pytest.raises(ConfigError, match=rf"--jobs {len(cores) + 1}: this process may use {len(cores)} core"):
        core_groups(len(cores) + 1)


def _trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="unlearn", storage=f"sqlite:///{db}").trials


@pytest.mark.heavy
def test_a_study_resumes_after_its_process_is_killed(tiny_bench, tiny_target, tmp_path):
    target, _ = tiny_target
    out = tmp_path / "study"
    args = ["tune", "-o", str(out), "--model", str(target), "--data", str(tiny_bench), "--method", "gd"]
    args += ["--set", "trainer.batch_size=4", "--set", "trainer.learning_rate=1e-3", "--trials", "3"]
    args += ["--startup-trials", "2", "--report-epochs", "1", "--space", "trainer.epochs={low=1, high=3, step=1}"]
    args += ["--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "unlearn", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it while its second trial runs (its settings all drawn)
        trials = _trials(out / "study.db") if (out / "study.db").is_file() else []
        running = [t for t in trials if t.state.name == "RUNNING" and "folder" in t.user_attrs]
        if any(t.state.name == "COMPLETE" for t in trials) and running:
            break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in _trials(out / "study.db")}
    finished = [t for t in before.values() if t.state.name == "COMPLETE"]
    assert finished and any(t.state.name == "RUNNING" for t in before.values())
    time.sleep(2)
    alive = subprocess.run(["pgrep", "-f", f"unlearn.tune.worker {out}"], capture_output=True, text=True)
    assert not alive.stdout.strip(), "the worker outlived the killed study"
    time.sleep(GRACE_S)  # the cut trial's heartbeat goes stale: it is failed and retried
    res = cli(*args, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    after = {t.number: t for t in _trials(out / "study.db")}
    for t in finished:  # what finished before the kill is kept as it was
        assert after[t.number].params == t.params and after[t.number].value == t.value
    states = [t.state.name for t in after.values()]
    assert states.count("COMPLETE") + states.count("PRUNED") >= 3 and "RUNNING" not in states
    cut = next(t for t in before.values() if t.state.name == "RUNNING")
    assert after[cut.number].state.name == "FAIL"
    retry = next(t for t in after.values() if t.system_attrs.get("failed_trial") == cut.number)
    assert retry.params == cut.params and retry.user_attrs["folder"] == cut.user_attrs["folder"]
    summary = json.loads((out / "summary.json").read_text())
    assert {"history.png", "importance.png"} <= set(summary["figures"])
    assert (out / "report.md").read_text().startswith("# unlearn tune")
    if summary["best"] is not None:  # the best settings run again as a recipe
        again = cli("recipe", "run", str(out / "best.toml"), "--model", str(target), "--data", str(tiny_bench),
                    "-o", str(tmp_path / "again"))  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.heavy
def test_every_trial_runs_on_every_instance(tiny_bench, tiny_target, tiny_oracle, tmp_path):
    """With more tuning instances (the oracle of the same folder, which unlearns from another
    start, and a fresh instance of the embedded benchmark built for seed 7), a trial's value is
    the mean of its instances' and each constraint the worst."""
    target, oracle = tiny_target[0], tiny_oracle[0]
    out, instances = tmp_path / "study", tmp_path / "instances"
    args = ["tune", "-o", str(out), "--model", str(target), "--data", str(tiny_bench), "--method", "gd"]
    args += ["--set", "trainer.batch_size=4", "--set", "trainer.learning_rate=1e-3", "--set", "trainer.epochs=1"]
    args += ["--space", "trainer.epochs=false", "--space", "trainer.learning_rate=false", "--trials", "2"]
    args += ["--startup-trials", "2", "--report-epochs", "1", "--instance", f"{oracle},{tiny_bench}", "--no-progress"]
    args += ["--instance-seeds", "7", "--holdout-dir", str(instances), "--holdout-size", "tiny"]
    args += [a for k, v in SMALL_NET.items() for a in ("--target-set", f"{k}={v}")]
    res = cli(*args, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    built = instances / "seed-7"
    assert (built / "target" / "target_card.json").is_file() and (built / "data" / "unlearn_output.json").is_file()
    trials = [json.loads(f.read_text()) for f in sorted(out.glob("trials/*/trial.json"))]
    assert len(trials) == 2
    for trial in trials:
        first, second, third = trial["instances"]
        assert [first["model"], second["model"], third["model"]] == [str(target), str(oracle), str(built / "target")]
        assert first["initial"]["score"] != second["initial"]["score"]  # other instances, not one again
        assert trial["value"] == pytest.approx((first["value"] + second["value"] + third["value"]) / 3)
        assert trial["constraints"] == [max(i["constraints"][0] for i in trial["instances"])]
        assert trial["feasible"] == (trial["constraints"][0] <= 0)
    stored = {t.number: t for t in _trials(out / "study.db")}
    assert [stored[t["number"]].value for t in trials] == [t["value"] for t in trials]
    assert not list(out.glob("trials/*/model*"))  # only results are kept


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--instance", "only-one-folder"], "--instance 'only-one-folder': expected MODEL_DIR,DATA_DIR"),
        (["--instance-seeds", "4"], "--instance-seeds: give --holdout-dir"),
        (["--instance-seeds", "4", "--holdout-seeds", "4,5", "--holdout-dir", "x"], "both tuning and held-out"),
        (["--instance", "no/such/model,no/such/data"], "instances[0]: no/such/model and no/such/data must be folders"),
    ],
)
def test_bad_instances_are_one_clear_line(tiny_model, tiny_bench, tmp_path, extra, message):
    args = ["tune", "-o", str(tmp_path / "study"), "--model", str(tiny_model), "--data", str(tiny_bench)]
    res = cli(*args, "--method", "gd", *extra)
    assert res.returncode != 0 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "study").exists()


@pytest.mark.heavy
def test_trials_that_all_fail_end_the_study_with_their_error(tiny_model, tiny_bench, tmp_path):
    """A fault every trial meets (here weights cut short) stops the worker after three failures in
    a row instead of failing trials forever; the error says why."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "study"
    res = cli("tune", "-o", str(out), "--model", str(broken), "--data", str(tiny_bench), "--method", "gd",
              "--trials", "5", "--no-progress", timeout=300)  # fmt: skip
    assert res.returncode != 0
    assert "3 trials in a row failed; the last:" in res.stderr and "cannot be loaded" in res.stderr, res.stderr
    states = [t.state.name for t in _trials(out / "study.db")]
    assert states == ["FAIL"] * 3


def test_a_bad_study_setting_is_one_line_naming_the_option(tmp_path):
    res = cli("tune", "-o", str(tmp_path / "s"), "--model", "m", "--data", "d", "--method", "ga", "--trials", "0")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "unlearn tune: trials: Input should be greater than or equal to 1 (got 0)" in res.stderr
    assert not (tmp_path / "s").exists()  # nothing written


def test_a_refused_study_leaves_nothing_and_the_corrected_command_starts(tiny_model, tiny_bench, tmp_path):
    """The objective names no signal: refused before anything is written, so the corrected command
    is not refused as "a study with other settings". A malformed --space names --space."""
    from unlearn.tune import TuneSettings, prepare

    out = tmp_path / "study"
    args = ["tune", "-o", str(out), "--model", str(tiny_model), "--data", str(tiny_bench), "--method", "gd"]
    res = cli(*args, "--objective", "scroe")
    assert res.returncode == 2 and "objective: 'scroe' is not a signal of this run" in res.stderr, res.stderr
    assert not out.exists()
    res = cli(*args, "--space", "trainer.learning_rate={low=1e-5, high=")
    assert res.returncode == 2 and "--space trainer.learning_rate value {low=1e-5, high=: not valid TOML" in res.stderr
    assert not out.exists()
    base = {"model": str(tiny_model), "data": str(tiny_bench), "method": "gd"}
    study = prepare(TuneSettings(base=base, objective="score"), out)  # the corrected one
    assert study.out == out.resolve() and (out / "unlearn_output.json").is_file()
