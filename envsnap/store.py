"""The run store: ``<store>/runs/<run-id>/`` with atomic writes, and run lookup.

A run directory appears in ``runs/`` by one rename of a complete temporary directory, so a kill at
any moment leaves either no run or a whole one, and concurrent captures never share a directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from envsnap.atomicfile import fsync_dir, write_file, write_files, write_new_file
from envsnap.errors import (
    EnvsnapError,
    InterruptError,
    ManifestError,
    RunNotFoundError,
    StoreError,
    UsageError,
)
from envsnap.manifest import (
    Manifest,
    Model,
    Result,
    dumps_result,
    model,
    read_manifest,
    read_result,
    seal_text,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from envsnap.runindex import RunSummary

MANIFEST_FILE = "manifest.toml"
RESULT_FILE = "result.toml"
DIFF_FILE = "diff.patch"
# The recorded code as a record carries it to another host (envsnap push writes it).
CODE_ARCHIVE = "code.tar.gz"
# A run's record: every file of its directory that travels with it (imported from another store,
# pushed to and pulled from a registry), the manifest first. The lock stage, the image stage and
# the rerun stage (the recorded code) own the later names; tests/unit/test_registry.py keeps this
# list in step with them.
RECORD_FILES = (
    MANIFEST_FILE,
    RESULT_FILE,
    DIFF_FILE,
    "requirements.lock.txt",
    "requirements.vcs.txt",
    "conda-explicit.txt",
    "conda-lock.yml",
    "lock.toml",
    "image.toml",
    CODE_ARCHIVE,
)

# What a listing shows of each run, kept so that a listing reads only new and changed runs
# (runindex.py); the manifests stay the truth.
INDEX_FILE = "runs-index.json"

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
_RUN_PREFIX = re.compile(r"^[0-9][0-9a-f-]{0,21}$")
_STALE_TMP_SECONDS = 3600
# A job's directory name under jobs/: the original run's id, then a random part.
_JOB_KEY = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}-[0-9a-f]{8}$")


def new_run_id(now: datetime) -> str:
    """A run id sortable by time to the second, with 24 random bits against same-second clashes."""
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"


@model
class StoredRun(Model):
    """A run as read back from the store (or from a manifest file given by path)."""

    run_id: str
    directory: Path
    manifest: Manifest
    result: Result | None

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    @property
    def diff_path(self) -> Path:
        return self.directory / DIFF_FILE


class Store:
    """One store directory; every path it hands out stays inside it."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        # False for a store that is scratch (a rerun container's, copied out when it ends):
        # files are still written whole and renamed into place, but not synced to disk.
        self.durable = durable
        self.runs_dir = root / "runs"
        self._tmp_dir = root / "tmp"

    # --- writing --------------------------------------------------------------------------

    def write_run(self, manifest: Manifest, diff: bytes = b"") -> tuple[Manifest, Path]:
        """Seal and write a new run atomically; returns the sealed manifest and its directory.

        Should the run id already exist (two captures in one second drawing the same random
        part), a fresh id is drawn: a stored run is never overwritten.
        """
        self._ensure_dirs()
        self._remove_stale_tmp()
        for _attempt in range(5):
            sealed, text = seal_text(manifest)
            files = {MANIFEST_FILE: text.encode("utf-8")}
            if diff:
                files[DIFF_FILE] = diff
            target = self._commit_run(sealed.run_id, files, "writing the run")
            if target is not None:
                return sealed, target
            manifest = dataclasses.replace(manifest, run_id=new_run_id(datetime.now(UTC)))
        raise StoreError(
            f"could not find a free run id in {self.runs_dir}", hint="retry in a second"
        )

    def _commit_run(self, run_id: str, files: Mapping[str, bytes], doing: str) -> Path | None:
        """Write ``files`` into a staging directory, fsync, and rename it to ``runs/<run_id>``;
        None when that run exists already. Interrupted or failed: nothing is left behind."""
        target = self.runs_dir / run_id
        tmp = self._tmp_dir / f"{run_id}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            tmp.mkdir()
            for name, data in files.items():
                write_new_file(tmp / name, data, sync=self.durable)
            self._sync_dir(tmp)
            try:
                tmp.rename(target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return None
                raise
            self._sync_dir(self.runs_dir)
            return target
        except KeyboardInterrupt:
            raise InterruptError(
                f"interrupted while {doing}; nothing was stored", hint="run the command again"
            ) from None
        except OSError as exc:
            raise _write_error(exc, self.root) from None
        finally:
            if tmp.exists():
                _remove_tree(tmp)

    def write_result(self, run_dir: Path, result: Result) -> Path:
        """Write result.toml beside a manifest, atomically (temp file, fsync, rename)."""
        return self.write_run_files(run_dir, {RESULT_FILE: dumps_result(result).encode("utf-8")})[0]

    def write_run_files(
        self, run_dir: Path, files: Mapping[str, bytes], *, remove: Iterable[str] = ()
    ) -> list[Path]:
        """Write files derived from a run (result, lock files, image record) into its directory,
        all or none, and remove ``remove``. The manifest and the diff are never rewritten."""
        for name in (*files, *remove):
            if name in (MANIFEST_FILE, DIFF_FILE) or "/" in name or name.startswith("."):
                raise ValueError(f"{name!r} is not a file a run may have rewritten")  # a bug
        try:
            return write_files(run_dir, files, remove=remove, sync=self.durable)
        except OSError as exc:
            raise StoreError(
                f"writing {', '.join(files)} into {run_dir} failed ({exc.strerror or exc}); "
                "the run's earlier files are as they were",
                hint="check that the store is writable and the disk is not full",
            ) from None

    # --- the images index: the image built for each environment -----------------------------

    def image_record(self, env_id: str) -> bytes | None:
        """The recorded image of an environment (the bytes of images/<env-id>.toml), if any."""
        try:
            return self._image_path(env_id).read_bytes()
        except OSError:
            return None

    def write_image_record(self, env_id: str, data: bytes) -> Path:
        """Record the image of an environment, atomically."""
        path = self._image_path(env_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return write_file(path, data)
        except OSError as exc:
            raise _write_error(exc, self.root) from None

    def _image_path(self, env_id: str) -> Path:
        name = env_id.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", name):
            raise ValueError(f"{env_id!r} is not an env id")  # a bug: env ids are sealed digests
        return self.root / "images" / f"{name}.toml"

    def _sync_dir(self, path: Path) -> None:
        if self.durable:
            fsync_dir(path)

    def remove_run(self, run_id: str) -> None:
        """Remove a run: one rename moves its directory out of ``runs/`` into ``tmp/`` (so a kill
        at any moment leaves the whole run or none of it), then the moved copy is deleted."""
        if not RUN_ID.match(run_id):
            raise RunNotFoundError(f"{run_id!r} is not a run id", hint="see 'envsnap list'")
        directory = self.runs_dir / run_id
        if directory.is_symlink() or not directory.is_dir():
            raise RunNotFoundError(f"no run {run_id} in {self.root}", hint="see 'envsnap list'")
        self._ensure_dirs()
        doomed = self._tmp_dir / f"{run_id}.removed.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            directory.rename(doomed)
            fsync_dir(self.runs_dir)
        except OSError as exc:
            raise StoreError(
                f"run {run_id} could not be removed from {self.root} ({exc.strerror or exc}); "
                "it is still there, whole",
                hint="check that the store is writable",
            ) from None
        _remove_tree(doomed)

    def import_run(self, source: Path) -> Path:
        """Copy a run recorded elsewhere (a rerun's container store) into this store, atomically.

        The manifest is verified against its digest first; an existing run is never replaced.
        """
        run = load_run_dir(source)
        self._ensure_dirs()
        names = (MANIFEST_FILE, DIFF_FILE, RESULT_FILE)
        files = {n: (source / n).read_bytes() for n in names if (source / n).is_file()}
        target = self._commit_run(run.run_id, files, "storing the rerun")
        if target is None:
            raise StoreError(
                f"run {run.run_id} is already in {self.root}", hint="it was imported before"
            )
        return target

    def import_manifest(self, path: Path) -> StoredRun:
        """The run a manifest file outside the store records, imported into the store.

        The manifest is verified against its digest. A file in a run directory of its own
        (``<run-id>/manifest.toml``, another store's, a copied one or a pulled record) brings the
        rest of the run's record (``RECORD_FILES``: result, diff, lock files, image, code);
        any other copy (a committed ``envsnap.lock.toml``) brings the manifest alone. The same
        manifest given again is the same run; a different one under an existing run id is refused.
        Nothing is ever written beside ``path``.
        """
        manifest = read_manifest(path)
        if not RUN_ID.match(manifest.run_id):
            raise ManifestError(
                f"{path} records the run id {manifest.run_id!r}, which is not a run id",
                hint="use a manifest envsnap wrote, unedited",
            )
        existing = self._existing(manifest.run_id)
        if existing is not None:
            if existing.manifest.digest != manifest.digest:
                raise StoreError(
                    f"{path} records run {manifest.run_id}, but the store {self.root} holds a "
                    "different run under that id",
                    hint="use the stored run by its id, or import the file with another --store",
                )
            return existing
        files = {MANIFEST_FILE: path.read_bytes()}
        if path.name == MANIFEST_FILE and path.parent.name == manifest.run_id:
            for name in RECORD_FILES[1:]:
                if (path.parent / name).is_file():
                    files[name] = (path.parent / name).read_bytes()
        self._ensure_dirs()
        target = self._commit_run(manifest.run_id, files, "importing the manifest")
        if target is None:  # imported by a concurrent command a moment ago
            return self.import_manifest(path)
        return load_run_dir(target)

    def _existing(self, run_id: str) -> StoredRun | None:
        directory = self.runs_dir / run_id
        if directory.is_symlink() or not (directory / MANIFEST_FILE).is_file():
            return None
        return load_run_dir(directory)

    def holds(self, path: Path) -> bool:
        """Whether ``path`` lies inside this store's run directories."""
        try:
            path.resolve().relative_to(self.runs_dir.resolve())
        except (ValueError, OSError):
            return False
        return True

    def _ensure_dirs(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self._tmp_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"the store {self.root} cannot be created ({exc.strerror or exc})",
                hint="choose a writable place with --store or ENVSNAP_STORE",
            ) from None
        if not os.access(self.runs_dir, os.W_OK):
            raise StoreError(
                f"the store {self.root} is not writable",
                hint="choose a writable place with --store or ENVSNAP_STORE",
            )

    def _remove_stale_tmp(self) -> None:
        """Sweep what killed captures left in tmp/; a young entry may belong to a live capture."""
        cutoff = time.time() - _STALE_TMP_SECONDS
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._tmp_dir):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    _remove_tree(Path(entry.path))

    # --- jobs: reruns handed to a scheduler, collected later ------------------------------

    @property
    def jobs_dir(self) -> Path:
        """``<store>/jobs/``: one directory per rerun submitted to a scheduler and not yet
        collected. The job reads its inputs from there and leaves what came back there, so a
        store used with a cluster lies on a filesystem its nodes share."""
        return self.root / "jobs"

    def new_job(self, key: str, files: Callable[[Path], Mapping[str, bytes]]) -> Path:
        """A new job directory ``jobs/<key>``, whole or not at all: ``files`` is given its final
        path (a job script names it) and returns the files to write into it."""
        if not _JOB_KEY.fullmatch(key):
            raise StoreError(f"{key!r} is not a job name", hint="this is a bug in envsnap")
        self._ensure_dirs()
        target = self.jobs_dir / key
        staging = self._tmp_dir / f"job-{key}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            self.jobs_dir.mkdir(exist_ok=True)
            staging.mkdir()
            write_files(staging, files(target))
            staging.rename(target)
            fsync_dir(self.jobs_dir)
        except OSError as exc:
            _remove_tree(staging)
            raise _write_error(exc, self.root) from None
        return target

    def job_dirs(self) -> list[Path]:
        """The jobs not yet collected, oldest name first (a name starts with its run id)."""
        try:
            entries = sorted(os.scandir(self.jobs_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"the store {self.root} cannot be read ({exc.strerror})") from None
        return [
            Path(e.path)
            for e in entries
            if _JOB_KEY.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        ]

    def claim_job(self, directory: Path) -> Path | None:
        """Take a job for collecting: one rename, so two collects never take the same one
        (None: another has it). ``release_job`` gives it back, ``remove_job`` ends it."""
        claimed = directory.with_name(f".{directory.name}.{os.getpid()}.{os.urandom(3).hex()}")
        try:
            directory.rename(claimed)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _write_error(exc, self.root) from None
        return claimed

    def release_job(self, claimed: Path, key: str) -> None:
        """Put a claimed job back under its name, for the next collect."""
        with contextlib.suppress(OSError):
            claimed.rename(self.jobs_dir / key)

    def remove_job(self, claimed: Path) -> None:
        """A collected job's directory, gone (moved out first, so a kill leaves none half)."""
        self._ensure_dirs()
        doomed = self._tmp_dir / f"{claimed.name.lstrip('.')}.removed.{os.urandom(4).hex()}"
        try:
            claimed.rename(doomed)
        except OSError:
            return
        _remove_tree(doomed)

    # --- reading --------------------------------------------------------------------------

    def run_ids(self) -> list[str]:
        """Ids of the complete runs, oldest first."""
        return [n for n in self._run_names() if self._is_run_dir(n)]

    def _run_names(self, prefix: str = "") -> list[str]:
        """Sorted names in runs/ that start with ``prefix`` and are shaped as run ids, complete
        runs or not: the directory's listing alone, no run looked into."""
        try:
            names = os.listdir(self.runs_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"the store {self.root} cannot be read ({exc.strerror})") from None
        return sorted(n for n in names if n.startswith(prefix) and RUN_ID.match(n))

    def _is_run_dir(self, run_id: str) -> bool:
        path = self.runs_dir / run_id
        return not path.is_symlink() and (path / MANIFEST_FILE).is_file()

    def listing(self) -> tuple[list[RunSummary], list[tuple[str, EnvsnapError]]]:
        """What ``scan`` finds, summarised: every run in creation order, and apart from them
        each run that cannot be read with the reason. Only runs new or changed since the index
        was written are read; the index is then brought up to date."""
        from envsnap import runindex  # here: capture, which writes runs, needs no index
        from envsnap.runindex import RunSummary

        try:
            fd = os.open(self.runs_dir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise StoreError(f"the store {self.root} cannot be read ({exc.strerror})") from None
        try:
            began = self._filesystem_now()  # before any run is looked at: runindex.settled
            index_path = self.root / INDEX_FILE
            index = runindex.read_index(index_path)
            rows: dict[str, runindex.Row] = {}
            read: list[str] = []  # runs read now, their rows not the index's
            damaged: dict[str, EnvsnapError] = {}
            for entry in os.scandir(fd):
                run_id = entry.name
                if not RUN_ID.match(run_id) or entry.is_symlink():
                    continue
                manifest = runindex.file_state(f"{run_id}/{MANIFEST_FILE}", fd)
                if manifest is None:
                    continue  # no manifest file: not a run
                result = runindex.file_state(f"{run_id}/{RESULT_FILE}", fd)
                row = index.get(run_id)
                if row is None or row[6] != manifest or row[7] != result:
                    try:
                        loaded = self.load(run_id)
                        summary = RunSummary.of(loaded.manifest, loaded.result)
                    except EnvsnapError as exc:
                        damaged[run_id] = exc
                        continue
                    row = runindex.row_of(summary, manifest, result)
                    read.append(run_id)
                rows[run_id] = row
        finally:
            os.close(fd)
        if began is not None:
            # The index's rows are settled; rows read now are written once settled too.
            fresh = [i for i in read if runindex.settled(rows[i], began)]
            if fresh or len(rows) - len(read) != len(index):
                kept = {i: r for i, r in rows.items() if runindex.settled(r, began)}
                with contextlib.suppress(OSError):  # a read-only store lists all the same
                    write_file(index_path, runindex.render_index(kept))
        # Ordered as latest_runs orders them: runs of one second by creation time, damaged last.
        per_second = Counter(i[:15] for i in (*rows, *damaged))
        order = sorted(
            (*rows, *damaged),
            key=lambda i: (
                i[:15],
                rows[i][1] if per_second[i[:15]] > 1 and i in rows else "",
                i,
            ),
        )
        summaries = [RunSummary.of_row(rows[i]) for i in order if i in rows]
        return summaries, [(i, damaged[i]) for i in order if i in damaged]

    def _filesystem_now(self) -> int | None:
        """The store's file system's present time (ns), read from a file made for it; None
        when the store cannot be written to (no index is written then)."""
        probe = self._tmp_dir / f".clock.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            self._tmp_dir.mkdir(exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            return None
        try:
            return os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                probe.unlink()

    def resolve(self, ref: str) -> str:
        """Turn a full id, a unique prefix or ``latest`` into a run id."""
        if ref == "latest":
            runs = self.latest_runs(only_last_second=True)
            if not runs:
                raise RunNotFoundError(
                    f"the store {self.root} holds no runs yet", hint="capture one first"
                )
            return runs[-1]
        if not _RUN_PREFIX.match(ref):
            raise RunNotFoundError(
                f"{ref!r} is not a run id, a prefix of one, 'latest' or a manifest path",
                hint="see 'envsnap list' for the runs in this store",
            )
        matches = [n for n in self._run_names(ref) if self._is_run_dir(n)]
        if not matches:
            raise RunNotFoundError(
                f"no run matches {ref!r} in {self.root}",
                hint="see 'envsnap list', or pass --store",
            )
        if len(matches) > 1:
            shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
            raise RunNotFoundError(
                f"{ref!r} matches {len(matches)} runs ({shown})",
                hint="give more characters of the run id",
            )
        return matches[0]

    def latest_runs(self, *, only_last_second: bool = False) -> list[str]:
        """Run ids in order of creation. Ids order runs to the second; runs within one second are
        ordered by their manifests' timestamps, read only for such ties."""
        if only_last_second:  # the newest run found first, so a large store is not walked
            names = self._run_names()
            last = next((n for n in reversed(names) if self._is_run_dir(n)), None)
            second = "" if last is None else last[:15]
            ids = [n for n in names if n[:15] == second and self._is_run_dir(n)]
        else:
            ids = self.run_ids()
        per_second = Counter(i[:15] for i in ids)
        tied = {i for i in ids if per_second[i[:15]] > 1}
        created = {i: self._created(i) for i in tied}
        return sorted(ids, key=lambda i: (i[:15], created.get(i, ""), i))

    def _created(self, run_id: str) -> str:
        """A run's creation time for ordering; a damaged run sorts by its id alone."""
        try:
            return self.load(run_id).manifest.created
        except EnvsnapError:
            return ""

    def load(self, run_id: str) -> StoredRun:
        """Read a run by exact id; the manifest is verified against its digest, and must be the
        manifest of that run (a directory copied or renamed by hand is refused)."""
        if not RUN_ID.match(run_id):
            raise RunNotFoundError(f"{run_id!r} is not a run id", hint="see 'envsnap list'")
        directory = self.runs_dir / run_id
        if directory.is_symlink() or not directory.is_dir():
            raise RunNotFoundError(f"no run {run_id} in {self.root}", hint="see 'envsnap list'")
        run = load_run_dir(directory)
        if run.run_id != run_id:
            raise ManifestError(
                f"the run directory {directory} holds the manifest of run {run.run_id} "
                "(copied or renamed by hand)",
                hint=f"rename it back to {run.run_id}, or remove the copy",
            )
        return run

    def scan(self) -> tuple[list[StoredRun], list[tuple[str, EnvsnapError]]]:
        """Every run in creation order, and apart from them each run that cannot be read with
        the reason: one damaged run never hides the others."""
        good: list[StoredRun] = []
        damaged: list[tuple[str, EnvsnapError]] = []
        for run_id in self.latest_runs():
            try:
                good.append(self.load(run_id))
            except EnvsnapError as exc:
                damaged.append((run_id, exc))
        return good, damaged


def load_run_dir(directory: Path) -> StoredRun:
    """Read manifest.toml (and result.toml when present) from a run directory."""
    manifest = read_manifest(directory / MANIFEST_FILE)
    result_path = directory / RESULT_FILE
    result = read_result(result_path) if result_path.is_file() else None
    if result is not None and result.run_id != manifest.run_id:
        raise ManifestError(
            f"{result_path} belongs to run {result.run_id}, not {manifest.run_id}",
            hint="restore the run directory from a backup",
        )
    return StoredRun(run_id=manifest.run_id, directory=directory, manifest=manifest, result=result)


def open_run(
    store: Store, ref: str, *, pull: Callable[[str], StoredRun | None] | None = None
) -> StoredRun:
    """Resolve RUN as the CLI accepts it: id, prefix, ``latest``, or the path of a manifest
    (any copy, under any name), which is imported into the store first so that everything
    derived from it is written there and never beside the file.

    ``pull`` is asked first about a ``ref`` that names no existing path: given a registry
    reference it fetches that record into this store and returns the run, given anything else
    None. The store itself never reaches a network."""
    if pull is not None and not os.path.lexists(ref):
        pulled = pull(ref)
        if pulled is not None:
            return pulled
    if ref.endswith(".toml") or os.sep in ref or ref.startswith("."):
        path = Path(ref)
        if path.is_dir():
            path = path / MANIFEST_FILE
        if not path.is_file():
            raise UsageError(f"{ref} is not a manifest file", hint="check the path")
        if path.name == MANIFEST_FILE and store.holds(path):
            return store.load(path.parent.name)
        return store.import_manifest(path)
    return store.load(store.resolve(ref))


def _remove_tree(path: Path) -> None:
    import shutil  # only for cleanup after a failure: kept off capture's start-up path

    shutil.rmtree(path, ignore_errors=True)


def _write_error(exc: OSError, root: Path) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(
            f"no space left on the device holding {root}; nothing was stored",
            hint="free some space and run the command again",
        )
    return StoreError(
        f"writing to the store {root} failed ({exc.strerror or exc}); nothing was stored",
        hint="check that the store is writable, or choose another with --store",
    )
