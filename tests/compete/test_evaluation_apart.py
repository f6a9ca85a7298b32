"""Each entrant's model is scored in a process of its own: a kill from outside (as the kernel's
OOM killer sends) or a memory limit ends that evaluation, not the competition."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import cli

from unlearn.evaluator.evaluate import evaluate_model

pytestmark = pytest.mark.heavy


def _kill_evaluation_of(entrant: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first evaluation process of ``entrant`` that appears."""
    needle = f"/entrants/{entrant}/".encode()
    while not stop.is_set() and not killed:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"unlearn.compete.evaluation" in command and needle in command:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                break
        time.sleep(0.02)


def _board(out: Path) -> dict[str, dict]:
    return {r["entrant"]: r for r in json.loads((out / "leaderboard.json").read_text())["entrants"]}


def test_an_evaluation_killed_or_over_its_memory_ends_alone(arena, competition_file, tmp_path):
    config, out = competition_file(tmp_path, ["gd", "ga"]), tmp_path / "out"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_evaluation_of, args=("ga", killed, stop), daemon=True)
    killer.start()
    try:
        res = cli("compete", "--config", str(config), timeout=600)
    finally:
        stop.set()
        killer.join()
    assert res.returncode == 0, res.stderr[-3000:]
    assert killed
    board = _board(out)
    assert board["gd"]["status"] == "ok" and board["gd"]["rank"] == 1
    ga = board["ga"]
    assert ga["status"] == "unscorable" and ga["rank"] is None
    assert ga["reason"].startswith("evaluation: killed by SIGKILL after ") and ga["reason"].endswith("(out of memory?)")

    # the scores are those of the same evaluation in this process
    private = arena / "private"
    direct = evaluate_model(
        out / "entrants" / "gd" / "work" / "output",
        out / "organiser" / "data",
        tmp_path / "direct",
        mia=private,
        utility=private / "utility.jsonl",
        max_new_tokens=24,
        progress=False,
    )
    apart = json.loads((out / "entrants" / "gd" / "evaluation" / "evaluation_results.json").read_text())
    for key in ("forget-set", "retain-set", "mia_loss_acc", "mmlu_average", "aggregate-score", "mia_attacks_auc"):
        assert apart[key] == direct[key], key
    assert board["gd"]["final_score"] == direct["aggregate-score"]

    # a kill may be the machine's doing: the next run evaluates that entrant again, and only it
    again = cli("compete", "--config", str(config), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "gd: cached" in again.stdout + again.stderr
    assert _board(out)["ga"]["status"] == "ok"

    # a memory limit no evaluation keeps: every entrant is evaluated again and is unscorable, named
    competition_file(tmp_path, ["gd", "ga"], eval_memory_gb=0.05)
    third = cli("compete", "--config", str(config), timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    for row in _board(out).values():
        assert row["status"] == "unscorable"
        assert row["reason"].startswith("evaluation: memory: ") and "over the 0.05 GB limit" in row["reason"]
