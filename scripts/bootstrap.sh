#!/usr/bin/env bash
# Creates .venv (once) with envsnap installed editable, the development tools, and the example
# project's requirements (the demo and the integration tests train it).
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$repo/.venv/bin/python" ]; then
    echo "==> creating .venv with $($python --version)"
    "$python" -m venv "$repo/.venv"
fi
stamp="$repo/.venv/.envsnap-installed"
requirements="$repo/examples/train-logreg/requirements.txt"
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
    echo "==> installing envsnap, its development tools and the example's requirements into .venv"
    "$repo/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$repo[dev]" -r "$requirements"
    touch "$stamp"
fi
