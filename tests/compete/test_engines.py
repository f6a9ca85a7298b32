"""Engines: the same competition run one entrant after another, as parallel submitit tasks on
this machine, and through the Slurm engine's job array (on submitit's local executor) gives the
same leaderboard; in parallel each entrant ran at the same time as the other, on its own core
with one torch thread."""

from __future__ import annotations

import json
import textwrap

import pytest
from helpers import cli

from unlearn import ConfigError
from unlearn.compete.engines import slots

pytestmark = pytest.mark.heavy

# Deterministic (no reduction whose order depends on threads), so both engines must agree exactly.
SUBMISSION = """
import json, os, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    began = time.time()
    model = AutoModelForCausalLM.from_pretrained(input_model_path)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(SCALE)
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(input_model_path).save_pretrained(output_dir)
    time.sleep(4)
    seen = {"cores": sorted(os.sched_getaffinity(0)), "threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(), "began": began, "ended": time.time()}
    open(os.path.join(output_dir, "..", "seen.json"), "w").write(json.dumps(seen))
"""


def test_parallel_entrants_give_the_sequential_leaderboard(arena, competition_file, tmp_path):
    for name, scale in (("keeps", "1.0"), ("scales", "0.5")):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(SUBMISSION).replace("SCALE", scale))
    boards, seen = {}, {}
    for engine in ("sequential", "local", "slurm"):
        folder = tmp_path / engine
        (folder).mkdir()
        for name in ("keeps", "scales"):
            (folder / f"{name}.py").write_text((tmp_path / f"{name}.py").read_text())
        config = competition_file(folder, ["keeps.py", "scales.py"], limit=120, engine=engine, parallel=2)
        # slurm: submitit's job-array path, on its local executor (no Slurm here)
        res = cli("compete", "--config", str(config), timeout=600, env={"UNLEARN_SLURM_CLUSTER": "local"})
        assert res.returncode == 0, res.stderr[-3000:]
        board = json.loads((folder / "out" / "leaderboard.json").read_text())
        keys = ("rank", "entrant", "status", "final_score", "task_aggregate", "mia_score", "utility", "gate")
        boards[engine] = [{k: row[k] for k in keys} for row in board["entrants"]]
        seen[engine] = {
            n: json.loads((folder / "out" / "entrants" / n / "work" / "seen.json").read_text())
            for n in ("keeps", "scales")
        }
    assert boards["local"] == boards["sequential"] == boards["slurm"]
    assert all(r["status"] == "ok" for r in boards["local"])
    cores = sorted(c for s in seen["local"].values() for c in s["cores"])
    if len(cores) >= 2:  # two shares: each entrant on its own core(s), a thread per core
        assert len(set(cores)) == len(cores)
        for s in seen["local"].values():
            assert s["threads"] == str(len(s["cores"])) and s["torch_threads"] == len(s["cores"])
        a, b = seen["local"].values()
        assert a["began"] < b["ended"] and b["began"] < a["ended"]  # at the same time
        a, b = seen["sequential"].values()
        assert a["ended"] < b["began"] or b["ended"] < a["began"]  # one after the other
    assert seen["sequential"]["keeps"]["threads"] is None


def test_slots_share_cores_and_gpus():
    import os

    cores = sorted(os.sched_getaffinity(0))
    assert [s.cores for s in slots(1, [0, 1, 2])] == [cores] and slots(1, [0, 1, 2])[0].gpus == [0, 1, 2]
    if len(cores) >= 2:
        two = slots(2, [4, 5, 6])
        assert sorted(two[0].cores + two[1].cores) == cores and not set(two[0].cores) & set(two[1].cores)
        assert [s.gpus for s in two] == [[4], [5, 6]]
    with pytest.raises(ConfigError, match="this machine has"):
        slots(len(cores) + 1, [])
