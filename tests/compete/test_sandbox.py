"""The sandbox's namespaces, run for real: an entrant in them finds none of the organiser's
processes under /proc (so neither its environment nor its command line), sends no UDP to this
machine's loopback, and its processes end with it; an unprivileged organiser gets them too; and
Landlock's rules let a training run while closing the devices it does not need. Each case skips
with the reason where this kernel refuses what it needs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import processes_with

from unlearn.compete.entrant import readable_paths, system_paths
from unlearn.compete.sandbox import Protection, abi

SANDBOX = Path(__file__).resolve().parents[2] / "apps" / "compete" / "sandbox.py"
SECRET = "organiser-token-5d41402abc4b2a76"

# What a SemEval entrant did: scan /proc for every process's environment and command line (the
# secret spelt in hex, so that the scan's own command line does not hold it).
SCAN = f"""
import json, os
needle = bytes.fromhex("{SECRET.encode().hex()}")
found, pids = [], []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        pids.append(int(entry))
        for name in ("environ", "cmdline"):
            try:
                if needle in open(f"/proc/{{entry}}/{{name}}", "rb").read():
                    found.append(f"{{entry}}/{{name}}")
            except OSError:
                pass
print(json.dumps({{"pids": sorted(pids), "found": found, "me": os.getpid()}}))
"""


@pytest.fixture(scope="module")
def protection() -> Protection:
    return Protection.probe()


def sandboxed(
    *flags: str,
    code: str,
    user: str | None = None,
    python: str = sys.executable,
    sandbox: Path = SANDBOX,
    tmp: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -c code`` in the sandbox with ``flags`` and a scrubbed environment (as organiser
    mode gives an entrant), from an organiser process whose environment and command line carry a
    secret (``user``: the organiser runs as that user, through ``su``; ``tmp``: the entrant's TMPDIR)."""
    scrubbed = {"PATH": "/usr/bin:/bin", **({"TMPDIR": str(tmp)} if tmp else {})}
    command = [python, str(sandbox), *flags, "--", python, "-c", code]
    organiser = f"import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:], env={scrubbed!r}).returncode)"
    organiser += f"  # {SECRET}"
    command = [python, "-c", organiser, *command]
    if user is not None:
        quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in command)
        command = ["su", user, "-s", "/bin/sh", "-c", f"ORGANISER_TOKEN={SECRET} {quoted}"]
    env = {**os.environ, "ORGANISER_TOKEN": SECRET}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd="/", check=False)


def test_an_entrant_in_its_pid_namespace_sees_only_its_own_processes(protection):
    if not protection.pid:
        pytest.skip("this kernel refuses a PID namespace to this user (see Protection.probe)")
    done = sandboxed("--pid-namespace", code=SCAN)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # the namespace's init (1) and the entrant itself (2); not the organiser, not pid 1 of the host
    assert seen["found"] == [] and seen["pids"] == [1, 2] and seen["me"] == 2, seen
    outside = json.loads(subprocess.run([sys.executable, "-c", SCAN], capture_output=True, text=True).stdout)
    assert len(outside["pids"]) > 2  # the same scan outside sees this machine's processes


def test_an_unprivileged_organiser_gets_the_namespaces_too(tmp_path_factory):
    """Not root: the sandbox makes a user namespace of its own (uid mapped to itself)."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the other cases ran as this user")
    if subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root with no unprivileged user to switch to")
    # the sandbox needs only the standard library: the system's Python, and a copy the user can read
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run(["su", "nobody", "-s", python, "-c", "pass"], capture_output=True).returncode:
        pytest.skip("no system Python the unprivileged user can run")
    folder = Path(tempfile.mkdtemp(prefix="sandbox-"))
    try:
        folder.chmod(0o755)
        shutil.copy(SANDBOX, folder / "sandbox.py")
        (folder / "sandbox.py").chmod(0o644)
        done = sandboxed(
            "--pid-namespace",
            "--net-namespace",
            code=SCAN + "print(os.getuid())",
            user="nobody",
            python=python,
            sandbox=folder / "sandbox.py",
        )
    finally:
        shutil.rmtree(folder)
    if done.returncode != 0 and "no namespaces" in done.stderr:
        pytest.skip(f"this kernel refuses namespaces to an unprivileged user: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    seen = json.loads(lines[0])
    assert seen["found"] == [] and seen["pids"] == [1, 2], seen
    assert int(lines[1]) == int(subprocess.check_output(["id", "-u", "nobody"]))  # its own uid, not root


def test_no_udp_or_tcp_reaches_the_machine_from_the_network_namespace(protection):
    if not protection.net:
        pytest.skip("this kernel refuses a network namespace to this user (see Protection.probe)")
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port, tcp_port = listener.getsockname()[1], tcp.getsockname()[1]
    code = f"""
import socket
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    udp.sendto(b"the forget set", ("127.0.0.1", {port}))
try:
    socket.create_connection(("127.0.0.1", {tcp_port}), timeout=2)
    print("tcp connected")
