"""Nothing lost, ever: no command deletes or writes into what it did not create, a killed run
resumes, bad input is one clear line naming the file, row or field (never a traceback), and a
plugin installs from wheels alone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, cli, pip, run_args, write_plugin_package

from unlearn import ConfigError, DataError, hookimpl, load_rows
from unlearn.bench.synth import generate
from unlearn.compete import load_competition, run_competition
from unlearn.devkit import FORGET_ROWS, write_rows
from unlearn.engine import PluginHost, read_config_file, run
from unlearn.evaluator.evaluate import evaluate_model


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench") / "data"
    generate(folder, seed=0, size="tiny")
    return folder


def test_evaluate_never_replaces_an_input_or_a_folder_it_did_not_write(tiny_model, bench, tmp_path):
    model_before, data_before = digest(tiny_model), digest(bench)
    res = cli("evaluate", str(tiny_model), "--data", str(bench), "--out", str(tiny_model))
    assert res.returncode == 2 and "overlaps the input" in res.stderr and "Traceback" not in res.stderr
    for out in (bench, bench.parent, tiny_model / "eval"):
        with pytest.raises(ConfigError, match="overlaps the input"):
            evaluate_model(tiny_model, bench, out)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="holds files but is not an evaluation that unlearn wrote"):
        evaluate_model(tiny_model, bench, foreign)
    assert (foreign / "thesis.tex").read_text() == "years of work"
    assert digest(tiny_model) == model_before and digest(bench) == data_before


def test_an_evaluation_is_replaced_only_while_it_holds_nothing_else(tiny_model, bench, tmp_path):
    """A file the user put beside earlier results is never deleted by the next evaluation there."""
    out = tmp_path / "eval"
    args = ("evaluate", str(tiny_model), "--data", str(bench), "--out", str(out), "--max-new-tokens", "4")
    assert cli(*args).returncode == 0
    (out / "NOTES.txt").write_text("what I saw")
    res = cli(*args)
    assert res.returncode == 2 and "holds NOTES.txt, which unlearn did not write there" in res.stderr, res.stderr
    assert (out / "NOTES.txt").read_text() == "what I saw" and (out / "evaluation_results.json").is_file()
    (out / "NOTES.txt").unlink()
    assert cli(*args).returncode == 0  # its own files alone: replaced


def test_run_never_replaces_its_data_and_says_why(tiny_model, tiny_data, tmp_path, host, make_config):
    before = digest(tiny_data)
    res = cli(*run_args(tiny_model, tiny_data, tiny_data, "--overwrite"))
    assert res.returncode == 2 and "overlaps the input" in res.stderr and "a result" not in res.stderr
    with pytest.raises(ConfigError, match="overlaps the input"):
        run(make_config(output_dir=str(tiny_data)), host=host)
    assert digest(tiny_data) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run(make_config(output_dir=str(tmp_path / "file")), host=host)


def test_an_output_that_is_a_dangling_link_is_refused(tiny_model, tiny_data, tmp_path):
    """Followed, it would put the model wherever the link happens to point."""
    (tmp_path / "out").symlink_to(tmp_path / "elsewhere" / "model")
    res = cli(*run_args(tiny_model, tiny_data, tmp_path / "out"))
    assert res.returncode == 2 and "a symbolic link to" in res.stderr and "which does not exist" in res.stderr
    assert not (tmp_path / "elsewhere").exists() and (tmp_path / "out").is_symlink()


def test_a_competition_whose_output_is_the_target_is_refused_before_any_entrant(tiny_model, tiny_data, tmp_path):
    write_rows(tmp_path / "utility.jsonl", FORGET_ROWS)
    (tmp_path / "comp.json").write_text(
        json.dumps(
            {
                "model": str(tiny_model),
                "forget": str(tiny_data / "forget.jsonl"),
                "retain": str(tiny_data / "retain.jsonl"),
                "mia": str(tmp_path),
                "entrants": ["gd"],
                "output_dir": str(tiny_model),
            }
        )
    )
    before = digest(tiny_model)
    with pytest.raises(ConfigError, match="overlaps the input"):
        run_competition(load_competition(tmp_path / "comp.json"))
    assert digest(tiny_model) == before


@pytest.mark.parametrize(
    "flags, field",
    [
        (("--lr", "inf"), "trainer.learning_rate: Input should be a finite number"),
        (("--lr", "nan"), "trainer.learning_rate: Input should be a finite number"),
        (("--max-steps", "0"), "trainer.max_steps"),
        (("--set", "config.gd.retain_weight=inf"), "config.gd.retain_weight: Input should be a finite number"),
    ],
)
def test_non_finite_or_empty_settings_are_config_errors(tiny_model, tiny_data, tmp_path, flags, field):
    res = cli(*run_args(tiny_model, tiny_data, tmp_path / "o", *flags))
    assert res.returncode == 2 and field in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()


def test_bad_files_are_one_line_naming_file_and_row(tiny_model, tiny_data, bench, tmp_path, host, make_config):
    data = tmp_path / "data"
    data.mkdir()
    (data / "retain.jsonl").write_bytes((tiny_data / "retain.jsonl").read_bytes())
    (data / "forget.jsonl").write_bytes((tiny_data / "forget.jsonl").read_bytes() + b'{"id": "x\xff"}\n')
    with pytest.raises(DataError, match=r"forget.jsonl, row 7: not UTF-8 text"):
        load_rows(data, "forget")
    config = tmp_path / "run.toml"
    config.write_bytes(b'method = "gd\xe9"\n')
    with pytest.raises(ConfigError, match="run.toml: not UTF-8 text"):
        read_config_file(config)
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ConfigError, match=r"not a Hugging Face model folder \(no config.json\)"):
        run(make_config(model=str(tmp_path / "empty_model")), host=host)
    broken = tmp_path / "broken_model"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_model / name).read_bytes())
    (broken / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes()[:5000])
    res = cli(*run_args(broken, tiny_data, tmp_path / "o"))
    assert res.returncode == 2 and "cannot be loaded" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / ".o.partial").exists()
    with pytest.raises(ConfigError, match="broken_model: cannot be loaded"):
        evaluate_model(broken, bench, tmp_path / "e")
    assert not (tmp_path / "e").exists() and not (tmp_path / ".e.partial").exists()


@pytest.mark.heavy
def test_evaluate_settings_and_baseline_errors(tiny_model, bench, tmp_path):
    res = cli("evaluate", str(tiny_model), "--data", str(bench), "--out", str(tmp_path / "e"), "--batch-size", "0")
    assert res.returncode == 2 and "must be at least 1" in res.stderr
    with pytest.raises(ConfigError, match="must be at least 1"):
        evaluate_model(tiny_model, bench, tmp_path / "e", max_new_tokens=0)
    (tmp_path / "base.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="base.json: not an evaluation"):
        evaluate_model(tiny_model, bench, tmp_path / "e", baseline=tmp_path / "base.json")
    for content in ("{not json",):
        (tmp_path / "base.json").write_text(content)
        res = cli(
            "evaluate",
            str(tiny_model),
            "--data",
            str(bench),
            "--out",
            str(tmp_path / "e"),
            "--baseline",
            str(tmp_path / "base.json"),
        )
        assert res.returncode == 2 and "base.json: not an evaluation" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("benchmark", ["lume", "tofu"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-new-tokens", "0", "--max-new-tokens 0: must be at least 1"),
        ("--batch-size", "-2", "--batch-size -2: must be at least 1"),
    ],
)
def test_a_zero_or_negative_number_is_an_error_not_the_default(tiny_model, tmp_path, benchmark, flag, value, message):
    """0 is not "unset": it was taken as the default 256 new tokens before."""
    out = tmp_path / "e"
    res = cli(
        "evaluate", str(tiny_model), "--data", str(tmp_path), "--out", str(out), "--benchmark", benchmark, flag, value
    )
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not out.exists()


def test_a_task_without_knowledge_rows_fails_before_any_generation(tiny_model, bench, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [json.loads(line) for line in (bench / "forget_train.jsonl").read_text().splitlines()]
    (data / "forget.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows if not (r["task"] == "Task2" and "qa" in r["id"]))
    )
    (data / "retain.jsonl").write_bytes((bench / "retain_train.jsonl").read_bytes())
    for name in ("mia_member.jsonl", "mia_nonmember.jsonl", "utility.jsonl"):
        (data / name).write_bytes((bench / name).read_bytes())
    started = time.time()
    res = cli("evaluate", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and "forget.jsonl: Task2 has no knowledge rows" in res.stderr, res.stderr
    assert "generating" not in res.stderr and time.time() - started < 60


def test_a_run_that_failed_validation_leaves_nothing_behind(tiny_data, tmp_path, host, make_config):
    data = tmp_path / "data"
    data.mkdir()
    (data / "retain.jsonl").write_bytes((tiny_data / "retain.jsonl").read_bytes())
    (data / "forget.jsonl").write_text('{"id": "a", "input": "q", "output": "", "task": "Task1"}\n')
    cfg = make_config(data=str(data), output_dir=str(tmp_path / "o"), trainer={"max_steps": 1})
    with pytest.raises(DataError, match="row 1: field 'output' is empty"):
        run(cfg, host=host)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no .o.partial blocks the corrected run
    (data / "forget.jsonl").write_bytes((tiny_data / "forget.jsonl").read_bytes())
    assert run(cfg, host=host) == (tmp_path / "o").resolve()


@pytest.mark.heavy
def test_data_synth_replaces_only_its_own_benchmark_whole(tmp_path):
    out = tmp_path / "b"
    assert cli("data", "synth", "--out", str(out), "--size", "tiny").returncode == 0
    (out / "forget_train.jsonl").write_text("stale")  # one of its own files, changed: replaced whole
    assert cli("data", "synth", "--out", str(out), "--size", "tiny", "--seed", "1", "--overwrite").returncode == 0
    assert (out / "forget_train.jsonl").read_text() != "stale"
    (out / "forget.jsonl").write_text("mine")  # a file it did not write: never deleted
    res = cli("data", "synth", "--out", str(out), "--size", "tiny", "--overwrite")
    assert res.returncode == 2 and "holds forget.jsonl, which unlearn did not write there" in res.stderr
    assert (out / "forget.jsonl").read_text() == "mine"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    res = cli("data", "synth", "--out", str(other), "--size", "tiny")
    assert res.returncode == 2 and (other / "keep.txt").read_text() == "x"


def test_load_plugins_names_that_match_nothing_are_reported():
    res = cli("plugins", "--json", env={"UNLEARN_LOAD_PLUGINS": "gd,gdd"})
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["gd"]["status"] == "ok" and "no such plugin is installed" in rows["gdd"]["error"]


def test_a_name_clash_names_both_distributions_and_keeps_the_working_plugin(tmp_path, tiny_model, tiny_data):
    pkg = write_plugin_package(tmp_path, "clash", "raise ImportError('broken on purpose')\n", entry="zz")
    pip("install", "--no-deps", "--no-build-isolation", str(pkg))
    try:
        # the broken package claims the name "gd" too: the working plugin keeps it, whatever the load order
        meta = next(Path(sys.prefix).glob("lib/python*/site-packages/unlearn_plugin_clash-*.dist-info"))
        text = (meta / "entry_points.txt").read_text().replace("zz =", "gd =")
        (meta / "entry_points.txt").write_text(text)
        rows = {r["name"]: r for r in json.loads(cli("plugins", "--json").stdout)}
        assert rows["gd"]["status"] == "ok"
        clash = rows["gd (unlearn-plugin-clash)"]["error"]
        assert "also taken by unlearn-plugin-gd" in clash  # and the row names unlearn-plugin-clash
        assert PluginHost().methods["gd"].plugin == "gd"  # the working plugin still provides its method
    finally:
        pip("uninstall", "-y", "unlearn-plugin-clash")


class _NaNGradients:
    """A finite loss whose gradient is NaN: the weights become NaN while no loss value ever does."""

    @hookimpl
    def register_methods(self, register):
        from unlearn import Config

        register("nan-grads", config=Config, kind="loss", summary="test", uses_retain=False)

    @hookimpl
    def compute_loss(self, method, config, ctx):
        logits = ctx.outputs("forget").logits
        logits.register_hook(lambda grad: grad * float("nan"))
        return (logits * 0).sum() + ctx.nll("forget").detach()


def test_a_run_whose_weights_are_not_finite_writes_nothing(host, make_config, tiny_model):
    from unlearn.engine import NonFiniteLossError

    host.register(_NaNGradients(), "nan-grads")
    cfg = make_config(method="nan-grads", trainer={"max_steps": 1, "max_grad_norm": 0})
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        run(cfg, host=host)
    assert not cfg.output_dir.exists()


@pytest.mark.heavy
def test_sigint_says_what_was_kept_and_a_killed_save_never_blocks_the_resume(memorised_model, tiny_data, tmp_path):
    out = tmp_path / "o"
    args = [sys.executable, "-m", "unlearn", *run_args(memorised_model, tiny_data, out)]
    args += [
        "--max-steps",
        "40",
        "--batch-size",
        "1",
        "--set",
        "trainer.save_steps=1",
        "--set",
        "trainer.progress=false",
    ]
    checkpoints = tmp_path / ".o.partial" / "checkpoints"
    cut_short = 0
    # Kill it while a checkpoint is half-written (a folder without its completion marker), several times.
    for _ in range(3):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            partial = [p for p in checkpoints.glob("checkpoint-*") if not (p / "unlearn_complete").exists()]
            if partial and any(checkpoints.glob("checkpoint-*/unlearn_complete")):
                proc.send_signal(signal.SIGKILL)
                cut_short += 1
                break
            time.sleep(0.002)
        proc.wait()
    assert cut_short >= 2, "no save was cut short"
    # SIGINT: one line saying what was kept, exit 130
    earlier = set(checkpoints.glob("checkpoint-*/unlearn_complete"))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not set(checkpoints.glob("checkpoint-*/unlearn_complete")) - earlier:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    if proc.returncode != 0:  # it may have finished first on a fast machine
        assert proc.returncode == 130 and "interrupted: finished outputs are kept" in stderr, stderr
        assert "Traceback" not in stderr
    if proc.returncode != 0:
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "unlearn_run.json").read_text())
    assert report["resumed_from"] is None or Path(report["resumed_from"]).name.startswith("checkpoint-")
    assert os.listdir(tmp_path) == ["o"]  # the staging folder is gone


def test_an_output_that_cannot_be_written_is_refused_before_any_work():
    """Run as an unprivileged user where this is root (root may write anywhere)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="unlearn-ro-"))
    try:
        (root / "locked").mkdir()
        root.chmod(0o755)
        (root / "locked").chmod(0o555)
        code = (
            "from unlearn import ConfigError, check_output\n"
            "try:\n"
            f"    check_output({str(root / 'locked' / 'out')!r}, 'model', [], overwrite=False)\n"
            "except ConfigError as exc:\n"
            "    print(exc)\n"
        )
        command = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: permissions cannot be denied")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        res = subprocess.run(command, capture_output=True, text=True, cwd=root)
        assert f"cannot write in {root / 'locked'} (permission denied)" in res.stdout, res.stderr[-2000:]
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)


