"""What envsnap tells experiment trackers (MLflow, Weights & Biases): which run, which
environment, and the few facts people filter runs on; the files of a run worth attaching.

Kept light: MLflow imports ``envsnap.integrations.mlflow`` (and so this package) while it starts,
so nothing here imports a tracker, a probe or the build machinery at module level.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from envsnap.capturing.active import ActiveRun
from envsnap.errors import UsageError

if TYPE_CHECKING:
    from envsnap.store import StoredRun

Tracker = Literal["mlflow", "wandb"]
TRACKERS: tuple[Tracker, ...] = ("mlflow", "wandb")

ARTIFACT_DIR = "envsnap"

_MODULES: Mapping[Tracker, tuple[str, str]] = {
    "mlflow": ("mlflow", "MLflow"),
    "wandb": ("wandb", "Weights & Biases"),
}


class ExtraMissingError(UsageError):
    """A tracker integration was asked for, but the tracker's package is not installed."""


def require_tracker(tracker: Tracker) -> None:
    """Refuse, in one sentence naming the extra to install, when ``tracker`` is not importable."""
    module, title = _MODULES[tracker]
    if importlib.util.find_spec(module) is None:
        raise ExtraMissingError(
            f"exporting to {title} needs the {module} package, which is not installed here",
            hint=f"install it with pip install 'envsnap[{tracker}]'",
        )


def load_active(active: ActiveRun, env: Mapping[str, str]) -> StoredRun:
    """Read the active run's manifest (verified against its digest) from its store."""
    from envsnap.store import Store

    if active.store_dir is not None:
        return Store(active.store_dir).load(active.run_id)
    from envsnap.api import workspace  # the store the command line would use here

    return workspace(env=env).store.load(active.run_id)


# --- what a tracker records -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """A run's identity and the environment facts people filter runs on. Empty: not known."""

    run_id: str
    env_id: str
    manifest_digest: str
    name: str = ""
    rerun_of: str = ""
    gpu: str = ""
    gpu_count: int = 0
    driver: str = ""
    cuda: str = ""
    python: str = ""
    image_digest: str = ""

    def as_tags(self) -> dict[str, str]:
        """``envsnap.<fact>`` tags with their values as text; unknown facts are left out, but
        ``envsnap.gpu`` is always there (``none`` without a GPU) so runs can be filtered on it."""
        values = self.as_config()
        return {f"envsnap.{key}": str(value) for key, value in values.items()}

    def as_config(self) -> dict[str, str | int]:
        """The facts as one flat mapping (W&B's ``config.envsnap``), keys in a fixed order."""
        values: dict[str, str | int] = {
            "run_id": self.run_id,
            "env_id": self.env_id,
            "manifest_digest": self.manifest_digest,
            "name": self.name,
            "rerun_of": self.rerun_of,
            "gpu": self.gpu or "none",
            "gpu_count": self.gpu_count,
            "driver": self.driver,
            "cuda": self.cuda,
            "python": self.python,
            "image_digest": self.image_digest,
        }
        return {k: v for k, v in values.items() if v != "" and not (k == "gpu_count" and v == 0)}


def run_facts(run: StoredRun, *, store_dir: Path | None = None) -> RunFacts:
    """The facts of a stored run; ``store_dir`` is where to look for the environment's image
    when the run's own directory does not name one."""
    manifest = run.manifest
    names = sorted({device.name for device in manifest.gpu.devices if device.name})
    python = manifest.python.version
    if python and manifest.python.implementation not in ("", "CPython"):
        python = f"{manifest.python.implementation} {python}"
    return RunFacts(
        run_id=manifest.run_id,
        env_id=manifest.env_id,
        manifest_digest=manifest.digest,
        name=manifest.name,
        rerun_of=manifest.rerun_of,
        gpu=", ".join(names),
        gpu_count=len(manifest.gpu.devices),
        driver=manifest.gpu.driver_version,
        cuda=manifest.cuda.runtime_version or manifest.gpu.cuda_driver_version,
        python=python,
        image_digest=image_digest(run, store_dir=store_dir),
    )


def image_digest(run: StoredRun, *, store_dir: Path | None = None) -> str:
    """The image the run ran in (inside a container, as recorded at capture), else the image
    built for its environment: the registry digest after a push, else the local image id."""
    if run.manifest.container.image_digest:
        return run.manifest.container.image_digest
    candidates = [run.directory / "image.toml"]
    if store_dir is not None:
        candidates.append(
            store_dir / "images" / f"{run.manifest.env_id.removeprefix('sha256:')}.toml"
        )
    for path in candidates:
        record = _read_toml(path)
        if record.get("env_id") not in (None, run.manifest.env_id):
            continue
        for key in ("registry_digest", "image_id"):
            value = record.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _read_toml(path: Path) -> dict[str, object]:
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_files(run: StoredRun) -> list[Path]:
    """The run's files a tracker gets as artifacts: its record's, in the record's order, but
    diff.patch (unlike the manifest it is not redacted, and a team's tracker is often more widely
    read) and the code archive (for reruns, and it holds the diff). The store is imported here,
    not above: MLflow imports this package while it starts."""
    from envsnap.store import CODE_ARCHIVE, DIFF_FILE, RECORD_FILES

    names = [n for n in RECORD_FILES if n not in (DIFF_FILE, CODE_ARCHIVE)]
    return [run.directory / name for name in names if (run.directory / name).is_file()]


def flat_params(run: StoredRun) -> dict[str, str]:
    """The run's parameters as text by dotted key (a list as its TOML-like text), key-sorted."""
    params: dict[str, str] = {}
    for param in run.manifest.params:
        value = param.value
        if isinstance(value, tuple):
            params[param.key] = "[" + ", ".join(_scalar_text(v) for v in value) + "]"
        else:
            params[param.key] = _scalar_text(value)
    return dict(sorted(params.items()))


def _scalar_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- export ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Exported:
    """Where a run went: the tracker, its run id there, and a line to show the user."""

    tracker: Tracker
    tracker_run_id: str
    location: str
    files: tuple[str, ...]


def export_run(
    ref: str,
    *,
    to: str,
    store: Path | str | None = None,
    experiment: str = "",
    tracker_run_id: str = "",
    project: str = "",
    env: Mapping[str, str] | None = None,
) -> Exported:
    """Attach a stored run (manifest, result, lock files, parameters, metrics) to a tracker run:
    MLflow at the tracking URI MLflow itself would use, or W&B (online, or offline with
    ``WANDB_MODE=offline``)."""
    if to not in TRACKERS:
        raise UsageError(f"--to {to!r} is not a tracker envsnap knows", hint="use mlflow or wandb")
    require_tracker(to)
    from envsnap import api

    environ = dict(os.environ) if env is None else env
    ws = api.workspace(store, env=environ)
    from envsnap.store import open_run

    run = open_run(ws.store, ref, pull=api.registry_puller(ws))
    if to == "mlflow":
        from envsnap.integrations.mlflow import export_to_mlflow

        return export_to_mlflow(
            run, store_dir=ws.store.root, experiment=experiment, mlflow_run_id=tracker_run_id
        )
    from envsnap.integrations.wandb import export_to_wandb

    return export_to_wandb(
        run, store_dir=ws.store.root, project=project, wandb_run_id=tracker_run_id
    )
