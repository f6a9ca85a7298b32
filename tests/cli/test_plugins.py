"""Plugin discovery through real pip-installed packages, failure isolation, registry, scaffold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli, pip, write_plugin_package
from pydantic import BaseModel

from unlearn import hookimpl
from unlearn.cli.registry import install_command, load_registry
from unlearn.engine import PluginError, PluginHost


def _listed(*args: str, env: dict | None = None) -> dict[str, dict]:
    res = cli("plugins", "--json", *args, env=env)
    assert res.returncode == 0, res.stderr
    return {row["name"]: row for row in json.loads(res.stdout)}


def test_ga_and_gd_are_discovered_through_their_entry_points():
    rows = _listed()
    for name in ("ga", "gd"):
        assert rows[name]["distribution"] == f"unlearn-plugin-{name}"
        assert rows[name]["version"] == "0.1.0"
        assert rows[name]["status"] == "ok"
        assert rows[name]["hooks"] == ["compute_loss", "register_methods"]
        assert rows[name]["kinds"] == ["loss"]


def test_load_only_the_named_plugins():
    assert set(_listed(env={"UNLEARN_LOAD_PLUGINS": "gd"})) == {"gd"}


def test_available_merges_the_registry(tmp_path):
    registry = tmp_path / "registry.toml"
    registry.write_text(
        (REPO / "registry.toml").read_text()
        + '\n[plugins.future]\ndistribution = "unlearn-plugin-future"\nkind = "loss"\nsummary = "s"\nreference = "r"\n'
    )
    rows = _listed("--available", env={"UNLEARN_REGISTRY": str(registry)})
    assert rows["future"]["status"] == "not installed" and rows["future"]["installed"] is False
    assert rows["ga"]["status"] == "ok"


def test_registry_lists_every_plugin_in_this_repository():
    registry = load_registry(REPO / "registry.toml")
    folders = {p.parent.name for p in (REPO / "plugins").glob("*/pyproject.toml")}
    assert {e.path for e in registry.values() if e.path} == {f"plugins/{f}" for f in folders}
    for entry in registry.values():
        assert entry.distribution == f"unlearn-plugin-{entry.name}"


def test_install_uses_the_local_checkout():
    cmd = install_command("ga")
    assert cmd[-1] == str(REPO / "plugins" / "ga")
    assert install_command("gd", editable=True)[-2:] == ["-e", str(REPO / "plugins" / "gd")]


@pytest.mark.heavy
def test_uninstalling_a_plugin_removes_it_and_unlearn_install_brings_it_back():
    try:
        pip("uninstall", "-y", "unlearn-plugin-ga")
        assert "ga" not in _listed()
        res = cli("install", "ga", "--pip-arg=--no-deps", "--pip-arg=--no-build-isolation", "--pip-arg=-q")
        assert res.returncode == 0, res.stderr
        assert _listed()["ga"]["status"] == "ok"
    finally:
        pip("install", "--no-deps", "--no-build-isolation", "-e", str(REPO / "plugins" / "ga"))


@pytest.mark.heavy
def test_a_plugin_whose_import_raises_is_reported_not_fatal(tmp_path):
    pkg = write_plugin_package(tmp_path, "broken", 'raise ImportError("needs a GPU library that is missing")\n')
    pip("install", "--no-deps", "--no-build-isolation", str(pkg))
    try:
        rows = _listed()
        assert rows["broken"]["status"] == "error"
        assert "needs a GPU library that is missing" in rows["broken"]["error"]
        assert rows["gd"]["status"] == "ok"
        table = cli("plugins")
        assert table.returncode == 0 and "needs a GPU library" in table.stdout
        strict = cli("plugins", env={"UNLEARN_STRICT_PLUGINS": "1"})
        assert strict.returncode != 0 and "plugin 'broken' failed to load" in strict.stderr
        res = cli("run", "--model", "m", "--data", "d", "--method", "broken", "-o", str(tmp_path / "o"))
        assert res.returncode == 2 and "plugin 'broken' is installed but failed to load" in res.stderr
    finally:
        pip("uninstall", "-y", "unlearn-plugin-broken")
    assert "broken" not in _listed()


class _Cfg(BaseModel):
    model_config = {"extra": "forbid"}


class _Loose(BaseModel):
    pass


def _plugin(**register_kwargs):
    class P:
        @hookimpl
        def register_methods(self, register):
            register(**register_kwargs)

    return P()


@pytest.mark.parametrize(
    "plugin, message",
    [
        (_plugin(name="Bad Name", config=_Cfg), "must match"),
        (_plugin(name="x", config=_Loose), "must forbid unknown keys"),
        (_plugin(name="x", config=_Cfg, kind="optimiser"), "kind 'optimiser' is not one of"),
        (_plugin(name="gd", config=_Cfg), "method 'gd' is already registered by plugin 'gd'"),
        (_plugin(name="x", config=_Cfg, alternate="paraphrase"), "alternate must be None, 'refusal' or 'rewrite'"),
        (_plugin(name="x", config=_Cfg, alternate="rewrite", alternates_per_row=0), "alternates_per_row >= 1"),
    ],
)
def test_bad_registrations_are_reported(host, plugin, message):
    info = host.register(plugin, "inline")
    assert info.status == "error" and message in info.error
    assert host.methods["gd"].plugin == "gd"  # the good plugin is untouched


def test_unknown_hooks_and_bad_signatures_are_reported(host, monkeypatch):
    class Typo:
        @hookimpl
        def register_methods(self, register):
            register("typo", config=_Cfg)

        @hookimpl
        def compute_los(self, method, config, ctx):
            return None

    class BadArgs:
        @hookimpl
        def register_methods(self, register):
            register("badargs", config=_Cfg)

        @hookimpl
        def compute_loss(self, method, config, ctx, temperature):
            return None

    assert "unknown hook(s) ['compute_los']" in host.register(Typo(), "typo").error
    assert "temperature" in host.register(BadArgs(), "badargs").error
    assert "typo" not in host.methods and "badargs" not in host.methods
    monkeypatch.setenv("UNLEARN_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'typo2' failed to load"):
        PluginHost(load_entry_points=False).register(Typo(), "typo2")


def test_check_passes_from_the_command_line():
    # every plugin's own tests run the same checks (assert_conforms); here the command, on a
    # method that learns alternate answers
    res = cli("plugins", "check", "idk")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FAIL" not in res.stdout and res.stdout.count("pass") == 7


@pytest.mark.heavy
def test_new_plugin_skeleton_installs_passes_its_own_tests_and_uninstalls(tmp_path):
    res = cli("plugins", "new", "acme", "--dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    pkg = tmp_path / "unlearn-plugin-acme"
    assert {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()} == {
        "pyproject.toml",
        "README.md",
        "unlearn_plugin_acme/__init__.py",
        "tests/test_acme.py",
    }
    module = pkg / "unlearn_plugin_acme" / "__init__.py"
    assert "add_term" in module.read_text() and "https://" not in (pkg / "README.md").read_text()
    assert 'license = "' in (pkg / "pyproject.toml").read_text()
    pip("install", "--no-deps", "--no-build-isolation", "-e", str(pkg))
    try:
        assert _listed()["acme"]["version"] == "0.1.0"
        check = cli("plugins", "check", "acme")
        assert check.returncode == 1 and "placeholder" in check.stdout, check.stdout
        module.write_text(module.read_text().replace("One line on what acme does", "GA plus a weighted retain NLL"))
        check = cli("plugins", "check", "acme")
        assert check.returncode == 0, check.stdout
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg / "tests")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert tests.returncode == 0, tests.stdout[-3000:]
    finally:
        pip("uninstall", "-y", "unlearn-plugin-acme")
    assert "acme" not in _listed()
    assert cli("plugins", "new", "acme", "--dir", str(tmp_path)).returncode == 2  # refuses to overwrite


def test_check_reports_a_plugin_that_fails(host, tmp_path):
    from unlearn.devkit import check_plugin

    class Detached:
        @hookimpl
        def register_methods(self, register):
            register("detached", config=_Cfg, uses_retain=False)

        @hookimpl
        def compute_loss(self, method, config, ctx):
            import torch

            return torch.tensor(1.0)  # no graph to the model

    host.register(Detached(), "detached")
    results = {r.name: r for r in check_plugin("detached", host=host, workdir=tmp_path)}
    bad = results["detached: loss is finite and differentiable"]
    assert not bad.ok
    assert results["detached: config validates and round-trips"].ok


COMMANDS_PLUGIN = '''
import typer

from unlearn import command_group, hookimpl


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    @cli.command()
    def hello(name: str = typer.Argument(...)) -> None:
        """Say hello (a third party's command)."""
        print(f"hello {name}")

    data = command_group(cli, "data", "Benchmark data.")

    @data.command("count")
    def count(path: str) -> None:
        """Count the lines of a file (added to the built-in `data` group)."""
        print(sum(1 for _ in open(path)))
'''


@pytest.mark.heavy
def test_a_pip_installed_package_adds_commands(tmp_path):
    pkg = write_plugin_package(tmp_path, "hello", COMMANDS_PLUGIN)
    pip("install", "--no-deps", "--no-build-isolation", str(pkg))
    try:
        res = cli("hello", "world")
        assert res.returncode == 0 and res.stdout.strip() == "hello world", res.stderr
        (tmp_path / "f.txt").write_text("a\nb\n")
        res = cli("data", "count", str(tmp_path / "f.txt"))
        assert res.returncode == 0 and res.stdout.strip() == "2", res.stderr
        assert "synth" in cli("data", "--help").stdout  # the built-in command of the group is kept
        row = _listed()["hello"]
        assert row["kinds"] == ["commands"] and row["hooks"] == ["register_commands"] and row["status"] == "ok"
    finally:
        pip("uninstall", "-y", "unlearn-plugin-hello")
    assert cli("hello", "world").returncode != 0


def test_a_broken_register_commands_is_reported_and_the_cli_works(host):
    class Broken:
        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no typer here")

    import typer

    host.register(Broken(), "broken-commands")
    app = typer.Typer()
    host.add_commands(app)
    assert "no typer here" in host.plugins["broken-commands"].error
    assert host.plugins["evaluator"].status == "ok"


@pytest.mark.heavy
def test_the_builtin_applications_are_plugins_listed_with_all():
    assert "compete" not in _listed()
    rows = _listed("--all")
    for name in ("bench", "compete", "devkit", "evaluator"):
        assert rows[name]["builtin"] and rows[name]["kinds"] == ["commands"] and rows[name]["status"] == "ok"
    assert "compete" in _listed("--all", env={"UNLEARN_LOAD_PLUGINS": "gd"})  # built-ins always load


def test_the_core_alone_gives_a_working_plugins_command(tmp_path):
    """An environment with unlearn-core and its dependencies but no plugin distribution."""
    import site

    packages = Path(site.getsitepackages()[0])
    alone = tmp_path / "site"
    alone.mkdir()
    for item in packages.iterdir():
        if "unlearn_plugin_" not in item.name and "unlearn-plugin-" not in item.name:
            (alone / item.name).symlink_to(item)
    code = f"import site, sys; site.addsitedir({str(alone)!r}); sys.argv = ['unlearn', *sys.argv[1:]]; "
    code += "from unlearn.cli import main; main()"
    res = subprocess.run(
        [sys.executable, "-S", "-c", code, "plugins", "--json", "--all"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"bench", "compete", "devkit", "evaluator"} <= set(rows) and "ga" not in rows
    plain = subprocess.run([sys.executable, "-S", "-c", code, "plugins"], capture_output=True, text=True)
    assert plain.returncode == 0 and "No plugins installed" in plain.stdout, plain.stderr


TOY_BENCHMARK = """
import json
from pathlib import Path

from unlearn import check_output, hookimpl, publish, write_json, write_jsonl, write_text
from unlearn.evaluator import RESULTS, answer_nll, load_model, staging
from unlearn import load_rows


class Toy:
    name = "toy"
    summary = "mean forget answer NLL"
    headline = {"forget_nll": "higher"}

    def synthesize(self, out, seed, size):
        out = check_output(out, "benchmark", [], overwrite=None)
        rows = [{"id": f"f{i}", "input": f"Q{i + seed}? ", "output": f"A{i}", "task": "toy"} for i in range(3)]
        folder = staging(out)
        write_jsonl(folder / "forget.jsonl", rows)
        publish(folder, out, "benchmark")
        return {"forget.jsonl": 3}

    def evaluate(self, model, data, out, device="auto", progress=True):
        out = check_output(out, "evaluation", [model, data], overwrite=None)
        net, tok = load_model(model, "float32", device)
        values = answer_nll(net, tok, load_rows(data / "forget.jsonl"))
        folder = staging(out)
        write_text(folder / "summary.md", "toy\\n")
        write_json(folder / RESULTS, {"benchmark": "toy", "forget_nll": sum(values) / len(values)})
        publish(folder, out, "evaluation")
        return json.loads((folder.parent / out.name / RESULTS).read_text())

    def rescore(self, folder, data, out):
        raise NotImplementedError


@hookimpl
def register_benchmarks(register):
    register(Toy())
"""


@pytest.mark.heavy
def test_a_benchmark_plugin_installed_with_pip_is_listed_and_evaluates(tmp_path, tiny_model):
    pkg = write_plugin_package(tmp_path, "toybench", TOY_BENCHMARK)
    pip("install", "--no-deps", "--no-build-isolation", str(pkg))
    try:
        rows = _listed()
        assert rows["toybench"]["status"] == "ok", rows["toybench"]
        assert rows["toybench"]["kinds"] == ["benchmark"] and rows["toybench"]["benchmarks"] == ["toy"]
        res = cli("data", "synth", "--benchmark", "toy", "-o", str(tmp_path / "data"))
        assert res.returncode == 0, res.stderr
        res = cli(
            "evaluate", str(tiny_model), "--benchmark", "toy", "-d", str(tmp_path / "data"), "-o", str(tmp_path / "e")
        )
        assert res.returncode == 0, res.stderr
        assert json.loads((tmp_path / "e" / "evaluation_results.json").read_text())["forget_nll"] > 0
        assert "forget_nll" in res.stdout
        with pytest.raises(PluginError, match=r"no plugin provides the benchmark 'nope' \(installed: .*toy"):
            PluginHost().benchmark("nope")
    finally:
        pip("uninstall", "-y", "unlearn-plugin-toybench")


def test_a_benchmark_missing_a_method_is_refused():
    class Half:
        name, summary, headline = "half", "x", {"score": "higher"}

        def synthesize(self, out, seed, size):
            return {}

    class Plugin:
        @hookimpl
        def register_benchmarks(self, register):
            register(Half())

    host = PluginHost(load_entry_points=False)
    info = host.register(Plugin(), "half")
    assert "lacks ['evaluate', 'rescore']" in info.error and "half" not in host.benchmarks


@pytest.mark.parametrize("utility", ["missing", "loss"])
def test_a_benchmark_utility_must_be_a_headline_number_that_is_higher(utility):
    class Gated:
        name, summary, headline = "gated", "x", {"score": "higher", "loss": "lower"}

        def synthesize(self, out, seed, size):
            return {}

        evaluate = rescore = synthesize

    Gated.utility = utility

    class Plugin:
        @hookimpl
        def register_benchmarks(self, register):
            register(Gated())

    host = PluginHost(load_entry_points=False)
    info = host.register(Plugin(), "gated")
    assert f"utility {utility!r} must be a headline number that is 'higher'" in info.error
    assert "gated" not in host.benchmarks
