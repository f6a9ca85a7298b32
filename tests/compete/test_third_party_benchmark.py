"""A third party's benchmark, as its author would make it: `unlearn plugins new --kind benchmark`,
the summary written, `pip install`; it then passes `unlearn plugins check` and gets `unlearn
evaluate`, organiser mode and `unlearn tune` with no change to our code."""

from __future__ import annotations

import json

import pytest
from helpers import cli, pip


@pytest.mark.heavy
def test_a_skeleton_benchmark_gets_every_application(tmp_path, tiny_model):
    res = cli("plugins", "new", "quiz", "--kind", "benchmark", "--dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    pkg = tmp_path / "unlearn-plugin-quiz"
    module = pkg / "unlearn_plugin_quiz" / "__init__.py"
    module.write_text(module.read_text().replace("One line on what quiz does", "Invented item codes"))
    pip("install", "--no-deps", "--no-build-isolation", str(pkg))
    try:
        check = cli("plugins", "check", "quiz")
        assert check.returncode == 0 and "FAIL" not in check.stdout, check.stdout[-3000:]
        data = tmp_path / "data"
        assert cli("data", "synth", "--benchmark", "quiz", "--out", str(data), "--size", "tiny").returncode == 0

        res = cli("evaluate", str(tiny_model), "--benchmark", "quiz", "-d", str(data), "-o", str(tmp_path / "e"))
        assert res.returncode == 0 and "quiz: forget_nll" in res.stdout, res.stderr
        res = cli("evaluate", str(tiny_model), "--benchmark", "quiz", "-d", str(data), "-o", str(tmp_path / "e2"),
                  "--mia", str(data))  # fmt: skip
        assert res.returncode != 0 and "--mia: the quiz benchmark does not take it (--mia is a LUME" in res.stderr

        competition = {
            "name": "quiz-test",
            "benchmark": "quiz",
            "model": str(tiny_model),
            "forget": str(data / "forget.jsonl"),
            "retain": str(data / "retain.jsonl"),
            "data": str(data),
            "output_dir": "out",
            "time_limit_s": 120,
            "entrant_devices": "cpu",
            "trainer": {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-2},
            "entrants": ["ga", "gd"],
        }
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "competition.json").write_text(json.dumps(competition))
        res = cli("compete", "--config", str(tmp_path / "c" / "competition.json"))
        assert res.returncode == 0, res.stderr[-3000:]
        board = json.loads((tmp_path / "c" / "out" / "leaderboard.json").read_text())
        assert board["benchmark"] == "quiz" and board["ranked_by"] == "forget_nll"
        assert board["utility_gate"].startswith("0.75 x target retain_likelihood ")
        rows = {r["entrant"]: r for r in board["entrants"]}
        for row in rows.values():  # gradient ascent on the forget rows raised their NLL above the target's
            assert row["status"] == "ok" and row["forget_nll"] > board["baseline"]["forget_nll"], row
        ranked = [r for r in board["entrants"] if r["rank"]]
        assert [r["forget_nll"] for r in ranked] == sorted((r["forget_nll"] for r in ranked), reverse=True)

        study = tmp_path / "study"
        args = ["tune", "-o", str(study), "--model", str(tiny_model), "--data", str(data), "--method", "gd"]
        args += ["--set", "trainer.eval_benchmark=quiz", "--set", "trainer.batch_size=2", "--objective", "forget_nll"]
        args += ["--space", "trainer.epochs={low=1, high=2, step=1}", "--trials", "2", "--startup-trials", "2"]
        args += ["--report-epochs", "1", "--no-progress"]
        res = cli(*args, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        summary = json.loads((study / "summary.json").read_text())
        assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 2, summary
        assert summary["objective"] == "forget_nll" and summary["best"]["value"] > 0, summary
    finally:
        pip("uninstall", "-y", "unlearn-plugin-quiz")
