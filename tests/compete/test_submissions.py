"""Organiser mode with submissions written the way SemEval-2025 teams wrote theirs: each runs
unchanged and gets the right status (a folder with its own modules that drops the organisers'
``split`` column; a distributed one that needs the torchrun environment and the DeepSpeed config;
one written for ``accelerate launch``;
one cut by the time limit after checkpointing; one logging NaN losses; one declaring a package a
local wheelhouse provides, and one declaring a package nobody provides; one without ``unlearn()``;
a crash under torchrun, whose log lines carry ``[rankN]:``; two that change nothing, tied)."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from helpers import COPY_SUBMISSION, cli

pytestmark = pytest.mark.heavy

COPY = COPY_SUBMISSION

# A folder submission: the entry imports its own module, and drops the organisers' `split` column
# (which fails where the column is missing).
FOLDER = {
    "unlearn_submission.py": """
import pandas as pd
from tools.steps import ascend

def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    forget = pd.read_parquet(f"{forget_dir}/forget.parquet").drop(columns=["split"])
    retain = pd.read_parquet(f"{retain_dir}/retain.parquet").drop(columns=["split"])
    assert list(forget.columns) == ["id", "input", "output", "task"], forget.columns
    ascend(input_model_path, output_dir, list(forget["input"] + forget["output"]))
""",
    "tools/__init__.py": "",
    "tools/steps.py": """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

def ascend(model_path, output_dir, texts):
    tok, model = AutoTokenizer.from_pretrained(model_path), AutoModelForCausalLM.from_pretrained(model_path)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for text in texts[:2]:
        ids = tok(text, return_tensors="pt").input_ids
        (-model(ids, labels=ids).loss).backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(output_dir)
    tok.save_pretrained(output_dir)
""",
}

# Needs the torchrun environment (RANK, WORLD_SIZE, MASTER_*) and reads the DeepSpeed config it
# is given; both ranks take a step on their half of the rows, gradients averaged, rank 0 saves.
DISTRIBUTED = """
import json, os
import deepspeed, torch
import torch.distributed as dist
import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer

def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    deepspeed.init_distributed(dist_backend="gloo")  # without a launcher's variables: MPI discovery fails
    config = json.load(open(os.environ["UNLEARN_DEEPSPEED_CONFIG"]))
    assert config["zero_optimization"]["stage"] == 2 and dist.get_world_size() == 2
    rank = dist.get_rank()
    tok, model = AutoTokenizer.from_pretrained(input_model_path), AutoModelForCausalLM.from_pretrained(input_model_path)
    rows = pd.read_json(f"{forget_dir}/forget.jsonl", lines=True)
    text = rows["input"][rank] + rows["output"][rank]
    ids = tok(text, return_tensors="pt").input_ids
    (-model(ids, labels=ids).loss).backward()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.data -= 1e-3 * p.grad / 2
    if rank == 0:
        model.save_pretrained(output_dir)
        tok.save_pretrained(output_dir)
    dist.barrier()
"""

# Saves a checkpoint every "epoch" as the organisers advised, then is still busy at the limit;
# the last save was cut off mid-way (weights that do not load).
CHECKPOINTS = """
import os, shutil, time
from transformers import AutoModelForCausalLM, AutoTokenizer

def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    model, tok = AutoModelForCausalLM.from_pretrained(input_model_path), AutoTokenizer.from_pretrained(input_model_path)
    for epoch in (1, 2):
        model.save_pretrained(f"{output_dir}/checkpoint-{epoch}")
        tok.save_pretrained(f"{output_dir}/checkpoint-{epoch}")
        time.sleep(1.1)
    os.makedirs(f"{output_dir}/checkpoint-3")
    shutil.copy(f"{input_model_path}/config.json", f"{output_dir}/checkpoint-3")
    open(f"{output_dir}/checkpoint-3/model.safetensors", "wb").write(b"half written")
    while True:
        pass
"""

# Written for `accelerate launch`: it asks its Accelerator for the device and the process layout.
ACCELERATED = """
import os
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    accelerator = Accelerator()
    assert os.environ["ACCELERATE_USE_CPU"] == "True" and accelerator.num_processes == 1  # accelerate's CPU launch
    tok, model = AutoTokenizer.from_pretrained(input_model_path), AutoModelForCausalLM.from_pretrained(input_model_path)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model, opt = accelerator.prepare(model, opt)
    ids = tok("What did Ansel Drury build? A brass owl.", return_tensors="pt").input_ids.to(accelerator.device)
    accelerator.backward(-model(ids, labels=ids).loss)
    opt.step()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(output_dir)
        tok.save_pretrained(output_dir)
"""

NAN_LOG = """
import time
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    for step in range(10**9):
        print({"loss": float("nan") if step > 2 else 2.5, "grad_norm": 1.0, "epoch": step / 10}, flush=True)
        time.sleep(0.2)
