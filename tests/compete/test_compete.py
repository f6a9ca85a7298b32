"""Organiser mode: every installed plugin and a SemEval-style submission are scored next to
deliberately bad entrants, each bad one gets the right status, no entrant process survives,
results are cached (an added entrant is the only new work), and the reports hold no data."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from helpers import COPY_SUBMISSION, cli, processes_with

from unlearn import ConfigError
from unlearn.compete import Competition, load_competition, rank
from unlearn.compete.checks import check_model
from unlearn.compete.config import check_installed
from unlearn.compete.sandbox import abi
from unlearn.devkit import FORGET_ROWS
from unlearn.engine import PluginHost

pytestmark = pytest.mark.heavy

# A SemEval-style submission as a team would have written it: GD with the HF Trainer.
GD_SUBMISSION = """
import glob, os, torch
import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

class GD(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = model(input_ids=inputs["input_ids"], labels=inputs["input_ids"]).loss
        retain = model(input_ids=inputs["retain_ids"], labels=inputs["retain_ids"]).loss
        return -forget + retain

def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    tok = AutoTokenizer.from_pretrained(input_model_path)
    model = AutoModelForCausalLM.from_pretrained(input_model_path)
    forget = pd.read_parquet(glob.glob(os.path.join(forget_dir, "*.parquet"))[0])
    retain = pd.read_json(os.path.join(retain_dir, "retain.jsonl"), lines=True)
    enc = lambda r: tok(r["input"] + r["output"], truncation=True, max_length=64)["input_ids"]
    data = [{"input_ids": enc(f), "retain_ids": enc(r)} for (_, f), (_, r) in zip(forget.iterrows(), retain.iterrows())]
    def collate(batch):
        return {k: torch.tensor([b[k][:min(len(x[k]) for x in batch)] for b in batch]) for k in batch[0]}
    args = TrainingArguments(output_dir=os.path.join(output_dir, "tmp"), max_steps=2, per_device_train_batch_size=2,
                             learning_rate=1e-3, report_to=[], use_cpu=True, remove_unused_columns=False, save_strategy="no")
    GD(model=model, args=args, train_dataset=data, data_collator=collate).train()
    model.save_pretrained(output_dir)
    tok.save_pretrained(output_dir)
"""

BAD = {
    "raises": """
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    raise ValueError("cannot forget " + open(forget_dir + "/forget.jsonl").read())
""",
    "sleeps": """
import subprocess, sys, time
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # survivor-in-group"])
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # survivor-own-session"], start_new_session=True)
    time.sleep(600)
""",
    "spins": """
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    while True:
        pass
""",
    "nan_weights": """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    model = AutoModelForCausalLM.from_pretrained(input_model_path)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(input_model_path).save_pretrained(output_dir)
""",
    "snoops": """
import os, shutil
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    given = os.environ.get("UNLEARN_TEST_SECRET")
    seen = f"{given is not None} {os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
    open(os.path.join(output_dir, "..", "env_seen.txt"), "w").write(seen)
    secret = open(given or SECRET).read()   # the organiser's MIA members
    for f in os.listdir(input_model_path):
        shutil.copy(os.path.join(input_model_path, f), output_dir)
""",
    "pickles": """
import json, os, torch
from transformers import AutoModelForCausalLM
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    model = AutoModelForCausalLM.from_pretrained(input_model_path)
    torch.save(model.state_dict(), os.path.join(output_dir, "pytorch_model.bin"))
    model.config.save_pretrained(output_dir)
""",
    "writes_nothing": """
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    pass
""",
    "garbage": """
import os, shutil
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    shutil.copy(os.path.join(input_model_path, "config.json"), output_dir)
    open(os.path.join(output_dir, "model.safetensors"), "wb").write(b"not a safetensors file")
""",
}

EXPECTED = {
    "raises": "crash",
    "sleeps": "hang",
    "spins": "timeout",
    "nan_weights": "nan",
    "pickles": "pickle",
    "writes_nothing": "no model",
    "garbage": "unloadable",
}


def test_good_and_bad_entrants(arena, competition_file, tmp_path, monkeypatch):
    secret = arena / "private" / "mia_member.jsonl"
    monkeypatch.setenv("UNLEARN_TEST_SECRET", str(secret))  # set for the organiser, must not reach entrants
    (tmp_path / "gd_submission.py").write_text(GD_SUBMISSION)
    for name, code in BAD.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code).replace("SECRET", repr(str(secret))))
    # loss plugins of each kind (plain; a reference; alternate answers), a submission of team gd,
    # the bad ones. Every installed plugin is checked by its conformance test and under ZeRO on two
    # ranks; `all` expands as tested below.
    plugins = ["ga", "gd", "idk", "npo"]  # gd: a team with two entries
    entrants = [
        *plugins,
        {"name": "gd_submission", "team": "gd", "submission": "gd_submission.py"},
        *[f"{name}.py" for name in BAD],
    ]
    config = competition_file(tmp_path, entrants, limit=20)
    total = len(plugins) + 1 + len(BAD)
    res = cli("compete", "--config", str(config), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    by_name = {r["entrant"]: r for r in board["entrants"]}
    for good in (*plugins, "gd_submission"):
        assert by_name[good]["status"] == "ok", by_name[good]
        assert 0 <= by_name[good]["final_score"] <= 1 and by_name[good]["wall_time_s"] > 0
        assert by_name[good]["peak_memory_mb"] > 50
    for name, status in EXPECTED.items():
        assert by_name[name]["status"] == status, by_name[name]
    assert by_name["raises"]["reason"] == "exit code 1: ValueError"
    assert (tmp_path / "out" / "entrants" / "raises" / "log.txt").is_file()
    # the organiser's environment did not reach the entrant, which sees no GPU (entrant_devices = "cpu");
    # with Landlock the file itself is closed too
    assert (tmp_path / "out" / "entrants" / "snoops" / "work" / "env_seen.txt").read_text() == "False ''"
    if abi():
        assert by_name["snoops"]["status"] == "crash" and by_name["snoops"]["reason"].endswith("PermissionError")
    assert not processes_with("survivor-in-group") and not processes_with("survivor-own-session")
    # one row per team: gd's best valid entry
    teams = [t["team"] for t in board["teams"]]
    assert sorted(teams) == sorted({*plugins, *BAD}) and teams.count("gd") == 1
    assert by_name["gd_submission"]["team"] == "gd"
    # reports never print the forget set or its PII (the crash message quoted the whole forget file)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        text = (tmp_path / "out" / name).read_text()
        for row in FORGET_ROWS:
            assert row.output.strip() not in text and row.input not in text
        assert "5550192834" not in text and "Tobin Hale" not in text
    assert (tmp_path / "out" / "leaderboard.png").stat().st_size > 10_000
    assert f"[1/{total}] {plugins[0]} (plugin, team {plugins[0]}): started" in res.stderr + res.stdout

    # a re-run with an added entrant does only that entrant
    entrants.append("recipe:ynu")
    competition_file(tmp_path, entrants, limit=20)
    again = cli("compete", "--config", str(config), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stderr + again.stdout
    assert output.count(": cached,") == total and "recipe_ynu (recipe, team recipe_ynu): started" in output
    result = json.loads((tmp_path / "out" / "entrants" / "recipe_ynu" / "result.json").read_text())
    assert result["status"] == "ok" and result["kind"] == "recipe"
    assert "baseline: cached" in output


# A model that answers every prompt with "<CR>a<CR>a...": the residual stream is the token's embedding,
# one direction for a carriage return and the opposite for every other token, and the output
# head maps each to the other. The organisers' CSV round trip cuts its rows: no official score.
EMITS_CR = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    model = AutoModelForCausalLM.from_pretrained(input_model_path)
    tok = AutoTokenizer.from_pretrained(input_model_path)
    cr, a = (next(i for i in range(len(tok)) if tok.decode([i]) == s) for s in ("\\r", "a"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.zero_()
        ramp = torch.linspace(-1, 1, model.config.hidden_size)
        embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        embedding.copy_(-ramp.expand_as(embedding))
        embedding[cr] = ramp
        head.zero_()
        head[cr], head[a] = -ramp, ramp
    model.save_pretrained(output_dir)
    tok.save_pretrained(output_dir)
"""


# A model that loads but does not belong with its tokenizer, which has a token past the model's
# embeddings (the forget prompts hold it).
BAD_VOCAB = """
import os, shutil
from transformers import AutoTokenizer
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    for f in os.listdir(input_model_path):
        shutil.copy(os.path.join(input_model_path, f), output_dir)
    tok = AutoTokenizer.from_pretrained(input_model_path)
    tok.add_tokens(["Velmora"])
    tok.save_pretrained(output_dir)
"""


def test_an_entrant_the_evaluation_fails_on_is_unscorable_not_fatal(arena, competition_file, tmp_path):
    """Official scoring: one entrant's model has no score (its text breaks the organisers' CSV) and
    the evaluation refuses another's (its tokenizer outgrows its embeddings); both are listed as
    unscorable with our message (the traceback beside the result), the others are ranked, and
    changing the evaluation settings evaluates them again."""
    (tmp_path / "emits_cr.py").write_text(EMITS_CR)
    (tmp_path / "bad_vocab.py").write_text(BAD_VOCAB)
    entrants = ["gd", "emits_cr.py", "bad_vocab.py"]
    config = competition_file(tmp_path, entrants, official=True, eval_dtype="bfloat16", max_new_tokens=256)
    res = cli("compete", "--config", str(config), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    by_name = {r["entrant"]: r for r in board["entrants"]}
    assert by_name["gd"]["status"] == "ok" and by_name["gd"]["rank"] == 1
    cut, bad = by_name["emits_cr"], by_name["bad_vocab"]
    assert cut["status"] == bad["status"] == "unscorable" and cut["rank"] is bad["rank"] is None
    assert cut["reason"].startswith("evaluation: forget set: row ") and "carriage return" in cut["reason"]
    assert bad["reason"].endswith(
        "the tokenizer has 513 tokens and the model embeds 512: they do not belong together"
        " (resize the embeddings with the tokenizer, or save the matching one)"
    )
    error = tmp_path / "out" / "entrants" / "bad_vocab" / "evaluation_error.txt"
    assert "ConfigError" in error.read_text()  # the traceback, for the organiser
    # without the official CSV round trip the first has a score: the stale verdict is not kept
    competition_file(tmp_path, entrants, max_new_tokens=24)
    again = cli("compete", "--config", str(config), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "entrants" / "emits_cr" / "result.json").read_text())
    assert result["status"] == "ok" and 0 <= result["final_score"] <= 1 and not result.get("reason")
    assert json.loads((error.parent / "result.json").read_text())["status"] == "unscorable"


def test_competition_file_errors(arena, competition_file, tmp_path):
    path = competition_file(tmp_path, ["gd", "no_such_method"])
    comp, host = load_competition(path), PluginHost()
    entrants = comp.expand(host)  # a plugin this machine lacks is only an error for entrants that run
    check_installed(entrants[:1], host)
    with pytest.raises(
        ConfigError,
        match="entrant 'no_such_method': method 'no_such_method' is not installed "
        "\\(install its plugin, e.g. `pip install unlearn-plugin-no-such-method`",
    ):
        check_installed(entrants, host)
    with pytest.raises(ConfigError, match="entrants\\[1\\]: 'no such' is not a plugin name"):
        load_competition(path, {"entrants": ["gd", "no such"]}).expand(host)
    with pytest.raises(ConfigError, match="names used twice"):
        load_competition(path, {"entrants": ["gd", "gd"]}).expand(PluginHost())
    with pytest.raises(ConfigError, match="exactly one of plugin, recipe, submission"):
        load_competition(path, {"entrants": [{"name": "x", "plugin": "gd", "recipe": "ynu"}]})
    res = cli("compete", "--config", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "missing.toml" in res.stderr
    official = load_competition(path, {"official": True}, edit=lambda d: d.pop("max_new_tokens"))  # their preset
    assert (official.eval_dtype, official.max_new_tokens) == ("bfloat16", 256)
    with pytest.raises(ConfigError, match="official = true fixes eval_dtype"):
        load_competition(path, {"official": True, "eval_dtype": "float32"}, edit=lambda d: d.pop("max_new_tokens"))
    with pytest.raises(ConfigError, match="official = true fixes max_new_tokens"):
        load_competition(path, {"official": True})
    with pytest.raises(ConfigError, match="lists 1 GPU\\(s\\) for 2 ranks \\(nproc\\); list one per rank"):
        load_competition(path, {"launcher": "torchrun", "nproc": 2, "entrant_devices": "0"})
    with pytest.raises(ConfigError, match="entrant_devices: String should match pattern"):
        load_competition(path, {"entrant_devices": "gpu0"})
    assert load_competition(path, {"launcher": "torchrun", "nproc": 2, "entrant_devices": "0,1"}).nproc == 2


def test_all_expands_to_every_installed_loss_plugin(arena, competition_file, tmp_path):
    comp: Competition = load_competition(competition_file(tmp_path, ["all", "recipe:ynu"]))
    host = PluginHost()
    names = [e.name for e in comp.expand(host)]
    assert names == sorted(n for n, e in host.methods.items() if e.kind == "loss") + ["recipe_ynu"]


def test_ranking_keeps_each_teams_best_valid_entry():
    def row(name, team, score, status="ok", gate=True):
        return {"name": name, "team": team, "kind": "plugin", "status": status, "final_score": score, "gate": gate}

    rows, teams = rank(
        [row("a1", "A", 0.5), row("a2", "A", 0.7, gate=False), row("b", "B", 0.6), row("c", "C", None, status="crash")]
    )
    assert [(r["entrant"], r["rank"]) for r in rows] == [("b", 1), ("a1", 2), ("a2", None), ("c", None)]
    assert [(t["team"], t["entrant"], t["rank"]) for t in teams] == [("B", "b", 1), ("A", "a1", 2), ("C", "c", None)]
    # equal scores share a rank (1, 1, 3); a score equal to the target's says so
    rows, teams = rank([row("x", "X", 0.6), row("y", "Y", 0.6), row("z", "Z", 0.5)], target=0.5)
    assert [(r["entrant"], r["rank"]) for r in rows] == [("x", 1), ("y", 1), ("z", 3)]
    assert [t["rank"] for t in teams] == [1, 1, 3]
    assert rows[2]["reason"] == "final score equals the target's" and rows[0]["reason"] == ""


def test_check_model_accepts_only_loadable_safetensors(arena, competition_file, tmp_path):
    assert check_model(arena / "target") == ("ok", "")
    assert check_model(tmp_path)[0] == "no model"


def test_a_competition_on_another_benchmark_ranks_by_its_headline(arena, competition_file, tmp_path):
    """A MUSE competition: entrants get the benchmark's forget/retain rows, the organiser scores
    them with MUSE's own evaluation against the oracle, and the leaderboard ranks by its first
    headline number (VerbMem, lower is better), gated on its utility (KnowMem on the retain set)."""
    from unlearn_plugin_muse import Muse

    data = tmp_path / "muse"
    Muse().synthesize(data, seed=0, size="tiny")
    muse = {
        "name": "muse-test",
        "benchmark": "muse",
        "forget": str(data / "forget.jsonl"),
        "retain": str(data / "retain.jsonl"),
        "data": str(data),
        "reference": str(arena / "target"),
        "mia": None,  # LUME's, refused here
        "utility": None,
        "max_new_tokens": 8,
    }
    entrants = ["ga", {"name": "gd_fast", "plugin": "gd", "trainer": {"learning_rate": 1e-2}}]
    path = competition_file(tmp_path / "c", entrants, limit=120, **muse)
    res = cli("compete", "--config", str(path))
    assert res.returncode == 0, res.stderr[-3000:]
    board = json.loads((tmp_path / "c" / "out" / "leaderboard.json").read_text())
    assert board["benchmark"] == "muse" and board["ranked_by"] == "verbmem_f"
    assert board["baseline"]["privleak"] == 0.0  # the target is its own reference here
    base = board["baseline"]["knowmem_r"]  # the gate: MUSE's utility, KnowMem on the retain set
    assert board["utility_gate"] == f"0.75 x target knowmem_r {base}"
    for row in board["entrants"]:
        assert row["status"] == "ok" and row["gate"] == (row["knowmem_r"] >= 0.75 * base)
        assert (row["rank"] is not None) == row["gate"]  # ranked only when the gate holds
    ranked = [row for row in board["entrants"] if row["rank"]]
    assert [r["verbmem_f"] for r in ranked] == sorted(r["verbmem_f"] for r in ranked)
    if len(ranked) == 2:  # equal scores share a rank
        assert [r["rank"] for r in ranked] == ([1, 1] if ranked[0]["verbmem_f"] == ranked[1]["verbmem_f"] else [1, 2])
    assert {row["entrant"] for row in board["entrants"]} == {"ga", "gd_fast"}
    text = (tmp_path / "c" / "out" / "leaderboard.md").read_text()
    assert "ranked by verbmem_f" in text and "utility gate: knowmem_r at least 0.75 x the target's" in text
    assert (tmp_path / "c" / "out" / "leaderboard.png").stat().st_size > 0
    path = competition_file(tmp_path / "c", entrants, limit=120, **{**muse, "mia": str(data)})
    res = cli("compete", "--config", str(path))
    assert res.returncode != 0 and "mia: a lume setting; the muse benchmark does not take it" in res.stderr


@pytest.mark.parametrize("preset", ["zero2", "zero3"])
def test_the_deepspeed_preset_a_submission_gets(arena, competition_file, tmp_path, preset):
    """HF's "auto" sizes; under ZeRO-3 the weights gathered on save (a loadable model from HF's
    save_model) and the live parameters and sub-groups sized from the target's hidden size, as `unlearn run` does."""
    from unlearn.compete.config import load_competition
    from unlearn.compete.entrant import submission_deepspeed

    comp = load_competition(competition_file(tmp_path, ["gd"], deepspeed=preset))
    given = json.loads(submission_deepspeed(comp, tmp_path).read_text())
    assert given["train_micro_batch_size_per_gpu"] == given["gradient_accumulation_steps"] == "auto"
    zero = given["zero_optimization"]
    if preset == "zero2":
        assert zero == {"stage": 2}
    else:
        hidden = json.loads((arena / "target" / "config.json").read_text())["hidden_size"]
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert zero["stage3_max_live_parameters"] == zero["stage3_max_reuse_distance"] == 12 * hidden**2
        assert zero["sub_group_size"] == 12 * hidden**2


# What a SemEval entrant did: read every process's environment and command line under /proc (the
# organiser's secret spelt in hex, so that no command line holds it), and send the forget rows by
# UDP to a port on this machine's loopback; then hand in the target unchanged.
SPIES = COPY_SUBMISSION.replace(
    "def unlearn(input_model_path, output_dir, forget_dir, retain_dir):\n",
    """import json, socket
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    needle, found, pids = bytes.fromhex("SECRET_HEX"), [], []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pids.append(int(entry))
            for name in ("environ", "cmdline"):
                try:
                    found += [f"{entry}/{name}"] * (needle in open(f"/proc/{entry}/{name}", "rb").read())
                except OSError:
                    pass
    rows = open(os.path.join(forget_dir, "forget.jsonl"), "rb").read()[:500]
    for _ in range(5):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(rows, ("127.0.0.1", UDP_PORT))
    json.dump({"found": found, "pids": pids, "me": os.getpid()}, open(os.path.join(output_dir, "..", "seen.json"), "w"))
""",
)


def test_a_competition_file_with_relative_paths_run_from_another_folder(arena, tmp_path):
    """The shipped competition file's layout (every path relative to the file, `mia = "../data"`),
    run from another working folder: every entrant is scored. Its entrants see none of the
    organiser's processes and send nothing out by UDP, where the kernel gives them namespaces. And
    an unscorable verdict that an earlier version cached from the organiser's unresolved paths is
    not served again."""
    import shutil
    import socket

    from unlearn.compete.sandbox import Protection

    secret = "organiser-token-7c6a180b36896a0a"
    data, comp, elsewhere = tmp_path / "data", tmp_path / "comp", tmp_path / "elsewhere"
    shutil.copytree(arena / "private", data)
    comp.mkdir()
    elsewhere.mkdir()
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    (comp / "copies.py").write_text(COPY_SUBMISSION)
    spies = SPIES.replace("SECRET_HEX", secret.encode().hex()).replace("UDP_PORT", str(listener.getsockname()[1]))
    (comp / "spies.py").write_text(spies)
    target = os.path.relpath(arena / "target", comp)
    (comp / "competition.toml").write_text(
        textwrap.dedent(f"""
        model = "{target}"
        forget = "../data/forget.jsonl"
        retain = "../data/retain.jsonl"
        mia = "../data"
        utility = "../data/utility.jsonl"
        output_dir = "../out"
        time_limit_s = 120
        max_new_tokens = 24
        entrant_devices = "cpu"
        entrants = ["copies.py", "spies.py"]
        """)
    )
    res = cli("compete", "--config", "../comp/competition.toml", cwd=elsewhere, env={"ORGANISER_TOKEN": secret})
    assert res.returncode == 0, res.stderr[-3000:]
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    by_name = {r["entrant"]: r for r in board["entrants"]}
    assert {n: r["status"] for n, r in by_name.items()} == {"copies": "ok", "spies": "ok"}, by_name
    assert by_name["copies"]["final_score"] == board["baseline"]["final_score"]
    seen = json.loads((tmp_path / "out" / "entrants" / "spies" / "work" / "seen.json").read_text())
    protection = Protection.probe()
    if protection.pid:
        assert seen["found"] == [] and seen["pids"] == [1, 2] and seen["me"] == 2, seen  # the init, the harness
        assert "own PID namespace (the organiser's processes hidden)" in board["isolation"]
    if protection.net:
        with pytest.raises(TimeoutError):
            listener.recvfrom(1000)
        assert "network namespace with loopback only (no TCP or UDP out)" in board["isolation"]

    # An earlier version cached this verdict (the evaluation's process got `comp/../data` and ran
    # in another folder); the run is cached, the evaluation is done again.
    result_file = tmp_path / "out" / "entrants" / "copies" / "result.json"
    result = json.loads(result_file.read_text())
    result.update(run_status=result["status"], run_reason=result["reason"], status="unscorable")
    result.update(reason="evaluation: comp/../data: needs mia_member.jsonl and mia_nonmember.jsonl")
    result_file.write_text(json.dumps(result))
    again = cli("compete", "--config", str(comp / "competition.toml"), cwd=elsewhere)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "copies: cached" not in again.stdout + again.stderr and "spies: cached" in again.stdout + again.stderr
    assert json.loads(result_file.read_text())["status"] == "ok"
