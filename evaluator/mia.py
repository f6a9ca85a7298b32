"""Membership-inference scores per document: LOSS (the official attack), zlib, Min-k% and
Min-k%++ (mimir; Duan et al. 2024). Every score is "lower = more likely a member"."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from unlearn import DataError, read_records
from unlearn.engine import eval_mode

from .generation import length_batches
from .metrics import auc
from .ranks import SINGLE, Ranks

ATTACKS = ("loss", "zlib", "mink", "minkpp")


def _lowest_mean(values: torch.Tensor, fraction: float) -> float:
    k = max(1, int(len(values) * fraction))
    return float(torch.topk(values, k, largest=False).values.mean())


@torch.no_grad()
def document_scores(
    model: Any, tokenizer: Any, documents: Sequence[str], k: float = 0.2, batch_size: int = 8, ranks: Ranks = SINGLE
) -> list[dict[str, float]]:
    """Per-document attack scores, each document fed whole and unpadded, as the official script did.

    ``loss`` is the model's own loss (``model(ids, labels=ids).loss``, the official number);
    documents of one token length share a forward pass, with no padding (padding changes the
    attention's bits), so with ``batch_size`` 1, or where `batch_invariant` holds, every loss is
    the one-at-a-time loss bit for bit. Under several ``ranks`` each scores its share of the
    batches and every rank returns every document.
    """
    device = next(model.parameters()).device
    encoded = [tokenizer(d)["input_ids"] for d in documents]
    for i, seq in enumerate(encoded):
        if len(seq) < 2:
            raise DataError(f"document {i} ({documents[i][:40]!r}) has fewer than two tokens, so it has no loss")
    vocab = model.get_output_embeddings().weight.shape[0]

    def score(rows: list[int]) -> dict[int, dict[str, float]]:
        ids = torch.tensor([encoded[i] for i in rows], device=device)
        logits = model(input_ids=ids).logits
        scores = {}
        for r, i in enumerate(rows):
            loss = model.loss_function(logits=logits[r : r + 1], labels=ids[r : r + 1], vocab_size=vocab)
            scores[i] = _attacks(float(loss), logits[r, :-1].float(), ids[r, 1:], documents[i], k)
        return scores

    with eval_mode(model):
        results = ranks.share(length_batches(encoded, batch_size), score)
    return [results[i] for i in range(len(documents))]


def _attacks(loss: float, logits: torch.Tensor, targets: torch.Tensor, text: str, k: float) -> dict[str, float]:
    logp_all = F.log_softmax(logits, dim=-1)
    lp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
    probs = logp_all.exp()
    mu = (probs * logp_all).sum(-1)
    sigma = ((probs * logp_all.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
    return {
        "loss": loss,
        "zlib": loss / len(zlib.compress(text.encode("utf-8"))),
        "mink": -_lowest_mean(lp, k),
        "minkpp": -_lowest_mean((lp - mu) / sigma, k),
    }


def attack_aucs(members: Sequence[dict[str, float]], nonmembers: Sequence[dict[str, float]]) -> dict[str, float]:
    """AUC of each attack, members as positives; a lower score means member, so -score ranks.

    A NaN or infinite score is an error, as in the official script (which asserts), never an AUC.
    """
    for name, docs in (("member", members), ("non-member", nonmembers)):
        for doc in docs:
            bad = [a for a in ATTACKS if not math.isfinite(doc[a])]
            if bad:
                raise DataError(
                    f"{name} document {doc.get('id', '?')!r}: {bad[0]} is {doc[bad[0]]} (a broken model); no AUC"
                )
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
