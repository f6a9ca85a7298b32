"""The evaluator end to end on a real tiny model: batched == one-at-a-time, the MIA suite by
hand, MMLU, outputs, rescoring, the baseline gate, and clear errors."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import pytest
import torch
from helpers import cli, constant_nli_classifier, launch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import ConfigError, DataError, load_rows
from unlearn.atomic import MARKER
from unlearn.bench.synth import generate
from unlearn.devkit import build_tiny_model
from unlearn.engine import mark
from unlearn.evaluator import evaluate as evaluate_module
from unlearn.evaluator.evaluate import RESULTS, evaluate_model, rescore
from unlearn.evaluator.generation import greedy_generate, plain_greedy
from unlearn.evaluator.metrics import row_kind
from unlearn.evaluator.mia import document_scores
from unlearn.evaluator.mmlu import evaluate_mmlu, load_mmlu, prompt


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval-bench")
    generate(out, seed=1, size="tiny")
    return out


@pytest.fixture(scope="module")
def model_dir(bench, tmp_path_factory) -> Path:
    rows = [r for f in ("forget_train", "retain_train", "utility") for r in load_rows(bench / f"{f}.jsonl")]
    return build_tiny_model(
        tmp_path_factory.mktemp("eval-model") / "m",
        texts=[r.text for r in rows],
        hidden_size=64,
        memorise=rows,
        steps=120,
    )


@pytest.fixture(scope="module")
def evaluation(model_dir, bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluation") / "eval"
    evaluate_model(model_dir, bench, out, progress=False, max_new_tokens=48, relearn=True)
    return out


@pytest.mark.heavy
def test_batched_generation_equals_one_at_a_time_generate(model_dir, bench):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = [r.input for r in load_rows(bench / "forget_train.jsonl")][:10]
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 3  # really different lengths: real padding
    batched = greedy_generate(model, tok, prompts, max_new_tokens=24, batch_size=5)
    through_hf = greedy_generate(model, tok, prompts, max_new_tokens=24, batch_size=4, use_hf_generate=True)
    single = []
    for p in prompts:  # the official script: one example, no padding
        ids = tok(p, return_tensors="pt").input_ids
        out = model.generate(
            ids, do_sample=False, max_new_tokens=24, pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id
        )
        single.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    assert batched == single == through_hf
    assert any(s for s in single)
    assert plain_greedy(model)
    model.generation_config.repetition_penalty = 1.3  # HF would apply it: so must we
    assert not plain_greedy(model)


def test_mia_scores_by_hand(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = ["Ansel built a brass owl.", "A much longer document about the northern fjords and the maps of Kessland."]
    scores = document_scores(model, tok, docs, k=0.2, batch_size=2)
    for doc, s in zip(docs, scores):
        ids = tok(doc, return_tensors="pt").input_ids
        with torch.no_grad():
            loss = float(model(ids, labels=ids).loss)  # the official LOSS attack
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        token_lp = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)
        assert s["loss"] == pytest.approx(loss, rel=1e-5)
        assert s["zlib"] == pytest.approx(loss / len(zlib.compress(doc.encode())), rel=1e-5)
        k = max(1, int(0.2 * len(token_lp)))
        assert s["mink"] == pytest.approx(-float(token_lp.sort().values[:k].mean()), rel=1e-5)
        mu = (logp.exp() * logp).sum(-1)
        sigma = ((logp.exp() * logp**2).sum(-1) - mu**2).sqrt()
        assert s["minkpp"] == pytest.approx(-float(((token_lp - mu) / sigma).sort().values[:k].mean()), rel=1e-4)


def _write_mmlu(folder: Path) -> Path:
    for subject, n in (("abstract_algebra", 3), ("world_religions", 4)):
        for part, count in (("dev", 5), ("test", n)):
            path = folder / part / f"{subject}_{part}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                "".join(
                    f'"Question {i} of {subject}, with a comma?",opt a,opt b,opt c,opt d,{"ABCD"[i % 4]}\n'
                    for i in range(count)
                )
            )
    return folder


def test_mmlu_loader_prompt_and_micro_average(tmp_path, model_dir):
    folder = _write_mmlu(tmp_path / "mmlu")
    subjects = load_mmlu(folder)
    assert set(subjects) == {"abstract_algebra", "world_religions"}
    dev, test = subjects["abstract_algebra"]
    assert test[0].question == "Question 0 of abstract_algebra, with a comma?" and test[0].answer == "A"
    text = prompt(test[1], dev[:2])
    assert text.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert "\nA. opt a\nB. opt b\nC. opt c\nD. opt d\nAnswer: A\n\n" in text
    assert text.endswith(
        "Question 1 of abstract_algebra, with a comma?\nA. opt a\nB. opt b\nC. opt c\nD. opt d\nAnswer:"
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    batched = evaluate_mmlu(model, tok, folder, shots=2, batch_size=4)
    single = evaluate_mmlu(model, tok, folder, shots=2, batch_size=1)
    assert batched["predictions"] == single["predictions"]
    assert len(batched["predictions"]) == 7
    correct = sum(p["prediction"] == p["answer"] for p in batched["predictions"])
    assert batched["average_acc"] == pytest.approx(correct / 7)  # micro: over questions, not subjects
    (folder / "test" / "bad_test.csv").write_text("only,three,columns\n")
    with pytest.raises(DataError, match=r"bad_test.csv, row 1: expected 6 columns"):
        load_mmlu(folder)


def test_outputs_have_the_official_keys_and_per_example_files(evaluation, bench):
    res = json.loads((evaluation / RESULTS).read_text())
    for key in (
        "forget-set",
        "retain-set",
        "aggregated-terms",
        "harmonic-mean-task-aggregate",
        "mia_loss_acc",
        "mmlu_average",
        "mia_final_score",
        "aggregate-score",
    ):
        assert key in res
    assert len(res["aggregated-terms"]) == 12
    assert res["utility_source"].startswith("utility exact match")
    assert set(res["mia_attacks_auc"]) == {"loss", "zlib", "mink", "minkpp"}
    assert res["mia_attacks_auc"]["loss"] == res["mia_loss_acc"]
    forget = [json.loads(line) for line in (evaluation / "generations" / "forget.jsonl").read_text().splitlines()]
    assert len(forget) == len(load_rows(bench / "forget_train.jsonl"))
    assert set(forget[0]) == {"id", "task", "prompt", "gold", "generation", "score"}
    members = (evaluation / "mia" / "member.jsonl").read_text().splitlines()
    assert len(members) == len((bench / "mia_member.jsonl").read_text().splitlines())
    assert (evaluation / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert "| Task2 |" in (evaluation / "summary.md").read_text()


def test_rescoring_saved_generations_gives_the_same_results(evaluation, bench, tmp_path):
    again = rescore(evaluation, bench, tmp_path / "again")
    original = json.loads((evaluation / RESULTS).read_text())
    for key in (
        "forget-set",
        "retain-set",
        "aggregated-terms",
        "harmonic-mean-task-aggregate",
        "mia_loss_acc",
        "mmlu_average",
        "aggregate-score",
        "utility_source",
        "relearn",
    ):
        assert again[key] == original[key], key


@pytest.mark.heavy
def test_lume_through_the_benchmark_hook_gives_the_same_numbers_and_an_oracle_column(
    evaluation, model_dir, bench, tmp_path
):
    out = tmp_path / "via-hook"
    res = cli(
        "evaluate",
        str(model_dir),
        "--benchmark",
        "lume",
        "-d",
        str(bench),
        "-o",
        str(out),
        "--max-new-tokens",
        "48",
        "--reference",
        str(evaluation),
    )
    assert res.returncode == 0, res.stderr
    before, now = (json.loads((f / RESULTS).read_text()) for f in (evaluation, out))
    keys = ("forget-set", "retain-set", "aggregated-terms", "mia_loss_acc", "mmlu_average", "aggregate-score")
    assert {k: now[k] for k in keys} == {k: before[k] for k in keys}
    assert now["benchmark"] == before["benchmark"] == "lume"
    assert now["oracle"]["aggregate-score"] == before["aggregate-score"] and set(now["oracle_gap"].values()) == {0}
    assert "| score | value | oracle | gap to oracle |" in (out / "summary.md").read_text()
    with pytest.raises(ConfigError, match="LUME's --reference is the oracle's evaluation"):
        evaluate_model(model_dir, bench, tmp_path / "x", reference=model_dir)


LM_EVAL_TASK = """task: unlearn_utility
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.mark.heavy
def test_utility_through_lm_eval_on_a_local_task(model_dir, bench, tmp_path):
    """An lm-eval task defined in a local YAML over a local JSON file, run on the loaded model:
    the accuracy equals the share of questions whose true choice has the highest log-likelihood."""
    rows = load_rows(bench / "utility.jsonl")[:6]
    answers = sorted({r.output for r in load_rows(bench / "utility.jsonl")})
    docs = []
    for i, r in enumerate(rows):
        wrong = [a for a in answers if a != r.output][i % 3 : i % 3 + 2]
        choices = [*wrong[: i % 3], r.output, *wrong[i % 3 :]][:3]
        docs.append(
            {"question": r.input.rstrip(), "choices": [c.strip() for c in choices], "answer": choices.index(r.output)}
        )
    data = tmp_path / "utility_mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    task = tmp_path / "tasks" / "unlearn_utility.yaml"
    task.parent.mkdir()
    task.write_text(LM_EVAL_TASK.format(data=data))
    out = tmp_path / "eval"
    results = evaluate_model(
        model_dir, bench, out, max_new_tokens=8, utility=Path(f"lm-eval:{task}"), progress=False
    )  # the CLI passes --utility as this Path
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hits = 0
    for d in docs:  # lm-eval's acc: argmax over choices of the summed log-likelihood of " " + choice
        scores = []
        for choice in d["choices"]:
            context = tokenizer(d["question"])["input_ids"]
            whole = tokenizer(d["question"] + " " + choice)["input_ids"]
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            scores.append(sum(float(logp[t - 1, whole[t]]) for t in range(len(context), len(whole))))
        hits += scores.index(max(scores)) == d["answer"]
    assert results["mmlu_average"] == pytest.approx(hits / len(docs))
    assert results["lm_eval"] == {"unlearn_utility": {"metric": "acc", "value": results["mmlu_average"]}}
    assert results["utility_source"].startswith("lm-eval (unlearn_utility acc)")
    again = rescore(out, bench, tmp_path / "again")
    assert again["mmlu_average"] == results["mmlu_average"] and again["utility_source"] == results["utility_source"]
    with pytest.raises(ConfigError, match="name at least one lm-eval task"):
        evaluate_model(model_dir, bench, tmp_path / "x", utility=Path("lm-eval:"))


