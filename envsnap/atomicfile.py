"""Files written whole or not at all: each is written to a temporary name beside its place,
synced, then renamed over it. The one implementation of that step; the store and the workflow
file use it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path


def write_files(
    directory: Path, files: Mapping[str, bytes], *, remove: Iterable[str] = (), sync: bool = True
) -> list[Path]:
    """Write ``files`` (plain names) into ``directory`` as one step as far as a crash or a full
    disk can tell: every file is staged and synced before any is renamed into place, in the
    order given (put the file that names the others last), then ``remove`` goes. Raises OSError;
    nothing staged is left behind either way. ``sync`` False: renamed whole, not synced (for a
    scratch directory no crash can leave half written where anyone looks)."""
    staged: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            target = directory / name
            staged.append((_stage(target, data, sync=sync), target))
        for tmp, target in staged:
            tmp.replace(target)
        for name in remove:
            (directory / name).unlink(missing_ok=True)
        if sync:
            fsync_dir(directory)
    finally:
        for tmp, _target in staged:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # only those never renamed are still there
    return [target for _tmp, target in staged]


def write_file(path: Path, data: bytes) -> Path:
    """One file written whole or not at all."""
    return write_files(path.parent, {path.name: data})[0]


def write_new_file(path: Path, data: bytes, mode: int = 0o644, *, sync: bool = True) -> None:
    """Create ``path`` (which must not exist) with ``data``, synced unless ``sync`` is False;
    for staging directories."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; a filesystem that cannot sync directories is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stage(path: Path, data: bytes, *, sync: bool = True) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        write_new_file(tmp, data, sync=sync)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return tmp
