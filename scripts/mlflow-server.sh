#!/usr/bin/env bash
# Starts a real MLflow tracking server for the integration tests: `mlflow server` from the
# project's .venv (the dev extra installs MLflow; nothing is installed globally), on 127.0.0.1 at a
# free port, with a SQLite backend store and artifacts served from a local folder, all under DIR.
# Waits until the server answers its health check; fails loudly (with the end of its log) when it
# exits or does not answer in time. Never skips.
#
# Usage: scripts/mlflow-server.sh DIR
#   DIR  holds mlflow.db, artifacts/, server.log and server.pid (created when missing)
# Prints the tracking URI (http://127.0.0.1:PORT) on stdout. The server runs in a process group
# of its own; stop it with: kill -- -"$(cat DIR/server.pid)"
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:?usage: scripts/mlflow-server.sh DIR}"
python="$repo/.venv/bin/python"
mlflow="$repo/.venv/bin/mlflow"
if [ ! -x "$mlflow" ]; then
    echo "error: $mlflow is missing; run scripts/bootstrap.sh (the dev extra installs MLflow)" >&2
    exit 1
fi
mkdir -p "$dir/artifacts"
dir="$(cd "$dir" && pwd)"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
uri="http://127.0.0.1:$port"

echo "==> starting mlflow server at $uri (store and artifacts in $dir)" >&2
setsid "$mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$dir/mlflow.db" \
    --artifacts-destination "$dir/artifacts" \
    >"$dir/server.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/server.pid"

fail() {
    echo "error: $1; the end of $dir/server.log:" >&2
    tail -n 30 "$dir/server.log" >&2 || true
    kill -- -"$pid" 2>/dev/null || true
    exit 1
}

deadline=$((SECONDS + 120))
while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        fail "mlflow server exited before it answered"
    fi
    if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()' \
        "$uri/health" >/dev/null 2>&1; then
        echo "$uri"
        exit 0
    fi
    sleep 0.5
done
fail "mlflow server did not answer $uri/health within 120 s"
