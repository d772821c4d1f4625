"""Times envsnap's hash lock against `uv pip compile --no-deps --generate-hashes` of the same pins,
cold and warm, at three sizes (10 packages, the benchmark venv's, 400), with `pip-compile` and a
resolving uv for reference, and checks that the hashes agree.

Usage: python benchmarks/bench_lock.py [--repeat 5] [--no-install] [--no-write]
                                       [--pip-compile-timeout 120]
First runs setup_env.sh like bench_capture.py (builds benchmarks/.work/venv if missing, reinstalls
envsnap from the working tree); pip-tools goes into its own venv, benchmarks/.work/piptools.
The 400-package set is the venv's packages plus pins from lock-pins.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_capture import machine_line, without_local_paths
from bench_workspace import (
    BENCH_DIR,
    DEFAULT_VENV,
    BenchError,
    count_distributions,
    ensure_venv,
    make_git_project,
    peer_environment,
)

RESULTS_FILE = BENCH_DIR / "results-lock.md"
EXTRA_PINS = BENCH_DIR / "lock-pins.txt"
PIPTOOLS_VENV = BENCH_DIR / ".work" / "piptools"
PYPI = "https://pypi.org/simple"
TARGET_RATIO = 1.0  # issue 14: envsnap lock at most 1.0 x uv pip compile --no-deps, cold and warm
SUBSET_SIZE = 10
LARGE_SIZE = 400
ENVSNAP = "envsnap lock (SimpleIndexClient)"
UV = "uv pip compile --no-deps"

# Runs in the benchmark venv: lock the manifest (or, given a pins file, the manifest with those
# packages instead) with the real client, report what it did.
# torch 2.13.0+cpu came from the host's local file:// index, which is no lock source and
# PyTorch's CPU index is not reachable here; PyPI serves the same release as 2.13.0, so the
# timed set asks PyPI for that (the table says so).
DRIVER = r"""
import dataclasses, json, sys, time
from pathlib import Path
from envsnap.locking.index import SimpleIndexClient
from envsnap.locking.plan import lock_packages
from envsnap.manifest import Package, read_manifest

manifest_path, cache_dir, out_path, pins = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
manifest = read_manifest(Path(manifest_path))
packages = []
for p in manifest.python.packages:
    if p.index_url.startswith("file:") and "+" in p.version:
        p = dataclasses.replace(p, version=p.version.split("+")[0], index_url="")
    packages.append(p)
if pins:
    lines = Path(pins).read_text().split()
    packages = [Package(name=n, version=v) for n, _, v in (x.partition("==") for x in lines)]
