"""Membership-inference scores per document: LOSS (the official attack), zlib, Min-k% and
Min-k%++ (mimir; Duan et al. 2024). Every score is "lower = more likely a member"."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from unlearn import DataError, Encoded, PairCollator, pad_token_id, read_records

from .metrics import auc

ATTACKS = ("loss", "zlib", "mink", "minkpp")


def _lowest_mean(values: torch.Tensor, fraction: float) -> float:
    k = max(1, int(len(values) * fraction))
    return float(torch.topk(values, k, largest=False).values.mean())


@torch.no_grad()
def document_scores(
    model: Any, tokenizer: Any, documents: Sequence[str], k: float = 0.2, batch_size: int = 8
) -> list[dict[str, float]]:
    """Per-document attack scores, as the official script feeds documents: whole, unpadded.

    Documents are batched with right padding and an attention mask, which leaves every real
    token's logits unchanged in a causal model.
    """
    device = next(model.parameters()).device
    collate = PairCollator(pad_token_id(tokenizer))
    was_training = model.training
    model.eval()
    encoded = [tokenizer(d)["input_ids"] for d in documents]
    results: list[dict[str, float]] = []
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            batch = collate.pad([(i, Encoded(seq, seq)) for i, seq in enumerate(chunk)])
            ids, mask = batch["input_ids"], batch["attention_mask"]
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            logp_all = F.log_softmax(logits, dim=-1)
            targets = ids[:, 1:].to(device)
            token_logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            probs = logp_all.exp()
            mu = (probs * logp_all).sum(-1)
            sigma = ((probs * logp_all.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
            for row, seq in enumerate(chunk):
                n = len(seq) - 1
                if n < 1:
                    raise ValueError(f"document {start + row} has fewer than two tokens; it has no loss")
                lp = token_logp[row, :n]
                nll = float(-lp.mean())
                text = documents[start + row]
                results.append(
                    {
                        "loss": nll,
                        "zlib": nll / len(zlib.compress(text.encode("utf-8"))),
                        "mink": -_lowest_mean(lp, k),
                        "minkpp": -_lowest_mean((lp - mu[row, :n]) / sigma[row, :n], k),
                    }
                )
    finally:
        model.train(was_training)
    return results


def attack_aucs(members: Sequence[dict[str, float]], nonmembers: Sequence[dict[str, float]]) -> dict[str, float]:
    """AUC of each attack, members as positives; a lower score means member, so -score ranks."""
    return {a: auc([-m[a] for m in members], [-n[a] for n in nonmembers]) for a in ATTACKS}


def mia_score(loss_auc: float) -> float:
    """The official ``mia_final_score``: 1 - 2|AUC - 0.5| (1 when members look like non-members)."""
    return 1 - abs(loss_auc - 0.5) * 2


def load_documents(path: Path) -> list[tuple[str, str]]:
    """(id, document) pairs of a LUME MIA file, with the same validation as ``load_rows``."""
    docs: list[tuple[str, str]] = []
    for number, record in read_records(Path(path)):
        where = f"{path}, row {number}"
        for name in ("id", "document"):
            if not isinstance(record, dict) or not isinstance(record.get(name), str) or not record[name].strip():
                raise DataError(f"{where}: field {name!r} is missing or empty (an MIA row has id, document)")
        docs.append((record["id"], record["document"]))
    if not docs:
        raise DataError(f"{path}: no rows (empty file)")
    return docs
