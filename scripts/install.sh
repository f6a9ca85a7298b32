#!/usr/bin/env bash
# Install unlearn from this checkout into ./.venv: torch first (a bare `torch` requirement would
# pull a multi-GB CUDA build), then the core with its test extras and every plugin in plugins/.
# TORCH_SPEC overrides the torch requirement (e.g. TORCH_SPEC="torch" on a CUDA machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" install "${TORCH_SPEC:-torch==2.13.0}"
plugins=()
for p in plugins/*/pyproject.toml; do plugins+=(-e "$(dirname "$p")"); done
"${PIP[@]}" install -e ".[test]" "${plugins[@]}"
.venv/bin/unlearn plugins
