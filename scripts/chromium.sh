#!/usr/bin/env bash
# Headless Chromium for the HTML report's test (tests/integration/test_matrix.py opens the drift
# matrix page in it, takes a screenshot and reads the table back from the rendered DOM).
# Installs Debian's `chromium` with apt when it is missing (needs root) and fails loudly when it
# cannot: the test is never skipped. Idempotent; prints ENVSNAP_CHROMIUM=<path> on stdout.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "chromium.sh: chromium is not installed and this is not root; install Debian's" \
            "chromium package (apt-get install chromium) and run again" >&2
        exit 1
    fi
    echo "==> installing Debian's chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends chromium >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends chromium >&2 || {
            echo "chromium.sh: apt-get install chromium failed (see above)" >&2
            exit 1
        }
    fi
fi
path="$(command -v chromium)"
"$path" --version >&2 || { echo "chromium.sh: $path does not start" >&2; exit 1; }
echo "ENVSNAP_CHROMIUM=$path"
