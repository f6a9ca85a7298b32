"""TOFU (Maini et al. 2024, *TOFU: A Task of Fictitious Unlearning for LLMs*, arXiv:2401.06121;
locuslab/tofu) as an unlearn benchmark.

Per example, as TOFU's ``evaluate_util.py``: the length-normalised answer loss (``avg_gt_loss``),
the paraphrased and perturbed answers' losses, ROUGE recall of the greedy answer; aggregated as its
``aggregate_eval_stat.py``: Prob., ROUGE and Truth Ratio on the retain, real-author and world-fact
sets, their harmonic mean (model utility), and forget quality, the KS-test p-value between this
model's and the retrained model's truth ratios on the forget set.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from unlearn import ConfigError, DataError, Row, check_output, hookimpl, publish, read_records, write_json, write_text
from unlearn.evaluator import (
    CARD_KEY,
    RESULTS,
    SINGLE,
    answer_losses,
    check_reference,
    greedy_generate,
    ks_pvalue,
    launched,
    load_model,
    model_card,
    rank_device,
    rouge,
    staging,
    truth_ratio,
)

from .synth import SIZES, synthesize

# TOFU's four evaluation sets: per-example file, split stem, the key of the answer whose loss
# enters the truth ratio as the "true" side (TOFU's base_answer_key), and its aggregate label.
TASKS = {
    "eval_log.json": ("retain_perturbed", "paraphrased_answer", "Retain"),
    "eval_real_author_wo_options.json": ("real_authors_perturbed", "answer", "Real Authors"),
    "eval_real_world_wo_options.json": ("world_facts_perturbed", "answer", "Real World"),
    "eval_log_forget.json": (None, "paraphrased_answer", "Forget"),  # forgetXX_perturbed
}
FORGET_FILE = "eval_log_forget.json"
TEMPLATE = {"question_start_tag": "Question: ", "question_end_tag": "\n", "answer_tag": "Answer: "}


def find_file(data: Path, stem: str) -> Path:
    """``data/STEM.json`` (TOFU's JSON lines), ``.jsonl`` or ``.parquet``."""
    for suffix in (".json", ".jsonl", ".parquet"):
        if (data / f"{stem}{suffix}").is_file():
            return data / f"{stem}{suffix}"
    raise DataError(f"{data}: no {stem}.json, {stem}.jsonl or {stem}.parquet (TOFU's layout)")


def forget_split(data: Path, split: str | None) -> str:
    """The forget split to evaluate: ``split`` (forget01, forget05, forget10) or the one present."""
    if split:
        return split.removesuffix("_perturbed")
    found = sorted({p.name.split("_perturbed")[0] for p in data.glob("forget*_perturbed.*")})
    if len(found) != 1:
        raise DataError(
            f"{data}: {'several' if found else 'no'} forgetXX_perturbed files ({', '.join(found) or 'none'}); "
            "name one with --split forget01|forget05|forget10"
        )
    return found[0]


def load_split(path: Path, true_key: str) -> list[dict[str, Any]]:
    """Validated rows of a ``*_perturbed`` file: ``question``, ``answer``, ``true_key`` (TOFU's
    base answer) as strings and ``perturbed_answer`` as a non-empty list of strings."""
    rows = []
    for number, record in read_records(path):
        where = f"{path}, row {number}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: not a JSON object")
        for key in dict.fromkeys(("question", "answer", true_key)):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise DataError(f"{where}: field {key!r} is missing or not a non-empty string")
        perturbed = record.get("perturbed_answer")
        if isinstance(perturbed, str):
            perturbed = [perturbed]
        if not isinstance(perturbed, list) or not perturbed or not all(isinstance(p, str) and p for p in perturbed):
            raise DataError(f"{where}: field 'perturbed_answer' is missing or not a list of strings")
        rows.append({**record, "perturbed_answer": perturbed})
    if not rows:
        raise DataError(f"{path}: no rows (empty file)")
    return rows


def template(data: Path) -> dict[str, str]:
    """The prompt tags of the model family (TOFU's ``model_config.yaml``): ``tofu.json`` in the data
    folder, else TOFU's phi/stablelm tags (``Question: ...\\nAnswer: ...``)."""
    file = data / "tofu.json"
    if not file.is_file():
        return dict(TEMPLATE)
    found = json.loads(file.read_text(encoding="utf-8"))
    bad = sorted(set(found) - set(TEMPLATE)) or [k for k, v in found.items() if not isinstance(v, str)]
    if bad:
        raise DataError(f"{file}: field {bad[0]!r}: expected string tags {', '.join(TEMPLATE)}")
    return {**TEMPLATE, **found}


