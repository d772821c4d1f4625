#!/usr/bin/env bash
# The whole test suite: lint, format check, strict typing, unit and integration tests (the latter
# on a real docker engine with a real local registry, brought up by scripts/docker-env.sh, which
# installs and starts what is missing and fails loudly when it cannot).
# The integration tests run envsnap installed from its wheel into a fresh venv, as users get it.
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
echo "==> envsnap as users install it: a wheel of this repository in a fresh venv"
# With the tracker extras: the MLflow plugin and `envsnap export` are tested as users install them.
ENVSNAP_TEST_WHEEL="$(bash scripts/install-wheel.sh "$repo/.venv-wheel" "$repo/dist" mlflow,wandb)"
export ENVSNAP_TEST_WHEEL ENVSNAP_TEST_PYTHON="$repo/.venv-wheel/bin/python"
echo "==> docker engine, registry and test base images"
bash scripts/docker-env.sh
echo "==> host B: a second docker engine in its own namespaces, fed by the registry"
ENVSNAP_HOST_B="$(bash scripts/host-b.sh | sed -n 's/^ENVSNAP_HOST_B=//p')"
export ENVSNAP_HOST_B
echo "==> a one-node Slurm cluster (Debian's slurm-wlm and munge; its node runs host A's engine)"
bash scripts/slurm.sh
echo "==> headless Chromium for the HTML report's test"
ENVSNAP_CHROMIUM="$(bash scripts/chromium.sh | sed -n 's/^ENVSNAP_CHROMIUM=//p')"
export ENVSNAP_CHROMIUM
echo "==> MLflow tracking server (SQLite backend, local artifact store) for the integration tests"
mlflow_dir="$(mktemp -d "${TMPDIR:-/tmp}/envsnap-mlflow.XXXXXX")"
trap 'kill -- -"$(cat "$mlflow_dir/server.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$mlflow_dir"' EXIT
MLFLOW_TEST_TRACKING_URI="$(bash scripts/mlflow-server.sh "$mlflow_dir")"
export MLFLOW_TEST_TRACKING_URI
echo "==> pytest"
"$venv/pytest" tests "$@"
