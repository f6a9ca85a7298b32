"""--reference must be the oracle of the data being evaluated: a target, or an oracle built from
other rows, is refused with one line before any model is loaded; an evaluation records the card of
the model it evaluated, so an oracle's saved evaluation is checked the same way."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import cli

from unlearn import ConfigError
from unlearn.evaluator import RESULTS, check_reference


def _other_rows(tiny_bench, where):
    """A copy of the benchmark with one retain answer changed: the same layout, other rows."""
    other = where / "other"
    shutil.copytree(tiny_bench, other)
    file = other / "retain_train.jsonl"
    lines = file.read_text().splitlines()
    row = json.loads(lines[0])
    lines[0] = json.dumps({**row, "output": row["output"] + " (edited)"})
    file.write_text("\n".join(lines) + "\n")
    return other


@pytest.mark.heavy
def test_the_reference_is_the_oracle_of_this_data(tmp_path, tiny_bench, tiny_target, tiny_oracle):
    target, oracle = tiny_target[0], tiny_oracle[0]
    check_reference(oracle, tiny_bench, RESULTS)  # built from this folder with --oracle: accepted
    with pytest.raises(ConfigError, match=r"target_card.json: a target, not an oracle \(built without --oracle\)"):
        check_reference(target, tiny_bench, RESULTS)
    other = _other_rows(tiny_bench, tmp_path)
    with pytest.raises(ConfigError, match=r"target_card.json: this oracle was built from other rows .* than .*other"):
        check_reference(oracle, other, RESULTS)

    # The oracle's LUME evaluation records its card; given as --reference with other data, it is
    # refused before anything is generated, and nothing is written.
    saved = tmp_path / "eval_oracle"
    res = cli("evaluate", str(oracle), "--data", str(tiny_bench), "-o", str(saved), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    card = json.loads((oracle / "target_card.json").read_text())
    recorded = json.loads((saved / RESULTS).read_text())["model_card"]
    assert recorded == {"oracle": True, "data_sha256": card["data"]["sha256"]}
    out = tmp_path / "refused"
    res = cli("evaluate", str(target), "--data", str(other), "-o", str(out), "--reference", str(saved))
    assert res.returncode != 0 and not out.exists()
    assert "evaluation_results.json: this oracle was built from other rows" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

    # TOFU (a plugin) checks a model folder given as its reference the same way.
    tofu = tmp_path / "tofu"
    assert cli("data", "synth", "--benchmark", "tofu", "--size", "tiny", "--out", str(tofu)).returncode == 0
    res = cli(
        "evaluate", str(target), "--benchmark", "tofu", "--data", str(tofu), "-o", str(out), "--reference", str(target)
    )
    assert res.returncode != 0 and "a target, not an oracle" in res.stderr and not out.exists()
