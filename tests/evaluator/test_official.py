"""Official mode (`unlearn evaluate --official`): the organisers' run bit for bit in bfloat16,
their file and scoring quirks, open-instruct's MMLU prompts, and their input layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import DataError, load_rows
from unlearn.bench.synth import generate
from unlearn.devkit import build_tiny_model
from unlearn.evaluator.evaluate import RESULTS, batching, evaluate_model, rescore
from unlearn.evaluator.generation import batch_invariant, decode, greedy_generate
from unlearn.evaluator.metrics import rouge_l_recall
from unlearn.evaluator.mia import document_scores
from unlearn.evaluator.mmlu import evaluate_mmlu, open_instruct_prompts
from unlearn.evaluator.official import MMLU_WARNING, OFFICIAL_FILE

OFFICIAL_KEYS = [
    "forget-set",
    "retain-set",
    "mia_loss_acc",
    "mmlu_average",
    "aggregated-terms",
    "aggregate-score",
    "harmonic-mean-task-aggregate",
    "mia_final_score",
]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("official-bench")
    generate(out, seed=2, size="tiny")
    return out


@pytest.fixture(scope="module")
def model_dir(bench, tmp_path_factory) -> Path:
    rows = [r for f in ("forget_train", "retain_train") for r in load_rows(bench / f"{f}.jsonl")]
    return build_tiny_model(
        tmp_path_factory.mktemp("official-model") / "m",
        texts=[r.text for r in rows],
        hidden_size=64,
        memorise=rows,
        steps=60,
    )


def _bf16(model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16), AutoTokenizer.from_pretrained(
        model_dir
    )


@pytest.mark.heavy
def test_the_preset_generates_and_scores_mia_bit_for_bit_as_one_at_a_time(model_dir, bench):
    model, tok = _bf16(model_dir)
    prompts = [r.input for f in ("forget_train", "retain_train") for r in load_rows(bench / f"{f}.jsonl")]
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    assert len(set(lengths)) > 3 and len(set(lengths)) < len(lengths)  # cohorts of one length, and several
    batch, _ = batching(model, 8, exact=True)
    ours = greedy_generate(model, tok, prompts, max_new_tokens=40, batch_size=batch)
    forced = greedy_generate(model, tok, prompts, max_new_tokens=40, batch_size=8)
    official = []
    for p in prompts:  # the organisers' inference loop
        ids = tok(p, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=40, do_sample=False, use_cache=True, pad_token_id=tok.eos_token_id)
        # their decode(..., clean_up_tokenization_spaces=True) on transformers 4.x, which cleaned up
        # every tokenizer's output (transformers 5 skips BPE ones, so its own function is applied)
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        official.append(tok.clean_up_tokenization(text))
    assert ours == official
    assert any(official)
    if batch_invariant(model, 8):  # then batching must change nothing at all
        assert forced == official
    docs = [
        json.loads(line)["document"] for f in ("mia_member", "mia_nonmember") for line in (bench / f"{f}.jsonl").open()
    ]
    docs += [docs[0], docs[1]]  # equal lengths share a forward pass
    scores = document_scores(model, tok, docs, batch_size=batch)
    for doc, score in zip(docs, scores):
        ids = tok(doc, return_tensors="pt").input_ids
        with torch.no_grad():
            assert score["loss"] == model(ids, labels=ids).loss.item()  # every bit


def test_decoding_cleans_up_spaces_as_the_organisers_transformers_did(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok("Yes , it is n't here . Is it ? We 're sure ' he 's gone !", add_special_tokens=False)["input_ids"]
    assert decode(tok, ids + [tok.eos_token_id]) == "Yes, it isn't here. Is it? We're sure'he's gone!"


def test_a_model_whose_batches_change_its_logits_runs_one_row_at_a_time(model_dir):
    model, _ = _bf16(model_dir)
    assert batch_invariant(model, 6) == (batching(model, 6, exact=True)[0] == 6)
    # a real forward hook that makes a row's logits depend on the batch it is in
    model.lm_head.register_forward_hook(lambda _m, _i, out: out + 1e-2 * out.shape[0])
    assert not batch_invariant(model, 6)
    batch, note = batching(model, 6, exact=True)
    assert batch == 1 and "one row at a time" in note
    assert batching(model, 6, exact=False)[0] == 6


def _rows(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_official_file_key_order_and_the_organisers_csv_quirks(tmp_path):
    data, saved = tmp_path / "data", tmp_path / "saved"
    gold = "the brass owl sang at dawn"
    forget, retain = [], []
    generations = {"forget": [], "retain": []}
    for t in (1, 2, 3):
        for split, rows in (("forget", forget), ("retain", retain)):
            rows += [
                {"id": f"{split}{t}sc1", "input": "p", "output": gold, "task": f"Task{t}"},
                {"id": f"{split}{t}qa0", "input": "q", "output": "None", "task": f"Task{t}"},
                {"id": f"{split}{t}qa1", "input": "q", "output": "Paris", "task": f"Task{t}"},
            ]
    # a qa gold "None" and a generation "" / "N/A" ... all read back as nan: equal
    na = ["", "None", "NA", "N/A", "null", "nan"]
    for split, rows in (("forget", forget), ("retain", retain)):
        for r in rows:
            if r["id"][-3:-1] == "sc":
                generations[split].append("the brass owl" if split == "forget" else "null")
            elif r["output"] == "None":  # forget Task1..3: None, NA, N/A; retain: null, nan, ""
                generations[split].append(na[(int(r["task"][-1]) + (3 if split == "retain" else 0)) % 6])
            else:
                generations[split].append("paris " if split == "retain" else "London")
    retain.append({"id": "retain9zz1", "input": "x", "output": "ignored", "task": "Task1"})  # neither sc nor qa
    generations["retain"].append("anything")
    _rows(data, "forget", forget)
    _rows(data, "retain", retain)
    for split, rows in (("forget", forget), ("retain", retain)):
        _rows(
            saved / "generations", split, [{"id": r["id"], "generation": g} for r, g in zip(rows, generations[split])]
        )
    _rows(saved / "mia", "member", [{"id": f"m{i}", "loss": 1.0 + i} for i in range(3)])
    _rows(saved / "mia", "nonmember", [{"id": f"n{i}", "loss": 1.5 + i} for i in range(3)])
    for docs in (saved / "mia" / "member.jsonl", saved / "mia" / "nonmember.jsonl"):  # other attacks: same ranks
        rows = [json.loads(line) for line in docs.read_text().splitlines()]
        _rows(docs.parent, docs.stem, [{**r, "zlib": r["loss"], "mink": r["loss"], "minkpp": r["loss"]} for r in rows])
    (saved / "utility").mkdir()
    (saved / "utility" / "metrics.json").write_text(json.dumps({"average_acc": 0.3}))

    results = rescore(saved, data, tmp_path / "official", official=True)
    line = (tmp_path / "official" / OFFICIAL_FILE).read_text()
    assert "\n" not in line
    found = json.loads(line)
    assert list(found) == OFFICIAL_KEYS
    assert list(found["forget-set"]) == [
        "overall-regurgitation-score",
        "overall-knowledge-score",
        "Task1",
        "Task2",
        "Task3",
    ]
    assert list(found["forget-set"]["Task1"]) == ["regurgitation-score", "knowledge-score"]
    # by hand: forget sc recall 3/6 = 0.5; forget qa: "None" == "" -> nan == nan (1), London != Paris (0)
    # retain sc: "null" -> "nan", recall 0; retain qa: nan == nan (1), "paris " == "Paris" (1); retain9zz1 ignored
    assert rouge_l_recall(gold, "the brass owl") == 0.5
    assert found["forget-set"]["Task2"] == {"regurgitation-score": 0.5, "knowledge-score": 0.5}
    assert found["retain-set"]["Task1"] == {"regurgitation-score": 0.0, "knowledge-score": 1.0}
    assert found["aggregated-terms"] == [0.5, 0.5] * 3 + [0.0, 1.0] * 3
    assert found["harmonic-mean-task-aggregate"] == 0  # one zero term
    assert found["mia_loss_acc"] == pytest.approx(6 / 9)  # member losses 1, 2, 3 against 1.5, 2.5, 3.5
    assert found["mmlu_average"] == 0.3 and found["mia_final_score"] == 1 - abs(found["mia_loss_acc"] - 0.5) * 2
    assert found["aggregate-score"] == pytest.approx((0 + 0.3 + found["mia_final_score"]) / 3)
    assert {k: results[k] for k in OFFICIAL_KEYS} == found
    assert results["official_mmlu_threshold"] == {"threshold": 0.371, "pass": False, "warning": MMLU_WARNING}
    # without the CSV round trip the same generations score differently: the quirks change numbers
    plain = rescore(saved, data, tmp_path / "plain")
    assert plain["retain-set"]["Task1"]["knowledge-score"] != 1.0
    assert not (tmp_path / "plain" / OFFICIAL_FILE).exists()

    # a carriage return in a generation: read back as the end of a row, which their script
    # scores as a NaN task aggregate (or fails on), so no official score; ours keeps the text whole
    cut = saved / "generations" / "retain.jsonl"
    kept = cut.read_text()
    for text in ("any\\rthing", "anything\\r", "\\r"):  # their loss column always follows the text
        cut.write_text(kept.replace('"generation": "anything"', f'"generation": "{text}"'))
        with pytest.raises(DataError, match=r"retain set: row retain9zz1: its generation holds a carriage return"):
            rescore(saved, data, tmp_path / "cut", official=True)
    cut.write_text(kept.replace('"generation": "anything"', '"generation": "any,\\rthing"'))  # written quoted
    assert rescore(saved, data, tmp_path / "quoted", official=True)["retain-set"] == found["retain-set"]
    cut.write_text(kept.replace('"generation": "anything"', '"generation": "any\\rthing"'))
    assert rescore(saved, data, tmp_path / "cut-plain")["retain-set"] == plain["retain-set"]
    cut.write_text(kept)

    nan = saved / "mia" / "nonmember.jsonl"
    nan.write_text(nan.read_text().replace('"loss": 1.5', '"loss": NaN', 1))
    with pytest.raises(DataError, match="non-member document 'n0': loss is nan"):
        rescore(saved, data, tmp_path / "broken", official=True)


def _csv(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_mmlu_prompts_are_open_instructs(tmp_path, model_dir):
    folder = tmp_path / "mmlu"
    _csv(folder / "dev" / "high_school_physics_dev.csv", [f"Q{i}?,a{i},b,c,d,{'ABCD'[i % 4]}" for i in range(6)])
    _csv(
        folder / "test" / "high_school_physics_test.csv", ["What is 1/2?,0.50,None,1,2,A", "Pick one,0.25,two,3,None,B"]
    )
    long = " ".join(["the brass owl sang at dawn over the northern fjords"] * 60)
    _csv(folder / "dev" / "long_subject_dev.csv", [f'"{long} {i}?",x,y,z,w,A' for i in range(5)])
    _csv(folder / "test" / "long_subject_test.csv", ["Short?,x,y,z,w,C"])
    model, tok = _bf16(model_dir)
    prompts = open_instruct_prompts(tok, folder, shots=5)
    shots = "".join(f"Q{i}?\nA. a{i}\nB. b\nC. c\nD. d\nAnswer: {'ABCD'[i % 4]}\n\n" for i in range(5))
    header = "The following are multiple choice questions (with answers) about  high school physics.\n\n"
    # pandas: column A is all numbers (0.50 -> 0.5), "None" is nan, a column of ints with a nan turns float
    assert prompts["high_school_physics"] == (
        [
            header + shots + "What is 1/2?\nA. 0.5\nB. nan\nC. 1\nD. 2.0\nAnswer:",
            header + shots + "Pick one\nA. 0.25\nB. two\nC. 3\nD. nan\nAnswer:",
        ],
        ["A", "B"],
    )
    (cut,), _ = prompts["long_subject"]
    kept = cut.count("Answer: A\n\n")

    def size(k: int) -> int:
        text = "The following are multiple choice questions (with answers) about  long subject.\n\n"
        text += "".join(f"{long} {i}?\nA. x\nB. y\nC. z\nD. w\nAnswer: A\n\n" for i in range(k))
        return len(tok(text + "Short?\nA. x\nB. y\nC. z\nD. w\nAnswer:", add_special_tokens=False)["input_ids"])

    assert 1 <= kept < 5 and size(kept) <= 2048 < size(kept + 1)  # examples dropped until it fits 2048 tokens
    found = evaluate_mmlu(model, tok, folder, shots=5, batch_size=4, style="open-instruct")
    choice_ids = [tok(f" {c}", add_special_tokens=False)["input_ids"][-1] for c in "ABCD"]
    by_hand = []
    for subject in sorted(prompts):
        for i, text in enumerate(prompts[subject][0]):
            with torch.no_grad():
                logits = model(tok(text, return_tensors="pt").input_ids).logits[:, -1, :]
            best = torch.softmax(logits, dim=-1)[:, choice_ids].argmax(-1).item()  # in bfloat16, as theirs
            by_hand.append(
                {"subject": subject, "index": i, "prediction": "ABCD"[best], "answer": prompts[subject][1][i]}
            )
    assert found["predictions"] == by_hand
    assert found["average_acc"] == sum(p["prediction"] == p["answer"] for p in by_hand) / 3


@pytest.mark.heavy
def test_the_organisers_layouts_and_official_cli(tmp_path, model_dir, bench):
    mia = tmp_path / "mia"
    mia.mkdir()
    shutil.copy(bench / "mia_member.jsonl", mia / "member.jsonl")
    shutil.copy(bench / "mia_nonmember.jsonl", mia / "nonmember.jsonl")
    mmlu = tmp_path / "mmlu_results"
    mmlu.mkdir()
    (mmlu / "metrics.json").write_text(json.dumps({"average_acc": 0.5, "subcat_acc": {}, "cat_acc": {}}))
    out = tmp_path / "eval"
    result = cli(
        "evaluate",
        str(model_dir),
        "--data",
        str(bench),
        "--out",
        str(out),
        "--official",
        "--mia",
        str(mia),
        "--utility",
        str(mmlu),
    )
    assert result.returncode == 0, result.stderr
    found = json.loads((out / RESULTS).read_text())
    assert found["official"] and found["dtype"] == "bfloat16" and found["mmlu_average"] == 0.5
    assert "one length" in found["batching"]["note"] or "one row at a time" in found["batching"]["note"]
    assert found["official_mmlu_threshold"]["pass"] is True
    line = json.loads((out / OFFICIAL_FILE).read_text())
    assert list(line) == OFFICIAL_KEYS and all(line[k] == found[k] for k in OFFICIAL_KEYS)
    again = rescore(out, bench, tmp_path / "again", official=True)  # the saved metrics.json travels along
    assert again["aggregate-score"] == found["aggregate-score"]

    refused = cli(
        "evaluate",
        str(model_dir),
        "--data",
        str(bench),
        "--out",
        str(tmp_path / "x"),
        "--official",
        "--dtype",
        "float32",
    )
    assert refused.returncode != 0 and "--official fixes it to bfloat16" in refused.stderr
    no_gpu = cli("evaluate", str(model_dir), "--data", str(bench), "--out", str(tmp_path / "g"), "--device", "cuda:7")
    assert no_gpu.returncode == 2 and "device 'cuda:7': this machine has" in no_gpu.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataError, match="needs mia_member.jsonl and mia_nonmember.jsonl .*member.jsonl and nonmember.jsonl"
    ):
        evaluate_model(model_dir, bench, tmp_path / "y", mia=empty)
    with pytest.raises(
        DataError, match=r"neither an MMLU folder .* nor an open-instruct results folder \(metrics.json\)"
    ):
        evaluate_model(model_dir, bench, tmp_path / "z", utility=empty)
