"""`unlearn demo` end to end on a fresh folder, then again with the cached benchmark and target."""

from __future__ import annotations

import json

import pytest
from helpers import cli

pytestmark = pytest.mark.heavy


def test_demo_runs_the_whole_loop_and_caches_the_target(tmp_path):
    out = tmp_path / "demo"
    res = cli("demo", "--out", str(out), "--size", "tiny", "--set", "trainer.epochs=2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "before -> after" in res.stdout and "final score" in res.stdout
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
    again = cli("demo", "--out", str(out), "--size", "tiny", "--method", "ga", "--set", "trainer.epochs=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "benchmark: cached" in again.stdout and "target model: cached" in again.stdout
    assert "oracle: the target retrained without the forget set: cached" in again.stdout
    assert (out / "unlearned_ga" / "model.safetensors").is_file()