"""

NEEDS_PACKAGE = COPY.replace("import os, shutil", "import os, shutil\nimport unlearn_test_extra").replace(
    "    for f in", "    assert unlearn_test_extra.VALUE == 42\n    for f in"
)

NO_UNLEARN = """
def forget(input_model_path, output_dir, forget_dir, retain_dir):
    pass
"""

# Fails after joining the process group, whose exception hook prefixes every line with [rankN]:
RANK_CRASH = """
import os
import torch.distributed as dist
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    dist.init_process_group("gloo")
    raise KeyError("rank " + os.environ["RANK"] + " cannot read " + open(f"{forget_dir}/forget.jsonl").read())
"""


def make_wheel(folder: Path, name: str, version: str, code: str) -> Path:
    """A pure-Python wheel by hand (no build tool needed): the module, METADATA, WHEEL, RECORD."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": code,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    digest = lambda text: base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()  # noqa: E731
    record = "".join(f"{path},sha256={digest(text)},{len(text.encode())}\n" for path, text in files.items())
    files[f"{dist}.dist-info/RECORD"] = record + f"{dist}.dist-info/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_submissions_in_the_teams_styles_run_unchanged(arena, competition_file, tmp_path):
    subs = tmp_path / "submissions"
    for path, code in FOLDER.items():
        (subs / "folder_team" / path).parent.mkdir(parents=True, exist_ok=True)
        (subs / "folder_team" / path).write_text(textwrap.dedent(code))
    (subs / "folder_team" / "notes.py").write_text("# not the entry\n")
    for name, code in {
        "distributed": DISTRIBUTED,
        "accelerated": ACCELERATED,
        "nan_log": NAN_LOG,
        "needs_package": NEEDS_PACKAGE,
        "missing_package": COPY,
        "no_unlearn": NO_UNLEARN,
        "rank_crash": RANK_CRASH,
        "copy_a": COPY,
        "copy_b": COPY,
        "own_python": COPY,
        "old_python": COPY,
    }.items():
        (subs / f"{name}.py").write_text(textwrap.dedent(code))
    make_wheel(tmp_path / "wheels", "unlearn_test_extra", "0.1", "VALUE = 42\n")
    entrants = [
        "submissions/folder_team/",
        {"name": "distributed", "submission": "submissions/distributed.py", "launcher": "deepspeed"},
        {"name": "accelerated", "submission": "submissions/accelerated.py", "launcher": "accelerate"},
        "submissions/nan_log.py",
        {
            "name": "needs_package",
            "submission": "submissions/needs_package.py",
            "requirements": ["unlearn-test-extra==0.1"],
        },
        {
            "name": "missing_package",
            "submission": "submissions/missing_package.py",
            "requirements": ["unlearn-test-missing==1.0"],
        },
        "submissions/no_unlearn.py",
        {
            "name": "own_python",
            "submission": "submissions/own_python.py",
            "python": str(Path(sys.executable).resolve()),
        },
        {"name": "old_python", "submission": "submissions/old_python.py", "python": "9.9"},
        {"name": "rank_crash", "submission": "submissions/rank_crash.py", "launcher": "torchrun"},
        "submissions/copy_a.py",
        "submissions/copy_b.py",
        "not_installed_method",
    ]
    # the limit leaves room for DeepSpeed's first JIT build of its CPU communication op
    config = competition_file(tmp_path, entrants, limit=300, nproc=2, wheelhouse="wheels", stall_s=60)
    refused = cli("compete", "--config", str(config))
    assert refused.returncode != 0 and "method 'not_installed_method' is not installed" in refused.stderr
    assert "pip install unlearn-plugin-not-installed-method" in refused.stderr

    chosen = [a for e in entrants[:-1] for a in ("--entrant", Path(e["submission"] if isinstance(e, dict) else e).stem)]
    res = cli("compete", "--config", str(config), *chosen, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "out"
    board = json.loads((out / "leaderboard.json").read_text())
    by_name = {r["entrant"]: r for r in board["entrants"]}
    status = {name: r["status"] for name, r in by_name.items()}
    assert status == {
        "folder_team": "ok",
        "distributed": "ok",
        "accelerated": "ok",
        "nan_log": "nan",
        "needs_package": "ok",
        "missing_package": "environment",
        "no_unlearn": "crash",
        "rank_crash": "crash",
        "copy_a": "ok",
        "copy_b": "ok",
        "own_python": "ok",
        "old_python": "environment",
    }, {n: (r["status"], r["reason"]) for n, r in by_name.items()}

    # the folder was copied whole; the data came in the organisers' five columns
    work = out / "entrants" / "folder_team" / "work"
    assert (work / "submission" / "tools" / "steps.py").is_file()
    import pyarrow.parquet as pq

    assert pq.read_table(work / "forget" / "forget.parquet").column_names == ["id", "input", "output", "task", "split"]
    # NaN losses end the run as soon as they show, long before the limit
    assert "NaN or infinite loss" in by_name["nan_log"]["reason"] and by_name["nan_log"]["wall_time_s"] < 20
    # the declared package came from the wheelhouse into an environment built once, kept for reruns
    # (and one for the Python declared by path, with no packages)
    built = [d for d in (out / "environments").iterdir() if d.is_dir()]
    assert len(built) == 2 and all((d / ".ready").is_file() for d in built)
    assert by_name["old_python"]["reason"] == "python '9.9': no such interpreter on this machine"
    assert by_name["missing_package"]["reason"].startswith("pip failed: ERROR: ")
    assert "unlearn-test-missing==1.0" in by_name["missing_package"]["reason"]
    # the harness's own message, and the worker's exception behind torchrun's [rankN]: prefixes
    assert by_name["no_unlearn"]["reason"] == "exit code 1: no unlearn() in no_unlearn.py"
    assert by_name["rank_crash"]["reason"].endswith(": KeyError"), by_name["rank_crash"]
    assert "[rank" in (out / "entrants" / "rank_crash" / "log.txt").read_text()
    # two unchanged models tie, and say they score as the target does
    assert by_name["copy_a"]["rank"] == by_name["copy_b"]["rank"]
    assert by_name["copy_a"]["final_score"] == board["baseline"]["final_score"]
    assert "final score equals the target's" in by_name["copy_b"]["reason"]
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert "cannot read" not in (out / name).read_text()  # the crash message quoted the forget file


HOSTILE = {
    "connects": """
import socket
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    socket.create_connection(("127.0.0.1", PORT), timeout=5).sendall(open(forget_dir + "/forget.jsonl", "rb").read())
""",
    "hoards": """
import time
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    blocks = []
    while True:
        blocks.append(b"x" * (64 * 2**20))
        time.sleep(0.05)
""",
    "fills_disk": """
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    with open(output_dir + "/junk.bin", "wb") as f:
        for _ in range(100):
            f.write(b"x" * 2**20)
""",
    "checkpoints": CHECKPOINTS,
    "forks": """
import subprocess, time
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(30)]
    time.sleep(30)
""",
}


def test_limits_hold_hostile_entrants(arena, competition_file, tmp_path):
    """No TCP (where Landlock has network rules), memory, disk and process limits: each has an
    entrant that hits it and gets its own status, with the limit in the reason. And the time
    limit: the newest complete checkpoint of an entrant cut by it is scored."""
    import socket

    from unlearn.compete.sandbox import abi

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    for name, code in HOSTILE.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code).replace("PORT", str(listener.getsockname()[1])))
    limits = {"memory_gb": 0.6, "disk_gb": 0.05, "processes": 12}
    config = competition_file(tmp_path, [f"{n}.py" for n in HOSTILE], limit=25, stall_s=60, **limits)
    res = cli("compete", "--config", str(config), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    by_name = {r["entrant"]: r for r in board["entrants"]}
    assert by_name["hoards"]["status"] == "memory", by_name["hoards"]
    assert "over the 0.6 GB limit" in by_name["hoards"]["reason"]
    assert by_name["fills_disk"]["status"] == "disk", by_name["fills_disk"]
    assert "0.05 GB limit" in by_name["fills_disk"]["reason"]
    assert by_name["forks"]["status"] == "processes", by_name["forks"]
    assert "limit of 12" in by_name["forks"]["reason"] and by_name["forks"]["wall_time_s"] < 30
    assert "limits: memory GB 0.6, disk GB 0.05, processes 12" in board["isolation"]
    # the newest complete checkpoint was scored, not the half-written one after it
    assert by_name["checkpoints"]["status"] == "timeout (checkpoint scored)", by_name["checkpoints"]
    result = json.loads((tmp_path / "out" / "entrants" / "checkpoints" / "result.json").read_text())
    assert result["model"] == "work/output/checkpoint-2" and "scored output/checkpoint-2" in result["reason"]
    assert by_name["checkpoints"]["rank"] == 1 and by_name["checkpoints"]["final_score"] is not None
    if abi() >= 4:
        assert by_name["connects"]["reason"] == "exit code 1: PermissionError", by_name["connects"]
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing reached the organiser's port
        assert "no TCP" in board["isolation"]


def test_a_build_lock_no_process_holds_is_cleared(tmp_path):
    """A JIT build killed with its entrant leaves torch's lock file, and every later build waits on
    it forever; a lock a live build holds open stays."""
    from unlearn.compete.entrant import clear_stale_locks

    for name in ("stale", "live"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "lock").touch()
    with open(tmp_path / "live" / "lock") as held:
        clear_stale_locks(tmp_path)
        assert not (tmp_path / "stale" / "lock").exists() and (tmp_path / "live" / "lock").exists()
        assert not held.closed