except OSError as exc:
    print("tcp", type(exc).__name__)
# its own loopback works: the ranks of a torchrun launch talk over it
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
socket.create_connection(server.getsockname(), timeout=2)
print("own loopback ok")
"""
    done = sandboxed("--pid-namespace", "--net-namespace", code=code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["tcp ConnectionRefusedError", "own loopback ok"], done.stdout
    with pytest.raises(TimeoutError):
        listener.recvfrom(100)
    # and outside it the same datagram does arrive: the test can see a leak
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", port))
    assert listener.recvfrom(100)[0] == b"x"


def test_what_the_entrant_leaves_running_ends_with_it(protection, tmp_path):
    """The namespace's init ends with the entrant's command, and the kernel then ends every process
    left in the namespace, also one in a session of its own; the exit code comes through."""
    if not protection.pid:
        pytest.skip("this kernel refuses a PID namespace to this user (see Protection.probe)")
    marker = tmp_path / "pid"
    code = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
open({str(marker)!r}, "w").write(str(child.pid))
sys.exit(7)
"""
    done = sandboxed("--pid-namespace", code=code)
    assert done.returncode == 7, done.stderr
    inner = marker.read_text()  # its pid inside; find it outside by its command line
    assert inner.isdigit()
    deadline = time.time() + 5
    while time.time() < deadline and processes_with("time.sleep(120)"):
        time.sleep(0.1)
    assert processes_with("time.sleep(120)") == []


# A step of the HF Trainer and a save: DeepSpeed's CPU accelerator (imported by the Trainer) reads
# its process's own /proc folder through psutil, so /proc cannot be closed by Landlock alone.
TRAIN = """
import os, torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32))
rows = [{"input_ids": torch.arange(10), "labels": torch.arange(10)} for _ in range(4)]
out = os.path.join(os.environ["TMPDIR"], "out")
args = TrainingArguments(out, max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                         save_strategy="no")
Trainer(model=model, args=args, train_dataset=rows).train()
model.save_pretrained(out)
try:
    open("/dev/kmsg", "rb").close()
    print("kmsg opened")
except PermissionError:
    print("kmsg refused")
"""


def test_landlock_lets_a_training_run_and_opens_only_the_devices_it_needs(tmp_path):
    """Landlock's rules as organiser mode writes them (any protection): a Trainer step runs and
    saves, and a device outside the few a training needs (the kernel's log) cannot be opened."""
    if abi() == 0:
        pytest.skip("this kernel has no Landlock")
    try:
        open("/dev/kmsg", "rb").close()
    except OSError as exc:
        pytest.skip(f"/dev/kmsg cannot be opened here either ({exc.strerror})")
    readable, writable = system_paths(gpus=False)
    rules = [a for p in [*readable_paths(), *readable] for a in ("--ro", p)]
    rules += [a for p in [*writable, str(tmp_path)] for a in ("--rw", p)]
    done = sandboxed(*rules, code=TRAIN, tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "kmsg refused" and (tmp_path / "out" / "model.safetensors").is_file()


def test_the_namespace_ends_when_its_sandbox_is_killed(protection, tmp_path):
    """The sandbox killed from outside (its Slurm job's wrapper killed, the out-of-memory killer):
    the namespace's init dies with it, and every process of the entrant with that."""
    if not protection.pid:
        pytest.skip("this kernel refuses a PID namespace to this user (see Protection.probe)")
    marker = tmp_path / "started"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
open({str(marker)!r}, "w").close()
time.sleep(120)
"""
    outer = subprocess.Popen([sys.executable, str(SANDBOX), "--pid-namespace", "--", sys.executable, "-c", code])
    deadline = time.time() + 30
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists() and processes_with("time.sleep(120)")
    outer.kill()
    outer.wait()
    deadline = time.time() + 5
    while time.time() < deadline and (processes_with("time.sleep(120)") or processes_with(code)):
        time.sleep(0.1)
    assert processes_with("time.sleep(120)") == [] and processes_with(code) == []


def test_a_supervised_run_ends_when_its_supervisor_is_killed(tmp_path):
    """`supervise`'s child dies with the process that supervises it (PR_SET_PDEATHSIG)."""
    marker = tmp_path / "started"
    supervisor = f"""
import sys, time
from pathlib import Path
from unlearn.compete.supervise import supervise
child = [sys.executable, "-c", "open({str(marker)!r}, 'w').close(); import time; time.sleep(121)"]
supervise(child, Path({str(tmp_path)!r}), {{}}, Path({str(tmp_path / "log")!r}), 300, 1, "t0k3n")
"""
    proc = subprocess.Popen([sys.executable, "-c", supervisor])
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists() and processes_with("time.sleep(121)")
    proc.kill()
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and processes_with("time.sleep(121)"):
        time.sleep(0.1)
    assert processes_with("time.sleep(121)") == []