@pytest.mark.heavy
def test_generations_that_do_not_match_the_data_are_refused(evaluation, bench, tmp_path):
    broken = tmp_path / "broken"
    (broken / "generations").mkdir(parents=True)
    lines = (evaluation / "generations" / "forget.jsonl").read_text().splitlines()
    (broken / "generations" / "forget.jsonl").write_text("\n".join(lines[1:]) + "\n")
    (broken / "generations" / "retain.jsonl").write_text((evaluation / "generations" / "retain.jsonl").read_text())
    first_id = json.loads(lines[0])["id"]
    with pytest.raises(DataError, match=rf"forget.jsonl does not match .*1 id\(s\) missing, e.g. {first_id!r}"):
        rescore(broken, bench, tmp_path / "out")
    res = cli(
        "evaluate", "--generations", str(tmp_path / "nowhere"), "--data", str(bench), "--out", str(tmp_path / "o")
    )
    assert res.returncode == 2 and "missing (expected the output folder of an earlier `unlearn evaluate`)" in res.stderr
    res = cli("evaluate", str(tmp_path / "m"), "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "no such file or folder" in res.stderr


def test_a_tokenizer_that_outgrows_the_model_is_refused_before_any_work(model_dir, bench, tmp_path):
    folder = tmp_path / "grown"
    shutil.copytree(model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(["Velmora"])
    tokenizer.save_pretrained(folder)
    embedded = AutoModelForCausalLM.from_pretrained(folder).get_input_embeddings().num_embeddings
    res = cli("evaluate", str(folder), "--data", str(bench), "--out", str(tmp_path / "o"))
    assert res.returncode == 2, res.stderr
    assert f"the tokenizer has {len(tokenizer)} tokens and the model embeds {embedded}" in res.stderr
    assert not (tmp_path / "o").exists()


def test_baseline_gate_pass_and_fail(evaluation, bench, tmp_path):
    res = json.loads((evaluation / RESULTS).read_text())
    low = tmp_path / "low.json"
    low.write_text(json.dumps({**res, "mmlu_average": res["mmlu_average"] * 2 + 0.1}))
    failed = rescore(evaluation, bench, tmp_path / "a", baseline=low)
    assert failed["utility_gate"]["pass"] is False
    passed = rescore(evaluation, bench, tmp_path / "b", baseline=evaluation)
    assert passed["utility_gate"]["pass"] is True and passed["utility_gate"]["threshold"] == pytest.approx(
        0.75 * res["mmlu_average"]
    )
    assert "->" in (tmp_path / "b" / "summary.md").read_text()  # before -> after


def test_an_interrupted_evaluation_leaves_the_previous_results_intact(
    model_dir, bench, evaluation, tmp_path, monkeypatch
):
    out = tmp_path / "eval"
    out.mkdir()
    (out / RESULTS).write_text('{"previous": true}')
    mark(out, "evaluation")  # an earlier evaluation, which a new one may replace

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "document_scores", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(model_dir, bench, out, progress=False, max_new_tokens=8)
    assert json.loads((out / RESULTS).read_text()) == {"previous": True}
    assert sorted(p.name for p in out.iterdir()) == sorted([RESULTS, MARKER])


@pytest.mark.heavy
def test_two_ranks_evaluate_exactly_as_one_process(model_dir, bench, tmp_path):
    """``torchrun -m unlearn evaluate`` on 2 gloo ranks: 19 rows, 5 MIA documents and 7 MMLU
    questions (none divides by 2), batches of 2; every output equals one process's, every row once."""
    data, mia = tmp_path / "data", tmp_path / "mia"
    data.mkdir()
    mia.mkdir()
    forget = (bench / "forget_validation.jsonl").read_text().splitlines()
    kinds = [(json.loads(line)["task"], row_kind(json.loads(line)["id"])) for line in forget]
    spare = next(i for i, kind in enumerate(kinds) if kinds.count(kind) > 1)  # every task keeps both kinds
    (data / "forget.jsonl").write_text("\n".join(forget[:spare] + forget[spare + 1 :]) + "\n")
    shutil.copy(bench / "retain_validation.jsonl", data / "retain.jsonl")
    shutil.copy(bench / "mia_member_validation.jsonl", mia / "mia_member.jsonl")
    nonmembers = (bench / "mia_nonmember_validation.jsonl").read_text().splitlines()
    (mia / "mia_nonmember.jsonl").write_text("\n".join(nonmembers[:2]) + "\n")
    args = [str(model_dir), "--data", str(data), "--mia", str(mia), "--utility", str(_write_mmlu(tmp_path / "mmlu"))]
    args += ["--max-new-tokens", "16", "--batch-size", "2"]
    one = launch("evaluate", *args, "--out", str(tmp_path / "one"))
    two = launch("evaluate", *args, "--out", str(tmp_path / "two"), nproc=2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("results in") == 1  # rank 0 reports
    files = ["generations/forget.jsonl", "generations/retain.jsonl", "mia/member.jsonl", "mia/nonmember.jsonl"]
    for rel in [*files, "utility/predictions.jsonl"]:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    ids = [json.loads(line)["id"] for line in (tmp_path / "two/generations/forget.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 9
    results = [json.loads((tmp_path / name / RESULTS).read_text()) for name in ("one", "two")]
    assert [r.pop("processes") for r in results] == [1, 2]
    for r in results:
        for key in ("seconds", "examples_per_second"):
            r.pop(key)
    assert results[0] == results[1]


def test_evaluate_relearn_writes_the_metrics_and_per_row_files(evaluation):
    results = json.loads((evaluation / RESULTS).read_text())
    relearn = results["relearn"]
    assert set(relearn) >= {"KFR", "KRR", "LS_F", "LS_R", "PPL_F", "nli"} and relearn["nli"] is None
    assert 0 <= relearn["KFR"] <= 1 and 0 <= relearn["KRR"] <= 1 and 0 < relearn["LS_F"] < 1
    rows = [json.loads(line) for line in (evaluation / "relearn" / "forget.jsonl").read_text().splitlines()]
    assert {"id", "answer", "ppl", "entity_score", "counted"} <= set(next(r for r in rows if "qa" in r["id"]))
    assert "ReLearn's metrics" in (evaluation / "summary.md").read_text()


def test_an_nli_judge_decides_relearns_rates(model_dir, bench, tmp_path):
    judge = constant_nli_classifier(tmp_path / "nli", label=2)  # always "contradiction"
    out = tmp_path / "eval"
    results = evaluate_model(model_dir, bench, out, progress=False, max_new_tokens=4, relearn=True, nli=judge)
    assert (results["relearn"]["KFR"], results["relearn"]["KRR"]) == (1.0, 0.0)
    assert results["relearn"]["nli"] == str(judge)
    rows = [json.loads(line) for line in (out / "relearn" / "retain.jsonl").read_text().splitlines()]
    assert {r["nli"] for r in rows if "qa" in r["id"]} == {"contradiction"}
    with pytest.raises(ConfigError, match="--nli is the judge of ReLearn's metrics"):
        evaluate_model(model_dir, bench, tmp_path / "e2", nli=judge)
    res = cli("evaluate", "--generations", str(out), "-d", str(bench), "-o", str(tmp_path / "r"), "--relearn")
    assert res.returncode == 0, res.stderr  # saved perplexities and judgements: rescored as they were
    again = json.loads((tmp_path / "r" / RESULTS).read_text())
    assert again["relearn"] == results["relearn"]
