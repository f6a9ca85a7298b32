"""Organiser mode on a real single-node Slurm (Debian's slurm-wlm and munge, started here in a
folder of the test's own, without accounting): entrants run as Slurm jobs; a job whose wrapper is
killed (as the out-of-memory killer or a lost node would) becomes `lost` and a cancelled one
`cancelled`, the competition carries on to its leaderboard, the entrants' processes end with their
jobs, and the next run runs those two again instead of serving them from the cache. Where Slurm
keeps accounting, a job it reports ended without a result becomes a status the same way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import COPY_SUBMISSION, cli, processes_with

DAEMONS = ("munged", "slurmctld", "slurmd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """A running single-node cluster; yields the environment its clients need (SLURM_CONF)."""
    missing = [d for d in (*DAEMONS, "sbatch", "squeue", "scancel") if shutil.which(d) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; scripts/install_slurm.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("slurmd runs jobs as root here; this test needs root")
    # munged wants its socket reachable by every user: a folder of its own, not under pytest's 0700 one
    root = Path(tempfile.mkdtemp(prefix="unlearn-slurm-"))
    root.chmod(0o755)
    munge = root / "munge"
    munge.mkdir(mode=0o755)
    shutil.chown(munge, "munge", "munge")
    sock = munge / "munge.socket"
    started = subprocess.run(
        ["su", "munge", "-s", "/bin/sh", "-c", f"munged --socket={sock} --pid-file={munge}/munged.pid "
         f"--seed-file={munge}/seed --log-file={munge}/munged.log"],
        capture_output=True, text=True,
    )  # fmt: skip
    if started.returncode != 0:
        pytest.skip(f"munged did not start: {started.stderr.strip() or started.stdout.strip()}")
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(
        textwrap.dedent(f"""
        ClusterName=unlearntest
        SlurmctldHost={host}(127.0.0.1)
        SlurmUser=root
        SlurmdUser=root
        SlurmctldPort={_free_port()}
        SlurmdPort={_free_port()}
        AuthType=auth/munge
        AuthInfo=socket={sock}
        CredType=cred/munge
        StateSaveLocation={root}/state
        SlurmdSpoolDir={root}/spool
        SlurmctldPidFile={root}/slurmctld.pid
        SlurmdPidFile={root}/slurmd.pid
        SlurmctldLogFile={root}/slurmctld.log
        SlurmdLogFile={root}/slurmd.log
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SchedulerType=sched/builtin
        SelectType=select/cons_tres
        SelectTypeParameters=CR_CPU_Memory
        ReturnToService=2
        MpiDefault=none
        AccountingStorageType=accounting_storage/none
        JobAcctGatherType=jobacct_gather/none
        JobCompType=jobcomp/none
        PlugStackConfig=/dev/null
        KillWait=5
        SlurmdParameters=config_overrides
        NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=12000 State=UNKNOWN
        PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
        """)
    )
    env = {"SLURM_CONF": str(conf)}
    full = {**os.environ, **env}
    try:
        for daemon in (["slurmctld", "-c"], ["slurmd"]):
            subprocess.run(daemon, env=full, check=True, capture_output=True, timeout=60)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=full, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.skip(f"the Slurm node did not come up: {state.stdout.strip()} {state.stderr.strip()}")
        yield env
    finally:
        for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", munge / "munged.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


# Hands in the target unchanged, after sleeping while the file HOLD exists.
WAITS = """
import os, shutil, time
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    while os.path.exists(HOLD):
        time.sleep(0.2)
    for f in os.listdir(input_model_path):
        shutil.copy(os.path.join(input_model_path, f), output_dir)
