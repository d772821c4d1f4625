"""A run's lock files: locked once through the store, read back and checked against lock.toml."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from envsnap.errors import StoreError
from envsnap.locking.index import SimpleIndexClient
from envsnap.locking.model import (
    CONDA_EXPLICIT_FILE,
    CONDA_LOCK_FILE,
    LOCK_SCHEMA,
    REQUIREMENTS_FILE,
    SUMMARY_FILE,
    VCS_FILE,
    HashSource,
    LockError,
    LockResult,
    PackageNote,
)
from envsnap.locking.plan import lock_packages
from envsnap.store import Store, StoredRun

# --- writing -----------------------------------------------------------------------------------


def write_lock_files(store: Store, run_dir: Path, result: LockResult) -> list[Path]:
    """Write the lock files and ``lock.toml`` into the run directory; lock files a previous lock
    wrote that this result has no use for are removed.

    Every file is written to a temporary name and synced before any is renamed into place, so a
    full disk or a failed write leaves the previous lock files (or none) as they were."""
    import tomli_w

    texts = result.file_texts()
    summary: dict[str, Any] = {
        "schema": LOCK_SCHEMA,
        "run_id": result.run_id,
        "manifest_digest": result.manifest_digest,
        "counts": {
            "index": result.locked_index,
            "url": result.locked_url,
            "vcs": result.locked_vcs,
            "conda": result.locked_conda,
            "unlockable": len(result.unlockable),
            "covered_elsewhere": len(result.covered_elsewhere),
        },
        "files": {
            name: "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
            for name, text in texts.items()
        },
        "unlockable": [_note_data(note) for note in result.unlockable],
        "covered_elsewhere": [_note_data(note) for note in result.covered_elsewhere],
    }
    texts[SUMMARY_FILE] = tomli_w.dumps(summary, multiline_strings=False)
    unused = [n for n in (VCS_FILE, CONDA_EXPLICIT_FILE, CONDA_LOCK_FILE) if n not in texts]
    try:
        # lock.toml, which names the others' hashes, goes last
        return store.write_run_files(
            run_dir, {name: text.encode("utf-8") for name, text in texts.items()}, remove=unused
        )
    except StoreError as exc:
        raise LockError(
            f"the lock files cannot be written to {run_dir}: {exc.message}",
            hint="check that the run directory is writable and the disk is not full",
        ) from None


def _note_data(note: PackageNote) -> dict[str, str]:
    return {
        "manager": note.manager,
        "name": note.name,
        "version": note.version,
        "reason": note.reason,
    }


def lock_run(
    run: StoredRun,
    store: Store,
    *,
    source: HashSource | None = None,
    cache_dir: Path | None = None,
) -> tuple[LockResult, list[Path]]:
    """Lock a stored run and write its lock files beside its manifest, once: a run locked
    before keeps its lock files (read back and checked, no index asked), so what they say never
    depends on which command ran last."""
    existing = read_lock_files(run)
    if existing is not None:
        return existing
    result = lock_packages(run.manifest, source or SimpleIndexClient(cache_dir=cache_dir))
    return result, write_lock_files(store, run.directory, result)


def read_lock_files(run: StoredRun) -> tuple[LockResult, list[Path]] | None:
    """The lock a run was given before (None when it has none), verified against the hashes
    ``lock.toml`` records; a lock file changed after writing is an error, never used."""
    import tomllib

    summary_path = run.directory / SUMMARY_FILE
    try:
        summary = tomllib.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _changed_lock(summary_path, f"it cannot be read ({exc})") from None
    if summary.get("schema") != LOCK_SCHEMA or summary.get("run_id") != run.run_id:
        raise _changed_lock(summary_path, "it belongs to another run or schema")
    files = summary.get("files")
    if not isinstance(files, dict) or REQUIREMENTS_FILE not in files:
        raise _changed_lock(summary_path, "it lists no requirements file")
    texts: dict[str, str] = {}
    for name, digest in sorted(files.items()):
        path = run.directory / str(name)
        try:
            data = path.read_bytes()
        except OSError:
            raise _changed_lock(path, "it is missing") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise _changed_lock(path, "its content does not match lock.toml")
        texts[str(name)] = data.decode("utf-8", errors="replace")
    counts = summary.get("counts", {})

    def notes(key: str) -> tuple[PackageNote, ...]:
        return tuple(
            PackageNote(
                manager="conda" if n.get("manager") == "conda" else "pip",
                name=str(n.get("name", "")),
                version=str(n.get("version", "")),
                reason=str(n.get("reason", "")),
            )
            for n in summary.get(key, [])
            if isinstance(n, dict)
        )

    result = LockResult(
        run_id=run.run_id,
        manifest_digest=str(summary.get("manifest_digest", "")),
        requirements=texts[REQUIREMENTS_FILE],
        vcs_requirements=texts.get(VCS_FILE, ""),
        conda_explicit=texts.get(CONDA_EXPLICIT_FILE, ""),
        conda_lock=texts.get(CONDA_LOCK_FILE, ""),
        locked_index=int(counts.get("index", 0)),
        locked_url=int(counts.get("url", 0)),
        locked_vcs=int(counts.get("vcs", 0)),
        locked_conda=int(counts.get("conda", 0)),
        unlockable=notes("unlockable"),
        covered_elsewhere=notes("covered_elsewhere"),
    )
    paths = [run.directory / name for name in result.file_texts()] + [summary_path]
    return result, paths


def _changed_lock(path: Path, why: str) -> LockError:
    return LockError(
        f"the lock file {path} was changed after it was written ({why})",
        hint="restore the run directory from a backup, or capture the run again",
    )
