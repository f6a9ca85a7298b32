"""Installs as users meet them: a plugin installed from wheels alone into a fresh environment pulls
the core from the same folder and runs; a plugin built for another core version is refused."""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli, pip

pytestmark = pytest.mark.heavy


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


def test_a_plugin_installs_from_wheels_alone_and_runs(tmp_path, tiny_model, tiny_data):
    dist = tmp_path / "dist"
    wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    subprocess.run([*wheel, str(REPO), str(REPO / "plugins" / "npo")], check=True, capture_output=True)
    assert sorted(p.name.split("-")[0] for p in dist.glob("*.whl")) == ["unlearn_core", "unlearn_plugin_npo"]
    bin_dir = _fresh_venv(tmp_path)
    install = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(dist)]
    res = subprocess.run([*install, "unlearn-plugin-npo"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    listed = subprocess.run(
        [str(bin_dir / "unlearn"), "plugins", "--json"], capture_output=True, text=True, cwd=tmp_path
    )
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"npo"} and rows["npo"]["status"] == "ok", listed.stderr
    run = [str(bin_dir / "unlearn"), "run", "--method", "npo", "--model", str(tiny_model), "--data", str(tiny_data)]
    res = subprocess.run(
        [*run, "-o", str(tmp_path / "o"), "--max-steps", "1", "--set", "trainer.progress=false"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0 and (tmp_path / "o" / "model.safetensors").is_file(), res.stderr[-2000:]
    assert (
        str(tmp_path / "venv")
        in subprocess.run(
            [str(bin_dir / "python"), "-c", "import unlearn, unlearn_plugin_npo; print(unlearn.__file__)"],
            capture_output=True,
            text=True,
        ).stdout
    )  # the core came from the wheel, not from this checkout


def test_a_plugin_for_another_core_version_is_refused_and_listed_as_broken(tmp_path):
    pkg = tmp_path / "future"
    (pkg / "unlearn_plugin_future").mkdir(parents=True)
    (pkg / "unlearn_plugin_future" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "unlearn-plugin-future"\nversion = "0.0.1"\ndependencies = ["unlearn-core>=99"]\n'
        '[project.entry-points.unlearn]\nfuture = "unlearn_plugin_future"\n'
    )
    pip("install", "--no-deps", "--no-build-isolation", str(pkg))
    try:
        rows = {r["name"]: r for r in json.loads(cli("plugins", "--json").stdout)}
        assert rows["future"]["status"] == "error"
        assert "needs unlearn-core>=99, but 0.1.0 is installed" in rows["future"]["error"]
        assert rows["gd"]["status"] == "ok"
    finally:
        pip("uninstall", "-y", "unlearn-plugin-future")
