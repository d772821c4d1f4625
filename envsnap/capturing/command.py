"""Runs the recorded command with stdio passed through, then reads what it produced: output file
hashes and the numbers in its metrics file."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envsnap.manifest import OutputFile

EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


@dataclass(frozen=True, kw_only=True)
class CommandOutcome:
    """How the command ended."""

    exit_code: int
    started: datetime
    ended: datetime
    duration_s: float
    interrupted: bool
    error: str = ""


def run_command(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> CommandOutcome:
    """Run ``argv`` in the foreground and wait for it, also through Ctrl-C.

    Ctrl-C reaches the whole foreground process group, so the command gets it too; envsnap keeps
    waiting for it to finish so the result still records how it ended.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    executable = shutil.which(argv[0], path=env.get("PATH")) if "/" not in argv[0] else argv[0]
    if executable is None:
        return _not_started(started, EXIT_NOT_FOUND, f"command {argv[0]!r} was not found on PATH")
    try:
        process = subprocess.Popen([executable, *argv[1:]], cwd=cwd, env=dict(env))
    except FileNotFoundError:
        return _not_started(started, EXIT_NOT_FOUND, f"command {argv[0]!r} was not found")
    except PermissionError:
        return _not_started(started, EXIT_NOT_EXECUTABLE, f"command {argv[0]!r} is not executable")
    interrupted = False
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
            # The child got the same SIGINT; give it a moment to exit cleanly, then insist.
            try:
                code = process.wait(timeout=10)
                break
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                process.send_signal(signal.SIGKILL)
    ended = datetime.now(UTC)
    return CommandOutcome(
        exit_code=128 - code if code < 0 else code,
        started=started,
        ended=ended,
        duration_s=round(time.monotonic() - clock, 3),
        interrupted=interrupted,
    )


def _not_started(started: datetime, code: int, error: str) -> CommandOutcome:
    return CommandOutcome(
        exit_code=code,
        started=started,
        ended=started,
        duration_s=0.0,
        interrupted=False,
        error=error,
    )


# What tells a file the command wrote from one that was there before it: device, inode, size,
# modification and change times. Compared with the same file's stamp taken just before the
# command starts, this needs no clock agreement between the host and a network filesystem.
Stamp = tuple[int, int, int, int, int]


def stamp_outputs(patterns: Sequence[str], metrics: str, *, cwd: Path) -> dict[str, Stamp]:
    """The stamp of every file an output glob or the metrics file names, by recorded path;
    taken before the command runs."""
    stamps = {rel: _stamp(path) for rel, path in _matching_files(patterns, cwd).items()}
    if metrics:
        stamps[recorded_path(metrics)] = _stamp(cwd / metrics)
    return {rel: stamp for rel, stamp in stamps.items() if stamp is not None}


def written_since(before: Mapping[str, Stamp], rel: str, path: Path) -> bool:
    """Whether ``path`` was created or rewritten after ``before`` was taken."""
    return rel not in before or _stamp(path) != before[rel]


def hash_outputs(
    patterns: Sequence[str], *, cwd: Path, before: Mapping[str, Stamp] | None = None
) -> tuple[tuple[OutputFile, ...], tuple[str, ...]]:
    """sha256 of every regular file matching an output glob, relative to the command's cwd, and
    the paths of matching files the command did not write (unchanged since ``before``)."""
    found: list[OutputFile] = []
    stale: list[str] = []
    for rel, path in sorted(_matching_files(patterns, cwd).items()):
        if before is not None and not written_since(before, rel, path):
            stale.append(rel)
            continue
        found.append(OutputFile(path=rel, sha256=_sha256(path), bytes=path.stat().st_size))
    return tuple(found), tuple(stale)


def _matching_files(patterns: Sequence[str], cwd: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pattern in patterns:
        for match in glob.glob(pattern, root_dir=cwd, recursive=True):
            path = cwd / match
            if path.is_file():
                found[recorded_path(match)] = path
    return found


def recorded_path(path: str) -> str:
    """How a path relative to the command's cwd is recorded: normalised, with "/"."""
    return Path(os.path.normpath(path)).as_posix()


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metrics(path: Path) -> tuple[dict[str, float], str]:
    """The numbers in a JSON metrics file as flat dotted keys, and an error sentence or ""."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"metrics file {path.name} was not written by the command"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"metrics file {path.name} is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return {}, f"metrics file {path.name} does not hold a JSON object"
    return _flatten_numbers(data, ""), ""


def _flatten_numbers(data: Mapping[str, Any], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten_numbers(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out
