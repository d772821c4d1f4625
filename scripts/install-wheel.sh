#!/usr/bin/env bash
# Builds envsnap's wheel the way a user's `pip install <repo>` does, from a clean copy of the
# repository's files (tracked, and untracked ones git does not ignore: what a fresh clone plus
# your uncommitted work would hold, never a stale build/ folder), and installs it into a fresh
# virtual environment. The demo and the integration tests run this install, not the editable one.
#
# Usage: scripts/install-wheel.sh VENV_DIR [WHEEL_DIR] [EXTRAS]
#   VENV_DIR   recreated from scratch (default .venv-wheel)
#   WHEEL_DIR  where the wheel is left (default dist/)
#   EXTRAS     extras to install with it, comma-separated (e.g. mlflow,wandb; default none)
# Prints the wheel's path on stdout.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv-wheel}"
wheels="${2:-$repo/dist}"
extras="${3:-}"
python="${PYTHON:-python3}"

src="$(mktemp -d "${TMPDIR:-/tmp}/envsnap-wheel-src.XXXXXX")"
trap 'rm -rf "$src"' EXIT
# Symlinks (templates/, Dockerfile.base at the top level) are copied as links, as git checks
# them out.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$src"

mkdir -p "$wheels"
rm -f "$wheels"/envsnap-*.whl
echo "==> building the envsnap wheel from a clean copy of the repository" >&2
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" "$src" >&2
wheel="$(ls "$wheels"/envsnap-*.whl)"

echo "==> installing $(basename "$wheel") into a fresh venv" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel${extras:+[$extras]}" >&2
echo "$wheel"