manifest = dataclasses.replace(
    manifest, python=dataclasses.replace(manifest.python, packages=tuple(packages))
)
client = SimpleIndexClient(cache_dir=Path(cache_dir))
start = time.perf_counter()
result = lock_packages(manifest, client)
seconds = time.perf_counter() - start
Path(out_path).write_text(json.dumps({
    "seconds": seconds,
    "fetches": client.fetches,
    "packages": len(manifest.python.packages),
    "locked": result.locked_index,
    "unlockable": [[n.name, n.version, n.reason] for n in result.unlockable],
    "covered": [[n.name, n.version, n.reason] for n in result.covered_elsewhere],
    "requirements": result.requirements,
}))
"""


@dataclass(kw_only=True)
class Row:
    tool: str
    packages: int
    cache: str
    seconds: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)  # envsnap: lock_packages alone, in-process
    failure: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def parse_hashes(text: str) -> dict[str, set[str]]:
    """name -> hashes from a pip-format requirements file."""
    out: dict[str, set[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            out[current].add(line.removeprefix("--hash=sha256:").rstrip(" \\"))
        elif "==" in line and not line.startswith("-"):
            current = line.split("==", 1)[0].strip().lower().replace("_", "-").replace(".", "-")
            out[current] = set()
    return out


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise BenchError(f"{' '.join(argv[:3])} exited {done.returncode}: {tail}")
    return elapsed


def capture_manifest(venv: Path, scratch: Path, env: dict[str, str]) -> Path:
    project = make_git_project(scratch / "project")
    store = scratch / "store"
    timed(
        [str(venv / "bin" / "envsnap"), "capture", "--store", str(store), "--name", "lock"],
        env,
        project,
        120,
    )
    manifests = sorted(store.glob("runs/*/manifest.toml"))
    if len(manifests) != 1:
        raise BenchError(f"expected one captured run in {store}, found {len(manifests)}")
    return manifests[0]


def run_envsnap(
    venv: Path,
    manifest: Path,
    cache: Path,
    scratch: Path,
    env: dict[str, str],
    pins: Path | None = None,
) -> tuple[float, dict[str, object]]:
    out = scratch / "envsnap-out.json"
    argv = [str(venv / "bin" / "python"), "-c", DRIVER, str(manifest), str(cache), str(out)]
    wall = timed([*argv, str(pins or "")], env, scratch, 300)
    return wall, json.loads(out.read_text())


def ensure_piptools() -> Path:
    pip_compile = PIPTOOLS_VENV / "bin" / "pip-compile"
    if pip_compile.is_file():
        return pip_compile
    print("installing pip-tools into benchmarks/.work/piptools ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PIPTOOLS_VENV)], check=True)
    subprocess.run(
        [str(PIPTOOLS_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "pip-tools"],
        check=True,
    )
    return pip_compile


def piptools_env(base: dict[str, str]) -> dict[str, str]:
    """pip-compile with pip's configuration files off, so it asks PyPI only (the host's config
    adds local file:// indexes and find-links)."""
    env = {k: v for k, v in base.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PATH"] = f"{PIPTOOLS_VENV / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def uv_argv(venv: Path, req: Path, out: Path, cache: Path, *, resolve: bool = False) -> list[str]:
    argv = [
        *(str(venv / "bin" / "uv"), "pip", "compile", str(req), "--generate-hashes", "--quiet"),
        *("--index-url", PYPI, "--cache-dir", str(cache), "--output-file", str(out)),
        *("--python", str(venv / "bin" / "python")),
    ]
    return argv if resolve else [*argv, "--no-deps"]


@dataclass(kw_only=True)
class PinSet:
    """One set of pins, locked by envsnap (from the manifest, or a pins file) and by uv."""

    pins: list[str]
    requirements: Path  # uv's input; also envsnap's pins file unless from_manifest
    from_manifest: bool = False


def pin_sets(scratch: Path, venv_pins: list[str]) -> list[PinSet]:
    """10 packages, the venv's, and 400: each the one before plus more, so they grow alike."""
    small = [p for p in venv_pins if not p.startswith("torch==")][:SUBSET_SIZE]
    names = {p.split("==")[0] for p in venv_pins}
    extra = [
        line
        for line in EXTRA_PINS.read_text().splitlines()
        if line and not line.startswith("#") and line.split("==")[0] not in names
    ]
    large = venv_pins + extra[: LARGE_SIZE - len(venv_pins)]
    if len(large) != LARGE_SIZE:
        raise BenchError(f"{EXTRA_PINS.name} has too few pins for {LARGE_SIZE} packages")
    sets = []
    for label, pins in (("small", small), ("venv", venv_pins), ("large", large)):
        path = scratch / f"{label}.in"
        path.write_text("\n".join(pins) + "\n")
        sets.append(PinSet(pins=pins, requirements=path, from_manifest=label == "venv"))
    return sets


def measure(args: argparse.Namespace, venv: Path, scratch: Path) -> tuple[list[Row], list[str]]:
    env = peer_environment(venv, scratch)
    manifest = capture_manifest(venv, scratch, env)
    notes: list[str] = []
    repeat = args.repeat

    # The untimed first run fills the intercepting proxy's cache for every tool alike.
    first_wall, first = run_envsnap(venv, manifest, scratch / "cache-warmup", scratch, env)
    locked = parse_hashes(str(first["requirements"]))
    venv_pins = sorted(
        line.split(" ", 1)[0]
        for line in str(first["requirements"]).splitlines()
        if "==" in line and not line.startswith("#")
    )
    notes.append(
        f"The untimed first envsnap run, the first to ask through this network's caching proxy"
        f" for these projects in this session, took {first_wall:.2f} s."
    )
    notes.append(
        f"Manifest: {first['packages']} packages; envsnap locked {first['locked']} from PyPI"
        f" with hashes; unlockable: {first['unlockable'] or 'none'};"
        f" covered elsewhere: {first['covered'] or 'none'}."
    )
    sets = pin_sets(scratch, venv_pins)
    uv_out = scratch / "uv-out.txt"
    rows: list[Row] = []
    for n, pin_set in enumerate(sets):
        size = len(pin_set.pins)
        pins = None if pin_set.from_manifest else pin_set.requirements
        envsnap_rows = {
            kind: Row(tool=ENVSNAP, packages=size, cache=kind) for kind in ("cold", "warm")
        }
        uv_rows = {kind: Row(tool=UV, packages=size, cache=kind) for kind in ("cold", "warm")}
        # Warm-ups: one cold run each (also fills the proxy), then the caches the warm runs use.
        run_envsnap(venv, manifest, scratch / f"e-up-{n}", scratch, env, pins)
        run_envsnap(venv, manifest, scratch / f"e-warm-{n}", scratch, env, pins)
        uv_ok = True
        try:
            timed(uv_argv(venv, pin_set.requirements, uv_out, scratch / f"u-up-{n}"), env, scratch)
            timed(
                uv_argv(venv, pin_set.requirements, uv_out, scratch / f"u-warm-{n}"), env, scratch
            )
        except BenchError as exc:
            uv_ok = False
            for row in uv_rows.values():
                row.failure = str(exc)
        if pin_set.from_manifest and uv_ok:
            uv_hashes = parse_hashes(uv_out.read_text())
            same = {k for k, v in locked.items() if uv_hashes.get(k) == v}
            differ = sorted(set(locked) ^ set(uv_hashes) | (set(locked) - same))
            notes.append(
                f"uv's hashes equal envsnap's for {len(same)} of {len(locked)} packages"
                + (f"; differing: {', '.join(differ)}" if differ else ".")
            )
        for i in range(repeat):  # the two tools interleaved, cold then warm
            for kind in ("cold", "warm"):
                cache = scratch / (f"e-cold-{n}-{i}" if kind == "cold" else f"e-warm-{n}")
                wall, data = run_envsnap(venv, manifest, cache, scratch, env, pins)
                envsnap_rows[kind].seconds.append(wall)
                envsnap_rows[kind].inner.append(float(str(data["seconds"])))
                if kind == "warm" and data["fetches"] != 0:
                    notes.append(f"warm envsnap run {i} of {size} made {data['fetches']} requests")
                if uv_ok:
                    cache = scratch / (f"u-cold-{n}-{i}" if kind == "cold" else f"u-warm-{n}")
                    argv = uv_argv(venv, pin_set.requirements, uv_out, cache)
                    uv_rows[kind].seconds.append(timed(argv, env, scratch))
        rows += [envsnap_rows["cold"], uv_rows["cold"], envsnap_rows["warm"], uv_rows["warm"]]

    venv_set = sets[1]
    resolving = Row(tool="uv pip compile (resolving)", packages=len(venv_pins), cache="cold")
    try:
        for i in range(repeat):
            argv = uv_argv(venv, venv_set.requirements, uv_out, scratch / f"r-{i}", resolve=True)
            resolving.seconds.append(timed(argv, env, scratch))
    except BenchError as exc:
        resolving.failure = str(exc)
    rows.append(resolving)
    rows += measure_pip_compile(args, sets[0], sets[1], scratch, locked, notes)
    notes.append(f"10-package set: {', '.join(sets[0].pins)}.")
    notes.append(
        f"400-package set: the venv's {len(venv_pins)} and the first"
        f" {LARGE_SIZE - len(venv_pins)} new ones of benchmarks/{EXTRA_PINS.name}."
    )
    return rows, notes


def measure_pip_compile(
    args: argparse.Namespace,
    small: PinSet,
    full: PinSet,
    scratch: Path,
    locked: dict[str, set[str]],
    notes: list[str],
) -> list[Row]:
    """pip-compile of the venv's set under a time limit, and of the 10-package set."""
    pip_compile = ensure_piptools()
    penv = piptools_env(peer_environment(DEFAULT_VENV, scratch))
    pc_out = scratch / "pip-compile-out.txt"

    def pc_argv(requirements: Path, cache: Path) -> list[str]:
        return [
            *(str(pip_compile), str(requirements), "--generate-hashes", "--quiet"),
            *("--index-url", PYPI, "--cache-dir", str(cache), "--output-file", str(pc_out)),
            *("--allow-unsafe", "--no-header", "--no-annotate", "--no-emit-index-url"),
        ]

    full_row = Row(tool="pip-compile", packages=len(full.pins), cache="cold")
    try:
        argv = pc_argv(full.requirements, scratch / "pc-full")
        full_row.seconds.append(timed(argv, penv, scratch, args.pip_compile_timeout))
    except subprocess.TimeoutExpired:
        full_row.failure = f"> {args.pip_compile_timeout:.0f} s, stopped"
    except BenchError as exc:
        full_row.failure = str(exc)
    small_row = Row(tool="pip-compile", packages=len(small.pins), cache="cold")
    for i in range(min(args.repeat, 3)):
        try:
            argv = pc_argv(small.requirements, scratch / f"pc-sub-{i}")
            small_row.seconds.append(timed(argv, penv, scratch, 600))
        except (BenchError, subprocess.TimeoutExpired) as exc:
            small_row.failure = str(exc)
            break
    if not small_row.failure:
        pc_hashes = parse_hashes(pc_out.read_text())
        names = {p.split("==")[0].lower() for p in small.pins}
        subset = {k: v for k, v in locked.items() if k in names}
        agree = sum(1 for k, v in subset.items() if pc_hashes.get(k) == v)
        notes.append(f"pip-compile's hashes equal envsnap's for {agree} of {len(subset)} packages.")
    return [small_row, full_row]


def peer(rows: Sequence[Row], row: Row, tool: str = UV) -> Row | None:
    return next(
        (r for r in rows if r.tool == tool and r.packages == row.packages and r.cache == row.cache),
        None,
    )


def render(rows: Sequence[Row], notes: Sequence[str], header: str) -> str:
    lines = [
        "# envsnap lock benchmark",
        "",
        header,
        "",
        "Each tool runs as a subprocess (interpreter start included). Cold: an empty cache"
        " directory of its own per run; warm: a cache filled by an earlier run. Rounds"
        " interleave the tools; the last column divides by uv's median for the same packages"
        " and cache.",
        "",
        f"| tool | packages | cache | median s | min s | / `{UV}` |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.seconds and not row.failure:
            base = peer(rows, row) if row.cache in ("cold", "warm") else None
            shown = f"{row.median / base.median:.2f}" if base and base.seconds else "—"
            lines.append(
                f"| `{row.tool}` | {row.packages} | {row.cache} | {row.median:.3f}"
                f" | {min(row.seconds):.3f} | {shown} |"
            )
        else:
            failure = row.failure or "failed"
            lines.append(f"| `{row.tool}` | {row.packages} | {row.cache} | {failure} | — | — |")
    lines += [""]
    ours = [r for r in rows if r.tool == ENVSNAP and r.seconds]
    verdicts = []
    for row in ours:
        base = peer(rows, row)
        if base is None or not base.seconds:
            continue
        ratio = row.median / base.median
        verdicts.append(
            f"{row.packages} {row.cache} {ratio:.2f} x"
            + ("" if ratio <= TARGET_RATIO else " (NOT met)")
        )
    if verdicts:
        lines.append(
            f"Target: envsnap lock at most {TARGET_RATIO:.1f} x `{UV}` of the same pins, cold and"
            f" warm: {'; '.join(verdicts)}."
        )
    cold = sorted((r for r in ours if r.cache == "cold"), key=lambda r: r.packages)
    if len(cold) >= 2:
        growth = ", ".join(
            f"{r.packages}: {r.median:.3f} s ({statistics.median(r.inner):.3f} s in"
            " `lock_packages`)"
            for r in cold
        )
        mid, big = cold[-2], cold[-1]
        times = big.median / mid.median
        inner = statistics.median(big.inner) / statistics.median(mid.inner)
        more = big.packages / mid.packages
        lines.append(
            f"Growth, cold: {growth}; from {mid.packages} to {big.packages} packages"
            f" ({more:.1f} x as many) the lock took {times:.1f} x as long ({inner:.1f} x in"
            f" `lock_packages`): {'no faster than' if inner <= more else 'FASTER than'} linear."
        )
    warm = [r for r in ours if r.cache == "warm" and r.inner]
    if warm:
        lines.append(
            "Warm (cache filled, no requests), in `lock_packages`: "
            + ", ".join(f"{r.packages}: {statistics.median(r.inner):.3f} s" for r in warm)
            + "."
        )
    lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row (default 5)")
    parser.add_argument("--no-install", action="store_true", help="don't reinstall envsnap")
    parser.add_argument("--no-write", action="store_true", help=f"don't write {RESULTS_FILE.name}")
    parser.add_argument(
        "--pip-compile-timeout",
        type=float,
        default=120.0,
        help="seconds allowed for pip-compile of the full set (default 120)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    venv = DEFAULT_VENV
    try:
        ensure_venv(venv, reinstall=not args.no_install)
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="envsnap-bench-lock-") as tmp:
            scratch = Path(tmp)
            rows, notes = measure(args, venv, scratch)
            for row in rows:
                row.failure = without_local_paths(row.failure, scratch)
            notes = [without_local_paths(n, scratch) for n in notes]
        distributions = count_distributions(venv / "bin" / "python")
        load = (load_before, os.getloadavg()[0])
        header = machine_line(venv, distributions, args.repeat, load)
        report = render(rows, notes, header)
    except BenchError as exc:
        print(f"bench_lock: error: {exc}", file=sys.stderr)
        return 2
    print(report, end="")
    if not args.no_write:
        RESULTS_FILE.write_text(report, encoding="utf-8")
    return 0 if all(r.seconds and not r.failure for r in rows if r.tool != "pip-compile") else 1


if __name__ == "__main__":
    sys.exit(main())
