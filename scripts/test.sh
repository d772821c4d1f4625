#!/usr/bin/env bash
# The whole test suite: lint, format check, strict typing, unit and integration tests.
# On a fresh machine this is the only command needed; CI runs it through .ci/run.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/bootstrap.sh
venv="$repo/.venv/bin"

echo "==> ruff check"
"$venv/ruff" check envsnap tests benchmarks examples scripts
echo "==> ruff format --check"
"$venv/ruff" format --check envsnap tests benchmarks examples scripts
echo "==> actionlint"
"$venv/actionlint" .github/workflows/*.yml
echo "==> mypy (strict)"
"$venv/mypy"
echo "==> pytest"
"$venv/pytest" tests "$@"
