"""`unlearn demo` end to end, its benchmark, target and oracle cached (built by the shared
fixtures, the way `unlearn target build` builds them; the builds themselves are tested in
test_target.py), with GD and the tuned recipe, then again with another method and no recipe."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import cli

from unlearn.engine import mark

pytestmark = pytest.mark.heavy


def test_demo_runs_the_whole_loop_and_caches_the_target(tmp_path, tiny_bench, tiny_target, tiny_oracle):
    out = tmp_path / "demo"
    mark(out, "demo")  # a demo folder whose first steps are done
    for source, name in ((tiny_bench, "data"), (tiny_target[0], "target"), (tiny_oracle[0], "oracle")):
        shutil.copytree(source, out / name)
    res = cli("demo", "--out", str(out), "--size", "tiny", "--set", "trainer.epochs=2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on the tiny target: before | gd | tuned_rmu | oracle" in res.stdout and "final score" in res.stdout
    report = out / "report"
    results = json.loads((report / "evaluation_results.json").read_text())
    before = json.loads((out / "eval_target" / "evaluation_results.json").read_text())
    assert before["forget-set"]["overall-regurgitation-score"] > 0.9  # the target memorised
    assert results["forget-set"]["overall-regurgitation-score"] < before["forget-set"]["overall-regurgitation-score"]
    assert results["utility_gate"]["pass"] in (True, False)
    assert (report / "figure.png").is_file() and (report / "summary.md").is_file()
    oracle = json.loads((out / "eval_oracle" / "evaluation_results.json").read_text())
    assert results["oracle"]["aggregate-score"] == oracle["aggregate-score"] and "oracle" in res.stdout
    assert oracle["forget-set"]["overall-regurgitation-score"] < before["forget-set"]["overall-regurgitation-score"]
    assert "gap to oracle" in (report / "summary.md").read_text()
    tuned = json.loads((out / "eval_tuned_rmu" / "evaluation_results.json").read_text())  # the recipe beside it
    assert tuned["oracle"]["aggregate-score"] == oracle["aggregate-score"] and "tuned_rmu" in res.stdout
    assert tuned["forget-set"]["overall-regurgitation-score"] < before["forget-set"]["overall-regurgitation-score"]
    args = ("--method", "ga", "--set", "trainer.epochs=1", "--recipe", "none")
    again = cli("demo", "--out", str(out), "--size", "tiny", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "benchmark: cached" in again.stdout and "target model: cached" in again.stdout
    assert "oracle: the target retrained without the forget set: cached" in again.stdout
    assert (out / "unlearned_ga" / "model.safetensors").is_file()
