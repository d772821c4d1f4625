#!/usr/bin/env bash
# Builds the benchmark venv (benchmarks/.work/venv) once: a typical ML stack of ~120
# distributions (torch CPU, numpy, scipy, pandas, scikit-learn, wandb, mlflow, ...) plus uv,
# with envsnap installed from this checkout. Rerunning is cheap (seconds): an existing venv is
# reused and only envsnap is reinstalled. Set BENCH_FRESH=1 to rebuild from scratch.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
work="$here/.work"
venv="$work/venv"
python="${PYTHON:-python3}"

if [[ "${BENCH_FRESH:-0}" == "1" ]]; then
    rm -rf "$venv"
fi

mkdir -p "$work"
if [[ ! -x "$venv/bin/python" || ! -f "$venv/.stack-installed" ]]; then
    "$python" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --disable-pip-version-check --quiet)
    "${pip[@]}" --upgrade pip
    # torch first and pinned for every later step, so nothing can pull a newer (or CUDA) build.
    constraints="$work/constraints.txt"
    echo "torch==2.13.0" >"$constraints"
    "${pip[@]}" "torch==2.13.0"
    "${pip[@]}" -c "$constraints" \
        numpy scipy pandas scikit-learn wandb mlflow \
        matplotlib tqdm rich pyarrow tensorboard \
        uv
    touch "$venv/.stack-installed"
fi

# envsnap as a user installs it (not editable: setuptools' editable finder would add an import
# to every interpreter start), rebuilt from the working tree on every run; pip always reinstalls
# a project given as a directory.
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -c "$work/constraints.txt" \
    "$repo"

count="$("$venv/bin/python" -m pip list --format=freeze --disable-pip-version-check | wc -l)"
echo "benchmark venv ready: $venv ($count distributions)"
