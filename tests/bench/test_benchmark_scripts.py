"""The benchmark scripts that quote the README's speed and memory tables, each run at its smallest:
they import the evaluator's and trainer's internals, so a change there must not break them. What
they measure is not asserted (timings are not tests); what they check is: the evaluator's
generations and MIA losses equal the organisers' one-at-a-time loop in both dtypes, a
cached-KL run frees its reference, and the ZeRO-3 table has its rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, undistributed_env

pytestmark = pytest.mark.heavy


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "benchmarks" / name), *args]
    res = subprocess.run(command, capture_output=True, text=True, env=undistributed_env(), cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_evaluator_speed_finds_no_differing_bit_in_either_dtype(tiny_target, tiny_bench, tmp_path: Path):
    model, _ = tiny_target
    args = ("--model", str(model), "--data", str(tiny_bench), "--lume", str(tmp_path / "none"), "--batch-size", "8")
    rows = [r for r in _rows(_script("evaluator_speed.py", *args).stdout) if r[0] == "default target data"]
    assert [r[1] for r in rows] == ["float32", "bfloat16 (--official)"]
    for row in rows:
        generations, losses = row[-2:]
        assert generations.startswith("0 of ") and losses.startswith("0 of "), row


def test_scale_measures_each_method_and_cached_kl_frees_the_reference(tmp_path: Path):
    args = ("--work", str(tmp_path), "--sizes", "3m", "--steps", "2", "--methods", "ga,gd,kl cached", "--no-zero3")
    rows = {r[1]: r for r in _rows(_script("scale.py", *args, "--no-eval").stdout) if r[0].startswith("3m")}
    assert set(rows) == {"ga", "gd", "kl cached"}
    assert rows["ga"][3] == "1.00" and rows["gd"][4] == "1.00"  # ratios to GA's and to GD's own row
    assert rows["ga"][-1] == "none" and rows["kl cached"][-1] == "2, no"  # the retain rows read once, then freed


def test_scale_compares_zero3_ranks_with_one_process_also_on_the_same_global_batch(tmp_path: Path):
    """The ZeRO-3 table (two gloo ranks) for the methods asked for only, GA also at half the rows
    per rank; ``--zero3-config`` reaches the ranks' ``--deepspeed``."""
    args = ("--work", str(tmp_path), "--sizes", "3m", "--steps", "2", "--methods", "ga", "--no-eval")
    table = _script("scale.py", *args).stdout.split("ZeRO-3, 2 ranks", 1)[1]
    rows = {r[0]: r for r in _rows(table)[2:]}  # past the header
    assert set(rows) == {"ga", "ga, 1 row per rank (the same global batch)"}  # no npo: not asked for
    for row in rows.values():
        assert all(float(x) > 0 for x in row[3].split(" / ")), row  # RSS, above start, heap ratios
    missing = tmp_path / "no_such_config.json"
    table = _script("scale.py", *args, "--zero3-config", str(missing)).stdout.split("ZeRO-3, 2 ranks", 1)[1]
    assert all(r[1].startswith("failed: error: deepspeed: ") for r in _rows(table)[2:]), table  # its message
