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

_RUN = ("wall_time_s", "peak_memory_mb", "status", "reason")  # every leaderboard's last columns


def rank(
    results: list[dict[str, Any]],
    direction: str = "higher",
    target: float | None = None,
    columns: tuple[str, ...] = ("final_score", "utility"),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every entrant in order (valid first: scored and gate passed, by final score, which is better
    ``higher``, ``lower`` or nearer ``zero``), with ranks for the valid ones, equal scores sharing a
    rank (1, 1, 3); and each team's best entry (its best valid one, else its best other), ranked
    the same way. A scored row whose final score equals the ``target``'s says so in its reason.
    Each row holds the results' ``columns`` (and ``final_score``), the gate and the run's facts."""

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
                **{k: r.get(k) for k in ("final_score", *columns, "gate", *_RUN)},
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
    Every benchmark alike: its columns (``unlearn.Benchmark.columns``, default its headline numbers;
    LUME's final score, task aggregate, MIA score, utility), ranked by the first in its direction,
    behind the utility gate (the benchmark's ``utility`` number; none if it declares none)."""
    from unlearn.engine import benchmarks, get_host

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
    bench = get_host().benchmark(comp.benchmark)
    named = benchmarks.columns(bench)  # column -> results key; the first ranks
    first, key, direction = benchmarks.ranked_by(bench)
    utility = getattr(bench, "utility", None)
    utility_column = next((c for c, k in named.items() if k == utility), "utility") if utility else None
    shown = (*named, *([utility_column] if utility_column and utility_column not in named else []))
    rows, teams = rank(results, direction=direction, target=before.get(key), columns=shown)
    baseline = {c: before.get(named.get(c, utility)) for c in shown}
    gate = ("gate",) if utility else ()
    columns = ("rank", "team", "entrant", "kind", *shown, *gate, *_RUN)
    team_cols = ("rank", "team", "entrant", *shown, *gate)
    facts["ranked_by"] = first
    target = ", ".join(
        f"{c.replace('_', ' ')} {_cell(v, c)} ({bench.headline[named.get(c, utility)]} is better)"
        for c, v in baseline.items()
    )
    gated = f"; utility gate: {utility_column} at least {comp.gate:g} x the target's" if utility else ""
    if utility:
        facts["utility_gate"] = f"{comp.gate:g} x target {utility_column} {baseline[utility_column]}"
    intro = (
        f"Benchmark {comp.benchmark}, ranked by {first}. Target `{Path(comp.model).name}`: {target}. "
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
    _figure(out / "leaderboard.png", rows, baseline, shown, comp)
    return out


def _figure(path: Path, rows: list[dict[str, Any]], target: dict[str, Any], shown: tuple[str, ...], comp: Any) -> None:
    """Bars of the number entrants are ranked by (the target's marked) and, where the benchmark
    has two more columns, the scored entrants on them (LUME: task aggregate against MIA score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, pair = shown[0], shown[1:3] if len(shown) >= 3 else None
    height = max(3.5, 0.3 * len(rows) + 1.5)
    fig, axes = plt.subplots(1, 2 if pair else 1, figsize=(12 if pair else 7, height), squeeze=False)
    bars = axes[0][0]
    names = [r["entrant"] for r in rows][::-1]
    values = [r.get(first) or 0.0 for r in rows][::-1]
    colours = ["tab:green" if r["rank"] else "tab:orange" if r["status"] in SCORED else "tab:gray" for r in rows][::-1]
    bars.barh(names, values, color=colours)
    for y, r in enumerate(rows[::-1]):
        if r["status"] not in SCORED:
            bars.text(0.0, y, f" {r['status']}", va="center", fontsize=8)
    if target.get(first) is not None:
        bars.axvline(target[first], color="black", linestyle="--", linewidth=1, label="target")
        bars.legend(loc="lower right", fontsize=8)
    bars.set_xlabel(f"{first.replace('_', ' ')} (green: ranked, orange: scored, not ranked, grey: no score)")
    if pair:
        _scatter(axes[0][1], [r for r in rows if r["status"] in SCORED], target, pair)
    fig.suptitle(f"{comp.name} ({comp.benchmark})")
    _save(fig, path, dpi=110)


def _scatter(axis: Any, scored: list[dict[str, Any]], target: dict[str, Any], pair: tuple[str, ...]) -> None:
    x, y = pair
    for r in scored:
        point = (r.get(x) or 0.0, r.get(y) or 0.0)
        axis.scatter(*point, color="tab:green" if r["rank"] else "tab:orange")
        axis.annotate(r["entrant"], point, fontsize=7, xytext=(3, 3), textcoords="offset points")
    if target.get(x) is not None:
        axis.scatter(target[x], target.get(y) or 0.0, marker="x", color="black", label="target")
        axis.legend(loc="lower right", fontsize=8)
    axis.set_xlabel(x.replace("_", " "))
    axis.set_ylabel(y.replace("_", " "))


def _save(fig: Any, path: Path, dpi: int) -> None:
    """Lay out, write beside ``path`` and rename over it (a reader never sees half a PNG), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
