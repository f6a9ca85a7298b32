"""MUSE (Shi et al. 2024, *MUSE: Machine Unlearning Six-Way Evaluation for Language Models*,
arXiv:2407.06460; swj0419/muse_bench) as an unlearn benchmark.

As MUSE's ``eval.py`` and ``metrics/``: **VerbMem**, the ROUGE-L F1 (no stemming) of the greedy
continuation (128 new tokens) of a forget-passage prefix against the true continuation cut to
128 tokens; **KnowMem** on forget and retain QA, the ROUGE-L F1 of the greedy answer (32 new
tokens, cut at the next question) after few-shot ``Question: ...\\nAnswer: ...`` examples;
**PrivLeak**, ``(AUC - AUC_retrained) / AUC_retrained`` of the Min-40% attack between forget
(labelled non-member) and holdout (labelled member) passages, MUSE's ``forget_holdout_Min-40%``:
near 0 when the model treats forget passages like text it never saw, as the retrained model does.
Values are reported x100, as MUSE reports them. Beside it, ``privleak_minkpp``: the same with the
Min-K%++ attack (Zhang et al. 2024, k = 40%).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from unlearn import ConfigError, DataError, check_output, hookimpl, publish, write_json, write_text
from unlearn.evaluator import (
    CARD_KEY,
    RESULTS,
    SINGLE,
    Ranks,
    auc,
    check_reference,
    document_scores,
    greedy_generate,
    launched,
    load_model,
    model_card,
    rank_device,
    rouge,
    staging,
)

from .prompts import cut_answer, knowmem_prompts
from .synth import synthesize

__all__ = ["Muse", "cut_answer", "knowmem_prompts", "mink_auc", "privleak", "read_json"]

FILES = {
    "verbmem": "verbmem/forget.json",
    "knowmem_forget": "knowmem/forget_qa.json",
    "knowmem_forget_icl": "knowmem/forget_qa_icl.json",
    "knowmem_retain": "knowmem/retain_qa.json",
    "knowmem_retain_icl": "knowmem/retain_qa_icl.json",
    "privleak_forget": "privleak/forget.json",
    "privleak_retain": "privleak/retain.json",
    "privleak_holdout": "privleak/holdout.json",
}
FIELDS = {"verbmem": ("prompt", "gt"), "knowmem": ("question", "answer"), "privleak": None}


def read_json(data: Path, key: str) -> list[Any]:
    """One MUSE file (a JSON array): strings for privleak, objects with MUSE's fields otherwise."""
    path = data / FILES[key]
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing (MUSE's layout: {', '.join(FILES.values())})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(found, list) or not found:
        raise DataError(f"{path}: expected a non-empty JSON array")
    fields = FIELDS[key.split("_")[0]]
    for number, item in enumerate(found, start=1):
        if fields is None and not (isinstance(item, str) and item.strip()):
            raise DataError(f"{path}, item {number}: expected a non-empty string (a passage)")
        for field in fields or ():
            if not isinstance(item, dict) or not isinstance(item.get(field), str) or not item[field].strip():
                raise DataError(f"{path}, item {number}: field {field!r} is missing or not a non-empty string")
    return found


def privleak(auc_unlearned: float, auc_retrained: float) -> float:
    """MUSE's PrivLeak, x100: (AUC_unlearned - AUC_retrained) / AUC_retrained * 100."""
    return (auc_unlearned - auc_retrained) / auc_retrained * 100


def mink_auc(forget: list[float], holdout: list[float]) -> float:
    """MUSE's ``forget_holdout_Min-40%``: holdout passages are the positives, a lower Min-40%
    score means "member", so the AUC is P(-score(holdout) > -score(forget)), ties half."""
    return auc([-s for s in holdout], [-s for s in forget])


SPLITS = ("forget", "retain", "holdout")
ATTACKS = ("mink", "minkpp")  # MUSE's PrivLeak attack (Min-40%) first, then Min-K%++ (k = 40%)
LOGS = {"mink": "privleak_min40", "minkpp": "privleak_minkpp"}  # their scores in log.json


def _leak_scores(
    model: Any, tokenizer: Any, passages: list[str], batch: int, ranks: Ranks = SINGLE
) -> dict[str, list[float]]:
    """Each passage's Min-40% and Min-K%++ (k = 40%) scores (lower: more likely a member)."""
    found = document_scores(model, tokenizer, passages, k=0.4, batch_size=batch, ranks=ranks)
    return {a: [s[a] for s in found] for a in ATTACKS}


def _summary(results: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    return (
        "# MUSE evaluation (Shi et al. 2024)\n\n| metric | value | ideal |\n| --- | --- | --- |\n"
        f"| VerbMem on forget (ROUGE-L F1 x100) | {fmt(results['verbmem_f'])} | low (the retrained model's) |\n"
        f"| KnowMem on forget | {fmt(results['knowmem_f'])} | low |\n"
        f"| KnowMem on retain (utility) | {fmt(results['knowmem_r'])} | high |\n"
        f"| PrivLeak (%) | {fmt(results['privleak'])} | 0 |\n"
        f"| PrivLeak, Min-K%++ (%) | {fmt(results.get('privleak_minkpp'))} | 0 |\n"
        f"\nforget/holdout Min-40% AUC {results['muse']['forget_holdout_Min-40%']:.4f}"
        + (
            f", retrained model's {results['muse']['auc_retrained']:.4f}"
            if results["privleak"] is not None
            else "; PrivLeak needs --reference (the retrained model or its evaluation)"
        )
        + "\n"
    )


class Muse:
    """MUSE: forget and retain corpora (news or books); verbatim and knowledge memorisation, and
    privacy leakage measured against the model retrained without the forget corpus."""

    name = "muse"
    summary = "MUSE (Shi et al. 2024): VerbMem, KnowMem forget/retain, PrivLeak against the retrained model"
    headline = {"verbmem_f": "lower", "knowmem_f": "lower", "knowmem_r": "higher", "privleak": "zero"}
    knowledge = {"verbmem_f": "verbmem_f", "knowmem_f": "knowmem_f"}  # what `unlearn attack` recovers
    utility = "knowmem_r"  # KnowMem on the retain set: MUSE's utility preservation

    def synthesize(self, out: Path, seed: int, size: str) -> dict[str, int]:
        if size not in ("tiny", "small", "medium"):
            raise ConfigError(f"size {size!r}: choose tiny, small or medium")
        return synthesize(out, seed, size)

    def evaluate(
        self,
        model: Path,
        data: Path,
        out: Path,
        reference: Path | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 16,
        max_new_tokens: int | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Evaluate ``model`` on MUSE's files in ``data``. ``max_new_tokens`` overrides both of
        MUSE's budgets (128 VerbMem, 32 KnowMem). ``reference`` is the retrained model's folder, its
        saved MUSE evaluation (its forget/holdout AUC), or ``published:news`` / ``published:books``
        (the AUC MUSE published for its retrained models on the released corpora)."""
        started = time.time()
        files = {key: read_json(data, key) for key in FILES}
        out = check_output(out, "evaluation", [model, data, reference], overwrite=None)
        if reference is not None and _published(reference) is None:
            check_reference(reference, data, RESULTS)
        retrained = _reference_auc(reference)
        ranks = launched()  # `torchrun -m unlearn evaluate ...`: rows shared out, rank 0 writes
        device = rank_device(device, ranks)
        net, tok = load_model(model, dtype, device)
        verb_tokens, know_tokens = max_new_tokens or 128, max_new_tokens or 32
        log: dict[str, list[dict[str, Any]]] = {}
        verb = files["verbmem"]
        gts = [tok.decode(tok(d["gt"])["input_ids"][:verb_tokens], skip_special_tokens=True) for d in verb]
        outputs = greedy_generate(
            net, tok, [d["prompt"] for d in verb], verb_tokens, batch_size=batch_size, ranks=ranks
        )
        log["verbmem_f"] = [
            {"prompt": d["prompt"], "gt": g, "response": o, **_rouge(g, o)} for d, g, o in zip(verb, gts, outputs)
        ]
        for split in ("forget", "retain"):
            qa, icl = files[f"knowmem_{split}"], files[f"knowmem_{split}_icl"]
            prompts = knowmem_prompts(qa, icl)
            answers = [
                cut_answer(a)
                for a in greedy_generate(net, tok, prompts, know_tokens, batch_size=batch_size, ranks=ranks)
            ]
            log[f"knowmem_{split[0]}"] = [
                {"question": d["question"], "gt": d["answer"], "response": a, **_rouge(d["answer"], a)}
                for d, a in zip(qa, answers)
            ]
        scores = {s: _leak_scores(net, tok, files[f"privleak_{s}"], batch_size, ranks) for s in SPLITS}
        leak = {a: {s: scores[s][a] for s in SPLITS} for a in ATTACKS}
        if reference is not None and retrained is None:
            oracle, oracle_tok = load_model(reference, dtype, device)
            theirs = {s: _leak_scores(oracle, oracle_tok, files[f"privleak_{s}"], batch_size, ranks) for s in SPLITS}
            retrained = {a: mink_auc(theirs["forget"][a], theirs["holdout"][a]) for a in ATTACKS}
        extra = {"model": str(model), CARD_KEY: model_card(model), "data": str(data)}
        extra["reference"] = None if reference is None else str(reference)
        extra |= {"dtype": dtype, "seconds": round(time.time() - started, 2), "processes": ranks.world}
        if not ranks.is_main:
            ranks.barrier()  # rank 0 writes
            return {}
        results = _write(out, log, leak, retrained, extra)
        ranks.barrier()
        return results

    def rescore(self, folder: Path, data: Path, out: Path, reference: Path | None = None) -> dict[str, Any]:
        """Recompute every number from an earlier evaluation's ``log.json`` (no model)."""
        out = check_output(out, "evaluation", [folder, reference], overwrite=None)
        if reference is not None and _published(reference) is None:
            check_reference(reference, data, RESULTS)
        retrained = _reference_auc(reference)
        if reference is not None and retrained is None:
            raise ConfigError(f"{reference}: rescoring needs the retrained model's evaluation, not its model folder")
        try:
            saved = json.loads((folder / "log.json").read_text(encoding="utf-8"))
            log = saved["generations"]
            leak = {a: saved[LOGS[a]] for a in ATTACKS if LOGS[a] in saved or a == "mink"}
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{folder / 'log.json'}: not a MUSE evaluation's log ({exc})") from None
        return _write(out, log, leak, retrained, {"rescored_from": str(folder)})


def _rouge(gold: str, output: str) -> dict[str, float]:
    found = rouge(gold, output, stem=False)
    return {
        "rougeL": found["rougeL"]["f1"],
        "rougeL_recall": found["rougeL"]["recall"],
        "rouge1": found["rouge1"]["f1"],
    }


def _write(
    out: Path,
    log: dict[str, Any],
    leak: dict[str, dict[str, list[float]]],
    retrained: dict[str, float | None] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """``leak``: attack -> split -> scores; ``retrained``: attack -> the retrained model's AUC."""
    folder = staging(out)
    retrained = retrained or {}
    aucs = {a: mink_auc(leak[a]["forget"], leak[a]["holdout"]) for a in leak}
    leaks = {a: privleak(aucs[a], retrained[a]) if retrained.get(a) is not None else None for a in aucs}
    means = {k: statistics.fmean(r["rougeL"] for r in rows) * 100 for k, rows in log.items()}
    results = {
        "benchmark": "muse",
        "verbmem_f": means["verbmem_f"],
        "knowmem_f": means["knowmem_f"],
        "knowmem_r": means["knowmem_r"],
        "privleak": leaks["mink"],
        "privleak_minkpp": leaks.get("minkpp"),
        "muse": {
            "forget_holdout_Min-40%": aucs["mink"],
            "auc_retrained": retrained.get("mink"),
            "forget_holdout_Min-K%++": aucs.get("minkpp"),
            "auc_retrained_Min-K%++": retrained.get("minkpp"),
        },
        **extra,
    }
    write_json(folder / "log.json", {"generations": log, **{LOGS[a]: leak[a] for a in leak}})
    write_text(folder / "summary.md", _summary(results))
    write_json(folder / RESULTS, results)
    publish(folder, out, "evaluation")
    return results


# The forget/holdout Min-40% AUC of MUSE's own retrained models on the released corpora (Shi et al.
# 2024, swj0419/muse_bench `constants.py`, AUC_RETRAIN): PrivLeak on MUSE-News or MUSE-Books without a
# retrained model, as MUSE's own evaluation computes it. `--reference published:news`.
PUBLISHED = "published:"
AUC_RETRAIN = {"news": 0.4772, "books": 0.5393}


def _published(reference: Path | None) -> str | None:
    """The corpus of ``published:CORPUS``, or None for a folder."""
    text = str(reference) if reference is not None else ""
    if not text.startswith(PUBLISHED):
        return None
    corpus = text.removeprefix(PUBLISHED)
    if corpus not in AUC_RETRAIN:
        choices = ", ".join(PUBLISHED + c for c in AUC_RETRAIN)
        raise ConfigError(f"--reference {text}: MUSE publishes the retrained AUC of {choices} only")
    return corpus


def _reference_auc(reference: Path | None) -> dict[str, float | None] | None:
    """The retrained model's forget/holdout AUC of each attack: MUSE's published Min-40% one
    (``published:news``; MUSE publishes no Min-K%++ value), or from the retrained model's saved
    MUSE evaluation; None for a model folder (computed from it) or no reference."""
    corpus = _published(reference)
    if corpus is not None:
        return {"mink": AUC_RETRAIN[corpus], "minkpp": None}
    if reference is None or (Path(reference) / "config.json").is_file():
        return None
    file = Path(reference) / RESULTS
    try:
        found = json.loads(file.read_text(encoding="utf-8"))["muse"]
        pp = found.get("forget_holdout_Min-K%++")
        return {"mink": float(found["forget_holdout_Min-40%"]), "minkpp": None if pp is None else float(pp)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{file}: not a MUSE evaluation of the retrained model ({exc})") from None


@hookimpl
def register_benchmarks(register: Any) -> None:
    register(Muse())
