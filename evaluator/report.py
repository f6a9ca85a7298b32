"""Results the way people read them: a Markdown summary and a figure of forget vs retain
regurgitation and knowledge per task (like Figure 1 of the task paper), before/after when a
baseline evaluation is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK_KEYS = ("regurgitation-score", "knowledge-score")


def _tasks(results: dict[str, Any]) -> list[str]:
    return sorted(k for k in results["forget-set"] if not k.startswith("overall"))


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def summary_markdown(
    results: dict[str, Any], before: dict[str, Any] | None = None, oracle: dict[str, Any] | None = None
) -> str:
    """A Markdown report; with ``before``, each value is shown as before -> after; with ``oracle``
    (the evaluation of the model retrained without the forget set) the scores gain its column and
    the gap to it."""

    def cell(get) -> str:
        now = get(results)
        if before is None:
            return _fmt(now)
        try:
            return f"{_fmt(get(before))} -> {_fmt(now)}"
        except (KeyError, TypeError):
            return _fmt(now)

    lines = ["# Unlearning evaluation (SemEval-2025 Task 4 scoring)", ""]
    lines += [
        "| task | forget regurgitation | forget knowledge | retain regurgitation | retain knowledge |",
        "| --- | --- | --- | --- | --- |",
    ]
    for task in _tasks(results):
        cells = [cell(lambda r, s=s, k=k, t=task: r[s][t][k]) for s in ("forget-set", "retain-set") for k in TASK_KEYS]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Forget values should fall, retain values stay. Higher is better below.",
        "",
        "| score | value | oracle | gap to oracle |" if oracle else "| score | value |",
        "| --- | --- | --- | --- |" if oracle else "| --- | --- |",
    ]
    rows = [
        ("task aggregate (harmonic mean of 12)", lambda r: r["harmonic-mean-task-aggregate"]),
        ("MIA LOSS AUC (0.5 is ideal)", lambda r: r.get("mia_loss_acc")),
        ("MIA score 1 - 2|AUC - 0.5|", lambda r: r.get("mia_final_score")),
        (f"utility ({results.get('utility_source') or 'none'})", lambda r: r.get("mmlu_average")),
        ("final score", lambda r: None if r["aggregate-score"] == -1 else r["aggregate-score"]),
    ]
    for name, get in rows:
        if oracle is None:
            lines.append(f"| {name} | {cell(get)} |")
            continue
        now, ideal = get(results), get(oracle)
        gap = now - ideal if isinstance(now, int | float) and isinstance(ideal, int | float) else None
        lines.append(f"| {name} | {cell(get)} | {_fmt(ideal)} | {'-' if gap is None else f'{gap:+.3f}'} |")
    gate = results.get("utility_gate")
    if gate:
        verdict = {True: "pass", False: "FAIL", None: "unknown"}[gate["pass"]]
        lines += ["", f"Utility gate (>= 75% of the baseline's {_fmt(gate.get('baseline_utility'))}): **{verdict}**"]
    fixed = results.get("official_mmlu_threshold")
    if fixed:
        lines += [
            "",
            f"Organisers' fixed MMLU threshold ({fixed['threshold']}, 75% of their 7B target's): "
            + ("pass" if fixed["pass"] else f"below. They printed: {fixed['warning']}"),
        ]
    if results.get("official"):
        lines += ["", "Official mode: the organisers' run, reproduced; their file is `evaluation_results.jsonl`."]
    if results.get("mia_attacks_auc"):
        lines += [
            "",
            "Other membership-inference attacks (AUC, not in the final score): "
            + ", ".join(f"{k} {v:.3f}" for k, v in results["mia_attacks_auc"].items()),
        ]
    relearn = results.get("relearn")
    if relearn:
        judge = f"NLI judge {relearn['nli']}" if relearn.get("nli") else "entities only, no NLI judge"
        lines += [
            "",
            f"ReLearn's metrics ({judge}; forget F, retain R):",
            "",
            "| KFR | KRR | PPL F | PPL R | Brunet F | Brunet R | Honore F | Honore R | LS F | LS R |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            "| "
            + " | ".join(_fmt(relearn.get(k)) for k in ("KFR", "KRR", "PPL_F", "PPL_R", "BI_F", "BI_R", "HS_F", "HS_R"))
            + f" | {_fmt(relearn.get('LS_F'))} | {_fmt(relearn.get('LS_R'))} |",
        ]
    return "\n".join(lines) + "\n"


def write_figure(path: Path, results: dict[str, Any], before: dict[str, Any] | None = None) -> None:
    """Bars of forget and retain regurgitation and knowledge per task (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = _tasks(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    series = [(results, "after" if before else "", 1.0)]
    if before is not None:
        series.insert(0, (before, "before", 0.45))
    width = 0.8 / (2 * len(series))
    for ax, key in zip(axes, TASK_KEYS):
        slot = 0
        for data, label, alpha in series:
            for split, colour in (("forget-set", "tab:red"), ("retain-set", "tab:blue")):
                xs = [i - 0.4 + width * (slot + 0.5) for i in range(len(tasks))]
                values = [data[split].get(t, {}).get(key, 0.0) for t in tasks]
                name = f"{split.split('-')[0]} {label}".strip()
                ax.bar(xs, values, width, color=colour, alpha=alpha, label=name)
                slot += 1
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_ylim(0, 1.3)
        ax.set_title(key.replace("-score", "").title())
    axes[0].set_ylabel("score")
    axes[1].legend(loc="upper center", fontsize=8, ncol=len(series) * 2)
    fig.suptitle("Forget vs retain per task" + (" (before and after unlearning)" if before else ""))
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
