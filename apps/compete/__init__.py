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

from .competition import run_competition
from .config import Competition, Entrant, load_competition
from .leaderboard import rank, write_leaderboard

__all__ = ["Competition", "Entrant", "load_competition", "run_competition", "rank", "write_leaderboard"]