def _rows(rows: list[dict[str, Any]], key: str, tags: dict[str, str]) -> list[Row]:
    """Question and answer as TOFU formats them: the question (with its tags) is the masked prompt;
    the answer tag, the answer and EOS are scored."""
    prompt = tags["question_start_tag"] + "{}" + tags["question_end_tag"]
    return [Row(str(i), prompt.format(r["question"]), tags["answer_tag"] + r[key], "TOFU") for i, r in enumerate(rows)]


def example_stats(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], true_key: str, tags: dict[str, str], **options: Any
) -> dict[str, dict[str, Any]]:
    """One evaluation set's per-example statistics, keyed as TOFU keys them (metric -> {index: value})."""
    batch, new_tokens, with_text = options["batch_size"], options["max_new_tokens"], options["generate"]
    index = [str(i) for i in range(len(rows))]
    stats: dict[str, dict[str, Any]] = {}
    ranks = options.get("ranks", SINGLE)  # under a launcher each rank computes its share of the batches
    gt = answer_losses(model, tokenizer, _rows(rows, "answer", tags), batch_size=batch, ranks=ranks)
    stats["avg_gt_loss"] = {i: s / n for i, (s, n) in zip(index, gt)}
    stats["gt_loss"] = {i: s for i, (s, _) in zip(index, gt)}
    stats["num_token_gt"] = {i: n for i, (_, n) in zip(index, gt)}
    if with_text:
        prompts = [r.input for r in _rows(rows, "answer", tags)]
        answers = greedy_generate(model, tokenizer, prompts, new_tokens, batch_size=batch, ranks=ranks)
        scores = [rouge(r["answer"], a) for r, a in zip(rows, answers)]
        stats["generated_text"] = {i: [p, a, r["answer"]] for i, p, a, r in zip(index, prompts, answers, rows)}
        stats["rouge1_recall"] = {i: s["rouge1"]["recall"] for i, s in zip(index, scores)}
        stats["rougeL_recall"] = {i: s["rougeL"]["recall"] for i, s in zip(index, scores)}
    para = (
        gt
        if true_key == "answer"
        else answer_losses(model, tokenizer, _rows(rows, true_key, tags), batch_size=batch, ranks=ranks)
    )
    flat = [dict(r, _p=p) for r in rows for p in r["perturbed_answer"]]
    losses = iter(answer_losses(model, tokenizer, _rows(flat, "_p", tags), batch_size=batch, ranks=ranks))
    perturbed = [[next(losses) for _ in r["perturbed_answer"]] for r in rows]
    stats["avg_paraphrased_loss"] = {i: s / n for i, (s, n) in zip(index, para)}
    stats["paraphrased_loss"] = {i: s for i, (s, _) in zip(index, para)}
    stats["num_token_paraphrased"] = {i: n for i, (_, n) in zip(index, para)}
    stats["average_perturb_loss"] = {i: [s / n for s, n in p] for i, p in zip(index, perturbed)}
    stats["perturb_loss"] = {i: [s for s, _ in p] for i, p in zip(index, perturbed)}
    stats["num_token_perturb"] = {i: [n for _, n in p] for i, p in zip(index, perturbed)}
    # TOFU's per-example "truth_ratio" is exp(paraphrased - mean perturbed): 1/R of the aggregate.
    stats["truth_ratio"] = {
        i: 1 / truth_ratio(stats["avg_paraphrased_loss"][i], stats["average_perturb_loss"][i]) for i in index
    }
    if true_key == "answer":  # TOFU adds it for the real-author and world-fact sets
        stats["normalized_gt_loss"] = {
            i: -math.log(_true_share(stats["avg_gt_loss"][i], stats["average_perturb_loss"][i])) for i in index
        }
    return stats


def _true_share(true_loss: float, perturbed_losses: list[float]) -> float:
    """p_true / (p_true + sum p_perturbed), each p = exp(-length-normalised loss)."""
    p_true = math.exp(-true_loss)
    return p_true / (p_true + sum(math.exp(-x) for x in perturbed_losses))


