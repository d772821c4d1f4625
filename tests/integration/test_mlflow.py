"""MLflow against a real tracking server (SQLite backend, artifacts served from a local folder):
the run-context plugin tags runs started inside ``envsnap capture``, and ``envsnap export``
round-trips a run's files, params and metrics. Everything is read back through MlflowClient."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient  # the dev extra installs MLflow

from tests.integration.conftest import REPO, WHEEL_PYTHON_VARIABLE, Envsnap

pytestmark = pytest.mark.integration

TRACKING_VARIABLE = "MLFLOW_TEST_TRACKING_URI"

# What a user's training script does with MLflow; it knows nothing of envsnap.
TRAIN_WITH_MLFLOW = """\
import mlflow

mlflow.set_experiment("envsnap-plugin")
with mlflow.start_run() as run:
    mlflow.log_metric("loss", 0.25)
print(run.info.run_id)
"""

WRITE_METRICS = (
    "import json; json.dump({'valid_loss': 0.125, 'acc': 0.875}, open('metrics.json', 'w'))"
)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server scripts/test.sh started, else one started here by the same script."""
    given = os.environ.get(TRACKING_VARIABLE)
    if given:
        yield given
        return
    where = tmp_path_factory.mktemp("mlflow-server")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "mlflow-server.sh"), str(where)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/mlflow-server.sh failed:\n{done.stderr}")
    try:
        yield done.stdout.strip()
    finally:
        os.killpg(int((where / "server.pid").read_text()), signal.SIGTERM)


def _manifest(project: Path, run_id: str) -> dict[str, object]:
    path = project / ".envsnap" / "runs" / run_id / "manifest.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _capture_training(envsnap: Envsnap, project: Path, uri: str) -> tuple[str, str]:
    """``envsnap capture -- python train_mlflow.py`` with the wheel's Python (envsnap and its
    mlflow extra installed as a user has them); the envsnap and the MLflow run ids."""
    (project / "train_mlflow.py").write_text(TRAIN_WITH_MLFLOW)
    python = os.environ[WHEEL_PYTHON_VARIABLE]
    done = envsnap(
        "capture",
        "--name",
        "with-mlflow",
        "--",
        python,
        "train_mlflow.py",
        env={"MLFLOW_TRACKING_URI": uri},
    )
    run_id, mlflow_run_id = done.stdout.split()[0], done.stdout.split()[-1]
    return run_id, mlflow_run_id


