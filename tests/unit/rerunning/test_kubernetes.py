"""The Kubernetes target: the Job it renders, checked against batch/v1 and golden files, and the
submit/watch logic against a fake of the official client (no cluster runs here)."""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from envsnap.errors import EXIT_ERROR, UsageError
from envsnap.kubernetes_table import (
    DataVolume,
    KubernetesConfig,
    VolumeSource,
    parse_table,
)
from envsnap.manifest import (
    Command,
    Conda,
    DataItem,
    Gpu,
    GpuDevice,
    Manifest,
    Python,
    Redaction,
    Tool,
)
from envsnap.rerunning.kubernetes import (
    JobRequest,
    JobResult,
    KubernetesClient,
    KubernetesError,
    KubernetesExtraMissingError,
    KubernetesJobs,
    check_record_code,
    gpu_count,
    job_yaml,
    official_client,
    recorded_image,
    render_job,
    validate_job,
)

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "kubernetes"
RUN_ID = "20261123-120000-abcdef"
ENV_ID = "sha256:" + "0123456789abcdef" * 4  # as compute_env_id writes it
RECORD = f"registry.example/team/runs:{RUN_ID}"
IMAGE = "registry.example/team/envs@sha256:" + "b" * 64
NEW_RECORD = "registry.example/team/runs:20261130-230000-123456@sha256:" + "c" * 64
H100 = GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-1")


