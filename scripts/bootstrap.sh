#!/usr/bin/env bash
# Creates .venv (once) with envsnap installed editable and the development tools.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$repo/.venv/bin/python" ]; then
    echo "==> creating .venv with $($python --version)"
    "$python" -m venv "$repo/.venv"
fi
stamp="$repo/.venv/.envsnap-installed"
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    echo "==> installing envsnap and its development tools into .venv"
    "$repo/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo[dev]"
    touch "$stamp"
fi
