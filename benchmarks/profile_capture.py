"""Profiles one `envsnap capture` in the benchmark venv: what it imports (-X importtime) and
where its time goes (cProfile), so that a slow capture can be traced to its cause.

Usage: python benchmarks/profile_capture.py [--top 25] [--venv DIR] [-- EXTRA CAPTURE ARGS...]
Full reports are left in benchmarks/.work/profile/; a summary is printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_workspace import (
    BENCH_DIR,
    DEFAULT_VENV,
    BenchError,
    ensure_venv,
    make_git_project,
    peer_environment,
)

PROFILE_DIR = BENCH_DIR / ".work" / "profile"
# Printed by the venv's own python, so the stats file is read by the version that wrote it.
PSTATS_SNIPPET = r"""
import pstats, sys
stats = pstats.Stats(sys.argv[1])
stats.sort_stats("cumulative").print_stats(int(sys.argv[2]))
stats.sort_stats("tottime").print_stats(int(sys.argv[2]))
stats.print_callers(r"subprocess.py:\d+\(run\)")
"""


@dataclass(frozen=True, kw_only=True)
class ImportCost:
    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportCost]:
    costs = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        stripped = name.lstrip()
        depth = (len(name) - len(stripped) - 1) // 2
        costs.append(
            ImportCost(
                module=stripped.strip(),
                self_us=int(self_us),
                cumulative_us=int(cumulative_us),
                depth=depth,
            )
        )
    return costs


def summarise_imports(costs: list[ImportCost], top: int) -> str:
    total_ms = sum(c.self_us for c in costs) / 1000
    # Depth 0 entries are what the interpreter and envsnap import directly; their cumulative
    # times add up to the whole, so they say which top-level package to blame.
    roots = sorted((c for c in costs if c.depth == 0), key=lambda c: -c.cumulative_us)[:top]
    heavy_self = sorted(costs, key=lambda c: -c.self_us)[:top]
    lines = [f"imports: {len(costs)} modules, {total_ms:.0f} ms in all", ""]
    lines.append("top-level imports by cumulative ms:")
    lines += [f"  {c.cumulative_us / 1000:8.1f}  {c.module}" for c in roots]
    lines.append("")
    lines.append("modules by own (self) ms:")
    lines += [f"  {c.self_us / 1000:8.1f}  {c.module}" for c in heavy_self]
    return "\n".join(lines)


def run_checked(argv: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BenchError(f"{' '.join(argv[:4])}... failed (exit {result.returncode}):\n{tail}")
    return elapsed, result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25, help="rows per listing (default 25)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="benchmark venv")
    parser.add_argument("extra", nargs="*", help="more arguments for envsnap capture")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    venv = args.venv.resolve()
    python = str(venv / "bin" / "python")
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        ensure_venv(venv, reinstall=True)
        with tempfile.TemporaryDirectory(prefix="envsnap-profile-") as tmp:
            scratch = Path(tmp)
            project = make_git_project(scratch / "project")
            env = peer_environment(venv, scratch)
            capture = ["-m", "envsnap", "capture", "--store", str(scratch / "store")]
            capture += ["--name", "profile", *args.extra]
            run_checked([python, *capture], cwd=project, env=env)  # warm the caches
            wall, _ = run_checked([python, *capture], cwd=project, env=env)
            _, importtime = run_checked(
                [python, "-X", "importtime", *capture], cwd=project, env=env
            )
            stats_file = PROFILE_DIR / "capture.prof"
            run_checked(
                [python, "-m", "cProfile", "-o", str(stats_file), *capture], cwd=project, env=env
            )
    except BenchError as exc:
        print(f"profile_capture: error: {exc}", file=sys.stderr)
        return 2
    (PROFILE_DIR / "importtime.txt").write_text(importtime, encoding="utf-8")
    stats = subprocess.run(
        [python, "-c", PSTATS_SNIPPET, str(stats_file), str(args.top)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (PROFILE_DIR / "cprofile.txt").write_text(stats, encoding="utf-8")
    print(f"envsnap capture wall time: {wall:.3f} s (one warm run)\n")
    print(summarise_imports(parse_importtime(importtime), args.top))
    print(f"\ncProfile (cumulative, tottime, callers of subprocess.run):\n{stats}")
    print(f"full reports: {PROFILE_DIR.relative_to(BENCH_DIR.parent)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
