"""Benchmark: two entrants one after the other against the same two at once (`unlearn compete`'s
``local`` engine, each entrant pinned to half the cores with one torch thread per core).

    python benchmarks/compete_engines.py                     # on runs/bench (methods.py builds it)
    python benchmarks/compete_engines.py --entrants gd,npo --epochs 8

Both competitions train the same plugin entrants on the benchmark's target and rows and score
them the same way; the table gives the time during which runs were in progress (the organiser's
evaluations excluded), each entrant's own time, and its final score. Two torch processes with
two threads each on two cores run several times slower than with one thread each (OpenMP
oversubscription), so the parallel engine gives each its cores and a matching thread count.
Single run per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from unlearn.compete import load_competition, run_competition

ROOT = Path(__file__).resolve().parents[1]


def busy(out: Path, names: list[str]) -> float:
    """Seconds during which at least one entrant's run was in progress (each run: its wall time,
    ended at its log's last write), the organiser's evaluations between runs excluded."""
    runs = []
    for name in names:
        end = (out / "entrants" / name / "log.txt").stat().st_mtime
        runs.append((end - json.loads((out / "entrants" / name / "result.json").read_text())["wall_time_s"], end))
    total, reach = 0.0, float("-inf")
    for start, end in sorted(runs):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, default=ROOT / "runs" / "bench", help="Holds data/ and target/.")
    parser.add_argument("--entrants", default="gd,npo")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "compete_engines")
    args = parser.parse_args()
    data = args.bench / "data"
    rows = []
    for engine in ("sequential", "local"):
        folder = args.out / engine
        folder.mkdir(parents=True, exist_ok=True)
        spec = {
            "name": f"engines-{engine}",
            "model": str(args.bench / "target"),
            "forget": str(data / "forget_train.jsonl"),
            "retain": str(data / "retain_train.jsonl"),
            "mia": str(data),
            "utility": str(data / "utility.jsonl"),
            "output_dir": str(folder / "out"),
            "time_limit_s": 3600,
            "entrant_devices": "cpu",
            "engine": engine,
            "parallel": 2,
            "trainer": {"epochs": args.epochs, "learning_rate": 3e-4, "batch_size": 4},
            "entrants": args.entrants.split(","),
        }
        (folder / "competition.json").write_text(json.dumps(spec))
        started = time.time()
        out = run_competition(load_competition(folder / "competition.json"), rerun=spec["entrants"], say=print)
        total = time.time() - started
        board = json.loads((out / "leaderboard.json").read_text())
        results = {n: json.loads((out / "entrants" / n / "result.json").read_text()) for n in spec["entrants"]}
        span = busy(out, list(results))
        for row in board["entrants"]:
            rows.append(
                {
                    "engine": engine,
                    "entrant": row["entrant"],
                    "entrant_s": row["wall_time_s"],
                    "runs_s": round(span, 1),
                    "competition_s": round(total, 1),
                    "final_score": row["final_score"],
                    "status": row["status"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{len(os.sched_getaffinity(0))} cores; {args.entrants}, {args.epochs} epochs each; single run per cell\n")
    print("| engine | entrant | entrant's run s | runs in progress s | whole competition s | final score | status |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['engine']} | {r['entrant']} | {r['entrant_s']:.0f} | {r['runs_s']:.0f} | {r['competition_s']:.0f} "
            f"| {r['final_score']:.3f} | {r['status']} |"
        )


if __name__ == "__main__":
    main()
