"""Evaluation: likelihoods now; the official SemEval-2025 Task 4 scoring builds on them."""

from .likelihood import answer_nll, document_nll

__all__ = ["answer_nll", "document_nll"]
