"""TOFU and MUSE under a launcher: `torchrun --nproc_per_node 2 -m unlearn evaluate --benchmark ...`
shares the rows between two gloo ranks, rank 0 alone writes, and every per-example number equals
one process's bit for bit (each rank computes the very batches one process would)."""

from __future__ import annotations

import json

import pytest
from helpers import launch


@pytest.mark.heavy
@pytest.mark.parametrize("benchmark, logs", [("tofu", ["eval_log_aggregated.json"]), ("muse", ["log.json"])])
def test_two_ranks_give_what_one_process_gives(benchmark, logs, tiny_model, tmp_path):
    from unlearn.engine import get_host

    data = tmp_path / "data"
    get_host().benchmark(benchmark).synthesize(data, seed=0, size="tiny")
    args = [str(tiny_model), "--benchmark", benchmark, "-d", str(data), "--reference", str(tiny_model)]
    args += ["--max-new-tokens", "8", "--batch-size", "3", "--device", "cpu"]
    one = launch("evaluate", *args, "-o", str(tmp_path / "one"))
    two = launch("evaluate", *args, "-o", str(tmp_path / "two"), nproc=2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("results in") == 1  # rank 0 reports
    for name in logs:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    results = [json.loads((tmp_path / name / "evaluation_results.json").read_text()) for name in ("one", "two")]
    assert [r.pop("processes") for r in results] == [1, 2]
    for r in results:
        r.pop("seconds")
    assert results[0] == results[1]
