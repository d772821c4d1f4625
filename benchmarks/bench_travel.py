"""Times a run's travel to another host, measured in the same run on the same machine:

- `envsnap push` of a typical run record (the example project: manifest, result, lock files,
  image record and code archive) to the local registry, and `envsnap pull` of it into a fresh
  store; the record's size in bytes;
- `envsnap rerun` of the run on host A (this machine's engine, from the project's checkout)
  against the same rerun through host B (the second engine of scripts/host-b.sh, from the pulled
  record alone, the data mapped with --data), each with its image already on the engine.

Usage: python3 benchmarks/bench_travel.py [--repeat 5] [--no-write]
Needs root for scripts/docker-env.sh and scripts/host-b.sh the first time.
Writes benchmarks/results-travel.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from example_project import LOCAL_BASE, REGISTRY_BASE, REPO, TRAIN, make_project, run

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results-travel.md"
REGISTRY = "127.0.0.1:5000"


def timed(action: Callable[[int], object], repeat: int) -> list[float]:
    times = []
    for round_ in range(repeat):
        started = time.monotonic()
        action(round_)
        times.append(time.monotonic() - started)
    return times


def _line_value(text: str, key: str) -> str:
    return next(
        (line.split("=", 1)[1].split()[0] for line in text.splitlines() if line.startswith(key)),
        "",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    env_out = run(["bash", str(REPO / "scripts" / "docker-env.sh")], cwd=REPO, env=os.environ)
    docker = _line_value(env_out.stdout, "ENVSNAP_DOCKER_CLI=") or "docker"
    host_b = _line_value(
        run(["bash", str(REPO / "scripts" / "host-b.sh")], cwd=REPO, env=os.environ).stdout,
        "ENVSNAP_HOST_B=",
    )
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ENVSNAP_")}
    base_env.pop("DOCKER_HOST", None)
    base_env.update(DOCKER_BUILDKIT="1", ENVSNAP_DOCKER=docker)
    run([docker, "tag", LOCAL_BASE, REGISTRY_BASE], cwd=REPO, env=base_env)
    run([docker, "push", REGISTRY_BASE], cwd=REPO, env=base_env)
    suffix = os.urandom(3).hex()
    envs, runs = (
        f"{REGISTRY}/envsnap-bench/envs-{suffix}",
        f"{REGISTRY}/envsnap-bench/runs-{suffix}",
    )

    with tempfile.TemporaryDirectory(prefix="envsnap-bench-travel-") as tmp:
        root = Path(tmp) / "project"
        env = make_project(root, base_env)
        envsnap = [sys.executable, "-m", "envsnap"]
        run_id = run([*envsnap, "capture", *TRAIN], cwd=root, env=env).stdout.splitlines()[0]
        run([*envsnap, "build", run_id, "--push", envs], cwd=root, env=env)
        reference = json.loads(
            run([*envsnap, "push", run_id, runs, "--json"], cwd=root, env=env).stdout
        )["reference"]
        record = root / ".envsnap" / "runs" / run_id
        sizes = {p.name: p.stat().st_size for p in sorted(record.iterdir()) if p.is_file()}

        def push(_round: int) -> None:
            run([*envsnap, "push", run_id, runs], cwd=root, env=env)

        pulls = Path(tmp) / "pulls"

        def pull(round_: int) -> None:
            place = pulls / str(round_)
            place.mkdir(parents=True)
            run([*envsnap, "pull", reference], cwd=place, env=env)

        data = str(root / "data" / "train.csv")
        b_env = {**env, "DOCKER_HOST": host_b}
        elsewhere = Path(tmp) / "elsewhere"
        elsewhere.mkdir()
        b_rerun = [*envsnap, "rerun", reference, "--data", f"data/train.csv={data}"]
        run(b_rerun, cwd=elsewhere, env=b_env)  # warm-up: pulls record and image on host B
        run([*envsnap, "rerun", run_id], cwd=root, env=env)  # warm-up on host A

        def rerun_a(_round: int) -> None:
            run([*envsnap, "rerun", run_id], cwd=root, env=env)

        def rerun_b(_round: int) -> None:
            run([*envsnap, "rerun", run_id, "--data", f"data/train.csv={data}"], cwd=elsewhere,
                env=b_env)  # fmt: skip

        rows = {
            "`envsnap push` of the record": timed(push, args.repeat),
            "`envsnap pull` of the record into a fresh store": timed(pull, args.repeat),
            "`envsnap rerun` on host A (this engine, from the checkout)": timed(
                rerun_a, args.repeat
            ),
            "`envsnap rerun` through host B (from the pulled record)": timed(rerun_b, args.repeat),
        }
        run([docker, "rmi", "--force", envs], cwd=root, env=base_env, check=False)
        run([docker, "rmi", "--force", envs], cwd=root, env=b_env, check=False)

    med = {name: statistics.median(times) for name, times in rows.items()}
    names = list(rows)
    stamp = time.strftime("%Y-%m-%d")
    commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, env=base_env).stdout.strip()
    total = sum(sizes.values())
    lines = [
        "# envsnap travel benchmark",
        "",
        f"{stamp}; {os.cpu_count()} cores; example project (numpy); local registry; host B is "
        f"a second docker engine on this machine; median and min of {args.repeat} runs; envsnap "
        f"at {commit}",
        "",
        "| what | median s | min s |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {med[name]:.2f} | {min(rows[name]):.2f} |" for name in names),
        "",
        f"- the record: {total:,} bytes ("
        + ", ".join(f"{name} {size:,}" for name, size in sizes.items())
        + ")",
        f"- rerun through host B / rerun on host A: {med[names[3]] / med[names[2]]:.2f} x",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS_FILE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
