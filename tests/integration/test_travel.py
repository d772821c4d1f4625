"""Runs that travel: captured and built on host A, image and record pushed to the registry, and
rerun through host B (a second docker engine with its own data root and namespaces, which shares
no image with A) from a fresh store outside any repository, the data at another path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from envsnap.store import Store
from tests.integration.conftest import envsnap_command, example_project
from tests.integration.docker_env import (
    REGISTRY,
    capture_in_container,
    docker_b,
    docker_cli,
    host_b,
    registry_base,
)

pytestmark = pytest.mark.integration

TRAIN = (
    "--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy' "
    "--metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs"
)


@dataclass(frozen=True)
class Travelled:
    workstation: Path
    run_id: str
    reference: str  # the record in the registry, by digest
    image: str  # the environment image in the registry, by digest


def _cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*envsnap_command(), *args],
        cwd=cwd,
        env={**os.environ, "ENVSNAP_DOCKER": docker_cli(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def travelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Travelled]:
    """On host A: the example captured in the base image, its image built and pushed, its record
    pushed beside it."""
    root = example_project(tmp_path_factory.mktemp("workstation") / "project")
    (run_id,) = capture_in_container(root, [f"--name travel {TRAIN}"])
    suffix = os.urandom(3).hex()
    envs = f"{REGISTRY}/envsnap-tests/travel-envs-{suffix}"
    built = _cli(root, "build", run_id, "--base", registry_base(), "--push", envs, "--json")
    assert built.returncode == 0, built.stderr[-3000:]
    image = json.loads(built.stdout)["registry_digest"]
    pushed = _cli(root, "push", run_id, f"{REGISTRY}/envsnap-tests/travel-runs-{suffix}", "--json")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    reference = json.loads(pushed.stdout)["reference"]
    yield Travelled(workstation=root, run_id=run_id, reference=reference, image=image)
    docker_b("image", "rm", "--force", image, check=False)


def _host_b_rerun(
    travelled: Travelled, place: Path, data: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`envsnap rerun REFERENCE` in an empty directory (no repository, no store yet), through
    host B, the data mapped to where host B holds it."""
    place.mkdir(parents=True)
    return _cli(
        place,
        "rerun",
        travelled.reference,
        "--data",
        f"data/train.csv={data}",
        "--json",
        *extra,
        env={"DOCKER_HOST": host_b()},
    )


class TestRerunOnAnotherHost:
    def test_host_b_reproduces_the_run_from_the_registry_alone(
        self, travelled: Travelled, tmp_path: Path
    ) -> None:
        """Host B pulls the image by digest and the record, reruns with the data at another
        path and reproduces the run (exit 0); the new run names host B's engine."""
        assert docker_b("image", "inspect", travelled.image, check=False).returncode != 0
        mnt = tmp_path / "mnt" / "shared"
        mnt.mkdir(parents=True)
        shutil.copyfile(travelled.workstation / "data" / "train.csv", mnt / "train.csv")
        done = _host_b_rerun(travelled, tmp_path / "elsewhere", mnt / "train.csv")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outcome = json.loads(done.stdout)
        assert outcome["verdict"] == "reproduced"
        assert outcome["report"]["metrics"] == [] and outcome["report"]["outputs"] == []
        store = Store(tmp_path / "elsewhere" / ".envsnap")
        rerun = store.load(outcome["rerun"])
        assert rerun.manifest.rerun_of == travelled.run_id
        assert rerun.manifest.tags["rerun.engine"].startswith("envsnap-hostb ")
        assert set(store.run_ids()) == {travelled.run_id, outcome["rerun"]}
        assert docker_b("image", "inspect", travelled.image).returncode == 0

    def test_changed_data_on_host_b_is_data_and_metric_drift(
        self, travelled: Travelled, tmp_path: Path
    ) -> None:
        """The same rerun with one value of the data changed: exit 1, the data and the metrics
        it moves are named, and nothing else breaks."""
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        text = (travelled.workstation / "data" / "train.csv").read_text().splitlines()
        first = text[1].split(",")
        first[0] = str(float(first[0]) + 1.0)
        text[1] = ",".join(first)
        (mnt / "train.csv").write_text("\n".join(text) + "\n")
        done = _host_b_rerun(travelled, tmp_path / "elsewhere", mnt / "train.csv")
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        report = json.loads(done.stdout)["report"]
        breaking = {f["path"] for f in report["fields"] if f["severity"] == "breaking"}
        assert breaking == {"data.data/train.csv.sha256"}
        assert any(not m["within"] for m in report["metrics"])

    def test_unmapped_data_absent_here_is_one_sentence_before_anything_runs(
        self, travelled: Travelled, tmp_path: Path
    ) -> None:
        """Without --data and without the file at the recorded place: exit 2, one sentence
        naming the path and the option, no container started."""
        place = tmp_path / "bare"
        place.mkdir()
        done = _cli(place, "rerun", travelled.reference, env={"DOCKER_HOST": host_b()})
        assert done.returncode == 2
        assert "data/train.csv" in done.stderr and "--data data/train.csv=" in done.stderr
        assert "Traceback" not in done.stderr
