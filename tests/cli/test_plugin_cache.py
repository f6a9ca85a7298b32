"""The CLI's plugin cache: ``unlearn --help`` and ``unlearn plugins`` answer from it without
importing a plugin, say exactly what loading the plugins says, and follow installs and edits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import cli

# Runs the CLI in a fresh interpreter, then prints which modules it imported.
_PROBE = """
import sys
sys.argv = ["unlearn", *sys.argv[1:]]
from unlearn.cli import main
try:
    main()
except SystemExit:
    pass
heavy = [m for m in sys.modules if m.split(".")[0] in {"torch", "transformers"} or m.startswith("unlearn_plugin_")]
print("imported:" + ",".join(sorted({m.split(".")[0] for m in heavy})))
"""


def _probe(*args: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """The command's output and the heavy packages and plugins it imported."""
    import os

    res = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert res.returncode == 0, res.stderr
    output, _, imported = res.stdout.rpartition("imported:")
    return output, [m for m in imported.strip().split(",") if m]


def _toy_plugin(site: Path, method: str) -> None:
    """An installed plugin distribution (package plus dist-info with its entry point) in ``site``."""
    package = site / "unlearn_plugin_cachetoy"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        "from unlearn import Config, hookimpl\n\n\n"
        "@hookimpl\ndef register_methods(register):\n"
        f"    register({method!r}, config=Config, kind='parameters', summary='cache test')\n"
    )
    info = site / "unlearn_plugin_cachetoy-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: unlearn-plugin-cachetoy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unlearn]\ncachetoy = unlearn_plugin_cachetoy\n")


def test_help_and_plugins_answer_from_the_cache_as_loading_the_plugins_does(tmp_path):
    env = {"UNLEARN_CACHE_DIR": str(tmp_path / "cache")}
    for i, args in enumerate((["--help"], ["plugins"], ["plugins", "--json", "--all", "--available"])):
        loaded, _ = _probe(*args, env={"UNLEARN_PLUGIN_CACHE": "0"})
        cold, cold_imports = _probe(*args, env=env)  # the first loads the plugins and writes the cache
        warm, warm_imports = _probe(*args, env=env)
        if i == 0:
            assert "torch" in cold_imports and "unlearn_plugin_gd" in cold_imports
        assert warm_imports == [], f"{args}: imported {warm_imports}"
        assert cold == warm == loaded, args
        if args == ["--help"]:
            assert "evaluate" in warm and "compete" in warm  # commands that plugins add
    assert len(list((tmp_path / "cache").glob("plugins-*.json"))) == 1


def test_the_cache_follows_installs_edits_and_what_is_loaded(tmp_path):
    env = {"UNLEARN_CACHE_DIR": str(tmp_path / "cache")}
    site = tmp_path / "site"

    def listed(**more: str) -> dict[str, dict]:
        output, _ = _probe("plugins", "--json", env={**env, **more})
        return {row["name"]: row for row in json.loads(output)}

    assert "cachetoy" not in listed()
    _toy_plugin(site, "alpha")
    with_site = {"PYTHONPATH": str(site)}
    assert listed(**with_site)["cachetoy"]["methods"] == ["alpha"]  # installed: the cache is stale
    _probe("plugins", env={**env, **with_site})
    _toy_plugin(site, "betas")  # edited in place (an editable install)
    assert listed(**with_site)["cachetoy"]["methods"] == ["betas"]
    assert "cachetoy" not in listed()  # uninstalled again
    only = listed(**with_site, UNLEARN_LOAD_PLUGINS="gd")
    assert "gd" in only and "cachetoy" not in only and "ga" not in only


def test_an_unwritable_cache_folder_costs_only_speed(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    res = cli("plugins", "--json", env={"UNLEARN_CACHE_DIR": str(blocked / "cache")})
    assert res.returncode == 0, res.stderr
    assert "gd" in {row["name"] for row in json.loads(res.stdout)}
