"""``envsnap gc``: remove runs chosen by age, name or tag, and the images no remaining run uses.

A run another run points to (``rerun_of``) stays unless forced, so no rerun loses the run it
was compared with; a run that cannot be read is never removed. The plan is made in full before
anything is removed, and ``--dry-run`` shows it and stops there.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from envsnap.errors import UsageError
from envsnap.store import Store, StoredRun

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# Removes one image from the container engine by reference; absent is fine.
ImageRemover = Callable[[str], None]


def parse_age(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds) as a timedelta."""
    found = _DURATION.match(text.strip())
    if not found:
        raise UsageError(
            f"--older-than {text!r} is not a duration",
            hint="write it as 90s, 30m, 12h, 7d or 2w",
        )
    return timedelta(seconds=float(found.group(1)) * _UNIT_SECONDS[found.group(2)])


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which runs to remove: every given filter must match (no filter: no run)."""

    older_than: timedelta | None = None
    names: tuple[str, ...] = ()  # glob patterns, any of which may match the run's name
    tags: Mapping[str, str] = field(default_factory=dict)
    force: bool = False
    images: bool = True

    @property
    def chooses_runs(self) -> bool:
        return self.older_than is not None or bool(self.names) or bool(self.tags)

    def matches(self, run: StoredRun, now: datetime) -> bool:
        manifest = run.manifest
        if not self.chooses_runs:
            return False
        if self.older_than is not None:
            created = _parse_time(manifest.created)
            if created is None or now - created < self.older_than:
                return False
        if self.names and not any(fnmatch.fnmatchcase(manifest.name, p) for p in self.names):
            return False
        return all(manifest.tags.get(key) == value for key, value in self.tags.items())


@dataclass(frozen=True, kw_only=True)
class ImageRecord:
    """An image envsnap built for an environment (``<store>/images/<env-id>.toml``)."""

    env_id: str
    reference: str
    image_id: str
    path: Path


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What gc removes, what it keeps that was chosen and why, and what it could not read."""

    runs: tuple[StoredRun, ...]
    kept: tuple[tuple[str, str], ...]
    images: tuple[ImageRecord, ...]
    damaged: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def to_json(self, *, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "runs": [run.run_id for run in self.runs],
            "kept": [{"run_id": run_id, "reason": why} for run_id, why in self.kept],
            "images": [
                {"env_id": i.env_id, "reference": i.reference, "image_id": i.image_id}
                for i in self.images
            ],
            "damaged": list(self.damaged),
            "notes": list(self.notes),
        }


def plan(store: Store, selection: Selection, *, now: datetime | None = None) -> Plan:
    """Decide what to remove; nothing is touched."""
    moment = now or datetime.now(UTC)
    good, damaged = store.scan()
    chosen = {run.run_id for run in good if selection.matches(run, moment)}
    kept: dict[str, str] = {}
    if not selection.force:
        # A run stays while a run that stays points to it; keeping one can keep its own original.
        changed = True
        while changed:
            changed = False
            for run in good:
                original = run.manifest.rerun_of
                if run.run_id not in chosen and original in chosen:
                    chosen.discard(original)
                    kept[original] = f"rerun {run.run_id} points to it (--force removes it)"
                    changed = True
    removed = tuple(run for run in good if run.run_id in chosen)
    images: tuple[ImageRecord, ...] = ()
    notes: list[str] = []
    if selection.images and damaged:
        notes.append(
            "images were left alone: a run that cannot be read may use one (see 'envsnap list')"
        )
    elif selection.images:
        used = {run.manifest.env_id for run in good if run.run_id not in chosen}
        images = tuple(i for i in recorded_images(store) if i.env_id not in used)
    return Plan(
        runs=removed,
        kept=tuple(sorted(kept.items())),
        images=images,
        damaged=tuple(run_id for run_id, _ in damaged),
        notes=tuple(notes),
    )


def recorded_images(store: Store) -> list[ImageRecord]:
    """The images the store records, one per environment, by env id."""
    import tomllib

    found: list[ImageRecord] = []
    for path in sorted((store.root / "images").glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        env_id = str(data.get("env_id", ""))
        if env_id:
            found.append(
                ImageRecord(
                    env_id=env_id,
                    reference=str(data.get("reference", "")),
                    image_id=str(data.get("image_id", "")),
                    path=path,
                )
            )
    return found


def execute(store: Store, chosen: Plan, *, remove_image: ImageRemover | None = None) -> None:
    """Remove what the plan says: each image first (from the engine, then its record), then
    each run. An image the engine refuses to remove stops gc before any run is touched."""
    if chosen.images:
        remover = remove_image or docker_image_remover()
        for image in chosen.images:
            if image.reference:
                remover(image.reference)
            image.path.unlink(missing_ok=True)
    for run in chosen.runs:
        store.remove_run(run.run_id)


def docker_image_remover(env: Mapping[str, str] | None = None) -> ImageRemover:
    """Remove images through the docker engine envsnap builds with (resolved once, up front)."""
    import os

    from envsnap.image.engine import Engine  # the one module that drives docker

    engine = Engine.detect(dict(os.environ) if env is None else env)

    def remove(reference: str) -> None:
        engine.remove_image(reference)

    return remove


def describe(chosen: Plan, *, dry_run: bool) -> list[str]:
    """The lines ``envsnap gc`` prints: what was (or would be) removed and what was kept."""
    verb = "would remove" if dry_run else "removed"
    lines = [
        f"{verb} run {run.run_id}  {run.manifest.created[:19]}  {run.manifest.name}".rstrip()
        for run in chosen.runs
    ]
    lines += [
        f"{verb} image {i.reference or i.image_id} (environment {i.env_id[7:19]})"
        for i in chosen.images
    ]
    lines += [f"kept run {run_id}: {why}" for run_id, why in chosen.kept]
    lines += [f"left run {run_id}: it cannot be read" for run_id in chosen.damaged]
    lines += [f"note: {note}" for note in chosen.notes]
    if not chosen.runs and not chosen.images:
        lines.append("nothing to remove")
    return lines


def collect(
    store: Store,
    *,
    older_than: str = "",
    names: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    force: bool = False,
    images: bool = True,
    dry_run: bool = False,
    now: datetime | None = None,
    remove_image: ImageRemover | None = None,
) -> Plan:
    """Plan and (unless ``dry_run``) carry out a gc; returns the plan."""
    selection = Selection(
        older_than=parse_age(older_than) if older_than else None,
        names=tuple(names),
        tags=dict(tags or {}),
        force=force,
        images=images,
    )
    chosen = plan(store, selection, now=now)
    if not dry_run:
        execute(store, chosen, remove_image=remove_image)
    return chosen


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
