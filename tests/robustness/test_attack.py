"""``unlearn attack``: the recovery and the worst case on hand-worked numbers, attack plugins
registered and refused like methods, and the whole battery on the tiny LUME target: an unlearned
model, the oracle, the quantization attack (pip-installed) and two in-process attacks whose
recovery is known (the model itself: 0; the target: 1), a killed run resumed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import cli
from pydantic import Field

from unlearn import Attacked, Config, ConfigError, hookimpl
from unlearn.engine import PluginError, PluginHost, build_config, run
from unlearn.robustness import number, recovery, run_attacks, worst


def test_recovery_worked_by_hand():
    # unlearning took a number from 0.9 (target) to 0.1; an attack brings it to 0.5: half of it back
    assert recovery(0.5, 0.1, 0.9) == pytest.approx(0.5)
    # a score that unlearning raised (0.33 -> 0.75) and an attack lowers to 0.5: 0.25 / 0.42
    assert recovery(0.5, 0.75, 0.33) == pytest.approx(0.25 / 0.42)
    assert recovery(0.05, 0.1, 0.9) == 0.0 and recovery(1.2, 0.1, 0.9) == 1.0  # clipped
    assert recovery(0.5, 0.3, 0.3) is None and recovery(None, 0.1, 0.9) is None  # undefined
    assert worst([0.2, 0.7, 0.4], "higher") == 0.2 and worst([0.2, 0.7], "lower") == 0.7
    assert worst([0.1, -0.3, 0.2], "zero") == -0.3


def test_numbers_are_read_by_dotted_paths():
    results = {"forget-set": {"overall-knowledge-score": 0.25}, "aggregate-score": 0.5, "a.b": 1, "flag": True}
    assert number(results, "forget-set.overall-knowledge-score") == 0.25
    assert number(results, "aggregate-score") == 0.5 and number(results, "a.b") == 1.0
    assert number(results, "forget-set.missing") is None and number(results, "flag") is None


class _Settings(Config):
    times: int = Field(1, ge=1)


class _Fixed:
    """An attack whose one variant is a given model on the data: the attacked model itself
    (nothing recovered) or the target (everything recovered)."""

    summary = "a fixed model"
    config = _Settings

    def __init__(self, name: str, model: Path | None) -> None:
        self.name, self.model = name, model

    def run(self, model: Path, data: Path, config: _Settings, ctx) -> list[Attacked]:
        return [Attacked(f"x{i}", self.model or model, data, x=float(i)) for i in range(config.times)]


class _Refusing:
    name, summary, config = "refusing", "cannot apply here", _Settings

    def run(self, model, data, config, ctx):
        from unlearn import RunError

        raise RunError("this benchmark has no paraphrases")


def _plugin(*attacks):
    class P:
        @hookimpl
        def register_attacks(self, register):
            for attack in attacks:
                register(attack)

    return P()


def test_attacks_are_registered_and_bad_ones_refused():
    host = PluginHost()
    assert host.register(_plugin(_Fixed("same", None)), "same-plugin").error is None
    assert host.attack("same").summary == "a fixed model" and "same" in host.plugins["same-plugin"].attacks
    for bad, message in (
        (_Fixed("Bad Name", None), "must match"),
        (_Fixed("same", None), "already registered by plugin 'same-plugin'"),
        (type("NoRun", (), {"name": "norun", "summary": "s", "config": _Settings})(), "lacks run or summary"),
        (type("Loose", (_Fixed,), {"config": Config.__base__})("loose", None), "must forbid unknown keys"),
    ):
        assert message in host.register(_plugin(bad), f"p-{bad.name}").error
    with pytest.raises(PluginError, match="no plugin provides the attack 'nope'.*same"):
        host.attack("nope")


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.fixture(scope="module")
def unlearned(tiny_bench, tiny_target, tmp_path_factory) -> Path:
    """The tiny target after 8 steps of gradient difference."""
    out = tmp_path_factory.mktemp("attack") / "unlearned"
    settings = {"max_steps": 8, "learning_rate": 3e-4, "batch_size": 4, "progress": False}
    config = {"model": str(tiny_target[0]), "data": str(tiny_bench), "method": "gd", "output_dir": str(out)}
    return run(build_config({**config, "trainer": settings}))


@pytest.mark.heavy
def test_the_battery_on_the_tiny_target(tiny_bench, tiny_target, tiny_oracle, unlearned, tmp_path):
    target, oracle = tiny_target[0], tiny_oracle[0]
    before = _digest(unlearned)
    host = PluginHost()
    host.register(_plugin(_Fixed("same", None), _Fixed("restore", target), _Refusing()), "known")
    lines: list[str] = []
    out = tmp_path / "attacked"
    common = {"benchmark": "lume", "reference": oracle, "host": host, "seed": 0, "device": "cpu"}
    chosen = ["same", "restore", "refusing", "quantize"]
    settings = {"quantize": {"bits": [8, 2], "group_size": 32}, "same": {"times": 2}}

    def killed(line: str) -> None:  # the run dies as it starts its third evaluation
        lines.append(line)
        if sum("evaluating" in x for x in lines) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_attacks(unlearned, tiny_bench, out, target, attacks=chosen, settings=settings, say=killed, **common)
    lines.clear()
    results = run_attacks(
        unlearned, tiny_bench, out, target, attacks=chosen, settings=settings, say=lines.append, **common
    )
    made = len(list((out / "evaluations").rglob("evaluation_results.json")))
    assert sum("evaluating" in x for x in lines) == made - 2  # the two the killed run finished are reused
    assert _digest(unlearned) == before  # only read
    moved = results["unlearned"]["same"]["variants"][0]["knowledge"]
    assert any(n["recovery"] is not None for n in moved.values())  # unlearning moved the forget terms
    assert results["unlearned"]["same"]["recovery"] == 0.0  # the model itself recovers nothing
    assert results["unlearned"]["restore"]["recovery"] == 1.0  # the target recovers everything
    assert [v["x"] for v in results["unlearned"]["same"]["variants"]] == [0.0, 1.0]
    assert results["unlearned"]["refusing"] == {"skipped": "this benchmark has no paraphrases"}
    quantized = results["unlearned"]["quantize"]
    assert [v["label"] for v in quantized["variants"]] == ["int8", "int2"]
    assert quantized["variants"][0]["recovery"] <= 0.1  # 8 bits barely move the weights
    assert "oracle" in results and results["oracle"]["quantize"]["variants"][1]["label"] == "int2"
    robust, surface = results["robust"], results["robust"]["surface"]
    seen = [v["headline"]["aggregate-score"] for a in results["unlearned"].values() for v in a.get("variants", [])]
    assert robust["recovery"] == 1.0 and robust["aggregate-score"] == min([surface["aggregate-score"], *seen])
    assert len(seen) == 5 and surface["aggregate-score"] == seen[0]  # "same" is the surface model
    assert json.loads((out / "attack_results.json").read_text())["robust"] == robust
    report = (out / "report.md").read_text()
    assert "| restore | 1.000 |" in report and "this benchmark has no paraphrases" in report
    assert (out / "recovery.png").stat().st_size > 1000 and not (out / "work").exists()


@pytest.mark.heavy
def test_the_command_line(tiny_bench, tiny_target, unlearned, tmp_path):
    args = ["attack", str(unlearned), "--data", str(tiny_bench), "--target", str(tiny_target[0])]
    args += ["--out", str(tmp_path / "o"), "--attacks", "quantize", "--set", "quantize.bits=[4]", "--device", "cpu"]
    res = cli(*args, "--keep-models")
    assert res.returncode == 0, res.stderr
    assert "quantize: recovery" in res.stdout and (tmp_path / "o" / "work" / "unlearned" / "quantize" / "int4").is_dir()
    bad = cli(*args[:-4], "--set", "quantize.bits=[1]", "--out", str(tmp_path / "p"))
    assert bad.returncode == 2 and "attack.quantize.bits" in bad.stderr and "Traceback" not in bad.stderr
    none = cli(*args[:8], "--attacks", "nope", "--out", str(tmp_path / "q"))
    assert none.returncode == 2 and "no plugin provides the attack 'nope'" in none.stderr


def test_settings_for_an_attack_not_run_are_refused(tiny_model, tiny_data, tmp_path):
    host = PluginHost()
    host.register(_plugin(_Fixed("same", None)), "known")
    with pytest.raises(ConfigError, match=r"attack.other: settings for an attack that is not run"):
        run_attacks(
            tiny_model, tiny_data, tmp_path / "o", tiny_model, attacks=["same"], settings={"other": {}}, host=host
        )
    with pytest.raises(ConfigError, match=r"attack.same.times"):
        run_attacks(
            tiny_model,
            tiny_data,
            tmp_path / "o",
            tiny_model,
            attacks=["same"],
            settings={"same": {"times": 0}},
            host=host,
        )


@pytest.mark.heavy
def test_a_third_party_attack_from_the_skeleton(tiny_bench, tiny_target, unlearned, tmp_path):
    """`unlearn plugins new --kind attack`, pip-installed: the kit refuses its placeholder summary,
    then passes it, and `unlearn attack` runs it on LUME with no change to our code."""
    from helpers import pip

    assert cli("plugins", "new", "prefixer", "--kind", "attack", "--dir", str(tmp_path)).returncode == 0
    pkg = tmp_path / "unlearn-plugin-prefixer"
    module = pkg / "unlearn_plugin_prefixer" / "__init__.py"
    pip("install", "--no-deps", "--no-build-isolation", "-e", str(pkg))
    try:
        check = cli("plugins", "check", "prefixer")
        assert check.returncode == 1 and "placeholder" in check.stdout, check.stdout
        module.write_text(module.read_text().replace("One line on what prefixer does", "A prefix before each query"))
        check = cli("plugins", "check", "prefixer")
        assert check.returncode == 0 and "attacks the tiny model" in check.stdout, check.stdout
        args = ["attack", str(unlearned), "--data", str(tiny_bench), "--target", str(tiny_target[0])]
        res = cli(*args, "--out", str(tmp_path / "o"), "--attacks", "prefixer", "--device", "cpu")
        assert res.returncode == 0, res.stderr
        found = json.loads((tmp_path / "o" / "attack_results.json").read_text())["unlearned"]["prefixer"]
        assert [v["label"] for v in found["variants"]] == ["prefix"]
        assert all(
            0.0 <= n["recovery"] <= 1.0 for n in found["variants"][0]["knowledge"].values() if n["recovery"] is not None
        )
    finally:
        pip("uninstall", "-y", "unlearn-plugin-prefixer")
