"""LUME's signals of a model being trained (``trainer.eval_steps``, `unlearn.hookspecs.Benchmark.signals`):
cheap ones from likelihoods every N steps, the official score with generation every M steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unlearn import PairCollator, encode, load_rows
from unlearn.engine import answer_probe, pad_token_id

from .evaluate import _mia_files, eval_split
from .generation import greedy_generate
from .metrics import exact_match, row_score
from .mia import attack_aucs, document_scores, load_documents, mia_score
from .scoring import check_tasks, official_results

CHEAP = ("forget_nll", "retain_nll", "forget_reproduced")
MIA = ("member_nll", "nonmember_nll", "mia_auc", "mia_score")
MAX_NEW_TOKENS = 256  # as `unlearn evaluate`, so the score is the evaluation's on these rows


def lume_signals(data: Path, split: str, tokenizer: Any, rows: int) -> tuple[set[str], Any]:
    """The signals on the first ``rows`` rows of each file of ``split`` in the LUME folder ``data``:

    - ``forget_nll`` / ``retain_nll``: the mean NLL of the answer tokens (pooled over all tokens of
      the rows, EOS not appended), as ``unlearn.engine.answer_probe``; ``forget_reproduced``: the fraction of
      forget answers greedy decoding would give whole (each answer token the argmax);
    - with ``mia_member[_validation].jsonl`` and ``mia_nonmember...`` present: ``member_nll`` /
      ``nonmember_nll`` (the mean of the documents' official losses), ``mia_auc`` (the LOSS attack)
      and ``mia_score`` (1 - 2|AUC - 0.5|);
    - ``full``: ``task_aggregate`` (the official harmonic mean on these rows, greedy generation of
      256 new tokens), with ``utility.jsonl``: ``utility`` (its exact match, the stand-in for MMLU)
      and, with the MIA files too, ``score`` (the official final score: the mean of the task
      aggregate, the utility and ``mia_score``).
    """
    split_rows = {s: load_rows(eval_split(data, s, split))[:rows] for s in ("forget", "retain")}
    collate = PairCollator(pad_token_id(tokenizer))
    batches = {
        s: [collate.pad(list(enumerate(enc[i : i + 8]))) for i in range(0, len(enc), 8)]
        for s, enc in ((s, encode(r, tokenizer, max_length=1024, append_eos=False)) for s, r in split_rows.items())
    }
    files = _mia_files(data, None, split)
    docs = [[d for _, d in load_documents(f)[:rows]] for f in files] if files else None
    utility = load_rows(data / "utility.jsonl", "utility")[:rows] if (data / "utility.jsonl").is_file() else None
    names = set(CHEAP) | {"task_aggregate"} | (set(MIA) if docs else set())
    names |= {"utility"} if utility else set()
    names |= {"score"} if docs and utility else set()

    def measure(model: torch.nn.Module, full: bool) -> dict[str, float]:
        values: dict[str, float] = {}
        for split_name, split_batches in batches.items():
            probe = answer_probe(model, split_batches)
            values[f"{split_name}_nll"] = probe["nll"]
            if split_name == "forget":
                values["forget_reproduced"] = probe["reproduces"] / len(split_rows["forget"])
        if docs:
            members, nonmembers = (document_scores(model, tokenizer, d) for d in docs)
            values["member_nll"] = sum(m["loss"] for m in members) / len(members)
            values["nonmember_nll"] = sum(n["loss"] for n in nonmembers) / len(nonmembers)
            values["mia_auc"] = attack_aucs(members, nonmembers)["loss"]
            values["mia_score"] = mia_score(values["mia_auc"])
        if full:
            for name, found in split_rows.items():
                check_tasks(found, Path(f"{data}: the first {rows} {name} rows of {split} (trainer.eval_rows)"))
            prompts = [r.input for r in split_rows["forget"] + split_rows["retain"]]
            texts = greedy_generate(model, tokenizer, prompts, MAX_NEW_TOKENS, batch_size=16)
            n = len(split_rows["forget"])
            scored = {
                s: (found, [row_score(r.id, r.output, t) for r, t in zip(found, part)])
                for (s, found), part in zip(split_rows.items(), (texts[:n], texts[n:]))
            }
            if utility:
                answers = greedy_generate(model, tokenizer, [r.input for r in utility], MAX_NEW_TOKENS, batch_size=16)
                values["utility"] = sum(exact_match(r.output, a) for r, a in zip(utility, answers)) / len(utility)
            results = official_results(scored["forget"], scored["retain"], values.get("mia_auc"), values.get("utility"))
            values["task_aggregate"] = results["harmonic-mean-task-aggregate"]
            if "score" in names:
                values["score"] = results["aggregate-score"]
        return values

    return names, measure
