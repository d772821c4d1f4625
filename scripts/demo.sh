#!/usr/bin/env bash
# The main job, end to end on the example project: capture a training run, build its image,
# rerun it there (reproduced: exit 0), change the training data and rerun again (drift: exit 1),
# and diff two captures on the host.
#
# Everything happens in a scratch git repository (default .demo/, or $ENVSNAP_DEMO_DIR) with the
# example's own virtual environment (numpy only); envsnap runs installed from its wheel into a
# fresh venv (.venv-wheel), apart from the experiment, as `pip install <repo>` leaves it. scripts/docker-env.sh brings up the docker engine, a local registry and a
# Debian-based Python image built from Debian packages (no image registry on the internet is
# needed); the demo uses that image as the base of the rebuilt environment. On a machine that
# reaches Docker Hub, leave ENVSNAP_BASE_IMAGE unset and envsnap picks python:<version>-slim.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/bootstrap.sh"
bash "$repo/scripts/install-wheel.sh" "$repo/.venv-wheel" "$repo/dist" >/dev/null
venv="$repo/.venv-wheel/bin"

echo "==> docker engine, local registry and the Debian test base image"
env_out="$(bash "$repo/scripts/docker-env.sh")"
docker_cli="$(sed -n 's/^ENVSNAP_DOCKER_CLI=\([^ ]*\).*/\1/p' <<<"$env_out")"
export ENVSNAP_DOCKER="${docker_cli:-docker}"
local_base="envsnap-test/python:3.11-bookworm"
registry_base="127.0.0.1:5000/$local_base"
# Pushed once so the base has a registry digest to be pinned by.
"$ENVSNAP_DOCKER" tag "$local_base" "$registry_base"
"$ENVSNAP_DOCKER" push --quiet "$registry_base" >/dev/null
export ENVSNAP_BASE_IMAGE="${ENVSNAP_BASE_IMAGE:-$registry_base}"

work="${ENVSNAP_DEMO_DIR:-$repo/.demo}"
rm -rf "$work"
mkdir -p "$work"
cp -R "$repo/examples/train-logreg/." "$work/"
cd "$work"
printf 'outputs/\nmetrics.json\n.envsnap/\n.venv/\ncapture.log\n' > .gitignore
git init --quiet --initial-branch=main
git add -A
git -c user.name=envsnap-demo -c user.email=demo@envsnap.invalid commit --quiet -m "example project"

echo "==> the example's own virtual environment"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
export VIRTUAL_ENV="$work/.venv"
export PATH="$work/.venv/bin:$venv:$PATH"   # python: the example's; envsnap: the wheel's

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
expect() {  # expect CODE COMMAND...: run it, show its exit code, stop the demo if it differs
    local want="$1" code=0
    shift
    "$@" || code=$?
    echo "exit code: $code"
    if [ "$code" -ne "$want" ]; then
        echo "demo: expected exit code $want from '$*', got $code" >&2
        exit 1
    fi
}
train=(--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy'
       --metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs)

step envsnap capture --name baseline "${train[@]}"
envsnap capture --name baseline "${train[@]}" | tee capture.log   # the run id comes first
baseline=$(head -n 1 capture.log)
step envsnap show "$baseline"
envsnap show "$baseline"

step envsnap lock "$baseline"
envsnap lock "$baseline"
step envsnap build "$baseline" "   # base: $ENVSNAP_BASE_IMAGE, resolved to a digest"
envsnap build "$baseline"

step envsnap rerun "$baseline" "   # same code, data and packages in the built image: exit 0"
expect 0 envsnap rerun "$baseline"

step "change one value of the training data"
sed -i '2s/^-0\.085520/0.914480/' data/train.csv
git diff --stat
step envsnap rerun "$baseline" "   # data drift, and the metric drift it causes: exit 1"
expect 1 envsnap rerun "$baseline"

step envsnap capture --name changed-data "${train[@]}"
envsnap capture --name changed-data "${train[@]}" >/dev/null
step envsnap diff "$baseline" latest "   # two runs on this host: exit 1"
expect 1 envsnap diff "$baseline" latest

step envsnap list
envsnap list
echo
echo "demo finished: the runs are in $work/.envsnap/runs"
