"""Times envsnap build and envsnap rerun on the example project against their plain peers,
measured in the same run on the same docker engine:

- cold build: `envsnap build --rebuild` with docker's build cache emptied, against a plain
  `docker build` of a hand-written Dockerfile installing the same hash-locked pins into a venv
  (cache emptied too);
- warm rebuild: `envsnap build` of an environment built before (reused by env_id, no docker
  build) against the plain `docker build` with every layer cached;
- rerun overhead: `envsnap rerun` on the built image minus the same training command run
  natively on the host (target: at most 1.5 s).

Usage: python3 benchmarks/bench_image.py [--repeat 3] [--no-write]
Needs root for scripts/docker-env.sh the first time (docker engine, local registry, base image).
Writes benchmarks/results-image.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from example_project import LOCAL_BASE, REGISTRY_BASE, REPO, TRAIN, make_project, run

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results-image.md"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RERUN_TARGET_S = 1.5
PLAIN_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY requirements.lock.txt /tmp/requirements.lock.txt
RUN --mount=type=secret,id=pip-ca \\
    python3 -m venv /opt/venv \\
 && if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \\
 && /opt/venv/bin/pip install --no-deps --require-hashes -r /tmp/requirements.lock.txt
ENV PATH=/opt/venv/bin:$PATH
"""


def timed(
    action: Callable[[], object], before: Callable[[], object] | None, repeat: int
) -> list[float]:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.monotonic()
        action()
        times.append(time.monotonic() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    env_out = subprocess.run(
        ["bash", str(REPO / "scripts" / "docker-env.sh")], capture_output=True, text=True
    )
    if env_out.returncode != 0:
        raise SystemExit("scripts/docker-env.sh failed:\n" + env_out.stderr[-3000:])
    docker = next(
        (line.split("=", 1)[1].split()[0] for line in env_out.stdout.splitlines()
         if line.startswith("ENVSNAP_DOCKER_CLI=")),
        "docker",
    )  # fmt: skip
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ENVSNAP_")}
    base_env.update(DOCKER_BUILDKIT="1", ENVSNAP_DOCKER=docker)
    run([docker, "tag", LOCAL_BASE, REGISTRY_BASE], cwd=REPO, env=base_env)
    run([docker, "push", REGISTRY_BASE], cwd=REPO, env=base_env)

    with tempfile.TemporaryDirectory(prefix="envsnap-bench-image-") as tmp:
        root = Path(tmp) / "project"
        env = make_project(root, base_env)
        envsnap = [sys.executable, "-m", "envsnap"]
        run_id = run([*envsnap, "capture", *TRAIN], cwd=root, env=env).stdout.splitlines()[0]
        run([*envsnap, "lock", run_id], cwd=root, env=env)
        lock_file = root / ".envsnap" / "runs" / run_id / "requirements.lock.txt"
        plain = Path(tmp) / "plain"
        plain.mkdir()
        shutil.copy(lock_file, plain / "requirements.lock.txt")
        (plain / "Dockerfile").write_text(PLAIN_DOCKERFILE)
        base_digest = json.loads(
            run([*envsnap, "build", run_id, "--json"], cwd=root, env=env).stdout
        )["base"]
        ca = CA_BUNDLE if CA_BUNDLE.is_file() else Path(os.devnull)
        plain_tag = "envsnap-bench/plain:latest"

        def prune() -> None:
            run([docker, "builder", "prune", "--all", "--force"], cwd=root, env=env)

        made: set[str] = set()  # every image made here: a rebuild leaves the last one untagged

        def envsnap_build() -> None:
            out = run([*envsnap, "build", run_id, "--rebuild", "--json"], cwd=root, env=env)
            made.add(json.loads(out.stdout)["image_id"])

        def envsnap_reuse() -> None:
            run([*envsnap, "build", run_id], cwd=root, env=env)

        def plain_build() -> None:
            out = run([docker, "build", "--quiet", "--build-arg", f"BASE={base_digest}",
                       "--secret", f"id=pip-ca,src={ca}", "-t", plain_tag, str(plain)],
                      cwd=root, env=env)  # fmt: skip
            made.add(out.stdout.strip())

        def envsnap_rerun() -> None:
            run([*envsnap, "rerun", run_id], cwd=root, env=env)

        def native() -> None:
            run(TRAIN[TRAIN.index("--") + 1 :], cwd=root, env=env)

        rows = {
            "cold build: `envsnap build --rebuild`": timed(envsnap_build, prune, args.repeat),
            "cold build: plain `docker build`, same pins": timed(plain_build, prune, args.repeat),
        }
        plain_build()
        rows["warm: `envsnap build` (reused by env_id)"] = timed(envsnap_reuse, None, args.repeat)
        rows["warm: plain `docker build`, all layers cached"] = timed(
            plain_build, None, args.repeat
        )
        rows["`envsnap rerun` (image built)"] = timed(envsnap_rerun, None, args.repeat)
        rows["the command natively on the host"] = timed(native, None, args.repeat)
        images = run([docker, "images", "-q", "--filter", "reference=envsnap/env"], cwd=root,
                     env=env).stdout.split()  # fmt: skip
        for image in sorted(made | set(images)):
            run([docker, "rmi", "--force", image], cwd=root, env=env, check=False)

    med = {name: statistics.median(times) for name, times in rows.items()}
    names = list(rows)
    cold_ratio = med[names[0]] / med[names[1]]
    warm_ratio = med[names[2]] / med[names[3]]
    overhead = med[names[4]] - med[names[5]]
    stamp = time.strftime("%Y-%m-%d")
    commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, env=base_env).stdout.strip()
    lines = [
        "# envsnap build and rerun benchmark",
        "",
        f"{stamp}; {os.cpu_count()} cores; example project (numpy), base image built from Debian "
        f"packages; median and min of {args.repeat} runs; envsnap at {commit}",
        "",
        "| what | median s | min s |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {med[name]:.2f} | {min(rows[name]):.2f} |" for name in names),
        "",
        f"- cold build, envsnap / plain docker build: {cold_ratio:.2f} x",
        f"- warm rebuild, envsnap / plain docker build: {warm_ratio:.2f} x",
        f"- rerun overhead (rerun - native): {overhead:.2f} s; target at most "
        f"{RERUN_TARGET_S} s: {'met' if overhead <= RERUN_TARGET_S else 'NOT met'}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS_FILE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
