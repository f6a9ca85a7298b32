"""Ranking entrants and writing the leaderboard (Markdown, CSV, JSON, PNG); no data text is ever
written."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from unlearn import write_json, write_text

from .config import Competition

CHECKPOINT_SCORED = "timeout (checkpoint scored)"  # cut by the limit; its newest complete model was scored
SCORED = ("ok", CHECKPOINT_SCORED)
UNSCORABLE = "unscorable"  # the run ended well, but the evaluation finds no score for its model (the reason says why)
STATUSES = (*SCORED, "crash", "hang", "timeout", "nan", "memory", "disk", "processes", "no model", "unloadable")
# Ended from outside, not by the entrant (a Slurm job cancelled, or lost with its wrapper or node):
# never served from the cache, so the next `unlearn compete` runs it again.
CANCELLED, LOST = "cancelled", "lost"
STATUSES += ("pickle", "environment", UNSCORABLE, CANCELLED, LOST)
# -- the leaderboard ----------------------------------------------------------------------------

_COLUMNS = (
    "rank",
    "team",
    "entrant",
    "kind",
    "final_score",
    "task_aggregate",
    "mia_score",
    "utility",
    "gate",
    "wall_time_s",
    "peak_memory_mb",
    "status",
    "reason",
)


def rank(
    results: list[dict[str, Any]], direction: str = "higher", target: float | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every entrant in order (valid first: scored and gate passed, by final score, which is better
    ``higher``, ``lower`` or nearer ``zero``), with ranks for the valid ones, equal scores sharing a
    rank (1, 1, 3); and each team's best entry (its best valid one, else its best other), ranked
    the same way. A scored row whose final score equals the ``target``'s says so in its reason."""

    def worse(score: float | None) -> float:
        if score is None:
            return float("inf")
        return -score if direction == "higher" else score if direction == "lower" else abs(score)

    def valid(r: dict[str, Any]) -> bool:
        return r["status"] in SCORED and r.get("gate") is not False

    def order(r: dict[str, Any]) -> tuple:
        return (not valid(r), r["status"] not in SCORED, worse(r.get("final_score")), r["name"])

    rows, valids = [], []
    for r in sorted(results, key=order):
        reason = r.get("reason") or ""
        if target is not None and r["status"] in SCORED and r.get("final_score") == target:
            reason = "; ".join(x for x in (reason, "final score equals the target's") if x)
        valids.append(valid(r))
        rows.append(
            {
                "rank": None,
                "team": r["team"],
                "entrant": r["name"],
                "kind": r["kind"],
                **{k: r.get(k) for k in _COLUMNS[4:]},
                "reason": reason,
                **(r.get("scores") or {}),
            }
        )
    teams: dict[str, int] = {}  # each team's first row: its best (rows are best first)
    for n, row in enumerate(rows):
        teams.setdefault(row["team"], n)
    best = [dict(rows[n]) for n in teams.values()]
    _rank(rows, valids)
    _rank(best, [valids[n] for n in teams.values()])
    return rows, best


def _rank(rows: list[dict[str, Any]], valid: list[bool]) -> None:
    """Competition ranking of the valid rows (already best first): a row with the same final score
    as the valid row before it shares its rank (1, 1, 3)."""
    previous: dict[str, Any] | None = None
    for n, row in enumerate(r for r, ok in zip(rows, valid) if ok):
        tie = previous is not None and row["final_score"] == previous["final_score"]
        row["rank"], previous = previous["rank"] if tie else n + 1, row


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key == "gate":
        return "pass" if value else "FAIL"
    if isinstance(value, (int, float)) and key != "rank":
        if key in ("wall_time_s", "peak_memory_mb"):
            return f"{value:.0f}"
        return f"{value:.3f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"  # p-values run tiny
    return str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    lines = [head, "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c), c).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines)


def write_leaderboard(
    comp: Competition, results: list[dict[str, Any]], before: dict[str, Any], isolation: str, out: Path
) -> Path:
    """``leaderboard.md``, ``.csv``, ``.json`` and ``.png`` in ``out``; no data text is ever written.
    LUME ranks by the official final score; another benchmark by the first of its headline numbers,
    in its direction, with those as columns. Both behind the utility gate (LUME's utility, or the
    benchmark's declared ``utility`` number; none if it declares none)."""
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES if any(r["status"] == s for r in results)}
    facts: dict[str, Any] = {
        "competition": comp.name,
        "benchmark": comp.benchmark,
        "target": str(comp.model),
        "entrants": len(results),
        "statuses": counts,
        "time_limit_s": comp.time_limit_s,
        "launcher": f"{comp.launcher} x{comp.nproc}",
        "isolation": isolation,
    }
    limits = f"{len(results)} entrants; limit {comp.time_limit_s:g} s each ({comp.launcher} x{comp.nproc}); "
    if comp.benchmark == "lume":
        rows, teams = rank(results, target=before.get("aggregate-score"))
        baseline = {
            "final_score": before.get("aggregate-score"),
            "task_aggregate": before.get("harmonic-mean-task-aggregate"),
            "mia_score": before.get("mia_final_score"),
            "utility": before.get("mmlu_average"),
        }
        columns = _COLUMNS
        team_cols = ("rank", "team", "entrant", "final_score", "task_aggregate", "mia_score", "utility", "gate")
        facts |= {"ranked_by": "final_score", "utility_gate": f"{comp.gate:g} x target utility {baseline['utility']}"}
        intro = (
            f"Target `{Path(comp.model).name}`: final score {_cell(baseline['final_score'], '')}, task aggregate "
            f"{_cell(baseline['task_aggregate'], '')}, MIA score {_cell(baseline['mia_score'], '')}, "
            f"utility {_cell(baseline['utility'], '')}. {limits}isolation: {isolation}; "
            f"utility gate: {comp.gate:g} x the target's."
        )
        teams_title = "each team's best valid entry"
    else:
        from unlearn.engine import get_host

        bench = get_host().benchmark(comp.benchmark)
        headline, utility = bench.headline, getattr(bench, "utility", None)
        first = next(iter(headline))
        rows, teams = rank(results, direction=headline[first])
        baseline = {k: before.get(k) for k in headline}
        gate = ("gate",) if utility else ()
        columns = ("rank", "team", "entrant", "kind", *headline, *gate, "wall_time_s", "peak_memory_mb")
        columns += ("status", "reason")
        team_cols = ("rank", "team", "entrant", *headline, *gate)
        facts["ranked_by"] = first
        shown = ", ".join(f"{k} {_cell(v, k)} ({headline[k]} is better)" for k, v in baseline.items())
        gated = f"; utility gate: {utility} at least {comp.gate:g} x the target's" if utility else ""
        if utility:
            facts["utility_gate"] = f"{comp.gate:g} x target {utility} {baseline[utility]}"
        intro = (
            f"Benchmark {comp.benchmark}, ranked by {first}. Target `{Path(comp.model).name}`: {shown}. "
            f"{limits}isolation: {isolation}{gated}."
        )
        teams_title = "each team's best valid entry" if utility else "each team's best entry"
    md = [
        f"# Leaderboard: {comp.name}",
        "",
        intro,
        "",
        f"## Teams ({teams_title})",
        "",
        _table(teams, (*team_cols, "status")),
        "",
        "## Every entrant",
        "",
        _table(rows, columns),
        "",
    ]
    write_text(out / "leaderboard.md", "\n".join(md))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*columns, "team_best"], extrasaction="ignore")
    writer.writeheader()
    best = {(t["team"], t["entrant"]) for t in teams}
    for row in rows:
        writer.writerow({**row, "team_best": (row["team"], row["entrant"]) in best})
    write_text(out / "leaderboard.csv", buffer.getvalue())
    write_json(out / "leaderboard.json", {**facts, "baseline": baseline, "teams": teams, "entrants": rows})
    if comp.benchmark == "lume":
        _figure(out / "leaderboard.png", rows, baseline, comp.name)
    else:
        _headline_figure(out / "leaderboard.png", rows, baseline, facts["ranked_by"], comp)
    return out