"""


def _job_of(entry: str, deadline: float) -> tuple[int, str]:
    """The submitit wrapper running the entrant whose entry file is ``entry`` (waiting for it),
    and its Slurm job id."""
    while time.time() < deadline:
        for pid in processes_with(entry):
            parent = pid
            while parent > 1:
                stat = Path(f"/proc/{parent}/stat").read_text()
                parent = int(stat[stat.rindex(")") + 2 :].split()[1])
                if b"submitit" in Path(f"/proc/{parent}/cmdline").read_bytes():
                    raw = Path(f"/proc/{parent}/environ").read_bytes().split(b"\0")
                    environ = dict(v.decode().split("=", 1) for v in raw if v)
                    # the array's task: its SLURM_JOB_ID may be the whole array's id
                    return parent, f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
        time.sleep(0.2)
    raise AssertionError(f"no Slurm job runs {entry}")


@pytest.mark.heavy
def test_lost_and_cancelled_jobs_become_statuses_and_run_again(arena, competition_file, tmp_path, slurm):
    hold = tmp_path / "hold"
    hold.touch()
    for name in ("finishes", "killed", "cancelled"):
        code = COPY_SUBMISSION if name == "finishes" else WAITS.replace("HOLD", repr(str(hold)))
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    settings = {"engine": "slurm", "parallel": 3, "memory_gb": 1.0, "lost_after_s": 5, "stall_s": 600}
    config = competition_file(tmp_path, ["finishes.py", "killed.py", "cancelled.py"], limit=300, **settings)
    env = {**os.environ, **slurm}
    started = time.time()
    compete = subprocess.Popen(
        [sys.executable, "-m", "unlearn", "compete", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        wrapper, _ = _job_of("submission/killed.py", deadline)
        _, job = _job_of("submission/cancelled.py", deadline)
        # both run at once beside the third: each asked for memory_gb + 1 GB, not the whole node
        os.kill(wrapper, signal.SIGKILL)  # as the out-of-memory killer would
        subprocess.run(["scancel", job], env=env, check=True)
        try:
            output, _ = compete.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            compete.kill()
            raise AssertionError(f"unlearn compete did not end: {compete.communicate()[0][-3000:]}") from None
    finally:
        compete.kill()
    assert compete.returncode == 0, output[-3000:]
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    by_name = {r["entrant"]: r for r in board["entrants"]}
    assert by_name["finishes"]["status"] == "ok" and by_name["finishes"]["rank"] == 1
    assert by_name["finishes"]["final_score"] == board["baseline"]["final_score"]  # as the sequential engine
    assert by_name["killed"]["status"] == "lost", by_name["killed"]
    assert "ended without a result" in by_name["killed"]["reason"]
    assert by_name["cancelled"]["status"] == "cancelled", by_name["cancelled"]
    assert time.time() - started < 300  # bounded: it did not wait on the lost job
    # nothing of the two entrants outlived their jobs (they would write their model once HOLD goes)
    time.sleep(1)
    assert processes_with("submission/killed.py") == [] and processes_with("submission/cancelled.py") == []
    hold.unlink()
    time.sleep(1)
    assert not list((tmp_path / "out" / "entrants" / "killed" / "work" / "output").iterdir())

    # the next run runs those two again (and now they finish); the third is cached
    again = cli("compete", "--config", str(config), env=slurm, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    said = again.stdout + again.stderr
    assert "finishes: cached" in said and "killed: cached" not in said and "cancelled: cached" not in said
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert {r["entrant"]: r["status"] for r in board["entrants"]} == {
        "finishes": "ok",
        "killed": "ok",
        "cancelled": "ok",
    }


class _Job:
    """Stands in for a submitit job that ended without a result, as Slurm with accounting reports
    it (``done()`` true, a final ``state``), for the case the single-node cluster above (no
    accounting) does not show."""

    def __init__(self, folder: Path, state: str) -> None:
        from types import SimpleNamespace

        self.job_id, self.state = "7_1", state
        self.paths = SimpleNamespace(result_pickle=folder / "7_1_0_result.pkl", stderr=folder / "7_1_0_log.err")

    def done(self) -> bool:
        return True

    def result(self):  # pragma: no cover - there is no result file to read
        raise AssertionError("submitit's result() waits on a job with no result file")


@pytest.mark.parametrize(
    ("state", "status"), [("CANCELLED by 0", "cancelled"), ("NODE_FAIL", "lost"), ("OUT_OF_MEMORY", "lost")]
)
def test_with_accounting_a_job_without_result_becomes_a_status(tmp_path, state, status):
    from unlearn.compete.engines import _awaited

    ((key, result),) = _awaited([("entrant", _Job(tmp_path, state))], lost_after_s=0.1, slurm=False, poll=0.05)
    assert key == "entrant" and result["status"] == status and result["wall_time_s"] >= 0.1
    assert ("cancelled" if status == "cancelled" else f"state {state}") in result["reason"]