def _values(stats: dict[str, Any], key: str, file: str) -> list[Any]:
    try:
        found = stats[key]
    except KeyError:
        raise DataError(f"{file}: no {key!r} (TOFU's per-example layout: metric -> {{index: value}})") from None
    return list(found.values())


def truth_ratios(stats: dict[str, Any], file: str = FORGET_FILE) -> list[float]:
    """R per example from a per-example file's ``avg_paraphrased_loss`` and ``average_perturb_loss``."""
    para, perturbed = _values(stats, "avg_paraphrased_loss", file), _values(stats, "average_perturb_loss", file)
    return [truth_ratio(p, q if isinstance(q, list) else [q]) for p, q in zip(para, perturbed)]


def aggregate(files: dict[str, dict[str, Any]], reference: dict[str, Any] | None) -> dict[str, Any]:
    """TOFU's aggregate from per-example files (``aggregate_eval_stat.py``), keyed as it keys them:
    ``Prob./ROUGE/Truth Ratio <set>``, ``Model Utility`` (harmonic mean of the nine non-forget
    values) and ``Forget Quality`` (KS p-value against ``reference``, the retrained model's
    ``eval_log_forget.json``; None without it)."""
    out: dict[str, Any] = {}
    for file, (_, _, label) in TASKS.items():
        stats = files[file]
        if file.startswith("eval_log"):
            prob = statistics.fmean(math.exp(-x) for x in _values(stats, "avg_gt_loss", file))
        else:
            true, perturbed = _values(stats, "avg_gt_loss", file), _values(stats, "average_perturb_loss", file)
            prob = statistics.fmean(_true_share(t, p) for t, p in zip(true, perturbed))
        ratios = truth_ratios(stats, file)
        out[f"Prob. {label}"] = prob
        out[f"ROUGE {label}"] = statistics.fmean(_values(stats, "rougeL_recall", file))
        if label == "Forget":
            out[f"Truth Ratio {label}"] = statistics.fmean(min(r, 1 / r) for r in ratios)
        else:
            out[f"Truth Ratio {label}"] = statistics.fmean(max(0.0, 1 - 1 / r) for r in ratios)
    utility = [v for k, v in out.items() if "Forget" not in k]
    out["Model Utility"] = 0.0 if min(utility) <= 0 else statistics.harmonic_mean(utility)
    out["Forget Quality"] = None
    if reference is not None:
        out["Forget Quality"] = ks_pvalue(truth_ratios(files[FORGET_FILE]), truth_ratios(reference))
    return out


