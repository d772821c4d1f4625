"""Times `envsnap list`, `show` by run-id prefix and `diff` on synthetic stores, next to peers
timed in the same run, at 100, 1,000 and 10,000 runs (diff: manifests of 100 and 1,000 packages).

Usage: python benchmarks/bench_store.py [--repeat 7] [--sizes 100,1000,10000] [--no-write]
Run it with any interpreter that has envsnap's dependencies (the project's dev venv): it measures
the working tree's envsnap as it is, and needs git (a peer) but no network and no benchmark venv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_capture import _cpu_model, _load_average, without_local_paths
from bench_workspace import BENCH_DIR, REPO_ROOT, BenchError

sys.path.insert(0, str(REPO_ROOT))  # the working tree's envsnap, whatever is installed

from envsnap import api
from envsnap.manifest import (
    Command,
    Git,
    Host,
    Manifest,
    Outputs,
    Package,
    Param,
    Python,
    Result,
    Tool,
    dumps_result,
    seal_text,
)

RESULTS_FILE = BENCH_DIR / "results-store.md"
DEFAULT_SIZES = (100, 1_000, 10_000)
LIST_PACKAGES = 60  # about 8 KB of manifest, a small ML project's environment
DIFF_PACKAGES = (100, 1_000)
# The targets: seconds, medians of this run.
TARGETS = {
    ("envsnap list", 10_000): 0.3,
    ("show by prefix (API)", 10_000): 0.1,
    ("diff (API)", 1_000): 0.05,
}
_START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@dataclass(kw_only=True)
class Timing:
    what: str
    size: int
    seconds: list[float] = field(default_factory=list)
    failure: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


@dataclass(frozen=True, kw_only=True)
class Case:
    """One thing timed: envsnap's and its peer's, each a command line or an in-process call."""

    what: str
    size: int
    envsnap: Callable[[], None]
    peer_name: str
    peer: Callable[[], None]


# --- synthetic stores, written by envsnap's own writer ------------------------------------------


def _packages(count: int, variant: int = 0) -> tuple[Package, ...]:
    tags = ("py3-none-any", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    return tuple(
        Package(
            name=f"package-{i:04d}",
            # The variant bumps one package in ten, as an upgrade between two runs would.
            version=f"{1 + i % 7}.{i % 13}.{(i + variant) if i % 10 == 0 else i}",
            installer="pip",
            wheel_tag=tags[i % 2],
        )
        for i in range(count)
    )


def _manifest(index: int, packages: tuple[Package, ...], created: dt.datetime) -> Manifest:
    run_id = f"{created:%Y%m%d-%H%M%S}-{index:06x}"
    return Manifest(
        run_id=run_id,
        created=f"{created:%Y-%m-%dT%H:%M:%S.%f}Z",
        name=f"sweep-{index % 50}" if index % 3 else "",
        tags={"project": "bench"},
        tool=Tool(version="0.1.0"),
        command=Command(argv=("python", "train.py", "--lr", str(0.1 / (1 + index % 5)))),
        params=(
            Param(key="lr", value=0.1 / (1 + index % 5), source="cli"),
            Param(key="model.depth", value=4 + index % 3, source="file"),
        ),
        seeds={"global": index},
        outputs=Outputs(globs=("outputs/*.npy",), metrics="metrics.json"),
        host=Host(
            os_id="debian",
            os_version="12",
            os_codename="bookworm",
            os_name="Debian GNU/Linux 12 (bookworm)",
            kernel="6.1.0-18-amd64",
            arch="x86_64",
            libc="glibc 2.36",
            cpu_model="AMD EPYC 7B13",
            cpu_count=2,
            memory_bytes=25_000_000_000,
            hostname=f"trainer-{index % 4}",
        ),
        python=Python(
            implementation="CPython",
            version="3.11.7",
            executable="/opt/venv/bin/python",
            prefix="/opt/venv",
            env_kind="venv",
            packages=packages,
        ),
        git=Git(present=True, commit=f"{index:040x}", branch="main"),
    )


def _write_run(runs: Path, manifest: Manifest, exit_code: int | None) -> None:
    sealed, text = seal_text(manifest)
    directory = runs / sealed.run_id
    directory.mkdir()
    (directory / "manifest.toml").write_text(text, encoding="utf-8")
    if exit_code is not None:
        result = Result(
            run_id=sealed.run_id,
            exit_code=exit_code,
            started=sealed.created,
            ended=sealed.created,
            duration_s=12.5,
            metrics={"loss": 0.25},
        )
        (directory / "result.toml").write_text(dumps_result(result), encoding="utf-8")


def build_store(root: Path, count: int) -> list[str]:
    """A store of ``count`` runs, one a second with every 50th in the second of the one before
    (so that ordering within a second is exercised); two runs in three with a result. Written
    through envsnap's sealing and canonical TOML, without the per-run fsyncs of a capture."""
    runs = root / "runs"
    runs.mkdir(parents=True)
    packages = _packages(LIST_PACKAGES)
    for index in range(count):
        second = index - 1 if index % 50 == 49 else index
        created = _START + dt.timedelta(seconds=second, microseconds=index)
        exit_code = None if index % 3 == 0 else index % 2
        _write_run(runs, _manifest(index, packages, created), exit_code)
    return sorted(os.listdir(runs))


