"""The architecture, guarded: two layers, the plugin API (``unlearn``, ``core/``) and the engine
(``unlearn.engine``, ``engine/``), with dependencies one way (the engine imports the API, never the
reverse; neither imports an application) and no import cycle; the API small, loading no trainer;
the evaluator never reaching the trainer; plugins and applications using only published names;
every hook documented (in its spec and in CONTRIBUTING.md) and exercised by a test."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

import unlearn
import unlearn.devkit
import unlearn.engine
import unlearn.evaluator
from unlearn import hookspecs

APPLICATIONS = (
    "unlearn.cli",
    "unlearn.recipes",
    "unlearn.tune",
    "unlearn.bench",
    "unlearn.compete",
    "unlearn.devkit",
    "unlearn.evaluator",
    "unlearn.robustness",
)
ENGINE_LINES = 2350
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "unlearn_spec")]


def imports(path: Path, package: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in a file, TYPE_CHECKING and function-level ones included;
    relative imports resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found.append((module, [alias.name for alias in node.names]))
    return found


def api_modules() -> dict[str, Path]:
    # __main__ is the `python -m unlearn` entry that starts the CLI application, not part of the API.
    return {f"unlearn.{p.stem}": p for p in (REPO / "core").glob("*.py") if p.stem not in ("__init__", "__main__")}


def engine_modules() -> dict[str, Path]:
    return {f"unlearn.engine.{p.stem}": p for p in (REPO / "engine").glob("*.py") if p.stem != "__init__"}


def lines(paths: list[Path]) -> int:
    return sum(len(p.read_text().splitlines()) for p in paths)


def test_the_api_imports_neither_the_engine_nor_an_application():
    for name, path in [*api_modules().items(), ("unlearn", REPO / "core" / "__init__.py")]:
        for module, _ in imports(path, "unlearn"):
            assert not module.startswith(("unlearn.engine", *APPLICATIONS)), f"{name} imports {module}"


def test_the_engine_imports_no_application():
    for name, path in [*engine_modules().items(), ("unlearn.engine", REPO / "engine" / "__init__.py")]:
        for module, _ in imports(path, "unlearn.engine"):
            assert not module.startswith(APPLICATIONS), f"{name} imports the application {module}"


def test_the_api_and_the_engine_have_no_import_cycle():
    modules = {**api_modules(), **engine_modules()}
    graph = {
        name: {
            m if m in modules else f"{m}.{n}"
            for m, names in imports(path, name.rsplit(".", 1)[0])
            for n in (names or [""])
            if m in modules or f"{m}.{n}" in modules
        }
        for name, path in modules.items()
    }
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node) :] + [node]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node])
        done.add(node)

    # the walk sees real edges, within the engine and from the engine into the API
    assert graph["unlearn.engine.runner"] >= {"unlearn.engine.host", "unlearn.engine.settings", "unlearn.data"}
    for name in sorted(graph):
        visit(name, [])


def test_the_api_is_small_and_each_published_name_is_used_by_a_plugin():
    api = lines([*api_modules().values(), REPO / "core" / "__init__.py"])
    assert api <= 1500, f"the plugin API has {api} lines"
    assert len(unlearn.__all__) <= 40, f"unlearn.__all__ has {len(unlearn.__all__)} names"
    # plugin code: every plugin package and its tests, and the LUME benchmark plugin with the
    # evaluator's parts that benchmark plugins build on
    # and the built-in applications' command modules, entry points like any plugin's
    files = [
        *(REPO / "plugins").rglob("*.py"),
        *(REPO / "evaluator").glob("*.py"),
        *(REPO / "apps").glob("*/commands.py"),
    ]
    code = [p.read_text() for p in files]
    unused = [n for n in unlearn.__all__ if not any(re.search(rf"\b{n}\b", text) for text in code)]
    assert not unused, f"published but used by no plugin: {unused}"


def test_the_engine_stays_its_size():
    # Set when the engine moved out of the API (issue 44): the runner as named stages, the trainer,
    # the cached reference, evaluation during training, devices and DeepSpeed, settings, host.
    engine = lines([*engine_modules().values(), REPO / "engine" / "__init__.py"])
    assert engine <= ENGINE_LINES, f"the engine has {engine} lines"


def test_importing_the_api_loads_no_trainer():
    """A plugin's imports load no HF Trainer, DeepSpeed, datasets or peft, and a bare ``import
    unlearn`` not even torch (names load on first use)."""
    heavy = ("transformers.trainer", "deepspeed", "datasets", "peft")
    code = (
        "import sys, unlearn; bare = 'torch' in sys.modules; from unlearn import *; "
        f"print(bare, sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m in {heavy!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False []", out


def test_the_evaluator_never_imports_the_trainer():
    trainer = ("unlearn.engine.trainer", "unlearn.engine.runner", "transformers.trainer")
    for path in (REPO / "evaluator").glob("*.py"):
        for module, names in imports(path, "unlearn.evaluator"):
            reached = {module, *(f"{module}.{n}" for n in names)}
            assert not reached & set(trainer), f"{path.name}: {module}"
    code = "import sys, unlearn.evaluator.evaluate; print(sorted(m for m in sys.modules if m.endswith('trainer')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not any(m in loaded for m in trainer), loaded


def _published(path: Path, package: str, allowed: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, names in imports(path, package):
        if module != "unlearn" and not module.startswith("unlearn."):
            continue
        if module not in allowed:
            bad.append(f"{path.relative_to(REPO)}: imports {module} (use names from unlearn.__all__)")
            continue
        bad += [f"{path.relative_to(REPO)}: {module}.{n} is not published" for n in names if n not in allowed[module]]
    return bad


@pytest.mark.parametrize(
    "plugin", sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file())
)
def test_plugins_import_only_the_published_api(plugin):
    # a benchmark plugin also builds on the evaluator's shared parts (loading, generation, metrics);
    # a plugin's tests may drive the engine (a whole run) and use the test kit
    api = {"unlearn": set(unlearn.__all__), "unlearn.evaluator": set(unlearn.evaluator.__all__)}
    tests = {**api, "unlearn.devkit": set(unlearn.devkit.__all__), "unlearn.engine": set(unlearn.engine.__all__)}
    folder = REPO / "plugins" / plugin
    bad = []
    for path in folder.glob("unlearn_plugin_*/**/*.py"):
        bad += _published(path, f"unlearn_plugin_{plugin}", api)
    for path in folder.glob("tests/*.py"):
        bad += _published(path, "tests", tests)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", APPLICATIONS)
def test_applications_build_on_the_published_names_only(package):
    """Organiser mode, the benchmark tools, the evaluator, the CLI and the kit use the API and the
    engine the way a third party would: through ``unlearn.__all__`` and ``unlearn.engine.__all__``
    (applications may use one another)."""
    folder = REPO / ("evaluator" if package == "unlearn.evaluator" else f"apps/{package.split('.')[1]}")
    published = {"unlearn": set(unlearn.__all__), "unlearn.engine": set(unlearn.engine.__all__)}
    bad = []
    for path in folder.glob("*.py"):
        for module, names in imports(path, package):
            if module in published:
                bad += [f"{path.name}: {module}.{n} is not published" for n in names if n not in published[module]]
            elif module.startswith("unlearn.") and not module.startswith(APPLICATIONS):
                bad.append(f"{path.name}: imports the module {module}")
    assert not bad, "\n".join(bad)


def test_every_published_name_exists():
    missing = [n for n in unlearn.__all__ if not hasattr(unlearn, n)]
    missing += [n for n in unlearn.engine.__all__ if not hasattr(unlearn.engine, n)]
    missing += [n for n in unlearn.devkit.__all__ if not hasattr(unlearn.devkit, n)]
    assert not missing


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_documents_each_argument_and_its_result_rule(hook):
    spec = getattr(hookspecs, hook)
    doc = inspect.getdoc(spec) or ""
    for arg in inspect.signature(spec).parameters:
        assert f":param {arg}:" in doc, f"{hook}: no :param {arg}:"
    first = bool(spec.unlearn_spec["firstresult"])
    assert ("First result" in doc) == first, f"{hook}: say 'First result' exactly when the first answer wins"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_contributing_with_its_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"{hook}({params})" in (REPO / "CONTRIBUTING.md").read_text(), f"CONTRIBUTING.md lacks {hook}({params})"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_a_test_plugin(hook):
    """A hook the tests never implement is a hook nobody checked (datasette's rule)."""
    files = [*(REPO / "tests").rglob("*.py"), *(REPO / "plugins").glob("*/tests/*.py")]
    pattern = re.compile(rf"@hookimpl\s+def {hook}\(|def {hook}\(")
    assert any(pattern.search(p.read_text()) for p in files), f"no test implements {hook}"


def test_contributing_worked_example_is_the_ga_plugin():
    text = (REPO / "CONTRIBUTING.md").read_text()
    blocks = re.findall(r"```python\n# plugins/ga/unlearn_plugin_ga/__init__.py\n(.*?)```", text, flags=re.S)
    assert blocks, "CONTRIBUTING.md must show plugins/ga/unlearn_plugin_ga/__init__.py in full"
    assert blocks[0] == (REPO / "plugins" / "ga" / "unlearn_plugin_ga" / "__init__.py").read_text()
    pyproject = re.findall(r"```toml\n# plugins/ga/pyproject.toml\n(.*?)```", text, flags=re.S)
    assert pyproject and pyproject[0] == (REPO / "plugins" / "ga" / "pyproject.toml").read_text()


def test_no_benchmark_is_special_cased():
    """Applications ask a benchmark what it offers (``unlearn.Benchmark``); none compares a benchmark's
    name, so a third party's benchmark gets every application LUME gets. LUME's own modules may."""
    own = {REPO / "evaluator" / name for name in ("lume.py", "evaluate.py", "signals.py", "official.py")}
    found = []
    for path in [p for f in ("core", "engine", "apps", "evaluator") for p in (REPO / f).rglob("*.py")]:
        if path in own:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
                found += [f"{path.relative_to(REPO)}:{node.lineno}" for n in names if n in ("lume", "tofu", "muse")]
    assert not found, found


def test_functions_stay_short():
    """No function over 80 lines in the API, the engine, the evaluator or the applications (ruff
    holds complexity to 12 and statements to 50 there, with no exception)."""
    long = []
    for folder in ("core", "engine", "evaluator", "apps"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not long, long


def test_no_complexity_rule_is_silenced():
    """The size rules hold everywhere they apply: no ``noqa`` for C901 or PLR0915."""
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for folder in ("core", "engine", "evaluator", "apps", "plugins")
        for path in (REPO / folder).rglob("*.py")
        if ".venv" not in path.parts and "build" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if "noqa" in line and ("C901" in line or "PLR0915" in line)
    ]
    assert not found, found
