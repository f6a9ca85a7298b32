"""``unlearn evaluate``: score a model (or saved generations) the official way, plus the MIA
suite, and write results, per-example files, a Markdown summary and a figure atomically."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from unlearn import (
    ConfigError,
    DataError,
    Row,
    check_output,
    load_rows,
    publish,
    resolve_split,
    write_json,
    write_jsonl,
    write_text,
)
from unlearn.engine import resolve_device

from . import lmeval
from .generation import batch_invariant, greedy_generate
from .likelihood import answer_nll
from .lmeval import is_lm_eval
from .metrics import exact_match, row_score
from .mia import attack_aucs, document_scores, load_documents
from .mmlu import STYLES, evaluate_mmlu, mmlu_summary
from .official import PRESET, mmlu_threshold, read_metrics_json, through_csv, write_official
from .ranks import launched, rank_device
from .reference import CARD_KEY, check_reference, model_card
from .relearn import nli_judge, relearn_metrics
from .report import summary_markdown, write_figure
from .scoring import check_tasks, official_results

RESULTS = "evaluation_results.json"
GATE_FRACTION = 0.75  # the organisers' gate: utility >= 75% of the pre-unlearning model's


def eval_split(data: Path, name: str, split: str | None) -> Path:
    """The forget/retain file to evaluate: ``{name}_{split}.jsonl`` when a split is named and
    present, else the folder's ``{name}.jsonl``/``.parquet``/``{name}_train.jsonl``."""
    if split and (data / f"{name}_{split}.jsonl").is_file():
        return data / f"{name}_{split}.jsonl"
    return resolve_split(data, name)


def _utility_source(data: Path, utility: Path | None) -> Path | str | None:
    """An MMLU folder (``test/``, ``dev/``), an open-instruct ``metrics.json`` (or the folder that
    holds one), a ``utility.jsonl`` or ``lm-eval:TASK[,TASK]`` (`lmeval`); by default
    ``DATA/utility.jsonl`` when present."""
    if is_lm_eval(utility):
        lmeval.check(str(utility))
        return str(utility)
    if utility is None:
        default = data / "utility.jsonl"
        return default if default.is_file() else None
    if utility.is_dir():
        if (utility / "test").is_dir():
            return utility
        if (utility / "metrics.json").is_file():
            return utility / "metrics.json"
        raise DataError(
            f"{utility}: neither an MMLU folder (test/*_test.csv, dev/*_dev.csv) nor an open-instruct "
            "results folder (metrics.json)"
        )
    if not utility.is_file():
        raise DataError(f"{utility}: no such MMLU folder, metrics.json or utility file")
    return utility


def _mia_files(data: Path, mia: Path | None, split: str | None) -> tuple[Path, Path] | None:
    """``mia_member.jsonl``/``mia_nonmember.jsonl`` (the train split; ``..._{split}.jsonl`` for
    another), or the organisers' ``member.jsonl``/``nonmember.jsonl``."""
    folder = mia or data
    suffix = "" if split in (None, "train") else f"_{split}"
    layouts = [(f"mia_member{suffix}.jsonl", f"mia_nonmember{suffix}.jsonl"), ("member.jsonl", "nonmember.jsonl")]
    for member, nonmember in layouts:
        if (folder / member).is_file() and (folder / nonmember).is_file():
            return folder / member, folder / nonmember
    if mia is not None:
        raise DataError(
            f"{mia}: needs {layouts[0][0]} and {layouts[0][1]} (or the organisers' member.jsonl and nonmember.jsonl)"
        )
    return None


def load_baseline(baseline: Path) -> tuple[Path, dict[str, Any]]:
    """The results file of an earlier evaluation (a folder or the file itself) and its content."""
    file = baseline / RESULTS if baseline.is_dir() else baseline
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{file}: no baseline evaluation here (run `unlearn evaluate` on the original model)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: not an evaluation's JSON ({exc})") from None
    if not isinstance(found, dict) or "aggregate-score" not in found:
        raise DataError(f"{file}: not an evaluation (no 'aggregate-score'); give the folder `unlearn evaluate` wrote")
    return file, found


ORACLE_KEYS = ("harmonic-mean-task-aggregate", "mia_loss_acc", "mia_final_score", "mmlu_average", "aggregate-score")