def read_folder(folder: Path, only: tuple[str, ...] = tuple(TASKS)) -> dict[str, dict[str, Any]]:
    """The per-example files of an evaluation folder (ours, or TOFU's published ``eval_results``)."""
    files = {}
    for name in only:
        path = folder / name
        try:
            files[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: missing (TOFU's per-example files: {', '.join(only)})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not JSON ({exc})") from None
        if not isinstance(files[name], dict):
            raise DataError(f"{path}: expected a dict of metric -> {{index: value}}")
    return files


def _summary(results: dict[str, Any]) -> str:
    agg = results["tofu"]
    lines = [
        "# TOFU evaluation (Maini et al. 2024)",
        "",
        "| set | Prob. | ROUGE | Truth Ratio |",
        "| --- | --- | --- | --- |",
    ]
    for _, _, label in TASKS.values():
        lines.append(
            f"| {label} | " + " | ".join(f"{agg[f'{m} {label}']:.4f}" for m in ("Prob.", "ROUGE", "Truth Ratio")) + " |"
        )
    fq = agg["Forget Quality"]
    lines += [
        "",
        f"Model utility (harmonic mean of the nine non-forget values): **{agg['Model Utility']:.4f}**",
        "",
        "Forget quality (KS-test p-value against the retrained model; 1 is indistinguishable): "
        + (f"**{fq:.4g}**" if fq is not None else "not computed (give --reference, the retrained model)"),
    ]
    return "\n".join(lines) + "\n"


def _write(
    out: Path, files: dict[str, dict[str, Any]], reference: dict[str, Any] | None, extra: dict[str, Any]
) -> dict[str, Any]:
    folder = staging(out)
    agg = aggregate(files, reference)
    results = {
        "benchmark": "tofu",
        "forget_quality": agg["Forget Quality"],
        "model_utility": agg["Model Utility"],
        "forget_rougeL": agg["ROUGE Forget"],
        "tofu": agg,
        **extra,
    }
    for name, stats in files.items():
        write_json(folder / name, stats)
    write_json(folder / "eval_log_aggregated.json", files)
    if reference is not None:
        write_json(folder / "reference" / FORGET_FILE, reference)
    write_text(folder / "summary.md", _summary(results))
    write_json(folder / RESULTS, results)
    publish(folder, out, "evaluation")
    return results


class Tofu:
    """TOFU: questions about 200 fictitious authors, forget 1/5/10% of them; evaluated on the
    forget set, the retain set, real authors and world facts."""

    name = "tofu"
    summary = "TOFU (Maini et al. 2024): forget quality against the retrained model, model utility"
    headline = {"forget_quality": "higher", "model_utility": "higher", "forget_rougeL": "lower"}
    utility = "model_utility"

    def synthesize(self, out: Path, seed: int, size: str) -> dict[str, int]:
        if size not in SIZES:
            raise ConfigError(f"size {size!r}: choose one of {', '.join(SIZES)}")
        return synthesize(out, seed, size)

    def evaluate(
        self,
        model: Path,
        data: Path,
        out: Path,
        reference: Path | None = None,
        split: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 16,
        max_new_tokens: int = 200,
        max_rows: int = 300,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Evaluate ``model`` on the four sets (the first ``max_rows`` of each, TOFU's ``ds_size``).

        ``reference`` is the retrained model's folder (its forget statistics are computed here) or
        an evaluation folder holding its ``eval_log_forget.json`` (ours or TOFU's published ones)."""
        started = time.time()
        forget = forget_split(data, split)
        tags = template(data)
        sets = {}
        for file, (stem, true_key, _) in TASKS.items():
            path = find_file(data, stem or f"{forget}_perturbed")
            sets[file] = (path, load_split(path, true_key)[:max_rows], true_key)
        out = check_output(out, "evaluation", [model, data, reference], overwrite=None)
        if reference is not None:
            check_reference(reference, data, RESULTS)
        ref_stats = _reference_stats(reference)
        ranks = launched()  # `torchrun -m unlearn evaluate ...`: rows shared out, rank 0 writes
        device = rank_device(device, ranks)
        net, tokenizer = load_model(model, dtype, device)
        options = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "generate": True, "ranks": ranks}
        files = {f: example_stats(net, tokenizer, rows, key, tags, **options) for f, (_, rows, key) in sets.items()}
        if ref_stats is None and reference is not None:
            oracle, oracle_tok = load_model(reference, dtype, device)
            _, rows, key = sets[FORGET_FILE]
            ref_stats = example_stats(oracle, oracle_tok, rows, key, tags, **{**options, "generate": False})
        extra = {
            "model": str(model),
            CARD_KEY: model_card(model),
            "data": {f: str(p) for f, (p, _, _) in sets.items()},
            "reference": None if reference is None else str(reference),
            "dtype": dtype,
            "seconds": round(time.time() - started, 2),
            "processes": ranks.world,
        }
        if not ranks.is_main:
            ranks.barrier()  # rank 0 writes
            return {}
        results = _write(out, files, ref_stats, extra)
        ranks.barrier()
        return results

    def rescore(self, folder: Path, data: Path, out: Path, reference: Path | None = None) -> dict[str, Any]:
        """Aggregate the per-example files in ``folder`` again (``data`` is not read: the files hold
        every statistic TOFU aggregates)."""
        out = check_output(out, "evaluation", [folder, reference], overwrite=None)
        if reference is not None:
            check_reference(reference, data, RESULTS)
        ref_stats = _reference_stats(reference)
        if reference is not None and ref_stats is None:
            raise ConfigError(f"{reference}: rescoring needs the retrained model's evaluation, not its model folder")
        return _write(out, read_folder(folder), ref_stats, {"rescored_from": str(folder), "reference": str(reference)})


def _reference_stats(reference: Path | None) -> dict[str, Any] | None:
    """The retrained model's forget statistics from an evaluation folder; None for a model folder."""
    if reference is None or (Path(reference) / "config.json").is_file():
        return None
    return read_folder(Path(reference), only=(FORGET_FILE,))[FORGET_FILE]


@hookimpl
def register_benchmarks(register: Any) -> None:
    register(Tofu())
