"""How long a command takes to start, and what it imports: ``import torch`` against ``import
unlearn``, ``from unlearn import *``, ``unlearn --help`` and ``unlearn plugins``, each run
``--repeats`` times in a fresh interpreter (median wall seconds), with the heavy packages each one
loaded. Prints a Markdown table.

    .venv/bin/python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "transformers.trainer", "peft", "deepspeed", "datasets")
# Each case runs its code and then prints which heavy packages are in sys.modules.
REPORT = "import sys; print(','.join(m for m in {heavy!r} if m in sys.modules))"
CLI = (
    "import sys; sys.argv = ['unlearn', *{args!r}]; from unlearn.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
)
CASES = {
    "python -c 'import torch'": "import torch\n",
    "import unlearn": "import unlearn\n",
    "from unlearn import * (a plugin's imports)": "from unlearn import *\n",
    "unlearn --help": CLI.format(args=["--help"]),
    "unlearn plugins": CLI.format(args=["plugins"]),
}


def measure(code: str, repeats: int) -> tuple[float, str]:
    """Median wall seconds of ``code`` in a fresh interpreter, and the heavy packages it loaded."""
    times, loaded = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code + REPORT.format(heavy=HEAVY)], capture_output=True, text=True, check=True
        )
        times.append(time.perf_counter() - start)
        loaded = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return statistics.median(times), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"Startup, median of {args.repeats} fresh interpreters (`benchmarks/startup.py --repeats {args.repeats}`):\n")
    print("| command | seconds | heavy packages loaded |")
    print("| --- | --- | --- |")
    for name, code in CASES.items():
        seconds, loaded = measure(code, args.repeats)
        print(f"| {name} | {seconds:.2f} | {loaded.replace(',', ', ') or 'none'} |")


if __name__ == "__main__":
    main()