class TestRunContextPlugin:
    def test_a_run_started_inside_capture_carries_the_envsnap_tags(
        self, envsnap: Envsnap, project: Path, tracking_uri: str
    ) -> None:
        """A training script's MLflow run, started under envsnap capture, is tagged with the
        envsnap run, its environment id, manifest digest and the facts users filter on."""
        run_id, mlflow_run_id = _capture_training(envsnap, project, tracking_uri)
        manifest = _manifest(project, run_id)
        tags = MlflowClient(tracking_uri).get_run(mlflow_run_id).data.tags

        assert tags["envsnap.run_id"] == run_id
        assert tags["envsnap.env_id"] == manifest["env_id"]
        assert tags["envsnap.manifest_digest"] == manifest["digest"]
        assert tags["envsnap.name"] == "with-mlflow"
        python = manifest["python"]
        assert isinstance(python, dict)
        assert tags["envsnap.python"] == python["version"]
        gpu = manifest.get("gpu", {})
        assert isinstance(gpu, dict)
        devices = gpu.get("devices", [])
        if devices:
            assert tags["envsnap.gpu"] == ", ".join(sorted({d["name"] for d in devices}))
            assert tags["envsnap.driver"] == gpu["driver_version"]
        else:
            assert tags["envsnap.gpu"] == "none"

    def test_a_run_outside_envsnap_is_left_alone(self, tmp_path: Path, tracking_uri: str) -> None:
        """The same script run without envsnap gets no envsnap tag, and MLflow warns of nothing."""
        (tmp_path / "train_mlflow.py").write_text(TRAIN_WITH_MLFLOW)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVSNAP_")}
        done = subprocess.run(
            [os.environ[WHEEL_PYTHON_VARIABLE], "train_mlflow.py"],
            cwd=tmp_path,
            env={**env, "MLFLOW_TRACKING_URI": tracking_uri},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        tags = MlflowClient(tracking_uri).get_run(done.stdout.split()[-1]).data.tags
        assert not [key for key in tags if key.startswith("envsnap.")]
        assert "envsnap" not in done.stderr

    def test_the_plugin_is_registered_without_importing_envsnaps_heavy_parts(self) -> None:
        """Importing MLflow loads envsnap's provider and nothing of capture, build or drift."""
        script = (
            "import sys, mlflow.tracking.context.registry as r\n"
            "names = [type(p).__name__ for p in r._run_context_provider_registry]\n"
            "assert 'EnvsnapRunContextProvider' in names, names\n"
            "heavy = [m for m in sys.modules if m.startswith('envsnap.') and m.split('.')[1] in\n"
            "         ('lock', 'engine', 'build', 'image', 'rerun', 'drift', 'report',\n"
            "          'recorder', 'probes', 'store', 'manifest', 'api')]\n"
            "assert not heavy, heavy\n"
            "print('ok')\n"
        )
        done = subprocess.run(
            [os.environ[WHEEL_PYTHON_VARIABLE], "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"


class TestExport:
    def test_export_round_trips_the_run(
        self, envsnap: Envsnap, project: Path, tracking_uri: str, tmp_path: Path
    ) -> None:
        """export logs manifest and result as artifacts under envsnap/ (byte for byte), the
        params as params, the metrics as metrics and the facts as tags, in a named experiment."""
        run_id = envsnap(
            "capture",
            "--param",
            "lr=0.1",
            "--param",
            "model.depth=4",
            "--metrics",
            "metrics.json",
            "--",
            sys.executable,
            "-c",
            WRITE_METRICS,
        ).stdout.split()[0]
        done = envsnap(
            "export",
            run_id,
            "--to",
            "mlflow",
            "--experiment",
            "envsnap-export",
            env={"MLFLOW_TRACKING_URI": tracking_uri},
        )
        mlflow_run_id = done.stdout.strip()
        client = MlflowClient(tracking_uri)
        exported = client.get_run(mlflow_run_id)
        experiment = client.get_experiment(exported.info.experiment_id)

        assert experiment.name == "envsnap-export"
        assert exported.info.status == "FINISHED"
        assert exported.data.params == {"lr": "0.1", "model.depth": "4"}
        assert exported.data.metrics == {"valid_loss": 0.125, "acc": 0.875}
        assert exported.data.tags["envsnap.run_id"] == run_id
        listed = {a.path for a in client.list_artifacts(mlflow_run_id, "envsnap")}
        assert listed == {"envsnap/manifest.toml", "envsnap/result.toml"}
        run_dir = project / ".envsnap" / "runs" / run_id
        for name in ("manifest.toml", "result.toml"):
            fetched = client.download_artifacts(mlflow_run_id, f"envsnap/{name}", str(tmp_path))
            assert Path(fetched).read_bytes() == (run_dir / name).read_bytes()

    def test_export_into_an_existing_run(
        self, envsnap: Envsnap, project: Path, tracking_uri: str, tmp_path: Path
    ) -> None:
        """--run-id adds the manifest and tags to a run the user started, and leaves it open."""
        run_id = envsnap("capture", "--name", "into-existing").stdout.strip()
        client = MlflowClient(tracking_uri)
        existing = client.create_run(
            client.create_experiment(f"envsnap-existing-{os.urandom(4).hex()}")
        ).info.run_id
        done = envsnap(
            "export",
            "latest",
            "--to",
            "mlflow",
            "--run-id",
            existing,
            env={"MLFLOW_TRACKING_URI": tracking_uri},
        )
        assert done.stdout.strip() == existing
        run = client.get_run(existing)
        assert run.info.status == "RUNNING"
        assert run.data.tags["envsnap.run_id"] == run_id
        fetched = client.download_artifacts(existing, "envsnap/manifest.toml", str(tmp_path))
        manifest = project / ".envsnap" / "runs" / run_id / "manifest.toml"
        assert Path(fetched).read_bytes() == manifest.read_bytes()

    def test_an_unknown_mlflow_run_is_one_sentence(
        self, envsnap: Envsnap, tracking_uri: str
    ) -> None:
        """A --run-id the server does not know: exit 2 and one sentence, no traceback."""
        envsnap("capture")
        done = envsnap(
            "export",
            "latest",
            "--to",
            "mlflow",
            "--run-id",
            "0" * 32,
            env={"MLFLOW_TRACKING_URI": tracking_uri},
            check=2,
        )
        assert done.stderr.startswith("envsnap: error: the MLflow tracking server at")
        assert "Traceback" not in done.stderr
