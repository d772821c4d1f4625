"""The [[data]] fingerprints: sha256 of a file, or a tree hash over a directory's files and
symlinks, so a rerun can tell whether its inputs are the ones recorded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from envsnap.errors import DataError
from envsnap.manifest import DataItem

_CHUNK = 1024 * 1024


def fingerprint_data(paths: Sequence[str], *, base: Path) -> tuple[DataItem, ...]:
    """One fingerprint per path (relative paths resolve against ``base``), sorted, without
    duplicates. Raises DataError for a path that does not exist or cannot be read."""
    items: dict[str, DataItem] = {}
    for given in paths:
        full, recorded = _locate(given, base)
        if recorded in items:
            continue
        if full.is_file():
            digest, size = _hash_file(full, given)
            items[recorded] = DataItem(
                path=recorded, kind="file", sha256=digest, bytes=size, files=1
            )
        elif full.is_dir():
            items[recorded] = _hash_tree(full, recorded, given)
        elif full.exists() or full.is_symlink():
            raise DataError(
                f"data path {given!r} is neither a file nor a directory",
                hint="pass regular files or directories to --data",
            )
        else:
            raise DataError(f"data path {given!r} does not exist", hint="check --data")
    return tuple(items[key] for key in sorted(items))


def _locate(given: str, base: Path) -> tuple[Path, str]:
    """The path to read and the normalised posix path to record (relative to base if inside)."""
    base_abs = Path(os.path.normpath(base.absolute()))
    full = Path(os.path.normpath(base_abs / given))
    try:
        recorded = full.relative_to(base_abs).as_posix()
    except ValueError:  # outside base: "../shared/x" stays relative, "/datasets/x" absolute
        recorded = Path(os.path.normpath(given)).as_posix()
    return full, recorded or "."


def _hash_file(path: Path, given: str) -> tuple[str, int]:
    import hashlib  # OpenSSL's, for data of any size; loaded only when there is data to hash

    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise DataError(
            f"data path {given!r} cannot be read ({exc.strerror or exc})",
            hint="check its permissions",
        ) from None
    return digest.hexdigest(), size


def _hash_tree(root: Path, recorded: str, given: str) -> DataItem:
    # Entries are sorted by their full relative path, so the hash does not depend on the order
    # the filesystem lists a directory in. Symlinks count by their target text, unfollowed.
    lines: list[tuple[bytes, bytes]] = []
    total = 0
    pending = [root]
    try:
        while pending:
            directory = pending.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    rel = os.fsencode(Path(entry.path).relative_to(root).as_posix())
                    if entry.is_symlink():
                        target = os.fsencode(os.readlink(entry.path))
                        lines.append((rel, rel + b"\0link:" + target + b"\n"))
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        digest, size = _hash_file(Path(entry.path), given)
                        total += size
                        lines.append((rel, rel + b"\0" + digest.encode() + b"\n"))
    except OSError as exc:
        raise DataError(
            f"data path {given!r} cannot be read ({exc.strerror or exc})",
            hint="check its permissions",
        ) from None
    import hashlib

    outer = hashlib.sha256()
    for _rel, line in sorted(lines):
        outer.update(line)
    return DataItem(
        path=recorded, kind="dir", sha256=outer.hexdigest(), bytes=total, files=len(lines)
    )
