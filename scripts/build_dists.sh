#!/usr/bin/env bash
# Build the wheel and sdist of the core and of every plugin into dist/, as users meet them, and
# check their metadata. Uses the build tools installed in .venv (no network for build isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist
for project in . plugins/*/; do
    .venv/bin/python -m build --no-isolation --sdist --wheel --outdir dist "$project" > /dev/null
done
.venv/bin/python -m twine check --strict dist/*
