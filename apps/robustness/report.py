"""The attack report: ``report.md`` (per attack and variant, the knowledge numbers under attack
and the recovery; the robust headline numbers) and ``recovery.png`` (recovery per attack, the
unlearned model beside the oracle, and the relearning curve where an attack has steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn import write_text


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(results: dict[str, Any], headline: dict[str, str]) -> str:
    """The report as Markdown."""
    lines = [
        f"# Attacks on {results['model']}",
        "",
        f"Benchmark `{results['benchmark']}`, target `{results['target']}`, oracle `{results['reference'] or '-'}`, "
        f"seed {results['seed']}. Recovery = (attacked - unlearned) / (target - unlearned), clipped to [0, 1], "
        "per number that shows what the model knows of the forget set; a variant's is their mean, an "
        "attack's the worst over its variants.",
        "",
        "| attack | recovery (unlearned) | recovery (oracle) | note |",
        "| --- | --- | --- | --- |",
    ]
    oracle = results.get("oracle") or {}
    for name, found in results["unlearned"].items():
        note = found.get("skipped") or found.get("failed") or ""
        floor = oracle.get(name, {}).get("recovery")
        lines.append(f"| {name} | {_fmt(found.get('recovery'))} | {_fmt(floor)} | {note} |")
    robust = results["robust"]
    lines += ["", "## Robust numbers (worst over the surface and every attack)", ""]
    lines += ["| number | better | surface | robust |", "| --- | --- | --- | --- |"]
    for key, direction in headline.items():
        lines.append(f"| {key} | {direction} | {_fmt(robust['surface'].get(key))} | {_fmt(robust.get(key))} |")
    lines.append(f"| worst recovery | lower | - | {_fmt(robust.get('recovery'))} |")
    for subject in ("unlearned", "oracle"):
        for name, found in (results.get(subject) or {}).items():
            if not found.get("variants"):
                continue
            keys = list(found["variants"][0]["knowledge"])
            lines += ["", f"## {name} on the {subject} model", ""]
            lines += [
                "| variant | " + " | ".join(f"{k} (unlearned -> attacked / target)" for k in keys) + " | recovery |"
            ]
            lines.append("| --- " * (len(keys) + 2) + "|")
            for row in found["variants"]:
                cells = [
                    f"{_fmt(n['unlearned'])} -> {_fmt(n['attacked'])} / {_fmt(n['target'])}"
                    for n in row["knowledge"].values()
                ]
                lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {_fmt(row['recovery'])} |")
    return "\n".join(lines) + "\n"


def write_report(folder: Path, results: dict[str, Any], bench: Any) -> None:
    """``report.md`` and ``recovery.png`` into ``folder``."""
    write_text(folder / "report.md", markdown(results, bench.headline))
    figure(results, folder / "recovery.png")


def figure(results: dict[str, Any], path: Path) -> None:
    """Recovery per attack (the unlearned model and the oracle), and recovery against the
    variant's ``x`` (relearning steps) for each attack whose variants have one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["unlearned"])
    curves = {
        n: f["variants"]
        for n, f in results["unlearned"].items()
        if any(v["x"] is not None for v in f.get("variants", []))
    }
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(10 if curves else 5, 3.5), squeeze=False)
    bars = axes[0][0]
    for offset, subject in ((-0.2, "unlearned"), (0.2, "oracle")):
        found = results.get(subject) or {}
        values = [(found.get(n) or {}).get("recovery") or 0.0 for n in names]
        bars.bar([i + offset for i in range(len(names))], values, width=0.4, label=subject)
    bars.set_xticks(range(len(names)), names)
    bars.set_ylim(0, 1)
    bars.set_ylabel("recovery (worst variant)")
    bars.legend()
    for name, variants in curves.items():
        points = [(v["x"], v["recovery"]) for v in variants if v["x"] is not None and v["recovery"] is not None]
        axes[0][1].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    if curves:
        axes[0][1].set_xlabel("steps")
        axes[0][1].set_ylabel("recovery")
        axes[0][1].set_ylim(0, 1)
        axes[0][1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
