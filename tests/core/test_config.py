"""Run config: files, overrides, and errors that name the field."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import cli, run_args

from unlearn import ConfigError
from unlearn.engine import apply_override, build_config, parse_value, read_config_file


def _base(tmp_path) -> dict:
    return {"model": "m", "data": "d", "method": "gd", "output_dir": str(tmp_path / "o")}


def test_toml_and_yaml_files_load_with_paths_relative_to_the_file(tmp_path):
    (tmp_path / "run.toml").write_text(
        'model = "model"\ndata = "data"\nmethod = "gd"\noutput_dir = "out"\nwith = []\n'
        "[trainer]\nlearning_rate = 2e-5\n[config.gd]\nretain_weight = 2.0\n"
    )
    (tmp_path / "run.yaml").write_text(
        "model: model\ndata: data\nmethod: gd\noutput_dir: out\n"
        "trainer:\n  learning_rate: 2.0e-5\nconfig:\n  gd:\n    retain_weight: 2.0\n"
    )
    a = build_config(read_config_file(tmp_path / "run.toml"))
    b = build_config(read_config_file(tmp_path / "run.yaml"))
    assert a == b
    assert a.model == str(tmp_path / "model") and a.trainer.learning_rate == 2e-5
    assert a.config == {"gd": {"retain_weight": 2.0}}
    # a DeepSpeed preset stays a preset name; a file is relative to the config like any path
    (tmp_path / "ds.toml").write_text('deepspeed = "zero3"\n')
    assert read_config_file(tmp_path / "ds.toml")["deepspeed"] == "zero3"
    (tmp_path / "ds.toml").write_text('deepspeed = "ds.json"\n')
    assert read_config_file(tmp_path / "ds.toml")["deepspeed"] == str(tmp_path / "ds.json")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("trainer.learnin_rate", 1.0, "trainer.learnin_rate: unknown key"),
        ("trainer.batch_size", 0, "trainer.batch_size: Input should be greater than or equal to 1 (got 0)"),
        ("trainer.retain_sampling", "sometimes", "trainer.retain_sampling: Input should be 'cycle' or 'random'"),
        ("seeed", 1, "seeed: unknown key"),
    ],
)
def test_bad_keys_and_values_name_the_field(tmp_path, key, value, message):
    data = _base(tmp_path)
    apply_override(data, key, value)
    with pytest.raises(ConfigError) as info:
        build_config(data, source="run.toml")
    assert message in str(info.value) and str(info.value).startswith("run.toml: ")


def test_method_settings_are_validated_by_the_plugin_config(tmp_path, host):
    cfg = build_config(_base(tmp_path) | {"config": {"gd": {"retain_wieght": 1}}})
    with pytest.raises(ConfigError, match=r"config\.gd\.retain_wieght: unknown key"):
        host.configure(cfg)
    cfg = build_config(_base(tmp_path) | {"config": {"gd": {"retain_weight": -1}}})
    with pytest.raises(ConfigError, match=r"config\.gd\.retain_weight: Input should be greater than or equal to 0"):
        host.configure(cfg)
    cfg = build_config(_base(tmp_path) | {"config": {"ga": {}}})
    with pytest.raises(ConfigError, match=r"config\.ga: settings for a method that is not part of this run"):
        host.configure(cfg)
    cfg = build_config(_base(tmp_path))
    resolved = host.configure(cfg)
    assert resolved["gd"].retain_weight == 1.0
    assert cfg.config == {"gd": {"retain_weight": 1.0}}  # defaults filled in for the saved copy


def test_set_values_are_toml_literals():
    assert parse_value("1e-5") == 1e-5
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("cosine") == "cosine"
    assert parse_value("mlp.down_proj") == "mlp.down_proj"
    assert parse_value("'mlp\\.down_proj'") == "mlp\\.down_proj"  # a TOML literal string keeps the backslash
    with pytest.raises(ConfigError, match=r"--set value \"mlp\\\.down_proj\": not valid TOML"):
        parse_value('"mlp\\.down_proj"')  # an invalid escape is an error, not a string with quotes in it
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_value("[1, 2")
    data: dict = {"trainer": {"epochs": 1}}
    apply_override(data, "trainer.epochs", 3)
    apply_override(data, "config.gd.retain_weight", 0.5)
    assert data == {"trainer": {"epochs": 3}, "config": {"gd": {"retain_weight": 0.5}}}


def test_deepspeed_batch_sizes_follow_the_trainer_settings():
    from unlearn.engine import TrainerSettings
    from unlearn.engine.devices import deepspeed_config

    trainer = TrainerSettings(batch_size=2, gradient_accumulation_steps=3)
    cfg = deepspeed_config("zero3", trainer, world_size=2)
    assert cfg["zero_optimization"] == {
        "stage": 3,
        "stage3_gather_16bit_weights_on_model_save": True,
        "reduce_bucket_size": "auto",  # sized from the model by HF, not DeepSpeed's 5e8-element default
        "stage3_prefetch_bucket_size": "auto",
    }
    assert cfg["train_micro_batch_size_per_gpu"] == 2 and cfg["gradient_accumulation_steps"] == 3
    # with the model's hidden size, about one layer of gathered parameters stays live, not DeepSpeed's 1e9,
    # and the optimiser steps sub-groups of about one layer (each step flattens a sub-group's gradients)
    sized = deepspeed_config("zero3", trainer, world_size=2, hidden_size=64)["zero_optimization"]
    assert sized["stage3_max_live_parameters"] == sized["stage3_max_reuse_distance"] == 12 * 64**2
    assert sized["sub_group_size"] == 12 * 64**2
    # a resumed run keeps its checkpoint's sub-groups (DeepSpeed loads no other layout); a config's own wins
    resumed = deepspeed_config("zero3", trainer, 2, 64, resumed_sub_group=10**9)["zero_optimization"]
    assert resumed["sub_group_size"] == 10**9
    given = {"zero_optimization": {"stage": 3, "sub_group_size": 5}}
    assert deepspeed_config(given, trainer, 2, 64, resumed_sub_group=10**9)["zero_optimization"]["sub_group_size"] == 5
    given = {"zero_optimization": {"stage": 3, "stage3_max_live_parameters": 10}}
    assert deepspeed_config(given, trainer, 2, hidden_size=64)["zero_optimization"]["stage3_max_live_parameters"] == 10
    assert "train_batch_size" not in cfg  # DeepSpeed derives it with the real world size
    with pytest.raises(ConfigError, match=r"deepspeed: train_batch_size = 4 disagrees with the trainer settings \(12"):
        deepspeed_config({"train_batch_size": 4}, trainer, world_size=2)
    assert deepspeed_config({"train_batch_size": 12}, trainer, world_size=2)["gradient_accumulation_steps"] == 3


def test_cli_flags_override_the_file_and_the_resolved_config_is_saved(tmp_path, tiny_model, tiny_data):
    (tmp_path / "run.toml").write_text(
        f'model = "{tiny_model}"\ndata = "{tiny_data}"\nmethod = "ga"\noutput_dir = "ignored"\n'
        "[trainer]\nmax_steps = 100\nprogress = false\n"
    )
    out = tmp_path / "out"
    res = cli(
        "run",
        "-c",
        str(tmp_path / "run.toml"),
        "--method",
        "gd",
        "-o",
        str(out),
        "--max-steps",
        "1",
        "--set",
        "config.gd.retain_weight=0.5",
        "--set",
        "trainer.batch_size=3",
    )
    assert res.returncode == 0, res.stderr
    saved = json.loads((out / "unlearn_config.json").read_text())
    assert saved["method"] == "gd" and saved["config"] == {"gd": {"retain_weight": 0.5}}
    assert saved["trainer"]["max_steps"] == 1 and saved["trainer"]["batch_size"] == 3
    assert saved["trainer"]["learning_rate"] == 1e-5  # a default, written out in full
    report = json.loads((out / "unlearn_run.json").read_text())
    assert report["versions"]["unlearn-plugin-gd"] == "0.1.0"


@pytest.mark.heavy
def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    (tmp_path / "bad.toml").write_text('model = "m"\ndata = "d"\nmethod = "gd"\noutput_dir = "o"\n[trainer]\nlr = 1\n')
    res = cli("run", "-c", str(tmp_path / "bad.toml"))
    assert res.returncode == 2
    assert "bad.toml: trainer.lr: unknown key" in res.stderr and "Traceback" not in res.stderr
    res = cli("run", "--model", "m", "--data", "d", "--method", "nosuch", "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "no plugin provides 'nosuch'" in res.stderr


def test_devices_are_resolved_or_refused_in_one_line():
    from unlearn.engine import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=rf"device 'cuda:{count}': this machine has {count} CUDA device\(s\)"):
        resolve_device(f"cuda:{count}")
    with pytest.raises(ConfigError, match="choose auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")


def test_a_run_claims_its_device_through_cuda_visible_devices(monkeypatch):
    from unlearn.engine import claim_device
    from unlearn.engine.devices import visible_devices

    assert visible_devices("cpu", None) == "" and visible_devices("cpu", "0,1") == ""
    assert visible_devices("cuda:1", "3,5") == "5" and visible_devices("cuda:1", None) == "1"
    assert visible_devices("auto", "3") is None and visible_devices("cuda", "3") is None
    with pytest.raises(ConfigError, match=r"device 'cuda:2': CUDA_VISIBLE_DEVICES='3,5' shows 2 device"):
        visible_devices("cuda:2", "3,5")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="a rank takes its own GPU"):
        claim_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert claim_device("cpu") == torch.device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # hidden from this process and what it launches


@pytest.mark.heavy
@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal on a machine without a GPU")
def test_a_gpu_this_machine_lacks_is_refused_before_any_work(tmp_path, tiny_model, tiny_data):
    from unlearn.bench.target import build_target
    from unlearn.evaluator.evaluate import evaluate_model
    from unlearn.recipes import find_recipe, load_recipe, run_recipe

    res = cli(*run_args(tiny_model, tiny_data, tmp_path / "o", "--device", "cuda"))  # one line, as every error
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error: device 'cuda': no such CUDA device here" in res.stderr
    recipe = load_recipe(find_recipe("ynu"), {"model": str(tiny_model), "data": str(tiny_data)})
    calls = [
        lambda: build_target(tiny_data, tmp_path / "t", device="cuda:1"),
        lambda: run_recipe(recipe, tmp_path / "r", device="cuda"),
        lambda: evaluate_model(tiny_model, tiny_data, tmp_path / "e", device="cuda"),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match=r"no such CUDA device here|this machine has 0 CUDA device\(s\)"):
            call()
    assert not any(tmp_path.iterdir())  # nothing written, not even a staging folder
    res = cli("run", "--model", "m", "--data", "d", "--method", "gd", "-o", "o", "--device", "gpu")
    assert res.returncode == 2 and "trainer.device: String should match pattern" in res.stderr