def manifest(**changes: Any) -> Manifest:
    values: dict[str, Any] = {
        "run_id": RUN_ID,
        "created": "2026-11-23T12:00:00Z",
        "tool": Tool(version="0.1.0"),
        "python": Python(),
        "conda": Conda(),
        "command": Command(argv=("python", "train.py", "--lr", "$(whoami)"), cwd="src"),
        "env_id": ENV_ID,
        "environment": {"OMP_NUM_THREADS": "4", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"},
        "data": (DataItem(path="data/train.csv", kind="file", sha256="0" * 64),),
    }
    values.update(changes)
    return Manifest(**values)


def config(**changes: Any) -> KubernetesConfig:
    values: dict[str, Any] = {
        "namespace": "ml",
        "image_pull_secret": "regcred",
        "registry_secret": "regcred",
        "volumes": {"datasets": VolumeSource(claim="datasets")},
        "data": {"data/train.csv": DataVolume(volume="datasets", sub_path="v3/train.csv")},
    }
    values.update(changes)
    return KubernetesConfig(**values)


def cpu_job(**request: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"record": RECORD, "image": IMAGE, "timeout_s": 1800.0}
    values.update(request)
    return render_job(manifest(), JobRequest(**values), config())


def gpu_job() -> dict[str, Any]:
    gpu = Gpu(available=True, driver_version="570.86.15", devices=(H100, H100))
    target = config(
        volumes={"scratch": VolumeSource(host_path="/mnt/datasets")},
        data={"data/train.csv": DataVolume(volume="scratch", sub_path="train.csv")},
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        env_secret="wandb",
        registry_secret="",
    )
    request = JobRequest(
        record=RECORD + "@sha256:" + "d" * 64,
        image=IMAGE,
        results="registry.example/team/reruns",
        gpus=gpu_count(manifest(gpu=gpu)),
        timeout_s=2 * 3600,
        env={"WANDB_MODE": "offline"},
    )
    return render_job(manifest(gpu=gpu), request, target)


def containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    spec = job["spec"]["template"]["spec"]
    return [*spec["initContainers"], *spec["containers"]]


def main_container(job: dict[str, Any]) -> dict[str, Any]:
    [main] = job["spec"]["template"]["spec"]["containers"]
    return main


def compare_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ENVSNAP_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


class TestGolden:
    def test_cpu_job(self) -> None:
        """A CPU run's Job equals tests/data/kubernetes/cpu-job.yaml, whole."""
        compare_golden("cpu-job.yaml", job_yaml(cpu_job()))

    def test_gpu_job(self) -> None:
        """A run that used two GPUs asks nvidia.com/gpu: 2, on the configured nodes, with a
        host-path volume and variables from a secret; equal to gpu-job.yaml, whole."""
        compare_golden("gpu-job.yaml", job_yaml(gpu_job()))

    def test_same_inputs_same_bytes(self) -> None:
        """Rendering twice gives the same YAML: nothing random, no anchors between containers."""
        first, second = job_yaml(cpu_job()), job_yaml(cpu_job())
        assert first == second
        assert "&id" not in first and "*id" not in first

    def test_yaml_reads_back_as_the_job(self) -> None:
        """What --dry-run prints is the Job itself (kubectl create -f - takes it)."""
        job = gpu_job()
        assert yaml.safe_load(job_yaml(job)) == job


class TestShape:
    def test_image_by_digest_everywhere(self) -> None:
        """Every container runs the environment image by its digest."""
        assert {c["image"] for c in containers(cpu_job())} == {IMAGE}

    def test_steps_pull_unpack_replay(self) -> None:
        """The record is pulled, its code unpacked, then the replay runs and pushes its record."""
        job = cpu_job()
        names = [c["name"] for c in containers(job)]
        assert names == ["pull-record", "unpack-code", "replay"]
        pull, unpack, main = containers(job)
        assert pull["command"] + pull["args"] == [
            "envsnap",
            "pull",
            RECORD,
            "--store",
            "/envsnap/original",
        ]
        assert f"/envsnap/original/runs/{RUN_ID}/code.tar.gz" in unpack["args"]
        assert main["command"][:2] == ["sh", "-c"]
        assert main["args"] == [
            f"/envsnap/original/runs/{RUN_ID}/manifest.toml",
            "/envsnap/store",
            "registry.example/team/runs",
        ]
        assert main["workingDir"] == "/work/src"

    def test_recorded_command_is_not_in_the_job(self) -> None:
        """The command comes from the pulled record, so nothing of it is spliced into the Job."""
        assert "whoami" not in job_yaml(cpu_job())

    def test_data_mounted_read_only_at_the_recorded_place(self) -> None:
        """The recorded data path is the configured volume's subPath, read-only, where the
        command saw it (relative to its working directory)."""
        mounts = {m["mountPath"]: m for m in main_container(cpu_job())["volumeMounts"]}
        assert mounts["/work/src/data/train.csv"] == {
            "mountPath": "/work/src/data/train.csv",
            "name": "datasets",
            "readOnly": True,
            "subPath": "v3/train.csv",
        }

    def test_environment_recorded_and_engine(self) -> None:
        """The recorded variables go in, plus the engine tag and HOME in the pod's /tmp."""
        env = {e["name"]: e["value"] for e in main_container(cpu_job())["env"]}
        assert env["OMP_NUM_THREADS"] == "4"
        assert env["ENVSNAP_RERUN_ENGINE"] == "kubernetes:current/ml"
        assert env["HOME"] == "/tmp"
        assert env["DOCKER_CONFIG"] == "/envsnap/docker"

    def test_checkout_is_trusted_by_git(self) -> None:
        """The emptyDir holding the checkout is root's, so git is told to trust exactly /work
        (else the capture inside records no commit: "dubious ownership", seen in a docker
        play of this pod)."""
        env = {e["name"]: e["value"] for e in main_container(cpu_job())["env"]}
        assert env["GIT_CONFIG_COUNT"] == "1"
        assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == ("safe.directory", "/work")

    def test_gpu_limit(self) -> None:
        """GPUs become an nvidia.com/gpu limit; a CPU run asks for none."""
        assert main_container(gpu_job())["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
        assert "resources" not in main_container(cpu_job())

    def test_pull_secret_and_namespace(self) -> None:
        """The namespace and the image pull secret come from the configuration."""
        job = cpu_job()
        assert job["metadata"]["namespace"] == "ml"
        assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


class TestSecurity:
    def test_every_container_is_locked_down(self) -> None:
        """Non-root (uid 10001), no privilege escalation, no capabilities, read-only root."""
        for container in containers(gpu_job()):
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "runAsUser": 10001,
            }

    def test_pod_is_locked_down(self) -> None:
        """The pod runs as 10001 with the runtime's seccomp profile and no API token."""
        pod = cpu_job()["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert "fsGroup" not in pod["securityContext"]  # data volumes keep their ownership
        assert pod["restartPolicy"] == "Never"

    def test_writable_places_are_empty_dirs(self) -> None:
        """/tmp, the store and the code are emptyDirs, since the root filesystem is read-only."""
        volumes = {v["name"]: v for v in cpu_job()["spec"]["template"]["spec"]["volumes"]}
        for name in ("tmp", "envsnap", "code"):
            assert volumes[name] == {"name": name, "emptyDir": {}}
        mounts = {m["mountPath"]: m["name"] for m in main_container(cpu_job())["volumeMounts"]}
        assert mounts["/tmp"] == "tmp" and mounts["/envsnap"] == "envsnap"
        assert mounts["/work"] == "code"

    def test_read_only_root_can_be_turned_off(self) -> None:
        """An image that must write its own filesystem can be allowed to, by configuration."""
        job = render_job(
            manifest(), JobRequest(record=RECORD, image=IMAGE), config(read_only_root=False)
        )
        assert main_container(job)["securityContext"]["readOnlyRootFilesystem"] is False
        assert main_container(job)["securityContext"]["runAsNonRoot"] is True

    def test_secret_looking_env_is_refused(self) -> None:
        """A secret passed as --env would be readable in the Job; a Kubernetes secret is named."""
        with pytest.raises(UsageError, match="env-secret"):
            cpu_job(env={"WANDB_API_KEY": "abc"})

    def test_registry_credentials_from_a_secret_file(self) -> None:
        """The registry secret is mounted read-only as $DOCKER_CONFIG/config.json."""
        volumes = {v["name"]: v for v in cpu_job()["spec"]["template"]["spec"]["volumes"]}
        assert volumes["docker-config"]["secret"] == {
            "defaultMode": 0o444,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
            "secretName": "regcred",
        }


class TestDeadlineAndLabels:
    def test_deadline_from_timeout(self) -> None:
        """activeDeadlineSeconds is the timeout rounded up; no retries."""
        job = cpu_job(timeout_s=90.2)
        assert job["spec"]["activeDeadlineSeconds"] == 91
        assert job["spec"]["backoffLimit"] == 0

    def test_no_timeout_no_deadline(self) -> None:
        """Without --timeout the Job has no deadline of its own."""
        assert "activeDeadlineSeconds" not in cpu_job(timeout_s=None)["spec"]

    @pytest.mark.parametrize("timeout", [0, -5, float("nan"), float("inf")])
    def test_bad_timeout_refused(self, timeout: float) -> None:
        """A timeout that is not a positive duration is one sentence."""
        with pytest.raises(UsageError, match="not a duration"):
            cpu_job(timeout_s=timeout)

    def test_labels(self) -> None:
        """Job and pod carry the run id and the env id, shortened to a valid label value; the
        whole env id is an annotation."""
        job = cpu_job()
        for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
            assert meta["labels"]["envsnap.dev/rerun-of"] == RUN_ID
            assert meta["labels"]["envsnap.dev/env-id"] == ENV_ID[7:27]
            assert meta["annotations"]["envsnap.dev/env-id"] == ENV_ID
            assert all(len(v) <= 63 for v in meta["labels"].values())
        assert job["metadata"]["generateName"] == f"envsnap-rerun-{RUN_ID}-"


class TestHostileValues:
    @pytest.mark.parametrize(
        "changes",
        [
            {"namespace": "ml; rm -rf /"},
            {"namespace": "ML"},
            {"namespace": "ml\n"},
            {"context": "prod\nx"},
            {"env_secret": "wandb\n"},
            {"node_selector": {"pool": "gpu\n"}},
            {"image_pull_secret": "reg cred"},
            {"volumes": {"tmp": VolumeSource(claim="x")}},
            {"volumes": {"datasets": VolumeSource(host_path="relative/path")}},
            {"volumes": {"datasets": VolumeSource(host_path="/mnt/../etc")}},
            {"volumes": {"datasets": VolumeSource()}},
            {"data": {"data/train.csv": DataVolume(volume="datasets", sub_path="../../etc")}},
            {"data": {"data/train.csv": DataVolume(volume="datasets", sub_path="/etc/passwd")}},
            {"data": {"data/train.csv": DataVolume(volume="nowhere")}},
            {"data": {}},
            {"data": {"data/other.csv": DataVolume(volume="datasets")}},
            {"node_selector": {"pool": "gpu\nx"}},
            {"node_selector": {"bad key!": "x"}},
        ],
    )
    def test_bad_configuration_refused(self, changes: dict[str, Any]) -> None:
        """A configuration value Kubernetes (or the pod) would take otherwise is refused."""
        with pytest.raises(UsageError) as caught:
            render_job(manifest(), JobRequest(record=RECORD, image=IMAGE), config(**changes))
        assert caught.value.exit_code == EXIT_ERROR

    @pytest.mark.parametrize(
        "request_changes",
        [
            {"record": "registry.example/team/runs:x\n--store=/"},
            {"record": RUN_ID},
            {"record": "registry.example/team/runs"},
            {"record": "registry.example/team/runs:20261124-120000-000000"},
            {"image": "registry.example/team/envs:latest"},
            {"image": "$(curl evil)"},
            {"results": "registry.example/team/runs:tag"},
            {"results": "--insecure-registry"},
            {"gpus": 65},
            {"gpus": -1},
            {"gpus": True},
            {"env": {"BAD NAME": "x"}},
            {"env": {"X\n": "x"}},
            {"env": {"X": "nul\x00"}},
        ],
    )
    def test_bad_request_refused(self, request_changes: dict[str, Any]) -> None:
        """References, repositories, GPU counts and variables are checked before they flow in."""
        values: dict[str, Any] = {"record": RECORD, "image": IMAGE}
        values.update(request_changes)
        with pytest.raises(UsageError):
            render_job(manifest(), JobRequest(**values), config())

    def test_dollar_is_inert(self) -> None:
        """Kubernetes would expand $(NAME) in a value; it is doubled, so it reaches the pod as
        written."""
        env = {
            e["name"]: e["value"] for e in main_container(cpu_job(env={"X": "$(HOME)`id`"}))["env"]
        }
        assert env["X"] == "$$(HOME)`id`"

    def test_unrerunnable_run_refused(self) -> None:
        """A run whose command lost a redacted value is refused as on docker."""
        bad = manifest(command=Command(argv=("python", "t.py", "--token", "<redacted>")))
        with pytest.raises(UsageError, match="redacted"):
            render_job(bad, JobRequest(record=RECORD, image=IMAGE), config())

    def test_working_directory_with_a_newline_refused(self) -> None:
        """A recorded working directory with a control character never becomes workingDir."""
        bad = manifest(command=Command(argv=("python", "t.py"), cwd="src\nx"))
        with pytest.raises(UsageError, match="control characters"):
            render_job(bad, JobRequest(record=RECORD, image=IMAGE), config())

    def test_data_over_the_store_refused(self) -> None:
        """A recorded absolute data path cannot be mounted over the pod's own places."""
        item = DataItem(path="/envsnap/store", kind="dir", sha256="0" * 64)
        target = config(data={"/envsnap/store": DataVolume(volume="datasets")})
        with pytest.raises(UsageError, match="mounted over /envsnap"):
            render_job(manifest(data=(item,)), JobRequest(record=RECORD, image=IMAGE), target)


class TestConfiguration:
    def test_table_from_pyproject(self) -> None:
        """A kubernetes target's table, in kebab-case keys, reads into the configuration the
        Job uses."""
        table = tomllib.loads(
            """
            namespace = "ml"
            image-pull-secret = "regcred"
            registry-secret = "regcred"
            node-selector = { "nvidia.com/gpu.product" = "NVIDIA-H100-80GB-HBM3" }
            volumes = { datasets = { claim = "datasets" } }
            data = { "data/train.csv" = { volume = "datasets", sub-path = "v3/train.csv" } }
            """
        )
        assert parse_table(table, "[tool.envsnap.targets.gpu]") == config(
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        )

    @pytest.mark.parametrize(
        ("table", "words"),
        [
            ({"namespace": 3}, "namespace is not a string"),
            ({"namespace": "ML"}, "namespace 'ML' is not a Kubernetes namespace"),
            ({"volumes": {"d": {"claim": "x", "host-path": "/x"}}}, "volumes.d is not one of"),
            ({"volumes": {"d": {"host_path": "/x"}}}, "volumes.d is not one of"),
            ({"volumes": "d"}, "volumes is not a table"),
            ({"data": {"a": {"volume": 1}}}, "data.'a' is not"),
            ({"data": {"a": {"volume": "d", "sub_path": "x"}}}, "data.'a' is not"),
            ({"data": {"a": "/mnt/a"}}, "data.'a' is not"),
            ({"data": {"a": {"volume": "d"}}}, "which volumes does not define"),
            ({"read-only-root": "yes"}, "read-only-root is not true or false"),
            ({"node-selector": {"pool": 3}}, "node-selector has a value"),
            ({"results": "registry.example/runs:tag"}, "results 'registry.example/runs:tag'"),
            ({"context": "a\nb"}, "is not a context name"),
        ],
    )
    def test_bad_table_refused(self, table: dict[str, Any], words: str) -> None:
        """A value of the wrong kind is one sentence naming the table and the key."""
        with pytest.raises(UsageError) as caught:
            parse_table(table, "[tool.envsnap.targets.gpu]")
        assert str(caught.value).startswith("[tool.envsnap.targets.gpu]")
        assert words in str(caught.value)

    def test_gpu_count(self) -> None:
        """As many GPUs as the original used, unless a count or none is asked."""
        two = manifest(gpu=Gpu(available=True, devices=(H100, H100)))
        assert gpu_count(two) == 2
        assert gpu_count(two, "1") == 1
        assert gpu_count(two, "none") == 0
        with pytest.raises(UsageError, match="GPU count"):
            gpu_count(two, "all")

    def test_recorded_image(self, tmp_path: Path) -> None:
        """The image comes from image.toml's registry digest; without one, one sentence."""
        stored = SimpleNamespace(manifest=manifest(), directory=tmp_path)
        with pytest.raises(UsageError, match="no image pushed"):
            recorded_image(stored)  # type: ignore[arg-type]
        (tmp_path / "image.toml").write_text(
            f'env_id = "{ENV_ID}"\nregistry_digest = "{IMAGE}"\n', encoding="utf-8"
        )
        assert recorded_image(stored) == IMAGE  # type: ignore[arg-type]

    def test_record_without_code_refused(self, tmp_path: Path) -> None:
        """A record pushed without its code cannot be rerun on a cluster: said before submitting."""
        stored = SimpleNamespace(manifest=manifest(), directory=tmp_path)
        with pytest.raises(UsageError, match="carries no code"):
            check_record_code(stored)  # type: ignore[arg-type]
        (tmp_path / "code.tar.gz").write_bytes(b"")
        check_record_code(stored)  # type: ignore[arg-type]

    def test_unpacking_has_no_credentials(self) -> None:
        """Only the containers that talk to the registry see its credentials."""
        _, unpack, _ = containers(cpu_job())
        assert "env" not in unpack
        assert "docker-config" not in {m["name"] for m in unpack["volumeMounts"]}

    def test_redacted_values_named_not_invented(self) -> None:
        """A value redacted at capture is not in the Job; env_secret supplies it."""
        redacted = manifest(
            redacted=(Redaction(name="WANDB_API_KEY", where="environment", reason="name"),)
        )
        job = render_job(
            redacted, JobRequest(record=RECORD, image=IMAGE), config(env_secret="wandb")
        )
        assert "WANDB_API_KEY" not in job_yaml(job)
        assert main_container(job)["envFrom"] == [{"secretRef": {"name": "wandb"}}]


# --- against the official client -------------------------------------------------------------


@pytest.fixture
def k8s() -> Any:
    return pytest.importorskip("kubernetes")


class TestSchema:
    @pytest.mark.parametrize("render", [cpu_job, gpu_job], ids=["cpu", "gpu"])
    def test_round_trip(self, k8s: Any, render: Callable[[], dict[str, Any]]) -> None:
        """The Job deserializes into the client's V1Job and comes back whole: every field is
        one batch/v1 knows."""
        validate_job(render())

    def test_a_real_gpu_manifest(self, k8s: Any) -> None:
        """A manifest captured on an H200 (tests/data/gpu/) renders a Job that asks for its GPU
        and survives the schema: env id, run id and command as capture writes them."""
        from envsnap.manifest import read_manifest

        real = read_manifest(
            Path(__file__).resolve().parents[2] / "data" / "gpu" / "h200-torch-cu130.manifest.toml"
        )
        job = render_job(
            real,
            JobRequest(
                record=f"registry.example/team/runs:{real.run_id}",
                image=IMAGE,
                gpus=gpu_count(real),
                timeout_s=600,
            ),
            config(data={}, volumes={}),
        )
        validate_job(job)
        assert main_container(job)["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
        labels = job["metadata"]["labels"]
        assert labels["envsnap.dev/env-id"] == real.env_id.removeprefix("sha256:")[:20]

    def test_unknown_field_is_named(self, k8s: Any) -> None:
        """A field the schema does not know (it would be dropped) fails the check, by path."""
        job = cpu_job()
        job["spec"]["template"]["spec"]["containers"][0]["runAsUser"] = 0
        with pytest.raises(KubernetesError, match=r"containers\[0\]\.runAsUser"):
            validate_job(job)

    def test_missing_required_field(self, k8s: Any) -> None:
        """A container without a name is not a V1Container."""
        job = cpu_job()
        del job["spec"]["template"]["spec"]["containers"][0]["name"]
        with pytest.raises(KubernetesError, match="not a valid batch/v1 Job"):
            validate_job(job)

    def test_without_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the kubernetes package: one sentence naming the extra, exit 2."""
        monkeypatch.setitem(sys.modules, "kubernetes", None)
        with pytest.raises(KubernetesExtraMissingError) as caught:
            validate_job(cpu_job())
        assert "pip install 'envsnap[kubernetes]'" in str(caught.value)
        assert caught.value.exit_code == EXIT_ERROR


# --- submit and wait, with a fake at the client seam -------------------------------------------


class FakeBatch:
    """BatchV1Api's calls the target makes; jobs are the client's V1Job models."""

    def __init__(self, k8s: Any, reads: list[Any], error: Exception | None = None) -> None:
        self.k8s = k8s
        self.reads = reads
        self.error = error
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.deleted: list[tuple[str, str, str]] = []

    def create_namespaced_job(self, namespace: str, body: dict[str, Any], **kwargs: Any) -> Any:
        assert kwargs["_request_timeout"] > 0
        if self.error is not None:
            raise self.error
        self.created.append((namespace, body))
        name = body["metadata"]["generateName"] + "x7k2p"
        return self.k8s.client.V1Job(metadata=self.k8s.client.V1ObjectMeta(name=name))

    def read_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> Any:
        assert kwargs["_request_timeout"] > 0
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

    def list_namespaced_job(self, namespace: str, **kwargs: Any) -> Any:
        raise AssertionError("only the watch calls it, through the fake watch")

    def delete_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> Any:
        assert kwargs["_request_timeout"] > 0
        self.deleted.append((name, namespace, kwargs["propagation_policy"]))


class FakeCore:
    def __init__(self, pods: Any) -> None:
        self.pods = pods
        self.selectors: list[str] = []

    def list_namespaced_pod(self, namespace: str, label_selector: str, **kwargs: Any) -> Any:
        assert kwargs["_request_timeout"] > 0
        self.selectors.append(label_selector)
        return self.pods


class FakeWatch:
    """kubernetes.watch.Watch: each stream() call plays the next list of events."""

    def __init__(self, batch: FakeBatch, streams: list[list[dict[str, Any]]]) -> None:
        self.batch = batch
        self.streams = streams
        self.calls: list[dict[str, Any]] = []
        self.stopped = 0

    def __call__(self) -> FakeWatch:
        return self

    def stream(self, func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        assert func == self.batch.list_namespaced_job
        self.calls.append({"args": args, **kwargs})
        yield from self.streams.pop(0) if self.streams else []

    def stop(self) -> None:
        self.stopped += 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


NAME = f"envsnap-rerun-{RUN_ID}-x7k2p"


def job_status(k8s: Any, *conditions: tuple[str, str, str]) -> Any:
    client = k8s.client
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=NAME, resource_version="41"),
        status=client.V1JobStatus(
            active=0 if conditions else 1,
            conditions=[
                client.V1JobCondition(type=kind, status="True", reason=reason, message=message)
                for kind, reason, message in conditions
            ]
            or None,
        ),
    )


def pod_list(k8s: Any, *, exit_code: int | None, message: str = "", **status: Any) -> Any:
    client = k8s.client
    state = (
        client.V1ContainerState(
            terminated=client.V1ContainerStateTerminated(
                exit_code=exit_code,
                reason="Completed" if exit_code == 0 else "Error",
                message=message or None,
            )
        )
        if exit_code is not None
        else client.V1ContainerState(
            waiting=client.V1ContainerStateWaiting(reason="ContainerCreating")
        )
    )
    main = client.V1ContainerStatus(
        name="replay", image=IMAGE, image_id="", ready=False, restart_count=0, state=state
    )
    return client.V1PodList(
        items=[client.V1Pod(status=client.V1PodStatus(container_statuses=[main], **status))]
    )


def target(
    k8s: Any, reads: list[Any], streams: list[list[dict[str, Any]]], pods: Any
) -> tuple[KubernetesJobs, FakeWatch, Clock]:
    batch = FakeBatch(k8s, reads)
    watch = FakeWatch(batch, streams)
    clock = Clock()
    client = KubernetesClient(batch=batch, core=FakeCore(pods), watch=watch)
    return KubernetesJobs(client, clock=clock, sleep=clock.sleep), watch, clock


class TestSubmit:
    def test_submit_returns_the_generated_name(self, k8s: Any) -> None:
        """The Job is created in its namespace; the name is the one the cluster gave it."""
        batch = FakeBatch(k8s, [])
        client = KubernetesClient(batch=batch, core=FakeCore(None), watch=lambda: None)  # type: ignore[arg-type,return-value]
        job = cpu_job()
        assert KubernetesJobs(client).submit(job) == NAME
        assert batch.created == [("ml", job)]

    def test_refusal_is_one_sentence(self, k8s: Any) -> None:
        """A 403 from the API server says what was refused and what to ask for."""
        error = k8s.client.exceptions.ApiException(status=403, reason="Forbidden")
        error.body = '{"message": "jobs.batch is forbidden: User \\"ci\\" cannot create"}'
        client = KubernetesClient(batch=FakeBatch(k8s, [], error), core=None, watch=lambda: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(KubernetesError, match="403 Forbidden") as caught:
            KubernetesJobs(client).submit(cpu_job())
        assert "ask for permission" in str(caught.value)


class TestOfficialClient:
    def test_no_configuration_is_one_sentence(
        self, k8s: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No kubeconfig and not inside a pod: one sentence saying how to set one up."""
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        with pytest.raises(KubernetesError, match="no Kubernetes cluster is configured"):
            official_client(kubeconfig=str(tmp_path / "absent"))

    def test_from_a_kubeconfig(self, k8s: Any, tmp_path: Path) -> None:
        """A kubeconfig gives the client's batch and core APIs and its watch; nothing is
        contacted until a call is made."""
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                    "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
                    "contexts": [{"name": "lab", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "lab",
                }
            )
        )
        client = official_client("lab", kubeconfig=str(kubeconfig))
        assert isinstance(client.batch, k8s.client.BatchV1Api)
        assert isinstance(client.core, k8s.client.CoreV1Api)
        assert client.watch is k8s.watch.Watch
        with pytest.raises(KubernetesError, match="no Kubernetes cluster"):
            official_client("elsewhere", kubeconfig=str(kubeconfig))


class TestWait:
    def test_success_brings_the_record(self, k8s: Any) -> None:
        """A Complete Job is a success with the exit code and the record its push printed."""
        running = job_status(k8s)
        done = job_status(k8s, ("Complete", "", ""))
        pods = pod_list(k8s, exit_code=0, message=NEW_RECORD + "\n")
        waiter, watch, _ = target(
            k8s,
            [running],
            [[{"type": "MODIFIED", "object": running}, {"type": "MODIFIED", "object": done}]],
            pods,
        )
        result = waiter.wait(NAME, "ml", 3600)
        assert result == JobResult(
            name=NAME, namespace="ml", state="succeeded", exit_code=0, record=NEW_RECORD
        )
        [call] = watch.calls
        assert call["args"] == ("ml",)
        assert call["field_selector"] == f"metadata.name={NAME}"
        assert call["resource_version"] == "41"
        assert watch.stopped == 1

    def test_failure_with_reason(self, k8s: Any) -> None:
        """A Failed Job is a result with Kubernetes' reason and the command's exit code."""
        failed = job_status(
            k8s, ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        )
        pods = pod_list(k8s, exit_code=1, message=NEW_RECORD)
        waiter, _, _ = target(
            k8s, [job_status(k8s)], [[{"type": "MODIFIED", "object": failed}]], pods
        )
        result = waiter.wait(NAME, "ml", 3600)
        assert result.state == "failed"
        assert result.reason == "BackoffLimitExceeded"
        assert result.exit_code == 1
        assert result.record == NEW_RECORD
        assert "backoff limit" in result.message

    def test_deadline_exceeded_with_the_schedulers_reason(self, k8s: Any) -> None:
        """A Job past its deadline that never got a node says so, with the scheduler's words."""
        client = k8s.client
        failed = job_status(
            k8s, ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        )
        unscheduled = client.V1PodCondition(
            type="PodScheduled",
            status="False",
            reason="Unschedulable",
            message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        )
        pods = pod_list(k8s, exit_code=None, conditions=[unscheduled])
        waiter, _, _ = target(k8s, [failed], [], pods)
        result = waiter.wait(NAME, "ml", 3600)
        assert result.state == "failed"
        assert result.deadline_exceeded
        assert result.exit_code is None
        assert result.record == ""
        assert "Insufficient nvidia.com/gpu" in result.message

    def test_init_container_failure_is_told(self, k8s: Any) -> None:
        """A record that could not be pulled shows as the init container's exit and message."""
        client = k8s.client
        failed = job_status(k8s, ("Failed", "BackoffLimitExceeded", ""))
        init = client.V1ContainerStatus(
            name="pull-record",
            image=IMAGE,
            image_id="",
            ready=False,
            restart_count=0,
            state=client.V1ContainerState(
                terminated=client.V1ContainerStateTerminated(
                    exit_code=2, reason="Error", message="registry refused"
                )
            ),
        )
        pods = client.V1PodList(
            items=[client.V1Pod(status=client.V1PodStatus(init_container_statuses=[init]))]
        )
        waiter, _, _ = target(k8s, [failed], [], pods)
        result = waiter.wait(NAME, "ml", 60)
        assert "init container pull-record exited 2 (Error: registry refused)" in result.message

    def test_watch_ending_without_an_end_is_not_a_hang(self, k8s: Any) -> None:
        """Watches that end with the Job still running are renewed until the wait's own time
        is up, then the result says the Job is unfinished; no real time passes."""
        running = job_status(k8s)
        waiter, watch, clock = target(
            k8s, [running], [[{"type": "MODIFIED", "object": running}]], None
        )
        result = waiter.wait(NAME, "ml", 5)
        assert result.state == "unfinished"
        assert result.reason == "WaitTimeout"
        assert clock.now >= 5
        assert 1 <= len(watch.calls) <= 6
        assert watch.stopped == len(watch.calls)

    def test_already_ended_needs_no_watch(self, k8s: Any) -> None:
        """A Job that ended before the wait began is read, not watched."""
        done = job_status(k8s, ("Complete", "", ""))
        waiter, watch, _ = target(k8s, [done], [], pod_list(k8s, exit_code=0))
        assert waiter.wait(NAME, "ml", 60).state == "succeeded"
        assert watch.calls == []

    def test_error_event_reads_again(self, k8s: Any) -> None:
        """An ERROR event (an expired resource version) starts over from a fresh read."""
        done = job_status(k8s, ("Complete", "", ""))
        waiter, watch, _ = target(
            k8s,
            [job_status(k8s), done],
            [[{"type": "ERROR", "object": {"code": 410}}]],
            pod_list(k8s, exit_code=0),
        )
        assert waiter.wait(NAME, "ml", 60).state == "succeeded"
        assert len(watch.calls) == 1

    def test_expired_watch_reads_again(self, k8s: Any) -> None:
        """The client raises 410 Gone for an expired resource version; the wait reads again."""
        done = job_status(k8s, ("Complete", "", ""))
        waiter, watch, _ = target(k8s, [job_status(k8s), done], [], pod_list(k8s, exit_code=0))
        gone = k8s.client.exceptions.ApiException(status=410, reason="Expired: too old")

        def expired(func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            watch.calls.append(kwargs)
            raise gone
            yield {}

        watch.stream = expired  # type: ignore[method-assign]
        assert waiter.wait(NAME, "ml", 60).state == "succeeded"
        assert len(watch.calls) == 1

    def test_stalled_watch_reads_again(self, k8s: Any) -> None:
        """A connection that stalls past the watch's length is given up, and the Job read."""
        from urllib3.exceptions import ReadTimeoutError

        done = job_status(k8s, ("Complete", "", ""))
        waiter, watch, _ = target(k8s, [job_status(k8s), done], [], pod_list(k8s, exit_code=0))

        def stalled(func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            watch.calls.append(kwargs)
            raise ReadTimeoutError(None, "", "Read timed out.")  # type: ignore[arg-type]
            yield {}

        watch.stream = stalled  # type: ignore[method-assign]
        assert waiter.wait(NAME, "ml", 60).state == "succeeded"
        [call] = watch.calls
        assert call["_request_timeout"] > call["timeout_seconds"]

    def test_watch_refused(self, k8s: Any) -> None:
        """Any other refusal while watching is one sentence."""
        waiter, watch, _ = target(k8s, [job_status(k8s)], [], None)
        denied = k8s.client.exceptions.ApiException(status=403, reason="Forbidden")

        def refused(func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            raise denied
            yield {}

        watch.stream = refused  # type: ignore[method-assign]
        with pytest.raises(KubernetesError, match="watching the Job"):
            waiter.wait(NAME, "ml", 60)

    def test_deleted_job(self, k8s: Any) -> None:
        """A Job deleted while waited on is one sentence, not a wait for ever."""
        waiter, _, _ = target(
            k8s, [job_status(k8s)], [[{"type": "DELETED", "object": job_status(k8s)}]], None
        )
        with pytest.raises(KubernetesError, match="was deleted"):
            waiter.wait(NAME, "ml", 60)

    def test_record_line_must_be_a_record(self, k8s: Any) -> None:
        """A termination message that is not a record reference gives no record."""
        done = job_status(k8s, ("Complete", "", ""))
        waiter, _, _ = target(k8s, [done], [], pod_list(k8s, exit_code=0, message="oops; rm -rf"))
        assert waiter.wait(NAME, "ml", 60).record == ""
