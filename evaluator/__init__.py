"""Evaluation: the official SemEval-2025 Task 4 scoring (``evaluate``), its parts, and the
answer likelihoods method tests use."""

from .likelihood import answer_nll

__all__ = ["answer_nll"]
