"""Organiser mode: run registered plugins, recipes and SemEval-style submissions on private data,
each isolated and time-limited, evaluate them, and publish a leaderboard (``unlearn compete``).

An application on the core, in one module per concern: ``config`` (the competition file and its
entrants), ``entrant`` (one entrant's folder, environment and command, and which model of its
output is scored), ``environments`` (a submission's declared Python and packages), ``sandbox``
(Landlock isolation), ``supervise`` (time limits, hang and NaN detection, killing every process),
``harness`` (calling a SemEval ``unlearn()`` submission), ``checks`` (what an output must be), ``cache``
(fingerprints, so a re-run does only the missing work), ``leaderboard`` and ``competition`` (the
whole run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn.engine import lazy_exports

# names load on first use (unlearn.engine.lazy_exports), so importing the package costs nothing
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["Competition", "Entrant", "load_competition"], ".config"),
        "run_competition": ".competition",
        **dict.fromkeys(["rank", "write_leaderboard"], ".leaderboard"),
    },
)

if TYPE_CHECKING:  # what type checkers and editors see
    from .competition import run_competition
    from .config import Competition, Entrant, load_competition
    from .leaderboard import rank, write_leaderboard
