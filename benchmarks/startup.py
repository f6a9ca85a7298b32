"""How long a command takes to start, and what it imports: ``import torch`` against ``import
unlearn``, ``from unlearn import *``, ``unlearn --help`` and ``unlearn plugins``, each run
``--repeats`` times in a fresh interpreter (median wall seconds), with the heavy packages each one
loaded; the two commands with the CLI's plugin cache off (as on the first command after a plugin
is installed or changed) and on. Prints a Markdown table.

    .venv/bin/python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "transformers", "transformers.trainer", "peft", "deepspeed", "datasets")
# Each case runs its code and then prints which heavy packages are in sys.modules.
REPORT = "import sys; print('loaded:' + ','.join(m for m in {heavy!r} if m in sys.modules))"
CLI = (
    "import sys; sys.argv = ['unlearn', *{args!r}]; from unlearn.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
)
# name -> (code, environment); the CLI's plugin cache is off ("cold": every plugin imported, as on
# the first command after an install) or warmed by one run before timing.
CASES = {
    "python -c 'import torch'": ("import torch\n", {}),
    "import unlearn": ("import unlearn\n", {}),
    "from unlearn import * (a plugin's imports)": ("from unlearn import *\n", {}),
    "unlearn --help, plugin cache cold": (CLI.format(args=["--help"]), {"UNLEARN_PLUGIN_CACHE": "0"}),
    "unlearn --help": (CLI.format(args=["--help"]), {}),
    "unlearn plugins, plugin cache cold": (CLI.format(args=["plugins"]), {"UNLEARN_PLUGIN_CACHE": "0"}),
    "unlearn plugins": (CLI.format(args=["plugins"]), {}),
    "unlearn plugins --available": (CLI.format(args=["plugins", "--available"]), {}),
}


def measure(code: str, env: dict[str, str], repeats: int) -> tuple[float, str]:
    """Median wall seconds of ``code`` in a fresh interpreter, and the heavy packages it loaded
    (after one untimed run, which warms the plugin cache where it is on)."""
    times, loaded = [], ""
    for i in range(repeats + 1):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code + REPORT.format(heavy=HEAVY)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
        if i:
            times.append(time.perf_counter() - start)
        loaded = next(line for line in done.stdout.splitlines() if line.startswith("loaded:"))[len("loaded:") :]
    return statistics.median(times), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"Startup, median of {args.repeats} fresh interpreters (`benchmarks/startup.py --repeats {args.repeats}`):\n")
    print("| command | seconds | heavy packages loaded |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="unlearn-startup-") as cache:
        os.environ["UNLEARN_CACHE_DIR"] = cache  # not the user's plugin cache
        for name, (code, env) in CASES.items():
            seconds, loaded = measure(code, env, args.repeats)
            print(f"| {name} | {seconds:.2f} | {loaded.replace(',', ', ') or 'none'} |")


if __name__ == "__main__":
    main()