def load_reference(reference: Path) -> tuple[Path, dict[str, Any]]:
    """The saved LUME evaluation of the oracle (the model retrained without the forget set)."""
    if (Path(reference) / "config.json").is_file():
        raise ConfigError(
            f"{reference}: a model folder; LUME's --reference is the oracle's evaluation "
            "(run `unlearn evaluate ORACLE --data DATA --out DIR` first and pass DIR)"
        )
    return load_baseline(reference)


def _gate(utility: float | None, file: Path, before: dict[str, Any]) -> dict[str, Any]:
    base = before.get("mmlu_average")
    if base is None or utility is None:
        return {"baseline": str(file), "pass": None, "reason": "utility missing in this or the baseline evaluation"}
    return {
        "baseline": str(file),
        "baseline_utility": base,
        "threshold": GATE_FRACTION * base,
        "pass": utility >= GATE_FRACTION * base,
    }


def _scores(rows: list[Row], generations: list[str], official: bool, name: str) -> list[float | None]:
    """Per-row official scores; ``official`` reads the text back through the organisers' CSV first."""
    if official:
        return [row_score(i, gold, gen) for i, gold, gen in through_csv(rows, generations, name)]
    return [row_score(r.id, r.output, g) for r, g in zip(rows, generations)]


def _answer_records(
    rows: dict[str, list[Row]], generations: dict[str, list[str]], known: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Each row with its answer and, from ``known[split][id]``, the answer's ``ppl`` and ``nli``
    label (None where there is none): the rows ReLearn's metrics read."""
    return {
        split: [
            {"id": r.id, "question": r.input, "gold": r.output, "answer": g}
            | {k: known[split].get(r.id, {}).get(k) for k in ("ppl", "nli")}
            for r, g in zip(split_rows, generations[split])
        ]
        for split, split_rows in rows.items()
    }


def _answered(
    rows: dict[str, list[Row]],
    generations: dict[str, list[str]],
    model: Any,
    tokenizer: Any,
    batch_size: int,
    judge: Any = None,
) -> dict[str, list[dict[str, Any]]]:
    """`_answer_records` with each answer's perplexity given the question under ``model`` (None for
    an empty answer) and, with an NLI ``judge``, ReLearn's NLI label of its QA rows."""
    known: dict[str, dict[str, dict[str, Any]]] = {}
    for split, split_rows in rows.items():
        asked = [(r, g) for r, g in zip(split_rows, generations[split]) if g.strip()]
        asked_rows = [Row(r.id, r.input, g, r.task) for r, g in asked]
        nlls = answer_nll(model, tokenizer, asked_rows, batch_size=batch_size, append_eos=False)  # as ReLearn
        known[split] = {r.id: {"ppl": math.exp(min(v, 700.0))} for (r, _), v in zip(asked, nlls)}
        qa = [(r, g) for r, g in zip(split_rows, generations[split]) if "qa" in r.id]
        if judge is not None and qa:
            pairs = [(g, r.output) if split == "forget" else (r.output, g) for r, g in qa]
            for (r, _), label in zip(qa, judge(pairs)):
                known[split].setdefault(r.id, {})["nli"] = label
    return _answer_records(rows, generations, known)


def _finish(
    out: Path,
    folder: Path,
    rows: dict[str, list[Row]],
    generations: dict[str, list[str]],
    mia: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None,
    utility: dict[str, Any] | None,
    baseline: Path | None,
    extra: dict[str, Any],
    official: bool = False,
    reference: Path | None = None,
    answered: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    scores = {s: _scores(rows[s], generations[s], official, f"{s} set") for s in rows}
    aucs = attack_aucs(*mia) if mia else None
    results = official_results(
        (rows["forget"], scores["forget"]),
        (rows["retain"], scores["retain"]),
        mia_auc=aucs["loss"] if aucs else None,
        utility=utility["value"] if utility else None,
    )
    results["utility_source"] = utility["source"] if utility else None
    if aucs:
        results["mia_attacks_auc"] = aucs
    # the fixed 0.371 is an MMLU accuracy: meaningless for another utility measure
    threshold = mmlu_threshold(results.get("mmlu_average"), results.get("mia_loss_acc"))
    if threshold is not None and utility and utility.get("mmlu"):
        results["official_mmlu_threshold"] = threshold
    before = None
    if baseline is not None:
        file, before = load_baseline(baseline)
        results["utility_gate"] = _gate(results.get("mmlu_average"), file, before)
    results["official"] = official
    oracle = _oracle(results, reference) if reference is not None else None
    if answered is not None:
        results["relearn"], details = relearn_metrics(answered["forget"], answered["retain"])
        results["relearn"]["nli"] = extra.pop("nli", None)
        for split, split_rows in answered.items():
            by_id = {d["id"]: d for d in details[split]}
            write_jsonl(folder / "relearn" / f"{split}.jsonl", ({**r, **by_id.get(r["id"], {})} for r in split_rows))
    results["benchmark"] = "lume"
    results.update(extra)
    _write_details(folder, rows, generations, scores, mia, utility, results)
    write_text(folder / "summary.md", summary_markdown(results, before, oracle))
    write_figure(folder / "figure.png", results, before)
    if official:
        write_official(folder, results)
    write_json(folder / RESULTS, results)  # last: its presence means the evaluation is complete
    publish(folder, out, "evaluation")
    return results


def _oracle(results: dict[str, Any], reference: Path) -> dict[str, Any]:
    """The oracle's numbers (its saved evaluation) and this model's gap to each, into ``results``."""
    file, oracle = load_reference(reference)
    results["oracle"] = {"evaluation": str(file), **{k: oracle.get(k) for k in ORACLE_KEYS}}
    results["oracle_gap"] = {
        k: results[k] - oracle[k]
        for k in ORACLE_KEYS
        if results.get(k) not in (None, -1) and oracle.get(k) not in (None, -1)
    }
    return oracle


def _write_details(
    folder: Path,
    rows: dict[str, list[Row]],
    generations: dict[str, list[str]],
    scores: dict[str, list[Any]],
    mia: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None,
    utility: dict[str, Any] | None,
    results: dict[str, Any],
) -> None:
    """The per-example files an evaluation is rescored from: generations, MIA losses, utility."""
    for split in rows:
        write_jsonl(
            folder / "generations" / f"{split}.jsonl",
            (
                {"id": r.id, "task": r.task, "prompt": r.input, "gold": r.output, "generation": g, "score": s}
                for r, g, s in zip(rows[split], generations[split], scores[split])
            ),
        )
    if mia:
        for name, docs in zip(("member", "nonmember"), mia):
            write_jsonl(folder / "mia" / f"{name}.jsonl", docs)
    if utility and utility.get("lm_eval"):
        results["lm_eval"] = utility["lm_eval"]
        write_json(folder / "utility" / "lm_eval.json", utility)
    elif utility and utility.get("records"):
        write_jsonl(folder / "utility" / "predictions.jsonl", utility["records"])
    elif utility:
        write_json(folder / "utility" / "metrics.json", {"average_acc": utility["value"]})


def load_model(model_dir: Path, dtype: str = "float32", device: Any = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a Hugging Face folder, in ``dtype`` (float32, bfloat16, float16), on
    ``device`` (a ``torch.device`` or a `unlearn.engine.resolve_device` spec), in eval mode; never runs
    remote code. A folder that is not a loadable model is a one-line ``ConfigError``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise ConfigError(f"{model_dir}: not a Hugging Face model folder (no config.json)")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ConfigError(f"dtype {dtype!r}: choose float32, bfloat16 or float16")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)  # no remote code, ever
    except Exception as exc:  # noqa: BLE001 - whatever a truncated or foreign checkpoint raises
        raise ConfigError(f"{model_dir}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})") from None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    embedded = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embedded:  # its last ids would index past the embeddings mid-evaluation
        raise ConfigError(
            f"{model_dir}: the tokenizer has {len(tokenizer)} tokens and the model embeds {embedded}: "
            "they do not belong together (resize the embeddings with the tokenizer, or save the matching one)"
        )
    place = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(place).eval(), tokenizer


def staging(out: Path) -> Path:
    """A fresh, empty staging folder beside ``out`` (``.NAME.partial``) to write an evaluation into
    before `unlearn.publish` puts it in place of ``out``."""
    folder = out.parent / f".{out.name}.partial"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def batching(model: Any, batch_size: int, exact: bool) -> tuple[int, str]:
    """The batch size to use and why: an exact evaluation batches only where `batch_invariant` holds."""
    if not exact or batch_size == 1:
        return batch_size, "as asked" if not exact else "one row at a time, as asked"
    if batch_invariant(model, batch_size):
        return batch_size, f"batches of up to {batch_size} rows of one length: bit for bit as one at a time here"
    return 1, "one row at a time: on this device a batch changes the bits of a row's logits"


def evaluate_model(
    model_dir: Path,
    data: Path,
    out: Path,
    split: str | None = "train",
    mia: Path | None = None,
    utility: Path | None = None,
    baseline: Path | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    mmlu_shots: int = 5,
    progress: bool = True,
    dtype: str = "float32",
    official: bool = False,
    mmlu_style: str = "plain",
    device: str = "auto",
    reference: Path | None = None,
    relearn: bool = False,
    nli: Path | None = None,
) -> dict[str, Any]:
    """Generate, score and write the evaluation of ``model_dir`` into ``out`` on ``device``
    (`unlearn.engine.resolve_device`: ``auto`` is the first GPU when there is one).

    ``relearn=True`` adds ReLearn's KFR, KRR and linguistic scores (`relearn`), the perplexities
    under the evaluated model, and with ``nli`` (a local NLI classifier folder) its judgements.

    ``official=True`` is the organisers' run (`official.PRESET`: bfloat16, 256 new tokens,
    open-instruct's MMLU), every generation and MIA loss bit for bit as their one-at-a-time
    procedure, their CSV round trip before scoring, and ``evaluation_results.jsonl`` beside ours.

    Started by a launcher (``torchrun --nproc_per_node N -m unlearn evaluate``), each process
    evaluates a share of the rows on its own device and rank 0 writes the same result one process
    would (`ranks`); the other ranks return an empty dict.
    """
    started = time.time()
    if official:
        dtype, max_new_tokens, mmlu_style = _official(dtype, max_new_tokens, mmlu_style)
    if mmlu_style not in STYLES:
        raise ConfigError(f"mmlu style {mmlu_style!r}: choose one of {', '.join(STYLES)}")
    ranks = launched()
    target = rank_device(device, ranks)
    files, rows = _eval_rows(data, split)
    mia_files = _mia_files(data, mia, split)
    utility_path = _utility_source(data, utility)
    _check_settings(nli is not None and not relearn, batch_size, max_new_tokens, utility_path, ranks)
    given = [model_dir, data, mia, None if is_lm_eval(utility) else utility, baseline, reference, nli]
    out = check_output(out, "evaluation", given, overwrite=None)
    _check_earlier(baseline, reference, data)
    judge = nli_judge(str(nli), target) if nli is not None and ranks.is_main else None  # a bad folder fails now
    utility_value = read_metrics_json(utility_path) if str(utility_path).endswith(".json") else None  # type: ignore[arg-type]
    model, tokenizer = load_model(model_dir, dtype, target)
    batch, batch_note = batching(model, batch_size, exact=official)
    if ranks.smallest(batch) < batch:  # every rank batches alike, as one process would
        batch, batch_note = batching(model, 1, exact=official)
    all_rows = rows["forget"] + rows["retain"]
    texts = greedy_generate(model, tokenizer, [r.input for r in all_rows], max_new_tokens, batch, progress, ranks=ranks)
    generations = {"forget": texts[: len(rows["forget"])], "retain": texts[len(rows["forget"]) :]}
    mia_docs = _mia_documents(model, tokenizer, mia_files, batch, ranks) if mia_files else None
    if utility_value is not None:
        utility_result = {"value": utility_value, "source": f"open-instruct metrics.json: {utility_path}", "mmlu": True}
    else:
        utility_settings = {"shots": mmlu_shots, "style": mmlu_style, "max_new_tokens": max_new_tokens}
        utility_result = _utility(model, tokenizer, utility_path, batch, utility_settings, ranks)
    answered = None
    if relearn and ranks.is_main:
        answered = _answered(rows, generations, model, tokenizer, batch, judge)
    seconds = time.time() - started
    extra = {"model": str(model_dir), CARD_KEY: model_card(model_dir), "data": {s: str(f) for s, f in files.items()}}
    extra |= {"dtype": dtype, "device": str(target), "batching": {"batch_size": batch, "note": batch_note}}
    extra |= {"processes": ranks.world, "seconds": round(seconds, 2)}
    extra |= {"examples_per_second": round(len(all_rows) / max(seconds, 1e-9), 2)}
    if relearn:
        extra["nli"] = str(nli) if nli else None
    if not ranks.is_main:
        ranks.barrier()  # rank 0 writes
        return {}
    found = (rows, generations, mia_docs, utility_result, baseline, extra, official, reference, answered)
    results = _finish(out, staging(out), *found)
    ranks.barrier()
    return results


def _eval_rows(data: Path, split: str | None) -> tuple[dict[str, Path], dict[str, list[Row]]]:
    """The forget and retain files evaluated and their rows, every row's task checked."""
    files = {s: eval_split(data, s, split) for s in ("forget", "retain")}
    rows = {s: load_rows(f) for s, f in files.items()}
    for name, file in files.items():
        check_tasks(rows[name], file)
    return files, rows


def _check_settings(
    lone_judge: bool, batch_size: int, max_new_tokens: int, utility: Path | str | None, ranks: Any
) -> None:
    """One line for settings that cannot go together, before anything is read or written."""
    if lone_judge:
        raise ConfigError("--nli is the judge of ReLearn's metrics; give --relearn too")
    if batch_size < 1 or max_new_tokens < 1:
        raise ConfigError(f"batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) must be at least 1")
    if is_lm_eval(utility) and ranks.world > 1:
        raise ConfigError("--utility lm-eval:... runs in one process; evaluate it without a launcher")


def _check_earlier(baseline: Path | None, reference: Path | None, data: Path) -> None:
    """A bad baseline or reference fails now, not after the generation."""
    if baseline is not None:
        load_baseline(baseline)
    if reference is not None:
        load_reference(reference)
        check_reference(reference, data, RESULTS)


def _official(dtype: str, max_new_tokens: int, mmlu_style: str) -> tuple[str, int, str]:
    """The organisers' generation settings; one line for a different one the user asked for."""
    asked = {"dtype": dtype, "max_new_tokens": max_new_tokens, "mmlu_style": mmlu_style}
    for key, value in asked.items():
        if value not in (PRESET[key], _DEFAULTS[key]):
            raise ConfigError(f"official mode fixes {key} = {PRESET[key]!r} (the organisers'); got {value!r}")
    return PRESET["dtype"], PRESET["max_new_tokens"], PRESET["mmlu_style"]


def _mia_documents(
    model: Any, tokenizer: Any, files: tuple[Path, Path], batch: int, ranks: Any
) -> tuple[list[dict[str, Any]], ...]:
    """The members' and the non-members' documents, each with its id and the attacks' scores."""
    scored = []
    for docs in (load_documents(f) for f in files):
        scores = document_scores(model, tokenizer, [d for _, d in docs], batch_size=batch, ranks=ranks)
        scored.append([{"id": i, **s} for (i, _), s in zip(docs, scores)])
    return tuple(scored)


def _utility(
    model: Any, tokenizer: Any, source: Path | str | None, batch: int, settings: dict[str, Any], ranks: Any
) -> dict[str, Any] | None:
    """The utility number and its records from ``source``: an lm-eval task (``lm-eval:TASK``), an
    MMLU folder, or rows scored by exact match (or as MMLU when they carry subjects)."""
    if isinstance(source, str):
        found = lmeval.lm_eval_utility(model, tokenizer, source, batch_size=batch)
        return {"value": found["value"], "source": found["source"], "lm_eval": found["tasks"]}
    if source is not None and source.is_dir():
        shots, style = settings["shots"], settings["style"]
        mmlu = evaluate_mmlu(model, tokenizer, source, shots=shots, batch_size=batch, style=style, ranks=ranks)
        return {
            "value": mmlu["average_acc"],
            "source": f"mmlu ({shots}-shot, {style}): {source}",
            "records": mmlu["predictions"],
            "mmlu": True,
        }
    if source is not None:
        urows = load_rows(source)
        answers = greedy_generate(
            model, tokenizer, [r.input for r in urows], settings["max_new_tokens"], batch, ranks=ranks
        )
        records = [{"id": r.id, "gold": r.output, "generation": a} for r, a in zip(urows, answers)]
        return _utility_from_records(records, str(source))
    return None


_DEFAULTS = {"dtype": "float32", "max_new_tokens": 256, "mmlu_style": "plain"}


def _utility_from_records(records: list[dict[str, Any]], source: str) -> dict[str, Any]:
    if records and "subject" in records[0]:
        return {"value": mmlu_summary(records)["average_acc"], "source": source, "records": records, "mmlu": True}
    value = sum(exact_match(r["gold"], r["generation"]) for r in records) / len(records)
    return {"value": value, "source": f"utility exact match: {source}", "records": records}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: missing (expected the output folder of an earlier `unlearn evaluate`)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON lines ({exc.msg})") from None


def _saved_generations(folder: Path, name: str, rows: list[Row], data_file: Path) -> list[str]:
    """The saved generation of each row of split ``name``, in the rows' order; the saved file must
    hold exactly the rows' ids."""
    path = folder / "generations" / f"{name}.jsonl"
    saved = {r.get("id"): r for r in _read_jsonl(path)}
    missing = [r.id for r in rows if r.id not in saved]
    extra_ids = sorted(set(saved) - {r.id for r in rows})
    if missing or extra_ids:
        raise DataError(
            f"{path} does not match {data_file}: "
            + (f"{len(missing)} id(s) missing, e.g. {missing[0]!r}" if missing else "")
            + ("; " if missing and extra_ids else "")
            + (f"{len(extra_ids)} unknown id(s), e.g. {extra_ids[0]!r}" if extra_ids else "")
        )
    for r in rows:
        if not isinstance(saved[r.id].get("generation"), str):
            raise DataError(f"{path}: id {r.id!r} has no 'generation' string")
    return [saved[r.id]["generation"] for r in rows]


def _saved_utility(folder: Path, source: str | None) -> dict[str, Any] | None:
    """An evaluation's saved utility (lm-eval's results, an open-instruct metrics.json, or our
    MMLU predictions), as `_finish` takes it; None without one."""
    if (folder / "lm_eval.json").is_file():
        return json.loads((folder / "lm_eval.json").read_text(encoding="utf-8"))
    if (folder / "metrics.json").is_file():
        file = folder / "metrics.json"
        return {"value": read_metrics_json(file), "source": f"open-instruct metrics.json: {file}", "mmlu": True}
    if (folder / "predictions.jsonl").is_file():
        utility = _utility_from_records(_read_jsonl(folder / "predictions.jsonl"), source or "saved predictions")
        utility["source"] = source or utility["source"]
        return utility
    return None


def rescore(
    generations_dir: Path,
    data: Path,
    out: Path,
    split: str | None = "train",
    baseline: Path | None = None,
    official: bool = False,
    reference: Path | None = None,
) -> dict[str, Any]:
    """Score saved generations again, without a model; they must match the data's rows.

    ``official=True`` scores them as the organisers' script does (CSV round trip, their file)."""
    out = check_output(out, "evaluation", [generations_dir, data, baseline, reference], overwrite=None)
    if baseline is not None:
        load_baseline(baseline)
    if reference is not None:
        load_reference(reference)
        check_reference(reference, data, RESULTS)
    files = {s: eval_split(data, s, split) for s in ("forget", "retain")}
    rows = {s: load_rows(f) for s, f in files.items()}
    for name, file in files.items():
        check_tasks(rows[name], file)
    generations = {
        name: _saved_generations(generations_dir, name, split_rows, files[name]) for name, split_rows in rows.items()
    }
    mia = None
    if (generations_dir / "mia" / "member.jsonl").is_file():
        mia = tuple(_read_jsonl(generations_dir / "mia" / f"{n}.jsonl") for n in ("member", "nonmember"))
    results_file = generations_dir / RESULTS
    previous = json.loads(results_file.read_text()) if results_file.is_file() else {}
    utility = _saved_utility(generations_dir / "utility", previous.get("utility_source"))
    answered = None
    if (generations_dir / "relearn" / "forget.jsonl").is_file():  # perplexities and NLI labels, as saved
        saved = {s: {r["id"]: r for r in _read_jsonl(generations_dir / "relearn" / f"{s}.jsonl")} for s in rows}
        answered = _answer_records(rows, generations, saved)
    out = out.resolve()
    extra = {"rescored_from": str(generations_dir), "data": {s: str(f) for s, f in files.items()}}
    if answered is not None:
        extra["nli"] = (previous.get("relearn") or {}).get("nli")
    return _finish(out, staging(out), rows, generations, mia, utility, baseline, extra, official, reference, answered)
