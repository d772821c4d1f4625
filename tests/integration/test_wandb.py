"""Weights & Biases in offline mode (WANDB_MODE=offline): ``envsnap export --to wandb`` and
``envsnap.integrations.wandb.log`` leave the manifest as an ``environment`` artifact and the facts
under ``config.envsnap``, read back from the offline run directory W&B wrote."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wandb.proto import wandb_internal_pb2  # the dev extra installs wandb

from tests.integration.conftest import WHEEL_PYTHON_VARIABLE, Envsnap

pytestmark = pytest.mark.integration

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of framed chunks
_HEADER = 7


def _records(path: Path) -> Iterator[Any]:
    """Every record of an offline run's ``.wandb`` file, as W&B's own protobuf messages."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:  # padding to the end of the block
            pos += left
            continue
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 2):  # full, first
            pending = chunk
        else:  # middle, last
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _offline_run(root: Path) -> tuple[list[Any], dict[str, Any]]:
    """The environment artifacts and the config of the one offline run under ``root``."""
    (run_file,) = root.glob("wandb/offline-run-*/run-*.wandb")
    artifacts, config = [], {}
    for record in _records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "artifact" and record.artifact.type == "environment":
            artifacts.append(record.artifact)
        items = record.config.update if kind == "config" else ()
        items = record.run.config.update if kind == "run" else items
        for item in items:
            config[item.key] = json.loads(item.value_json)
    return artifacts, config


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str]:
    """W&B offline, writing only under this test's directory, never asking for a login."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wb"),
        "WANDB_DATA_DIR": str(tmp_path / "wb-data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wb-config"),
        "WANDB_SILENT": "true",
    }


def _check_attached(root: Path, run_dir: Path) -> dict[str, Any]:
    """The run's manifest is an environment artifact byte for byte; returns config.envsnap."""
    manifest = run_dir / "manifest.toml"
    artifacts, config = _offline_run(root)
    assert len(artifacts) == 1
    (artifact,) = artifacts
    entries = {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
    assert entries["manifest.toml"].read_bytes() == manifest.read_bytes()
    data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    facts = config["envsnap"]
    assert facts["run_id"] == data["run_id"]
    assert facts["env_id"] == data["env_id"]
    assert facts["manifest_digest"] == data["digest"]
    assert json.loads(artifact.metadata)["run_id"] == data["run_id"]
    return config


class TestExport:
    def test_export_writes_the_manifest_artifact_and_config(
        self, envsnap: Envsnap, project: Path, offline: dict[str, str], tmp_path: Path
    ) -> None:
        """export --to wandb: the manifest and result as an environment artifact, the facts in
        config.envsnap and the params in the config of an offline run."""
        run_id = envsnap("capture", "--param", "lr=0.1", "--", "true").stdout.split()[0]
        (tmp_path / "wb").mkdir()
        done = envsnap("export", run_id, "--to", "wandb", "--project", "envsnap-tests", env=offline)
        assert done.stdout.strip()
        assert "offline run" in done.stderr
        run_dir = project / ".envsnap" / "runs" / run_id
        config = _check_attached(tmp_path / "wb", run_dir)
        assert config["lr"] == "0.1"
        artifacts, _ = _offline_run(tmp_path / "wb")
        names = {entry.path for entry in artifacts[0].manifest.contents}
        assert names == {"manifest.toml", "result.toml"}


class TestLog:
    def test_log_attaches_a_run_captured_in_the_same_script(
        self, project: Path, envsnap: Envsnap, offline: dict[str, str], tmp_path: Path
    ) -> None:
        """A training script calls envsnap.capture(), wandb.init() and
        envsnap.integrations.wandb.log(run): its W&B run holds the environment artifact."""
        (tmp_path / "wb").mkdir()
        (project / "train_wandb.py").write_text(
            "import envsnap, wandb\n"
            "from envsnap.integrations import wandb as envsnap_wandb\n"
            "run = envsnap.capture(name='logged')\n"
            "wandb.init(project='envsnap-tests')\n"
            "envsnap_wandb.log(run)\n"
            "wandb.finish()\n"
            "print(run.run_id)\n"
        )
        done = subprocess.run(
            [os.environ[WHEEL_PYTHON_VARIABLE], "train_wandb.py"],
            cwd=project,
            env={**envsnap.env, **offline},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        run_dir = project / ".envsnap" / "runs" / done.stdout.split()[-1]
        _check_attached(tmp_path / "wb", run_dir)
