"""benchmarks/gpu_smoke.sh, the script a GPU machine runs, in its CPU dry run: every step's command
and check, with "cpu" for "cuda" and two gloo ranks for two GPUs, so that the script still works
when it next meets a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, undistributed_env

pytestmark = pytest.mark.heavy


def test_the_gpu_smoke_script_runs_every_step_in_its_cpu_dry_run(tmp_path: Path):
    bin_dir = Path(sys.executable).parent
    env = undistributed_env() | {
        "GPU_SMOKE_DEVICE": "cpu",
        "METHODS": "gd npo",  # every method's runs are tested elsewhere; here the script's loop
        "STEPS": "2",
        "UNLEARN": str(bin_dir / "unlearn"),
        "PYTHON": sys.executable,
    }
    res = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_smoke.sh"), str(tmp_path / "smoke")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )
    rows = [
        line for line in res.stdout.splitlines() if line.startswith("| ") and not line.startswith(("| step", "| ---"))
    ]
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "CPU dry run" in res.stdout
    steps = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert steps == [
        "data synth",
        "target build (1e4+ parameters, cpu)",
        "run gd (bf16, cpu)",
        "run npo (bf16, cpu)",
        "run npo+kl+lora (bf16, cpu)",
        "evaluate (cpu)",
        "evaluate --official (cpu)",
        "compete, 2 entrants (entrant devices: cpu)",
        "ZeRO-3, 2 ranks, npo+kl (float32)",
        "evaluate, 2 processes = 1",
    ]
    assert all(row.split(" | ")[1] == "ok" for row in rows), rows
