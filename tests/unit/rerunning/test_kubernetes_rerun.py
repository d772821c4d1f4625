"""A rerun on Kubernetes end to end without a cluster: the record checked in a registry (the fake
one on 127.0.0.1), the Job submitted and watched through a fake of the official client, the new
run's record pulled back and compared; and the Job ``rerun --dry-run`` prints."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from envsnap.cli import main
from envsnap.config import Config
from envsnap.errors import EXIT_ERROR, EXIT_OK, InterruptError, UsageError
from envsnap.image.build import BuildOptions
from envsnap.kubernetes_table import DataVolume, KubernetesConfig, VolumeSource
from envsnap.manifest import Result
from envsnap.registry import RegistryOptions, push_run
from envsnap.rerunning.kubernetes import (
    KubernetesClient,
    KubernetesError,
    KubernetesTarget,
    validate_job,
)
from envsnap.rerunning.request import RerunRequest
from envsnap.rerunning.rerun import Cancellation, RerunOptions
from envsnap.store import Store, StoredRun
from tests.conftest import sample_manifest
from tests.unit.fake_registry import FakeRegistry, serve
from tests.unit.rerunning.test_kubernetes import (
    Clock,
    FakeBatch,
    FakeCore,
    FakeWatch,
    job_status,
    pod_list,
)

RUN = "20261122-163012-a1b2c3"
NEW = "20261130-230000-123456"
IMAGE = "registry.example/team/envs@sha256:" + "e" * 64
TARGET = KubernetesConfig(
    namespace="ml",
    registry_secret="regcred",
    volumes={"datasets": VolumeSource(claim="datasets")},
    data={"data/train.csv": DataVolume(volume="datasets", sub_path="v3/train.csv")},
)


@pytest.fixture
def k8s() -> Any:
    return pytest.importorskip("kubernetes")


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with serve() as state:
        yield state


def registry_env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker"), "PATH": ""}


def stored_run(
    root: Path, *, name: str = "lr-sweep-3", code: bool = True, data: bool = True
) -> StoredRun:
    """The original run as `envsnap push` leaves it: its result, its image pushed, its code."""
    store = Store(root)
    manifest = sample_manifest(name=name)
    if not data:
        manifest = dataclasses.replace(manifest, data=())
    sealed, directory = store.write_run(manifest)
    store.write_result(directory, Result(run_id=RUN, exit_code=0, started="s", ended="e"))
    files = {
        "image.toml": (
            f'schema = "envsnap.image/1"\nenv_id = "{sealed.env_id}"\n'
            f'registry_digest = "{IMAGE}"\nimage_id = "sha256:{"f" * 64}"\n'
        ).encode()
    }
    if code:
        files["code.tar.gz"] = b"not read on this side"
    store.write_run_files(directory, files)
    return store.load(RUN)


def push_new_run(
    tmp_path: Path, repository: str, *, exit_code: int = 0, of: str = RUN, data: bool = True
) -> str:
    """What the Job's replay pushes: a rerun of the original on the cluster's node."""
    store = Store(tmp_path / "pod-store")
    manifest = sample_manifest(
        run_id=NEW,
        created="2026-11-30T23:00:00.000000Z",
        rerun_of=of,
        host=dataclasses.replace(sample_manifest().host, hostname="node-7"),
    )
    if not data:
        manifest = dataclasses.replace(manifest, data=())
    _, directory = store.write_run(manifest)
    store.write_result(directory, Result(run_id=NEW, exit_code=exit_code, started="s", ended="e"))
    options = RegistryOptions(env=registry_env(tmp_path))
    return push_run(store.load(NEW), repository, options).reference


def request(
    tmp_path: Path, stored: StoredRun, store: Store, *, record: str, **options: Any
) -> RerunRequest:
    return RerunRequest(
        stored=stored,
        store=store,
        build=BuildOptions(),
        options=RerunOptions(**options),
        config=Config(),
        repo_root=None,
        cwd=tmp_path,
        env=registry_env(tmp_path),
        record=record,
        on_output=said.append,
    )


said: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_said() -> None:
    said.clear()


def cluster(k8s: Any, *, ended: Any, pods: Any) -> tuple[KubernetesClient, FakeBatch]:
    """A cluster whose Job runs, then ends as ``ended`` with ``pods``."""
    running = job_status(k8s)
    batch = FakeBatch(k8s, [running])
    watch = FakeWatch(batch, [[{"type": "MODIFIED", "object": ended}]])
    return KubernetesClient(batch=batch, core=FakeCore(pods), watch=watch), batch


def target(client: KubernetesClient, config: KubernetesConfig = TARGET) -> KubernetesTarget:
    clock = Clock()
    return KubernetesTarget(
        label="kubernetes",
        config=config,
        connect=lambda _config, _env: client,
        clock=clock,
        sleep=clock.sleep,
    )


class TestRerun:
    def test_submit_watch_pull_compare(self, k8s: Any, tmp_path: Path, fake: FakeRegistry) -> None:
        """The record is found in the registry and pinned by digest, the Job submitted in the
        target's namespace and watched to its end, the new run's record pulled into the store
        and compared: reproduced."""
        stored = stored_run(tmp_path / "store")
        repository = f"{fake.host}/team/runs"
        pushed = push_run(stored, repository, RegistryOptions(env=registry_env(tmp_path)))
        new_record = push_new_run(tmp_path, repository)
        client, batch = cluster(
            k8s,
            ended=job_status(k8s, ("Complete", "", "")),
            pods=pod_list(k8s, exit_code=0, message=new_record + "\n"),
        )
        store = Store(tmp_path / "store")
        outcome = target(client).rerun(
            request(tmp_path, stored, store, record=f"{repository}:{RUN}")
        )

        [(namespace, job)] = batch.created
        assert namespace == "ml"
        validate_job(job)
        pull = job["spec"]["template"]["spec"]["initContainers"][0]
        assert pull["args"][0] == pushed.reference  # pinned by the digest found
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][-1] == repository
        assert outcome.original == RUN and outcome.rerun == NEW
        assert outcome.directory == store.runs_dir / NEW
        assert store.load(NEW).manifest.rerun_of == RUN
        assert outcome.verdict() == "reproduced"
        assert (outcome.exit_code, outcome.timed_out) == (0, False)
        assert outcome.image == IMAGE and outcome.image_id == "sha256:" + "f" * 64
        assert any(new_record in note for note in outcome.notes)
        assert any("submitted Kubernetes Job" in line and "-n ml" in line for line in said)

    def test_the_commands_failure_is_drift(
        self, k8s: Any, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """A command that exited 1 still pushes its record: the rerun is compared and does not
        reproduce, with the exit code the new run recorded."""
        stored = stored_run(tmp_path / "store")
        repository = f"{fake.host}/team/runs"
        push_run(stored, repository, RegistryOptions(env=registry_env(tmp_path)))
        new_record = push_new_run(tmp_path, repository, exit_code=1)
        client, _ = cluster(
            k8s,
            ended=job_status(k8s, ("Failed", "BackoffLimitExceeded", "backoff limit")),
            pods=pod_list(k8s, exit_code=1, message=new_record),
        )
        outcome = target(client).rerun(
            request(tmp_path, stored, Store(tmp_path / "store"), record=f"{repository}:{RUN}")
        )
        assert outcome.exit_code == 1
        assert outcome.verdict() == "not reproduced"

    def test_deadline_without_a_record_is_one_sentence(
        self, k8s: Any, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """A Job stopped by its deadline pushes nothing: one sentence with Kubernetes' reason
        and the scheduler's words, and no new run in the store."""
        stored = stored_run(tmp_path / "store")
        repository = f"{fake.host}/team/runs"
        push_run(stored, repository, RegistryOptions(env=registry_env(tmp_path)))
        unscheduled = k8s.client.V1PodCondition(
            type="PodScheduled",
            status="False",
            reason="Unschedulable",
            message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        )
        client, _ = cluster(
            k8s,
            ended=job_status(k8s, ("Failed", "DeadlineExceeded", "Job was active too long")),
            pods=pod_list(k8s, exit_code=None, conditions=[unscheduled]),
        )
        store = Store(tmp_path / "store")
        with pytest.raises(KubernetesError) as caught:
            target(client).rerun(
                request(tmp_path, stored, store, record=f"{repository}:{RUN}", timeout_s=60.0)
            )
        message = str(caught.value)
        assert "passed its deadline" in message and "DeadlineExceeded" in message
        assert "Insufficient nvidia.com/gpu" in message
        assert "kubectl describe job" in (caught.value.hint or "")
        assert caught.value.exit_code == EXIT_ERROR
        assert store.run_ids() == [RUN]

    def test_a_record_not_pushed_is_refused_before_any_job(
        self, k8s: Any, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """No record at the reference: one sentence saying to push it; nothing is submitted."""
        stored = stored_run(tmp_path / "store")
        client, batch = cluster(k8s, ended=job_status(k8s), pods=None)
        with pytest.raises(UsageError, match=f"has no record at {fake.host}/team/runs:{RUN}"):
            target(client).rerun(
                request(
                    tmp_path,
                    stored,
                    Store(tmp_path / "store"),
                    record=f"{fake.host}/team/runs:{RUN}",
                )
            )
        assert batch.created == []

    def test_another_run_under_the_tag_is_refused(
        self, k8s: Any, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """A record under the run's tag that is not this run (edited, pushed from elsewhere) is
        refused: the Job would rerun something else."""
        other = stored_run(tmp_path / "elsewhere", name="another-name")
        push_run(other, f"{fake.host}/team/runs", RegistryOptions(env=registry_env(tmp_path)))
        stored = stored_run(tmp_path / "store")
        client, batch = cluster(k8s, ended=job_status(k8s), pods=None)
        with pytest.raises(UsageError, match=r"is not run .* as this store holds it"):
            target(client).rerun(
                request(
                    tmp_path,
                    stored,
                    Store(tmp_path / "store"),
                    record=f"{fake.host}/team/runs:{RUN}",
                )
            )
        assert batch.created == []

    def test_a_run_given_by_id_is_looked_for_in_results(
        self, k8s: Any, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """A run given by id is looked for in the target's results repository; without one,
        one sentence saying how to name the record."""
        stored = stored_run(tmp_path / "store")
        store = Store(tmp_path / "store")
        client, _ = cluster(k8s, ended=job_status(k8s), pods=None)
        with pytest.raises(UsageError, match="was given by id") as caught:
            target(client).rerun(request(tmp_path, stored, store, record=""))
        assert f"envsnap push {RUN} REPOSITORY" in (caught.value.hint or "")
        results = dataclasses.replace(TARGET, results=f"{fake.host}/team/runs")
        with pytest.raises(UsageError, match=f"no record at {fake.host}/team/runs:{RUN}"):
            target(client, results).rerun(request(tmp_path, stored, store, record=""))

    def test_a_pushed_record_of_another_run_is_refused(
        self, k8s: Any, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """What the Job pushed must be a rerun of this run."""
        stored = stored_run(tmp_path / "store")
        repository = f"{fake.host}/team/runs"
        push_run(stored, repository, RegistryOptions(env=registry_env(tmp_path)))
        stray = push_new_run(tmp_path, repository, of="20261101-000000-000000")
        client, _ = cluster(
            k8s,
            ended=job_status(k8s, ("Complete", "", "")),
            pods=pod_list(k8s, exit_code=0, message=stray),
        )
        with pytest.raises(KubernetesError, match=f"not a rerun of {RUN}"):
            target(client).rerun(
                request(tmp_path, stored, Store(tmp_path / "store"), record=f"{repository}:{RUN}")
            )

    def test_ctrl_c_deletes_the_job(self, k8s: Any, tmp_path: Path, fake: FakeRegistry) -> None:
        """Ctrl-C while waiting deletes the Job (its pod in the background): an InterruptError,
        not a Job left running."""
        stored = stored_run(tmp_path / "store")
        repository = f"{fake.host}/team/runs"
        push_run(stored, repository, RegistryOptions(env=registry_env(tmp_path)))
        client, batch = cluster(k8s, ended=job_status(k8s), pods=None)

        def interrupted(func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            raise KeyboardInterrupt
            yield {}

        client.watch().stream = interrupted  # type: ignore[attr-defined]
        with pytest.raises(InterruptError, match="was deleted"):
            target(client).rerun(
                request(tmp_path, stored, Store(tmp_path / "store"), record=f"{repository}:{RUN}")
            )
        [(name, namespace, policy)] = batch.deleted
        assert (namespace, policy) == ("ml", "Background")
        assert name.startswith(f"envsnap-rerun-{RUN}-")

    def test_a_matrix_cancel_deletes_the_job(
        self, k8s: Any, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """In a matrix only the main thread sees Ctrl-C: its cancel deletes the Job, and the
        watch seeing it go is an InterruptError, not an error of the target; a cancel before
        the Job was submitted submits none."""
        stored = stored_run(tmp_path / "store")
        repository = f"{fake.host}/team/runs"
        push_run(stored, repository, RegistryOptions(env=registry_env(tmp_path)))
        client, batch = cluster(k8s, ended=job_status(k8s), pods=None)
        cancel = Cancellation()

        def cancelled(func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            cancel.cancel()  # as the matrix's main thread would, meanwhile
            yield {"type": "DELETED", "object": job_status(k8s)}

        client.watch().stream = cancelled  # type: ignore[attr-defined]
        asked = dataclasses.replace(
            request(tmp_path, stored, Store(tmp_path / "store"), record=f"{repository}:{RUN}"),
            cancel=cancel,
        )
        with pytest.raises(InterruptError, match="was deleted before it recorded a run"):
            target(client).rerun(asked)
        assert [namespace for _, namespace, _ in batch.deleted] == ["ml"]
        with pytest.raises(InterruptError, match="cancelled before it started"):
            target(client).rerun(asked)
        assert len(batch.created) == 1

    @pytest.mark.parametrize(
        ("options", "build", "words"),
        [
            ({"data_map": {"data/train.csv": "/mnt/x"}}, {}, "--data maps data"),
            ({}, {"rebuild": True}, "--rebuild"),
            ({}, {"base": "debian:12"}, "--base"),
        ],
    )
    def test_options_it_cannot_honour_are_refused(
        self, tmp_path: Path, options: dict[str, Any], build: dict[str, Any], words: str
    ) -> None:
        """--data, --base, --rebuild mean nothing to a Job that runs a pushed image from volumes:
        refused, never ignored, before anything is asked of a registry or a cluster."""
        stored = stored_run(tmp_path / "store")
        asked = request(tmp_path, stored, Store(tmp_path / "store"), record="", **options)
        asked = dataclasses.replace(asked, build=BuildOptions(**build))
        with pytest.raises(UsageError, match=words):
            KubernetesTarget(label="kubernetes", config=TARGET).rerun(asked)

    def test_record_without_code_refused(self, tmp_path: Path) -> None:
        """--dry-run too refuses a run whose record would carry no code."""
        stored = stored_run(tmp_path / "store", code=False)
        asked = request(tmp_path, stored, Store(tmp_path / "store"), record="")
        with pytest.raises(UsageError, match="carries no code"):
            KubernetesTarget(label="kubernetes", config=TARGET).render(asked)


# --- the command line ----------------------------------------------------------------------------

PYPROJECT = """
[tool.envsnap.targets.gpu]
engine = "kubernetes"
namespace = "ml"
context = "prod"
results = "registry.example/team/runs"
volumes = { datasets = { claim = "datasets" } }
data = { "data/train.csv" = { volume = "datasets", sub-path = "v3/train.csv" } }

[tool.envsnap.targets.a]
engine = "docker"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with a kubernetes target and a docker one, and the run in its store."""
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    stored_run(tmp_path / ".envsnap")
    monkeypatch.chdir(tmp_path)
    for name in ("ENVSNAP_STORE", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


class TestDryRun:
    def test_prints_a_valid_job_and_submits_nothing(
        self, project: Path, capsys: pytest.CaptureFixture[str], k8s: Any
    ) -> None:
        """rerun --on NAME --dry-run prints the Job as YAML, a batch/v1 Job that survives the
        official client's models, with the table's namespace, context, data and results; exit
        0, no cluster (the guards refuse any socket off loopback and any process)."""
        assert run_cli(["rerun", RUN, "--on", "gpu", "--dry-run", "--gpus", "1"]) == EXIT_OK
        out, err = capsys.readouterr()
        job = yaml.safe_load(out)
        validate_job(job)
        assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
        assert job["metadata"]["namespace"] == "ml"
        [main_container] = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in main_container["env"]}
        assert env["ENVSNAP_RERUN_ENGINE"] == "kubernetes:prod/ml"
        assert main_container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
        assert main_container["args"][-1] == "registry.example/team/runs"
        pull = job["spec"]["template"]["spec"]["initContainers"][0]
        assert pull["args"][0] == f"registry.example/team/runs:{RUN}"
        assert err == ""

    def test_namespace_and_context_from_the_command_line(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--on NAME:CONTEXT is the kubeconfig context and --namespace the namespace; --json
        prints the same Job as JSON."""
        argv = ["rerun", RUN, "--on", "gpu:lab", "--namespace", "team-b", "--dry-run", "--json"]
        assert run_cli(argv) == EXIT_OK
        job = json.loads(capsys.readouterr().out)
        assert job["metadata"]["namespace"] == "team-b"
        [main_container] = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in main_container["env"]}
        assert env["ENVSNAP_RERUN_ENGINE"] == "kubernetes:lab/team-b"

    def test_the_built_in_target_needs_the_record_named(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--on kubernetes has no results repository: a run given by id is one sentence;
        given as its record, the Job pulls that record."""
        assert run_cli(["rerun", RUN, "--on", "kubernetes", "--dry-run"]) == EXIT_ERROR
        assert "was given by id" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("argv", "words"),
        [
            (["--on", "a", "--dry-run"], "--on a is not a Kubernetes target"),
            (["--dry-run"], "no --on names a target"),
            (["--on", "a", "--namespace", "ml"], "--namespace is for Kubernetes targets"),
            (["--namespace", "ml"], "--namespace needs --on kubernetes"),
            (["--on", "gpu", "--detach"], "runs on a Kubernetes cluster, which envsnap waits"),
            (["--on", "gpu", "--dry-run", "--detach"], "nothing to --detach"),
            (["--on", "gpu", "--dry-run", "--data", "data/train.csv=/x"], "--data maps data"),
            (["--on", "gpu", "--partition", "p"], "--partition is for Slurm targets"),
            (["--on", "kubernetes", "--namespace", "Team"], "is not a Kubernetes namespace"),
        ],
    )
    def test_misuse_is_one_sentence_exit_2(
        self, project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
    ) -> None:
        """Options for another engine, or a dry run of something that is no Job: one sentence,
        exit 2, nothing run."""
        assert run_cli(["rerun", RUN, *argv]) == EXIT_ERROR
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


class TestCommandLineRerun:
    def test_rerun_on_kubernetes_reports_the_drift(
        self,
        project: Path,
        fake: FakeRegistry,
        k8s: Any,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """envsnap rerun REPOSITORY:RUN --on kubernetes --namespace ml --gpus 1: the record
        pulled, the Job submitted to the (fake) cluster of the current context, the new run
        pulled and the report printed; exit 0 as the run reproduced."""
        import envsnap.rerunning.kubernetes as kubernetes_module

        repository = f"{fake.host}/team/runs"
        env = {"DOCKER_CONFIG": str(project / "docker"), "PATH": ""}
        # A run without data: the built-in target maps none.
        original = stored_run(project / "origin", data=False)
        push_run(original, repository, RegistryOptions(env=env))
        new_record = push_new_run(project / "elsewhere", repository, data=False)
        client, batch = cluster(
            k8s,
            ended=job_status(k8s, ("Complete", "", "")),
            pods=pod_list(k8s, exit_code=0, message=new_record),
        )
        contexts: list[str] = []

        def connect(config: KubernetesConfig, env: Any) -> KubernetesClient:
            contexts.append(config.context)
            return client

        monkeypatch.setattr(kubernetes_module, "connect_official", connect)
        store = project / "fresh-store"
        argv = ["rerun", f"{repository}:{RUN}", "--on", "kubernetes", "--namespace", "ml"]
        assert run_cli([*argv, "--gpus", "1", "--store", str(store)]) == EXIT_OK
        out, err = capsys.readouterr()
        assert "reproduced" in out
        assert "submitted Kubernetes Job" in err
        assert contexts == [""]
        [(namespace, job)] = batch.created
        assert namespace == "ml"
        [main_container] = job["spec"]["template"]["spec"]["containers"]
        assert main_container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
        assert NEW in Store(store).run_ids()