def _headline_figure(
    path: Path, rows: list[dict[str, Any]], baseline: dict[str, Any], first: str, comp: Competition
) -> None:
    """Another benchmark's leaderboard as bars of the number it is ranked by, the target's marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, bars = plt.subplots(figsize=(7, max(3.0, 0.3 * len(rows) + 1.5)))
    names = [r["entrant"] for r in rows][::-1]
    values = [r.get(first) or 0.0 for r in rows][::-1]
    colours = ["tab:green" if r["rank"] else "tab:orange" if r["status"] in SCORED else "tab:gray" for r in rows][::-1]
    bars.barh(names, values, color=colours)
    for y, r in enumerate(rows[::-1]):
        if r["status"] not in SCORED:
            bars.text(0.0, y, f" {r['status']}", va="center", fontsize=8)
    if baseline.get(first) is not None:
        bars.axvline(baseline[first], color="black", linestyle="--", linewidth=1, label="target")
        bars.legend(loc="lower right", fontsize=8)
    bars.set_xlabel(f"{first} (green: ranked, orange: scored, not ranked, grey: no score)")
    bars.set_title(f"{comp.name} ({comp.benchmark})")
    _save(fig, path, dpi=110)


def _figure(path: Path, rows: list[dict[str, Any]], target: dict[str, Any], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["status"] in SCORED]
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.3 * len(rows) + 1.5)))
    names = [r["entrant"] for r in rows][::-1]
    values = [r["final_score"] or 0.0 for r in rows][::-1]
    colours = ["tab:green" if r["rank"] else "tab:orange" if r["status"] in SCORED else "tab:gray" for r in rows][::-1]
    bars.barh(names, values, color=colours)
    for y, r in enumerate(rows[::-1]):
        if r["status"] not in SCORED:
            bars.text(0.01, y, r["status"], va="center", fontsize=8)
    if target["final_score"] is not None:
        bars.axvline(target["final_score"], color="black", linestyle="--", linewidth=1, label="target")
        bars.legend(loc="lower right", fontsize=8)
    bars.set_xlabel("final score (green: ranked, orange: failed the utility gate, grey: no score)")
    bars.set_xlim(0, 1)
    for r in scored:
        scatter.scatter(r["task_aggregate"], r["mia_score"] or 0.0, color="tab:green" if r["rank"] else "tab:orange")
        scatter.annotate(
            r["entrant"],
            (r["task_aggregate"], r["mia_score"] or 0.0),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if target["task_aggregate"] is not None:
        scatter.scatter(target["task_aggregate"], target["mia_score"] or 0.0, marker="x", color="black", label="target")
        scatter.legend(loc="lower right", fontsize=8)
    scatter.set_xlabel("task aggregate")
    scatter.set_ylabel("MIA score")
    scatter.set_xlim(-0.02, 1.02)
    scatter.set_ylim(-0.02, 1.02)
    fig.suptitle(title)
    _save(fig, path, dpi=120)


def _save(fig: Any, path: Path, dpi: int) -> None:
    """Lay out, write beside ``path`` and rename over it (a reader never sees half a PNG), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
