"""Times `envsnap capture` against the tools it is compared with, all in one run on one venv.

Usage: python benchmarks/bench_capture.py [--repeat 7] [--venv DIR] [--no-install] [--no-write]
    [--sizes 10,100,1000]
First runs setup_env.sh: builds benchmarks/.work/venv if it is missing, reinstalls envsnap.
Then the scaling table: capture and pip freeze over synthetic venvs of fake dist-info entries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_workspace import (
    BENCH_DIR,
    DEFAULT_VENV,
    REPO_ROOT,
    BenchError,
    count_distributions,
    ensure_venv,
    make_git_project,
    peer_environment,
)

RESULTS_FILE = BENCH_DIR / "results.md"
CAPTURE = "envsnap capture"
CAPTURE_WITH_PARAMS = "envsnap capture --seed 1 --param lr=0.1"
# The targets (issue 14, round two, for pip freeze): capture's median at most this fraction of the
# peer's median.
TARGETS = {"pip freeze": 0.2, 'wandb.init(mode="offline")': 0.1}
WANDB_SNIPPET = "import sys, wandb; run = wandb.init(mode='offline', dir=sys.argv[1]); run.finish()"


@dataclass(frozen=True, kw_only=True)
class Peer:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str] | None = None  # instead of the run's environment


@dataclass(kw_only=True)
class Timing:
    peer: Peer
    seconds: list[float] = field(default_factory=list)
    failure: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.seconds)


def define_peers(venv: Path, scratch: Path, project: Path) -> list[Peer]:
    bin_dir = venv / "bin"
    python = str(bin_dir / "python")
    envsnap = str(bin_dir / "envsnap")
    store = str(scratch / "store")
    return [
        Peer(name="pip freeze", argv=[str(bin_dir / "pip"), "freeze"], cwd=scratch),
        Peer(
            name="uv pip freeze",
            argv=[str(bin_dir / "uv"), "pip", "freeze", "--python", python],
            cwd=scratch,
        ),
        Peer(
            name='wandb.init(mode="offline")',
            argv=[python, "-c", WANDB_SNIPPET, str(scratch / "wandb")],
            cwd=scratch,
        ),
        Peer(
            name="python -m torch.utils.collect_env",
            argv=[python, "-m", "torch.utils.collect_env"],
            cwd=scratch,
        ),
        Peer(
            name=CAPTURE,
            argv=[envsnap, "capture", "--store", store, "--name", "bench"],
            cwd=project,
        ),
        Peer(
            name=CAPTURE_WITH_PARAMS,
            argv=[
                *(envsnap, "capture", "--store", store, "--name", "bench"),
                *("--seed", "1", "--param", "lr=0.1"),
            ],
            cwd=project,
        ),
    ]


def without_local_paths(text: str, scratch: Path) -> str:
    """Keeps this machine's paths out of the committed results file."""
    for path, label in ((scratch, "<tmp>"), (REPO_ROOT, "<repo>"), (Path.home(), "~")):
        text = text.replace(str(path), label)
    return text


def run_once(timing: Timing, env: dict[str, str]) -> None:
    start = time.perf_counter()
    result = subprocess.run(
        timing.peer.argv,
        cwd=timing.peer.cwd,
        env=timing.peer.env if timing.peer.env is not None else env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-6:]
        timing.failure = f"exit {result.returncode}: " + " / ".join(tail)
        return
    timing.seconds.append(elapsed)


def measure(peers: Sequence[Peer], env: dict[str, str], repeat: int) -> list[Timing]:
    """One untimed warm-up each, then `repeat` rounds with the peers interleaved, so that a
    slow spell on the machine spreads over all of them rather than landing on one."""
    timings = [Timing(peer=peer) for peer in peers]
    for round_index in range(repeat + 1):
        for timing in timings:
            if timing.failure is not None:
                continue
            run_once(timing, env)
            if round_index == 0 and timing.failure is None:
                timing.seconds.clear()
        print(f"  round {round_index}/{repeat} done", file=sys.stderr, flush=True)
    return timings


