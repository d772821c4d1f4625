#!/usr/bin/env bash
# The main job, end to end on the example project: capture a training run, show it, capture an
# identical run and diff (no drift), change the data, capture again and diff (drift).
# Everything happens in a scratch git repository (default .demo/, or $ENVSNAP_DEMO_DIR).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/bootstrap.sh"
venv="$repo/.venv/bin"

work="${ENVSNAP_DEMO_DIR:-$repo/.demo}"
rm -rf "$work"
mkdir -p "$work"
cp -R "$repo/examples/train-logreg/." "$work/"
cd "$work"
printf 'outputs/\nmetrics.json\n.envsnap/\ncapture.log\n' > .gitignore
git init --quiet --initial-branch=main
git add -A
git -c user.name=envsnap-demo -c user.email=demo@envsnap.invalid commit --quiet -m "example project"

export PATH="$venv:$PATH"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
train=(--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy'
       --metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs)

step envsnap capture --name baseline "${train[@]}"
envsnap capture --name baseline "${train[@]}" | tee capture.log   # the run id comes first
baseline=$(head -n 1 capture.log)
step envsnap show "$baseline"
envsnap show "$baseline"

step envsnap capture --name again "${train[@]}"
envsnap capture --name again "${train[@]}" >/dev/null
step envsnap diff "$baseline" latest "   # same environment, same data: exit 0"
envsnap diff "$baseline" latest
echo "exit code: $?"

step "change one value of the training data, capture again"
sed -i '2s/^-0\.085520/0.914480/' data/train.csv
envsnap capture --name changed-data "${train[@]}" >/dev/null
step envsnap diff "$baseline" latest "   # data and metrics drifted: exit 1"
set +e
envsnap diff "$baseline" latest
code=$?
set -e
echo "exit code: $code"
step envsnap list
envsnap list
if [ "$code" -ne 1 ]; then
    echo "demo: expected drift (exit 1) after changing the data, got $code" >&2
    exit 1
fi
echo
echo "demo finished: the runs are in $work/.envsnap/runs"