# -- installs as users meet them ------------------------------------------------------------------


def _fresh_venv(root: Path) -> Path:
    """A new virtual environment that sees this one's third-party packages (torch, transformers, ...)
    but none of unlearn's own distributions, so those can only come from wheels."""
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    deps = root / "deps"
    deps.mkdir()
    for item in Path(site.getsitepackages()[0]).iterdir():
        if not any(part in item.name for part in ("unlearn_core", "unlearn-core", "unlearn_plugin", "unlearn-plugin")):
            if not item.name.startswith(("pip", "_distutils_hack", "distutils-precedence")):
                (deps / item.name).symlink_to(item)
    inner = next((root / "venv" / "lib").glob("python*/site-packages"))
    (inner / "deps.pth").write_text(f"{deps}\n")
    bin_dir = root / "venv" / "bin"
    # the venv's own old setuptools would shadow the one torch needs
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True)
    return bin_dir


@pytest.mark.heavy
def test_a_plugin_installs_from_wheels_alone_and_runs(tmp_path, tiny_model, tiny_data):
    dist = tmp_path / "dist"
    wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    plugins = [str(REPO / "plugins" / name) for name in ("npo", "idk")]
    subprocess.run([*wheel, str(REPO), *plugins], check=True, capture_output=True)
    wheels = sorted(p.name.split("-")[0] for p in dist.glob("*.whl"))
    assert wheels == ["unlearn_core", "unlearn_plugin_idk", "unlearn_plugin_npo"]
    bin_dir = _fresh_venv(tmp_path)
    install = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(dist)]
    res = subprocess.run([*install, "unlearn-plugin-npo", "unlearn-plugin-idk"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    listed = subprocess.run(
        [str(bin_dir / "unlearn"), "plugins", "--json"], capture_output=True, text=True, cwd=tmp_path
    )
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"npo", "idk"} and rows["npo"]["status"] == "ok", listed.stderr
    for method in ("npo", "idk"):  # idk reads the core's refusals: package data in the wheel
        run = [str(bin_dir / "unlearn"), "run", "--method", method, "--model", str(tiny_model)]
        res = subprocess.run(
            [*run, "--data", str(tiny_data), "-o", str(tmp_path / method), "--max-steps", "1"]
            + ["--set", "trainer.progress=false"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert res.returncode == 0 and (tmp_path / method / "model.safetensors").is_file(), res.stderr[-2000:]
    assert (
        str(tmp_path / "venv")
        in subprocess.run(
            [str(bin_dir / "python"), "-c", "import unlearn, unlearn_plugin_npo; print(unlearn.__file__)"],
            capture_output=True,
            text=True,
        ).stdout
    )  # the core came from the wheel, not from this checkout


def test_a_plugin_for_another_core_version_is_refused_and_listed_as_broken(tmp_path):
    source = "raise RuntimeError('must not be imported')\n"
    pkg = write_plugin_package(tmp_path, "future", source, dependencies=("unlearn-core>=99",))
    pip("install", "--no-deps", "--no-build-isolation", str(pkg))
    try:
        rows = {r["name"]: r for r in json.loads(cli("plugins", "--json").stdout)}
        assert rows["future"]["status"] == "error"
        assert "needs unlearn-core>=99, but 0.1.0 is installed" in rows["future"]["error"]
        assert rows["gd"]["status"] == "ok"
    finally:
        pip("uninstall", "-y", "unlearn-plugin-future")
