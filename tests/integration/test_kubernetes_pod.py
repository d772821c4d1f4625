"""The Kubernetes target's pod, played through the real docker engine (no cluster runs here).

The Job ``render_job`` writes, container by container, started the way the kubelet would start
it: the same image by digest, the same argv (``$$`` read as ``$``), uid 10001, read-only root, no
capabilities, no new privileges, emptyDirs and the data volume as host directories (the emptyDirs
root's and world-writable, as the kubelet makes them), the data by ``subPath``, read-only. The
run and its image are pushed to the local registry first, as a cluster would reach them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from envsnap.drift.compare import compare
from envsnap.kubernetes_table import DataVolume, KubernetesConfig, VolumeSource
from envsnap.rerunning.kubernetes import (
    JobRequest,
    check_record_code,
    recorded_image,
    render_job,
    validate_job,
)
from envsnap.store import Store, StoredRun
from tests.integration.conftest import envsnap_command, example_project
from tests.integration.docker_env import (
    REGISTRY,
    capture_in_container,
    docker_cli,
    registry_base,
)

pytestmark = pytest.mark.integration

TRAIN = (
    "--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy' "
    "--metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs"
)


@dataclass(frozen=True)
class Pushed:
    workstation: Path
    stored: StoredRun
    record: str  # the record in the registry, by digest
    results: str  # where the pod pushes the new record


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*envsnap_command(), *args],
        cwd=cwd,
        env={**os.environ, "ENVSNAP_DOCKER": docker_cli()},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    """The example captured in the base image, its image built and pushed, its record (with
    its code) pushed beside it."""
    root = example_project(tmp_path_factory.mktemp("workstation") / "project")
    (run_id,) = capture_in_container(root, [f"--name k8s {TRAIN}"])
    suffix = os.urandom(3).hex()
    built = _cli(
        root, "build", run_id, "--base", registry_base(), "--push", f"{REGISTRY}/k8s-envs-{suffix}"
    )
    assert built.returncode == 0, built.stderr[-3000:]
    runs = f"{REGISTRY}/envsnap-tests/k8s-runs-{suffix}"
    done = _cli(root, "push", run_id, runs, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    stored = Store(root / ".envsnap").load(run_id)
    yield Pushed(
        workstation=root,
        stored=stored,
        record=json.loads(done.stdout)["reference"],
        results=f"{REGISTRY}/envsnap-tests/k8s-reruns-{suffix}",
    )


@dataclass(frozen=True)
class Played:
    exits: dict[str, int]
    output: dict[str, str]
    termination: str
    store: Path  # the emptyDir "envsnap"'s store, where the replay recorded


def _play(job: dict[str, Any], place: Path, *, pull_on_host: bool) -> Played:
    """Start the pod's containers in order, as the kubelet would; an init container that fails
    ends the pod."""
    pod = job["spec"]["template"]["spec"]
    sources: dict[str, Path] = {}
    for volume in pod["volumes"]:
        if "emptyDir" in volume:
            directory = place / "emptydir" / volume["name"]
            directory.mkdir(parents=True)
            directory.chmod(0o777)
            sources[volume["name"]] = directory
        elif "hostPath" in volume:
            sources[volume["name"]] = Path(volume["hostPath"]["path"])
    termination = place / "termination-log"
    termination.write_text("")
    termination.chmod(0o666)
    exits: dict[str, int] = {}
    output: dict[str, str] = {}
    group = pod["securityContext"]["runAsGroup"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        name = container["name"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] != 0
        argv = [
            docker_cli(),
            "run",
            "--rm",
            "--network",
            "host",  # the registry is this machine's loopback
            "--user",
            f"{security['runAsUser']}:{group}",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ]
        if security["readOnlyRootFilesystem"]:
            argv.append("--read-only")
        if container.get("workingDir"):
            argv += ["-w", container["workingDir"]]
        for variable in container.get("env", []):
            argv += ["-e", f"{variable['name']}={variable['value'].replace('$$', '$')}"]
        for mount in container["volumeMounts"]:
            source = sources[mount["name"]] / mount.get("subPath", "")
            read_only = ":ro" if mount.get("readOnly") else ""
            argv += ["-v", f"{source}:{mount['mountPath']}{read_only}"]
        if container.get("terminationMessagePath"):
            argv += ["-v", f"{termination}:{container['terminationMessagePath']}"]
        args = [a.replace("$$", "$") for a in container.get("args", [])]
        argv += ["--entrypoint", container["command"][0], container["image"]]
        argv += [*container["command"][1:], *args]
        if name == "pull-record" and pull_on_host:
            # See test_the_images_envsnap_can_pull: the same pull, by this machine's envsnap.
            store = str(sources["envsnap"]) + args[2].removeprefix("/envsnap")
            argv = [*envsnap_command(), "pull", args[0], "--store", store]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        exits[name], output[name] = done.returncode, done.stdout + done.stderr
        if done.returncode != 0 and container in pod["initContainers"]:
            break
    return Played(
        exits=exits,
        output=output,
        termination=termination.read_text(),
        store=sources["envsnap"] / "store",
    )


def _job(pushed: Pushed, data: Path) -> dict[str, Any]:
    check_record_code(pushed.stored)
    config = KubernetesConfig(
        namespace="ml",
        volumes={"datasets": VolumeSource(host_path=str(data))},
        data={"data/train.csv": DataVolume(volume="datasets", sub_path="train.csv")},
    )
    request = JobRequest(
        record=pushed.record,
        image=recorded_image(pushed.stored),
        results=pushed.results,
        timeout_s=900,
    )
    job = render_job(pushed.stored.manifest, request, config)
    validate_job(job)
    return job


def _data(pushed: Pushed, place: Path) -> Path:
    data = place / "datasets"
    data.mkdir(parents=True)
    shutil.copyfile(pushed.workstation / "data" / "train.csv", data / "train.csv")
    return data


class TestPod:
    def test_the_pod_reruns_the_run(self, pushed: Pushed, tmp_path: Path) -> None:
        """Code unpacked from the record, data by subPath, read-only root as uid 10001: the
        replay records a rerun of the original (commit, engine tag) that reproduces it."""
        job = _job(pushed, _data(pushed, tmp_path))
        played = _play(job, tmp_path, pull_on_host=True)
        assert played.exits["pull-record"] == 0, played.output["pull-record"][-2000:]
        assert played.exits["unpack-code"] == 0, played.output["unpack-code"][-2000:]
        assert played.exits["replay"] == 0, played.output["replay"][-3000:]
        store = Store(played.store)
        (rerun_id,) = store.run_ids()
        rerun = store.load(rerun_id)
        original = pushed.stored.manifest
        assert rerun.manifest.rerun_of == original.run_id
        assert rerun.manifest.tags["rerun.engine"] == "kubernetes:current/ml"
        assert rerun.manifest.git.commit == original.git.commit  # git trusted the checkout
        report = compare(
            original,
            rerun.manifest,
            old_result=pushed.stored.result,
            new_result=rerun.result,
        )
        assert not report.drifted("breaking"), [
            (f.path, f.old, f.new) for f in report.fields if f.severity == "breaking"
        ]

    def test_the_images_envsnap_can_pull(self, pushed: Pushed, tmp_path: Path) -> None:
        """The init container pulls the record with the image's own envsnap."""
        job = _job(pushed, _data(pushed, tmp_path))
        played = _play(job, tmp_path, pull_on_host=False)
        assert played.exits["pull-record"] == 0, played.output["pull-record"][-2000:]