def copy_store(source: Path, destination: Path, run_ids: Sequence[str]) -> None:
    (destination / "runs").mkdir(parents=True)
    for run_id in run_ids:
        shutil.copytree(source / "runs" / run_id, destination / "runs" / run_id)


def build_diff_store(root: Path, packages: int) -> tuple[str, str]:
    """Two runs of ``packages`` packages each, the second with one package in ten upgraded."""
    runs = root / "runs"
    runs.mkdir(parents=True)
    first = _manifest(1, _packages(packages), _START)
    second = _manifest(2, _packages(packages, 1), _START + dt.timedelta(seconds=1))
    _write_run(runs, first, 0)
    _write_run(runs, second, 0)
    return first.run_id, second.run_id


def build_git_peer(root: Path, count: int) -> str:
    """A git repository with one commit per run (git fast-import, each commit on the one
    before); returns the middle commit."""
    subprocess.run(["git", "init", "--quiet", "--initial-branch=main", str(root)], check=True)
    stream = []
    for index in range(count):
        message = f"run {index}\n".encode()
        stream.append(
            b"commit refs/heads/main\n"
            + f"committer bench <bench@example.invalid> {1_700_000_000 + index} +0000\n".encode()
            + f"data {len(message)}\n".encode()
            + message
            + b"\n"
        )
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=b"".join(stream), check=True)
    out = subprocess.run(
        ["git", "rev-list", "--skip", str(count // 2), "--max-count", "1", "main"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# --- timing --------------------------------------------------------------------------------------


def command(
    argv: Sequence[str], cwd: Path, env: dict[str, str], ok: Sequence[int] = (0,)
) -> Callable[[], None]:
    def run() -> None:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
        if result.returncode not in ok:
            tail = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise BenchError(f"exit {result.returncode}: {tail.splitlines()[-1:]}")

    return run


def measure(cases: Sequence[Case], repeat: int) -> list[tuple[Case, Timing, Timing]]:
    """One untimed warm-up each, then ``repeat`` rounds with every case and its peer
    interleaved, so that a slow spell on the machine spreads over all of them."""
    timed = [
        (case, Timing(what=case.what, size=case.size), Timing(what=case.peer_name, size=case.size))
        for case in cases
    ]
    for round_index in range(repeat + 1):
        for case, mine, theirs in timed:
            for timing, call in ((mine, case.envsnap), (theirs, case.peer)):
                if timing.failure is not None:
                    continue
                start = time.perf_counter()
                try:
                    call()
                except BenchError as exc:
                    timing.failure = str(exc)
                    continue
                if round_index:
                    timing.seconds.append(time.perf_counter() - start)
        print(f"  round {round_index}/{repeat} done", file=sys.stderr, flush=True)
    return timed


def once(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# --- the report ----------------------------------------------------------------------------------


def header(repeat: int, load: tuple[float | None, float | None]) -> str:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    cpu = _cpu_model()
    loads = (
        f"; load average {load[0]:.2f} before, {load[1]:.2f} after"
        if load[0] is not None and load[1] is not None
        else ""
    )
    return (
        f"{dt.datetime.now(dt.UTC).date().isoformat()}; {platform.system()} {platform.machine()},"
        f" {os.cpu_count()} cores{f' ({cpu})' if cpu else ''}; Python"
        f" {platform.python_version()}; median and min of {repeat} runs after one warm-up;"
        f" envsnap at {commit or '?'}{loads}"
    )


def render(
    timed: Sequence[tuple[Case, Timing, Timing]], cold: Sequence[tuple[int, float]], head: str
) -> str:
    def cell(t: Timing) -> tuple[str, str]:
        if t.failure is not None or not t.seconds:
            return "failed", "failed"
        return f"{t.median:.4f}", f"{t.best:.4f}"

    lines = [
        "# envsnap store benchmark: list, show, diff",
        "",
        head,
        "",
        "| what | runs or packages | envsnap median s | min s | peer | peer median s"
        " | envsnap / peer |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for case, mine, theirs in timed:
        ratio = (
            f"{mine.median / theirs.median:.1f}"
            if mine.seconds and theirs.seconds and not (mine.failure or theirs.failure)
            else "—"
        )
        median, best = cell(mine)
        lines.append(
            f"| {case.what} | {case.size:,} | {median} | {best} | {case.peer_name} |"
            f" {cell(theirs)[0]} | {ratio} |"
        )
    lines += [
        "",
        "First listing of a store without an index (every manifest read and verified, as every"
        " listing did before the index), in-process, once:",
        "",
        "| runs | seconds |",
        "| ---: | ---: |",
        *(f"| {size:,} | {seconds:.2f} |" for size, seconds in cold),
        "",
        "Targets (medians, this run):",
        "",
    ]
    by_key = {(case.what, case.size): mine for case, mine, _ in timed}
    for (what, size), limit in TARGETS.items():
        mine = by_key.get((what, size))
        if mine is None or not mine.seconds or mine.failure:
            lines.append(f"- {what} at {size:,}: at most {limit} s; not measured")
            continue
        verdict = "met" if mine.median <= limit else "NOT met"
        lines.append(
            f"- {what} at {size:,}: at most {limit} s; measured {mine.median:.3f} s, {verdict}"
        )
    failures = [t for _, m, p in timed for t in (m, p) if t.failure]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {t.what} at {t.size:,}: {t.failure}" for t in failures]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


def define_cases(scratch: Path, sizes: Sequence[int]) -> tuple[list[Case], list[tuple[int, float]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVSNAP_", "PYTHON"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    envsnap = [sys.executable, "-m", "envsnap"]
    largest = max(sizes)
    print(f"writing a store of {largest:,} runs...", file=sys.stderr, flush=True)
    big = scratch / f"store-{largest}"
    run_ids = build_store(big, largest)
    cases: list[Case] = []
    cold: list[tuple[int, float]] = []
    for size in sorted(sizes):
        store = big if size == largest else scratch / f"store-{size}"
        if size != largest:
            copy_store(big, store, run_ids[:size])
        ids = run_ids[:size]
        prefix = ids[size // 2][:17]  # the second and one hex digit: unique in these stores
        repo = scratch / f"git-{size}"
        middle = build_git_peer(repo, size)
        cold.append((size, once(lambda store=store: api.scan_runs(store=store))))
        cases += [
            Case(
                what="envsnap list",
                size=size,
                envsnap=command([*envsnap, "list", "--store", str(store)], scratch, env),
                peer_name="`git log --format='%h %ci %s'`, one commit per run",
                peer=command(["git", "log", "--format=%h %ci %s"], repo, env),
            ),
            Case(
                what="envsnap show PREFIX",
                size=size,
                envsnap=command([*envsnap, "show", prefix, "--store", str(store)], scratch, env),
                peer_name="`git show -s PREFIX`",
                peer=command(["git", "show", "-s", middle[:7]], repo, env),
            ),
            Case(
                what="list (API)",
                size=size,
                envsnap=lambda store=store: _no_damage(api.scan_runs(store=store)),
                peer_name="`os.scandir` of runs/ and each run directory",
                peer=lambda store=store: _scandir_all(store / "runs"),
            ),
            Case(
                what="show by prefix (API)",
                size=size,
                envsnap=lambda store=store, prefix=prefix: _show(prefix, store),
                peer_name="`os.listdir` of runs/",
                peer=lambda store=store: _listdir(store / "runs"),
            ),
        ]
    for packages in DIFF_PACKAGES:
        store = scratch / f"diff-{packages}"
        old, new = build_diff_store(store, packages)
        files = [store / "runs" / run_id / "manifest.toml" for run_id in (old, new)]
        cases += [
            Case(
                what="envsnap diff",
                size=packages,
                envsnap=command(
                    [*envsnap, "diff", old, new, "--store", str(store)], scratch, env, ok=(0, 1)
                ),
                peer_name="`diff -u` of the two manifests",
                peer=command(["diff", "-u", *map(str, files)], scratch, env, ok=(0, 1)),
            ),
            Case(
                what="diff (API)",
                size=packages,
                envsnap=lambda store=store, old=old, new=new: _diff(old, new, store),
                peer_name="`tomllib.loads` of the two manifests",
                peer=lambda files=files: _parse_all(files),
            ),
        ]
    return cases, cold


def _no_damage(listing: api.RunListing) -> None:
    if listing.damaged:
        raise BenchError(f"damaged runs in a fresh store: {listing.damaged[:1]}")


def _scandir_all(runs: Path) -> None:
    for entry in os.scandir(runs):
        list(os.scandir(entry.path))


def _listdir(runs: Path) -> None:
    os.listdir(runs)


def _show(prefix: str, store: Path) -> None:
    from envsnap.drift import report

    stored = api.open_run(prefix, store=store)
    report.render_show(stored.manifest, stored.result)


def _diff(old: str, new: str, store: Path) -> None:
    from envsnap.drift import report

    report.render_text(api.diff(old, new, store=store))


def _parse_all(files: Sequence[Path]) -> None:
    for path in files:
        tomllib.loads(path.read_text(encoding="utf-8"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case (default 7)")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="store sizes in runs, comma-separated (default 100,1000,10000)",
    )
    parser.add_argument("--no-write", action="store_true", help=f"don't write {RESULTS_FILE.name}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    if shutil.which("git") is None:
        print("bench_store: error: git is not on PATH (it is a peer)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="envsnap-bench-store-") as tmp:
        scratch = Path(tmp)
        try:
            cases, cold = define_cases(scratch, sizes)
        except (BenchError, subprocess.CalledProcessError) as exc:
            print(f"bench_store: error: {exc}", file=sys.stderr)
            return 2
        load_before = _load_average()
        timed = measure(cases, args.repeat)
        load_after = _load_average()
        for _, mine, theirs in timed:
            for timing in (mine, theirs):
                if timing.failure is not None:
                    timing.failure = without_local_paths(timing.failure, scratch)
    report = render(timed, cold, header(args.repeat, (load_before, load_after)))
    print(report, end="")
    if not args.no_write:
        RESULTS_FILE.write_text(report, encoding="utf-8")
    failed = any(t.failure for _, m, p in timed for t in (m, p))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