def machine_line(
    venv: Path, distributions: int, repeat: int, load: tuple[float, float] | None = None
) -> str:
    python = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    cpu = _cpu_model()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return (
        f"{today}; {platform.system()} {platform.machine()}, {os.cpu_count()} cores"
        f"{f' ({cpu})' if cpu else ''}; Python {python}; {distributions} distributions in the"
        f" venv; median and min of {repeat} runs after one warm-up; envsnap at {commit or '?'}"
        # Other work on the machine slows every peer, and not all alike: say how busy it was.
        + (f"; load average {load[0]:.2f} before, {load[1]:.2f} after" if load else "")
    )


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not every platform reports one
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def render(timings: Sequence[Timing], header: str) -> str:
    by_name = {t.peer.name: t for t in timings}
    capture = by_name[CAPTURE]
    with_params = by_name[CAPTURE_WITH_PARAMS]

    def ratio(numerator: Timing, peer: Timing) -> str:
        if not (numerator.ok and peer.ok) or peer.peer.name.startswith("envsnap"):
            return "—"
        return f"{numerator.median / peer.median:.2f}"

    lines = [
        "# envsnap capture benchmark",
        "",
        header,
        "",
        f"| peer | median s | min s | `{CAPTURE}` / peer | with seed and param / peer |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for t in timings:
        if t.ok:
            lines.append(
                f"| `{t.peer.name}` | {t.median:.3f} | {t.best:.3f} | {ratio(capture, t)}"
                f" | {ratio(with_params, t)} |"
            )
        else:
            lines.append(f"| `{t.peer.name}` | failed | failed | — | — |")
    lines += ["", "Targets (medians, this run):", ""]
    for peer_name, limit in TARGETS.items():
        peer = by_name[peer_name]
        if capture.ok and peer.ok:
            value = capture.median / peer.median
            verdict = "met" if value <= limit else "NOT met"
            lines.append(
                f"- `{CAPTURE}` <= {limit} x `{peer_name}`: measured {value:.2f} x, {verdict}"
            )
        else:
            lines.append(f"- `{CAPTURE}` <= {limit} x `{peer_name}`: not measured")
    failures = [t for t in timings if t.failure is not None]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- `{t.peer.name}`: {t.failure}" for t in failures]
    return "\n".join(lines) + "\n"


# --- scaling: 10, 100, 1,000 distributions -------------------------------------------------------


def make_synthetic_venv(prefix: Path, count: int, python_version: str) -> Path:
    """A venv prefix whose site-packages holds ``count`` fake but valid dist-info directories
    (METADATA, INSTALLER, WHEEL, RECORD, as pip leaves them; no code); returns site-packages."""
    minor = ".".join(python_version.split(".")[:2])
    site = prefix / "lib" / f"python{minor}" / "site-packages"
    site.mkdir(parents=True)
    (prefix / "bin").mkdir()
    (prefix / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {python_version}\n"
    )
    for index in range(count):
        name, version = f"synthetic_pkg_{index:04d}", f"1.{index % 7}.{index}"
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: fake\n\n"
        )
        (info / "INSTALLER").write_text("pip\n")
        (info / "WHEEL").write_text(
            "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/RECORD,,\n")
    return site


@dataclass(frozen=True, kw_only=True)
class ScalingRow:
    distributions: int
    capture: Timing
    freeze: Timing


def scaling_peers(
    venv: Path, scratch: Path, project: Path, env: dict[str, str], sizes: Sequence[int]
) -> list[tuple[int, Peer, Peer]]:
    """Per size, the benchmark venv's envsnap capturing the synthetic venv (activated through
    VIRTUAL_ENV, as a user's own venv is) and its pip freezing the same site-packages."""
    python_version = _venv_python_version(venv)
    out = []
    for size in sizes:
        prefix = scratch / f"synthetic-{size}"
        site = make_synthetic_venv(prefix, size, python_version)
        size_env = {**env, "VIRTUAL_ENV": str(prefix)}
        capture = Peer(
            name=f"{CAPTURE} ({size})",
            argv=[str(venv / "bin" / "envsnap"), "capture", "--store", str(scratch / "store")],
            cwd=project,
            env=size_env,
        )
        freeze = Peer(
            name=f"pip freeze --path ({size})",
            argv=[str(venv / "bin" / "pip"), "freeze", "--path", str(site)],
            cwd=scratch,
            env=size_env,
        )
        out.append((size, capture, freeze))
    return out


