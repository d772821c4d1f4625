"""MLflow: a run-context provider that tags every MLflow run started inside an envsnap run, and
``envsnap export --to mlflow``.

MLflow imports this module while it starts (the ``mlflow.run_context_provider`` entry point), so
at module level it imports nothing but envsnap's light integration package: not even MLflow,
since MLflow, half imported, loads this module, and this module imported first would import MLflow
(a cycle that leaves the provider unregistered). The run's manifest is read only when a run is
started inside an envsnap run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING

from envsnap.capturing.active import active_run
from envsnap.errors import EnvsnapError
from envsnap.integrations import (
    ARTIFACT_DIR,
    Exported,
    flat_params,
    load_active,
    run_facts,
    run_files,
)

if TYPE_CHECKING:
    from pathlib import Path

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from envsnap.store import StoredRun

_logger = logging.getLogger(__name__)

# MLflow's log_batch takes at most 100 params and 1000 metrics per call.
_PARAMS_PER_CALL = 100
_METRICS_PER_CALL = 1000


class ExportError(EnvsnapError):
    """The tracker refused or could not be reached while a run was exported."""


class EnvsnapRunContextProvider:
    """Tags an MLflow run started inside ``envsnap capture -- CMD`` (or after
    ``envsnap.capture()`` in the same process) with the envsnap run and its environment facts.

    MLflow's ``RunContextProvider`` is an interface of these two methods, which MLflow calls and
    nothing more; not subclassing it keeps MLflow out of this module's imports (see above).
    """

    def in_context(self) -> bool:
        return active_run(os.environ) is not None

    def tags(self) -> dict[str, str]:
        active = active_run(os.environ)
        if active is None:
            return {}
        try:
            run = load_active(active, os.environ)
        except EnvsnapError as exc:
            # Never fail the user's MLflow run over envsnap: say why, and tag the id alone.
            _logger.warning("envsnap: run %s gives MLflow only its id: %s", active.run_id, exc)
            return {"envsnap.run_id": active.run_id}
        return run_facts(run, store_dir=run.directory.parent.parent).as_tags()


def export_to_mlflow(
    run: StoredRun, *, store_dir: Path, experiment: str = "", mlflow_run_id: str = ""
) -> Exported:
    """Log a stored run to MLflow (``MLFLOW_TRACKING_URI``): its facts as tags, parameters as
    params, metrics as metrics, and its files as artifacts under ``envsnap/``. Into
    ``mlflow_run_id`` when given, else into a new run of ``experiment`` (created when missing;
    MLflow's default experiment when empty), which is then ended with the command's outcome."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient()
    except Exception as exc:  # an unusable MLFLOW_TRACKING_URI (say, SQLite without the server)
        raise ExportError(
            f"MLflow cannot use its tracking URI ({_first_line(exc)})",
            hint="set MLFLOW_TRACKING_URI to your tracking server, e.g. http://127.0.0.1:5000",
        ) from None
    facts = run_facts(run, store_dir=store_dir)
    tags = facts.as_tags()
    where = f"the MLflow tracking server at {client.tracking_uri}"
    # MLflow prints links ("View run ...") on stdout, which is envsnap's for the run id alone.
    with contextlib.redirect_stdout(sys.stderr):
        target = _log_run(client, run, tags, where, experiment, mlflow_run_id)
    return Exported(
        tracker="mlflow",
        tracker_run_id=target,
        location=f"{client.tracking_uri} run {target}",
        files=tuple(f"{ARTIFACT_DIR}/{path.name}" for path in run_files(run)),
    )


def _log_run(
    client: MlflowClient,
    run: StoredRun,
    tags: dict[str, str],
    where: str,
    experiment: str,
    mlflow_run_id: str,
) -> str:
    from mlflow.entities import Param, RunStatus, RunTag
    from mlflow.exceptions import MlflowException

    try:
        if mlflow_run_id:
            target = str(client.get_run(mlflow_run_id).info.run_id)
        else:
            experiment_id = _experiment_id(client, experiment)
            target = str(
                client.create_run(
                    experiment_id, run_name=run.manifest.name or run.run_id, tags=tags
                ).info.run_id
            )
        params = [Param(key, value) for key, value in flat_params(run).items()]
        metrics = _metrics(run)
        client.log_batch(target, tags=[RunTag(k, v) for k, v in tags.items()])
        for start in range(0, len(params), _PARAMS_PER_CALL):
            client.log_batch(target, params=params[start : start + _PARAMS_PER_CALL])
        for start in range(0, len(metrics), _METRICS_PER_CALL):
            client.log_batch(target, metrics=metrics[start : start + _METRICS_PER_CALL])
        for path in run_files(run):
            client.log_artifact(target, str(path), artifact_path=ARTIFACT_DIR)
        if not mlflow_run_id:
            failed = run.result is not None and run.result.exit_code != 0
            status = RunStatus.FAILED if failed else RunStatus.FINISHED
            client.set_terminated(target, status=RunStatus.to_string(status))
    except MlflowException as exc:
        message = str(exc.message).splitlines()[0] if exc.message else type(exc).__name__
        raise ExportError(
            f"{where} refused run {run.run_id}: {message}",
            hint="check --run-id and --experiment, and that the server is the one you mean",
        ) from None
    except Exception as exc:  # MLflow's other failures (store URIs, connections) share no base
        raise ExportError(
            f"{where} could not take run {run.run_id} ({_first_line(exc)})",
            hint="check MLFLOW_TRACKING_URI and that the server is running",
        ) from None
    return target


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment called ``name`` (created when missing); MLflow's default
    experiment ("0") when no name is given."""
    if not name:
        return "0"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return client.create_experiment(name)


def _metrics(run: StoredRun) -> list[Metric]:
    """The run's metrics at step 0, stamped with when its command ended."""
    if run.result is None:
        return []
    from datetime import datetime

    from mlflow.entities import Metric

    ended = run.result.ended or run.manifest.created
    try:
        stamp = int(datetime.fromisoformat(ended.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        stamp = 0
    return [
        Metric(key, float(value), stamp, 0) for key, value in sorted(run.result.metrics.items())
    ]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
