"""The harness that calls a SemEval ``unlearn()`` submission, run as the organiser runs it: a
file, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import unlearn.compete.harness as harness

# Joins a process group and leaves it open, as published submissions do; an exit hook (which runs
# after the harness's main() returns) records whether the group was still there at exit.
LEAVES_GROUP_OPEN = """
import atexit, os
import torch.distributed as dist

def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    dist.barrier()
    atexit.register(lambda: open(os.path.join(output_dir, "at_exit"), "w").write(str(dist.is_initialized())))
"""


def test_the_harness_destroys_a_process_group_the_submission_left_open(tmp_path: Path):
    submission = tmp_path / "team.py"
    submission.write_text(textwrap.dedent(LEAVES_GROUP_OPEN))
    out = tmp_path / "out"
    args = [str(submission), str(tmp_path / "model"), str(out), str(tmp_path / "f"), str(tmp_path / "r")]
    res = subprocess.run([sys.executable, harness.__file__, *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "at_exit").read_text() == "False"
