"""Evaluation: the official SemEval-2025 Task 4 scoring (``evaluate``), its parts, and what
benchmark plugins share (loading a model, greedy generation, answer losses, ROUGE, MIA attacks,
TOFU's truth ratio, the KS test). A benchmark plugin may import the names in ``__all__``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn.engine import lazy_exports

# names load on first use (unlearn.engine.lazy_exports), so importing the package costs nothing
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["RESULTS", "load_model", "staging"], ".evaluate"),
        "greedy_generate": ".generation",
        **dict.fromkeys(["answer_losses", "answer_nll"], ".likelihood"),
        **dict.fromkeys(["auc", "exact_match", "rouge", "rouge_l_recall", "truth_ratio", "ks_pvalue"], ".metrics"),
        **dict.fromkeys(["ATTACKS", "attack_aucs", "document_scores"], ".mia"),
        **dict.fromkeys(
            ["TARGET_CARD", "CARD_KEY", "model_card", "check_reference", "training_rows", "rows_digest"], ".reference"
        ),
        **dict.fromkeys(["Ranks", "SINGLE", "launched", "rank_device"], ".ranks"),
    },
)

if TYPE_CHECKING:  # what type checkers and editors see
    from .evaluate import RESULTS, load_model, staging
    from .generation import greedy_generate
    from .likelihood import answer_losses, answer_nll
    from .metrics import auc, exact_match, ks_pvalue, rouge, rouge_l_recall, truth_ratio
    from .mia import ATTACKS, attack_aucs, document_scores
    from .ranks import SINGLE, Ranks, launched, rank_device
    from .reference import CARD_KEY, TARGET_CARD, check_reference, model_card, rows_digest, training_rows