def _venv_python_version(venv: Path) -> str:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def render_scaling(rows: Sequence[ScalingRow]) -> str:
    lines = [
        "## Scaling with the number of distributions",
        "",
        "Synthetic venvs of fake but valid dist-info directories (METADATA, INSTALLER, WHEEL,"
        " RECORD; no code), made for this run. `envsnap capture` is the benchmark venv's, with"
        " the synthetic venv activated (`VIRTUAL_ENV`); the peer is the same venv's"
        " `pip freeze --path SITE-PACKAGES`. Both interleaved with the rounds above.",
        "",
        "| distributions | `envsnap capture` median s | min s | `pip freeze --path` median s"
        " | min s | capture / pip freeze |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.capture.ok and row.freeze.ok:
            lines.append(
                f"| {row.distributions:,} | {row.capture.median:.3f} | {row.capture.best:.3f}"
                f" | {row.freeze.median:.3f} | {row.freeze.best:.3f}"
                f" | {row.capture.median / row.freeze.median:.2f} |"
            )
        else:
            lines.append(f"| {row.distributions:,} | failed | — | failed | — | — |")
    ok = [r for r in rows if r.capture.ok]
    if len(ok) >= 2:
        small, large = ok[-2], ok[-1]
        factor = large.distributions / small.distributions
        grew = large.capture.median / small.capture.median
        verdict = "no faster than linear" if grew <= factor else "FASTER than linear"
        lines += [
            "",
            f"Growth: from {small.distributions:,} to {large.distributions:,} distributions"
            f" ({factor:.0f} x as many) capture took {grew:.2f} x as long: {verdict}.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per peer (default 7)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="benchmark venv")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="measure the envsnap already in the venv instead of reinstalling the working tree",
    )
    parser.add_argument("--no-write", action="store_true", help=f"don't write {RESULTS_FILE.name}")
    parser.add_argument(
        "--sizes",
        default="10,100,1000",
        help="distributions in the synthetic venvs of the scaling table; '' for none",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    venv = args.venv.resolve()
    try:
        ensure_venv(venv, reinstall=not args.no_install)
        with tempfile.TemporaryDirectory(prefix="envsnap-bench-") as tmp:
            scratch = Path(tmp)
            project = make_git_project(scratch / "project")
            env = peer_environment(venv, scratch)
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
            scaling = scaling_peers(venv, scratch, project, env, sizes)
            peers = define_peers(venv, scratch, project)
            peers += [peer for _, capture, freeze in scaling for peer in (capture, freeze)]
            load_before = _load_average()
            all_timings = measure(peers, env, args.repeat)
            load_after = _load_average()
            by_name = {t.peer.name: t for t in all_timings}
            timings = all_timings[: -2 * len(scaling) or None]
            rows = [
                ScalingRow(distributions=size, capture=by_name[c.name], freeze=by_name[f.name])
                for size, c, f in scaling
            ]
            for timing in all_timings:
                if timing.failure is not None:
                    timing.failure = without_local_paths(timing.failure, scratch)
        distributions = count_distributions(venv / "bin" / "python")
        load = (
            (load_before, load_after)
            if load_before is not None and load_after is not None
            else None
        )
        report = render(timings, machine_line(venv, distributions, args.repeat, load))
        if rows:
            report += "\n" + render_scaling(rows)
    except BenchError as exc:
        print(f"bench_capture: error: {exc}", file=sys.stderr)
        return 2
    print(report, end="")
    if not args.no_write:
        RESULTS_FILE.write_text(report, encoding="utf-8")
    return 0 if all(t.ok for t in all_timings) else 1


if __name__ == "__main__":
    sys.exit(main())
