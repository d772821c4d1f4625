"""Times envsnap build and envsnap rerun on the example project against their plain peers,
measured in the same run on the same docker engine, envsnap and its peer taking turns, after
one untimed warm-up round:

- cold build: `envsnap build --rebuild` with docker's build cache emptied, against a plain
  `docker build` of a hand-written Dockerfile installing the same hash-locked pins into a venv
  (cache emptied too). envsnap's own environment is an image of its own per base (envsnap/tool),
  which every environment on that base starts from and a rebuild keeps; the first build on a
  base also makes it, timed apart with that image removed first. A rebuild removes the image it
  replaced in the background; that removal is waited out, untimed, before the next build;
- warm rebuild: `envsnap build` of an environment built before (reused by env_id, no docker
  build) against the plain `docker build` with every layer cached;
- rerun overhead: `envsnap rerun` on the built image minus the same training command run
  natively on the host; then where one `envsnap -v rerun` spends its time, step by step.

Targets (issue 14): cold at most 1.15 x the plain build; warm at most 0.10 s or 1.5 x the
plain build; rerun overhead at most 0.30 s.

envsnap runs with its bytecode cached, as an installed envsnap does (pip compiles it):
PYTHONDONTWRITEBYTECODE is not passed on.

Usage: python3 benchmarks/bench_image.py [--repeat 5] [--no-write]
Needs root for scripts/docker-env.sh the first time (docker engine, local registry, base image).
Writes benchmarks/results-image.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
COLD_TARGET = 1.15
WARM_TARGET_S, WARM_TARGET_RATIO = 0.10, 1.5
RERUN_TARGET_S = 0.30
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
    """``repeat`` timings of ``action`` after one untimed warm-up, ``before`` run before each."""
    return timed_together([action], before, repeat)[0]


def timed_together(
    actions: list[Callable[[], object]], before: Callable[[], object] | None, repeat: int
) -> list[list[float]]:
    """``repeat`` timings of each action, the actions taking turns (so a busy spell on the
    machine slows envsnap and its peer alike), after one untimed warm-up round; ``before``
    runs before each action."""
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(repeat + 1):
        for action, taken in zip(actions, times, strict=True):
            if before is not None:
                before()
            started = time.monotonic()
            action()
            taken.append(time.monotonic() - started)
    return [taken[1:] for taken in times]


# Where a rerun's time goes: `envsnap -v rerun` echoes each engine request and git command
# before it runs; a step lasts from its first line to the next step's. Markers are for the local
# engine's API (what this benchmark's engine is reached by).
STEPS = (
    ("envsnap starts, reads the run, asks the engine about the image", ""),
    ("code checkout of the recorded commit (git)", "git init"),
    ("container create", "/containers/create"),
    ("files in (archive)", "PUT /containers/"),
    ("container start, in-container capture, the command", "/start"),
    ("from the command's last line to the container's exit", "seed="),
    ("store back (archive)", "GET /containers/"),
    ("container removed, new run imported and compared", "DELETE /containers/"),
    ("report printed, envsnap exits", "rerun "),
)


def rerun_steps(argv: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[str, float]]:
    """(step, seconds) of one ``envsnap -v rerun``, timed by when each line arrives."""
    process = subprocess.Popen(
        [*argv, "-v", "rerun", env["BENCH_RUN_ID"]],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    started = time.monotonic()
    found = {STEPS[0][0]: 0.0}
    for line in process.stdout:
        now = time.monotonic() - started
        for name, marker in STEPS[1:]:
            if marker and marker in line and (name not in found or marker == "seed="):
                found[name] = now  # the command's last output line counts
    process.wait()
    ended = time.monotonic() - started
    order = sorted((at, name) for name, at in found.items())
    ends = [at for at, _name in order[1:]] + [ended]
    return [(name, end - at) for (at, name), end in zip(order, ends, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
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
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ENVSNAP_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    base_env.update(DOCKER_BUILDKIT="1", ENVSNAP_DOCKER=docker)
    run([docker, "tag", LOCAL_BASE, REGISTRY_BASE], cwd=REPO, env=base_env)
    run([docker, "push", REGISTRY_BASE], cwd=REPO, env=base_env)

    with tempfile.TemporaryDirectory(prefix="envsnap-bench-image-") as tmp:
        root = Path(tmp) / "project"
        env = make_project(root, base_env)
        envsnap = [sys.executable, "-m", "envsnap"]

        def images_of(repository: str) -> set[str]:
            return set(run([docker, "images", "-q", "--filter", f"reference={repository}"],
                           cwd=root, env=env).stdout.split())  # fmt: skip

        # The engine is shared: only images this benchmark made are ever removed.
        before = images_of("envsnap/env") | images_of("envsnap/tool")
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

        rebuilt: list[str] = []  # envsnap's images, newest last

        def settle() -> None:
            # A rebuild leaves the image it replaced to a docker process it does not wait for;
            # that removal is waited out here, untimed, so it slows no measurement after it.
            deadline = time.monotonic() + 60
            for image in rebuilt[:-1]:
                while time.monotonic() < deadline and run(
                    [docker, "image", "inspect", image], cwd=root, env=env, check=False
                ).returncode == 0:  # fmt: skip
                    time.sleep(0.1)

        def prune() -> None:
            settle()
            run([docker, "builder", "prune", "--all", "--force"], cwd=root, env=env)

        made: set[str] = set()  # every image made here: a rebuild leaves the last one untagged

        def remove_ours(repository: str) -> None:
            for image in sorted((images_of(repository) | made) - before):
                run([docker, "rmi", "--force", image], cwd=root, env=env, check=False)

        def prune_and_remove_tool_image() -> None:
            remove_ours("envsnap/env")  # the environments first: they are built on it
            remove_ours("envsnap/tool")
            prune()

        def envsnap_build() -> None:
            out = run([*envsnap, "build", run_id, "--rebuild", "--json"], cwd=root, env=env)
            made.add(json.loads(out.stdout)["image_id"])
            rebuilt.append(json.loads(out.stdout)["image_id"])

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

        load_before = os.getloadavg()[0]
        cold = timed_together([envsnap_build, plain_build], prune, args.repeat)
        rows = {
            "cold build: `envsnap build --rebuild`": cold[0],
            "cold build: plain `docker build`, same pins": cold[1],
        }
        plain_build()
        warm = timed_together([envsnap_reuse, plain_build], None, args.repeat)
        rows["warm: `envsnap build` (reused by env_id)"] = warm[0]
        rows["warm: plain `docker build`, all layers cached"] = warm[1]
        rerun = timed_together([envsnap_rerun, native], None, args.repeat)
        rows["`envsnap rerun` (image built)"] = rerun[0]
        rows["the command natively on the host"] = rerun[1]
        rows["first build on a base: `envsnap build --rebuild`, envsnap's own image too"] = timed(
            envsnap_build, prune_and_remove_tool_image, args.repeat
        )
        kept_tool = bool(images_of("envsnap/tool") & before)  # not ours to remove
        steps = rerun_steps(envsnap, root, {**env, "BENCH_RUN_ID": run_id})
        load_after = os.getloadavg()[0]
        remove_ours("envsnap/env")
        remove_ours("envsnap/tool")

    med = {name: statistics.median(times) for name, times in rows.items()}
    names = list(rows)
    cold_ratio = med[names[0]] / med[names[1]]
    warm_ratio = med[names[2]] / med[names[3]]
    overhead = med[names[4]] - med[names[5]]
    warm_met = med[names[2]] <= WARM_TARGET_S or warm_ratio <= WARM_TARGET_RATIO
    stamp = time.strftime("%Y-%m-%d")
    commit = run(["git", "describe", "--always", "--dirty"], cwd=REPO, env=base_env).stdout.strip()
    lines = [
        "# envsnap build and rerun benchmark",
        "",
        f"{stamp}; {platform.system()} {platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}; example project (numpy), base image built from Debian "
        f"packages; median and min of {args.repeat} runs after one warm-up; envsnap at {commit}; "
        f"load average {load_before:.2f} before, {load_after:.2f} after",
        "",
        "| what | median s | min s |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {med[name]:.2f} | {min(rows[name]):.2f} |" for name in names),
        "",
        f"- cold build, envsnap / plain docker build: {cold_ratio:.2f} x; target at most "
        f"{COLD_TARGET} x: {'met' if cold_ratio <= COLD_TARGET else 'NOT met'}",
        f"- warm rebuild, envsnap / plain docker build: {med[names[2]]:.2f} s, {warm_ratio:.2f} x; "
        f"target at most {WARM_TARGET_S} s or {WARM_TARGET_RATIO} x: "
        f"{'met' if warm_met else 'NOT met'}",
        f"- rerun overhead (rerun - native): {overhead:.2f} s; target at most "
        f"{RERUN_TARGET_S} s: {'met' if overhead <= RERUN_TARGET_S else 'NOT met'}",
        f"- first build on a base (envsnap's own image made too) / plain docker build: "
        f"{med[names[6]] / med[names[1]]:.2f} x"
        + (
            ""
            if not kept_tool
            else " (NOT measured as such: an envsnap/tool image from before "
            "this benchmark was kept)"
        ),
        "",
        "Where one `envsnap -v rerun` spent its time (one run, after the timed ones):",
        "",
        "| step | s |",
        "| --- | ---: |",
        *(f"| {name} | {seconds:.3f} |" for name, seconds in steps),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS_FILE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
