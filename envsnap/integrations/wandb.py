"""Weights & Biases: attach a run's manifest (and result, lock files) to a W&B run as an artifact
of type ``environment``, and its facts to the run's config under ``envsnap``.

>>> import envsnap, wandb
>>> run = envsnap.capture(name="lr-sweep")
>>> wandb.init(project="vision")
>>> envsnap.integrations.wandb.log(run)

Works online and offline (``WANDB_MODE=offline``, then ``wandb sync`` uploads it later).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from envsnap.errors import EnvsnapError
from envsnap.integrations import Exported, flat_params, require_tracker, run_facts, run_files

if TYPE_CHECKING:
    from envsnap.store import StoredRun

ARTIFACT_TYPE = "environment"
# Project for an exported run when neither --project nor WANDB_PROJECT names one.
DEFAULT_PROJECT = "envsnap"


class RecordedRun(Protocol):
    """What ``log`` needs of a run: where it is stored (``envsnap.capture()``'s result, or a
    run read back from the store)."""

    @property
    def directory(self) -> Path: ...


class ExportError(EnvsnapError):
    """W&B refused the run or could not be written to."""


def log(run: RecordedRun | str, *, wandb_run: Any = None, store: Path | str | None = None) -> str:
    """Attach an envsnap run to a W&B run: ``wandb_run``, else the one ``wandb.init`` started in
    this process. ``run`` is what ``envsnap.capture()`` returned, or a run id, prefix, ``latest``
    or manifest path (read from ``store``). Returns the artifact's name."""
    require_tracker("wandb")
    import wandb

    stored = _stored(run, store)
    target = wandb_run if wandb_run is not None else wandb.run
    if target is None:
        raise ExportError(
            "no W&B run is active in this process to attach the envsnap run to",
            hint="call wandb.init() first, or pass wandb_run=",
        )
    return _attach(target, stored, store_dir=stored.directory.parent.parent)


def export_to_wandb(
    run: StoredRun, *, store_dir: Path, project: str = "", wandb_run_id: str = ""
) -> Exported:
    """``envsnap export --to wandb``: a W&B run (``wandb_run_id`` resumed when given, else a new
    one named after the envsnap run) with the manifest artifact, the facts under
    ``config.envsnap``, the parameters in its config and the metrics in its summary."""
    import wandb

    try:
        target = wandb.init(
            project=project or None,
            id=wandb_run_id or None,
            resume="allow" if wandb_run_id else None,
            name=None if wandb_run_id else run.manifest.name or run.run_id,
            job_type="envsnap-export",
            settings=wandb.Settings(save_code=False, console="off", silent=True),
        )
    except Exception as exc:  # W&B raises many kinds (auth, network, usage); each is one line
        raise ExportError(
            f"W&B could not start a run to export {run.run_id} into ({_first_line(exc)})",
            hint="log in with wandb login, or set WANDB_MODE=offline",
        ) from None
    exit_code = 1  # what the W&B run ends with should the export fail half way
    try:
        _attach(target, run, store_dir=store_dir)
        target.config.update(flat_params(run), allow_val_change=True)  # type: ignore[no-untyped-call]
        if run.result is not None and run.result.metrics:
            target.summary.update(dict(run.result.metrics))
        location, run_id = _location(target), str(target.id)
        exit_code = run.result.exit_code if run.result is not None else 0
    finally:
        target.finish(exit_code=exit_code)
    return Exported(
        tracker="wandb",
        tracker_run_id=run_id,
        location=location,
        files=tuple(path.name for path in run_files(run)),
    )


def _attach(target: Any, run: StoredRun, *, store_dir: Path) -> str:
    """Log the artifact and config into the W&B run ``target``; returns the artifact's name."""
    import wandb

    facts = run_facts(run, store_dir=store_dir)
    name = "envsnap-" + re.sub(r"[^A-Za-z0-9._-]", "-", run.run_id)
    try:
        artifact = wandb.Artifact(
            name,
            type=ARTIFACT_TYPE,
            description=f"envsnap run {run.run_id}: environment {run.manifest.env_id}",
            metadata=facts.as_config(),
        )
        for path in run_files(run):
            artifact.add_file(str(path), name=path.name)
        target.log_artifact(artifact)
        target.config.update({"envsnap": facts.as_config()}, allow_val_change=True)
    except Exception as exc:  # as above: W&B's own errors have no common base
        raise ExportError(
            f"W&B refused run {run.run_id}'s artifact ({_first_line(exc)})",
            hint="check the W&B run is active and writable",
        ) from None
    return name


def _stored(run: RecordedRun | str, store: Path | str | None) -> StoredRun:
    if isinstance(run, str):
        from envsnap.api import open_run

        return open_run(run, store=store)
    from envsnap.store import load_run_dir

    return load_run_dir(Path(run.directory))


def _location(target: Any) -> str:
    """Where the user finds the run: its page online, its directory offline."""
    url = getattr(target, "url", None)
    if url:
        return str(url)
    directory = Path(str(target.dir)).parent
    return f"offline run {directory} (upload it with wandb sync {directory})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
