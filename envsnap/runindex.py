"""The store's index of runs: what ``envsnap list`` shows of each run, with the state of the
files it was read from, so that a listing reads only the runs that are new or changed since.

A cache, never a record: a row names the inode, size, mtime and ctime of the run's manifest and
result as they were when the row was read, and is used only while both files still match it.
A row is written only for files last changed before the listing began (by the file system's own
clock), so a change made during or after it never matches an old row. Damaged runs get no row:
they are read, and named, every time. An index that is missing, damaged (its hash no longer
matches) or of another schema reads as empty and is rewritten.

JSON, not TOML: every listing reads the index whole, and the standard library's JSON reader is
compiled where its TOML reader is not. Rows stay plain lists in memory, as read: a listing of
10,000 runs made a model of each row in about 0.1 s, a third of its budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envsnap.manifest import Manifest, Result

INDEX_SCHEMA = "envsnap.index/1"

# [run_id, created, name, env_id, exit_code, rerun_of, manifest state, result state or None],
# a state being [inode, size, mtime_ns, ctime_ns]. The change time moves on any write and no
# tool can set it back; the inode moves when a file is replaced.
Row = list[Any]


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One line of ``envsnap list``."""

    run_id: str
    created: str
    name: str
    env_id: str
    exit_code: int | None
    rerun_of: str = ""

    @classmethod
    def of(cls, m: Manifest, result: Result | None) -> RunSummary:
        return cls(
            run_id=m.run_id,
            created=m.created,
            name=m.name,
            env_id=m.env_id,
            exit_code=result.exit_code if result else None,
            rerun_of=m.rerun_of,
        )

    @classmethod
    def of_row(cls, row: Row) -> RunSummary:
        run_id, created, name, env_id, exit_code, rerun_of = row[:6]
        return cls(
            run_id=run_id,
            created=created,
            name=name,
            env_id=env_id,
            exit_code=exit_code,
            rerun_of=rerun_of,
        )

    @property
    def exit_text(self) -> str:
        return "-" if self.exit_code is None else f"exit {self.exit_code}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "created": self.created,
            "name": self.name,
            "env_id": self.env_id,
            "exit_code": self.exit_code,
            "rerun_of": self.rerun_of,
        }


def row_of(summary: RunSummary, manifest: list[int], result: list[int] | None) -> Row:
    s = summary
    return [s.run_id, s.created, s.name, s.env_id, s.exit_code, s.rerun_of, manifest, result]


def file_state(path: str, dir_fd: int) -> list[int] | None:
    """The state of the regular file at ``path`` (relative to ``dir_fd``), or None when there
    is none."""
    try:
        st = os.stat(path, dir_fd=dir_fd)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def settled(row: Row, now_ns: int) -> bool:
    """Whether the row's files last changed strictly before ``now_ns`` (file system time), so
    that any later change gives them another state."""
    manifest, result = row[6], row[7]
    latest = max(manifest[2], manifest[3])
    if result is not None:
        latest = max(latest, result[2], result[3])
    return bool(latest < now_ns)


def read_index(path: Path) -> dict[str, Row]:
    """The rows of the index at ``path`` by run id; empty when it is missing, damaged or not
    of this schema. The hash over the rows stands for checking each of them."""
    try:
        data = path.read_bytes()
        head, _, body = data.partition(b"\n")
        meta = json.loads(head)
        if meta != {"schema": INDEX_SCHEMA, "sha256": hashlib.sha256(body).hexdigest()}:
            return {}
        rows = json.loads(body)
        return {row[0]: row for row in rows if len(row) == 8}
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}


def render_index(rows: dict[str, Row]) -> bytes:
    """The index file's bytes: a line naming the schema and the hash of the rows, then the rows,
    one JSON array a line, sorted by run id."""
    lines = (json.dumps(rows[run_id], ensure_ascii=False) for run_id in sorted(rows))
    body = ("[\n" + ",\n".join(lines) + "\n]\n").encode("utf-8")
    meta = {"schema": INDEX_SCHEMA, "sha256": hashlib.sha256(body).hexdigest()}
    return json.dumps(meta).encode("utf-8") + b"\n" + body
