"""The Slurm target without a cluster: which target ``--on`` names, the batch script it writes,
how it reads the scheduler's answers (a fake at the ProcessRunner seam), and how a collect turns
a job directory into a result, a failure with the scheduler's reason, or "still running"."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from envsnap.config import Config, TargetConfig
from envsnap.errors import UsageError
from envsnap.image.dockeroutput import Mount
from envsnap.image.process import CallResult
from envsnap.manifest import Gpu, GpuDevice
from envsnap.rerunning.rerun import ContainerJob, scheduled_gpus
from envsnap.rerunning.slurm import (
    EXIT_FILE,
    JOB_FILE,
    OUTPUT_FILE,
    STOPPED_FILE,
    STORE_ARCHIVE,
    JobRecord,
    JobStatus,
    Slurm,
    SlurmError,
    SlurmTarget,
    check_options,
    collect_job,
    parse_job_fields,
    render_script,
    scheduler_reason,
)
from envsnap.rerunning.targets import resolve_target
from envsnap.store import Store
from tests.conftest import sample_manifest

FLEET = {
    "h100": TargetConfig(
        name="h100",
        engine="slurm",
        partition="gpu-h100",
        runtime="podman",
        registry="registry.example/ml/envs",
        options=("--account=ml",),
        data={"data/train.csv": "/shared/train.csv"},
    ),
    "a": TargetConfig(name="a", engine="docker"),
}
RUNNING = (
    "JobId=12 JobName=envsnap-rerun UserId=ada(1000) JobState=RUNNING Reason=None "
    "ExitCode=0:0 RunTime=00:00:04 Partition=debug NodeList=node1 BatchHost=node1"
)


@dataclasses.dataclass
class FakeRunner:
    """Answers each CLI by its name with the next of its queued results; records the calls."""

    answers: dict[str, list[CallResult]] = dataclasses.field(default_factory=dict)
    calls: list[tuple[list[str], dict[str, str]]] = dataclasses.field(default_factory=list)

    def call(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout: float | None,
        *,
        stdin: bytes | None = None,
    ) -> CallResult:
        self.calls.append((list(argv), dict(env)))
        queue = self.answers.get(argv[0], [])
        if not queue:
            raise AssertionError(f"unexpected call {argv}")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> object:
        raise AssertionError("the Slurm client streams nothing")


def _state(state: str, reason: str = "None", code: str = "0:0") -> CallResult:
    return CallResult(
        0,
        f"JobId=12 JobState={state} Reason={reason} ExitCode={code} Partition=debug NodeList=node1",
        "",
    )


GONE = CallResult(1, "", "slurm_load_jobs error: Invalid job id specified")


def _job(**changes: object) -> ContainerJob:
    job = ContainerJob(
        image="registry.example/ml/envs@sha256:" + "c" * 64,
        image_id="sha256:" + "d" * 64,
        name="envsnap-rerun-20261122-163012-a1b2c3-0a1b2c",
        argv=("envsnap", "_replay", "/envsnap/original/manifest.toml", "--store", "/envsnap/store"),
        files_in=b"",
        mounts=(Mount(source=Path("/shared/train.csv"), target="/envsnap/code/data/train.csv"),),
        env={"HOME": "/tmp", "HF_TOKEN": "s3cret value", "ENVSNAP_RERUN_ENGINE": "slurm:debug"},
        workdir="/envsnap/code",
        user="1000:1000",
        network=False,
        gpus="2",
        notes=(),
        missing_env=(),
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def _script(job: ContainerJob | None = None, **changes: object) -> str:
    arguments: dict[str, object] = {
        "image": (job or _job()).image,
        "pull": True,
        "directory": Path("/shared/store/jobs/x"),
        "runtime": "docker",
        "partition": "gpu-h100",
        "timeout_s": 5400.0,
        "extra": ("--account=ml",),
    }
    arguments.update(changes)
    return render_script(job or _job(), **arguments)  # type: ignore[arg-type]


class TestResolve:
    def test_the_built_in_slurm_target_and_a_partition(self) -> None:
        """--on slurm is this host's cluster, its default partition; slurm:P and --partition
        name one; a configured table brings runtime, registry, options and data."""
        assert resolve_target("slurm", {}) == SlurmTarget(label="slurm")
        assert resolve_target("slurm:gpu", {}) == SlurmTarget(label="slurm:gpu", partition="gpu")
        assert resolve_target("slurm", {}, partition="cpu") == SlurmTarget(
            label="slurm", partition="cpu"
        )
        target = resolve_target("h100:gpu-a100", FLEET)
        assert target == SlurmTarget(
            label="h100:gpu-a100",
            partition="gpu-a100",
            runtime="podman",
            registry="registry.example/ml/envs",
            options=("--account=ml",),
            data=FLEET["h100"].data,
        )

    def test_partition_is_refused_for_a_docker_target(self) -> None:
        """--partition with --on a (docker): a UsageError naming the engine."""
        with pytest.raises(UsageError, match="--partition is for Slurm targets"):
            resolve_target("a", FLEET, partition="gpu")


class TestGpus:
    def test_a_scheduler_is_asked_for_a_count(self) -> None:
        """As many as the original used unless --gpus says; none for none; device lists are
        the scheduler's to pick, so refused."""
        two = Gpu(
            available=True,
            devices=(GpuDevice(index=0, name="H100"), GpuDevice(index=1, name="H100")),
        )
        assert scheduled_gpus(two, "") == "2"
        assert scheduled_gpus(two, "1") == "1"
        assert scheduled_gpus(two, "none") is None
        assert scheduled_gpus(Gpu(), "") is None
        with pytest.raises(UsageError, match="the scheduler picks them"):
            scheduled_gpus(two, "device=0")
        with pytest.raises(UsageError, match="the scheduler picks them"):
            scheduled_gpus(two, "all")


class TestScript:
    def test_the_sbatch_lines_and_the_locked_down_container(self) -> None:
        """Partition, GPUs, the time limit in whole minutes (rounded up), the table's options;
        the container as a docker rerun has it (no privileges, no network, the user, the data
        mounted read-only); output and working directory in the job directory."""
        script = _script()
        for line in (
            "#SBATCH --partition=gpu-h100",
            "#SBATCH --gpus=2",
            "#SBATCH --time=90",
            "#SBATCH --account=ml",
            "#SBATCH --output=/shared/store/jobs/x/output.log",
            "#SBATCH --chdir=/shared/store/jobs/x",
            "#SBATCH --no-requeue",
        ):
            assert line in script.splitlines()
        assert "--security-opt no-new-privileges --cap-drop ALL --network none" in script
        assert "--user 1000:1000 --workdir /envsnap/code" in script
        assert "type=bind,source=/shared/train.csv,target=/envsnap/code/data/train.csv" in script
        assert "pull=1" in script
        assert not re.search(r"@[A-Z_]+@", script)  # every placeholder filled

    def test_values_travel_in_the_environment_never_in_the_script(self) -> None:
        """A secret (--env) is named in the script and read from ENVSNAP_ENV_<NAME>; its value
        is nowhere in it."""
        script = _script()
        assert "s3cret" not in script
        assert 'HF_TOKEN="$ENVSNAP_ENV_HF_TOKEN"' in script
        assert "--env HF_TOKEN" in script

    def test_a_short_timeout_is_one_minute_and_none_is_no_limit(self) -> None:
        """Slurm's limit is in minutes: 30 s is 1; no --timeout, no --time line."""
        assert "#SBATCH --time=1" in _script(timeout_s=30.0).splitlines()
        assert "--time" not in _script(timeout_s=None)

    def test_an_unsafe_environment_name_is_refused(self) -> None:
        """A variable name a shell cannot carry is one sentence."""
        with pytest.raises(UsageError, match="cannot pass on"):
            _script(_job(env={"A-B": "x"}))

    @pytest.mark.parametrize(
        "option", ["--qos=low\n#SBATCH --wrap=x", "qos=low", "-p gpu", "--account ml", ""]
    )
    def test_options_must_be_one_long_option_each(self, option: str) -> None:
        """A newline would end the #SBATCH line; anything not --name[=value] is refused."""
        with pytest.raises(UsageError, match="is not --name or --name=value"):
            check_options([option])
        check_options(["--account=ml", "--exclusive", "--constraint=a100&ib"])


class TestSlurmClient:
    def test_submit_returns_the_job_id_and_passes_the_environment(self, tmp_path: Path) -> None:
        """sbatch --parsable SCRIPT with the environment given (the values the job reads)."""
        runner = FakeRunner({"sbatch": [CallResult(0, "12;cluster\n", "")]})
        slurm = Slurm({"PATH": "/bin"}, runner)
        assert slurm.submit(tmp_path / "job.sh", {"ENVSNAP_ENV_X": "1"}) == "12"
        argv, env = runner.calls[0]
        assert argv == ["sbatch", "--parsable", str(tmp_path / "job.sh")]
        assert env == {"ENVSNAP_ENV_X": "1"}

    def test_a_refused_submission_is_one_sentence(self, tmp_path: Path) -> None:
        """sbatch's own last line, in a SlurmError (exit 2)."""
        answer = CallResult(1, "", "sbatch: error: invalid partition specified: gpu\n")
        slurm = Slurm({}, FakeRunner({"sbatch": [answer]}))
        with pytest.raises(SlurmError, match="invalid partition specified: gpu") as caught:
            slurm.submit(tmp_path / "job.sh", {})
        assert caught.value.exit_code == 2

    def test_no_sbatch_on_this_host(self, tmp_path: Path) -> None:
        """No Slurm CLI: one sentence saying where to run envsnap."""

        class Missing(FakeRunner):
            def call(self, argv: Sequence[str], *args: object, **kwargs: object) -> CallResult:
                raise FileNotFoundError(argv[0])

        with pytest.raises(SlurmError, match="sbatch is not on this host's PATH"):
            Slurm({}, Missing()).submit(tmp_path / "job.sh", {})

    def test_a_controller_that_does_not_answer(self) -> None:
        """scontrol past its timeout: one sentence, not a hang."""

        class Slow(FakeRunner):
            def call(self, argv: Sequence[str], *args: object, **kwargs: object) -> CallResult:
                raise subprocess.TimeoutExpired(list(argv), 60)

        with pytest.raises(SlurmError, match="did not answer"):
            Slurm({}, Slow()).status("12")

    def test_status_reads_scontrol(self) -> None:
        """State, reason, exit code, node, partition; a purged job is None."""
        slurm = Slurm({}, FakeRunner({"scontrol": [CallResult(0, RUNNING, "")]}))
        assert slurm.status("12") == JobStatus(
            job_id="12",
            state="RUNNING",
            reason="",
            exit_code="0:0",
            node="node1",
            partition="debug",
        )
        assert Slurm({}, FakeRunner({"scontrol": [GONE]})).status("12") is None

    def test_fields_keep_the_first_of_a_key(self) -> None:
        assert parse_job_fields("A=1 B=x=y A=2 C")["A"] == "1"
        assert parse_job_fields("B=x=y")["B"] == "x=y"


class TestSchedulerReason:
    def test_the_state_and_slurmstepd_line(self) -> None:
        """A cancelled job: the state and slurmstepd's line; a timeout says its limit."""
        line = "slurmstepd: error: *** JOB 12 ON node1 CANCELLED AT 2026-12-01T00:18:44 ***"
        cancelled = JobStatus(job_id="12", state="CANCELLED")
        assert scheduler_reason("12", cancelled, line, "TERM") == (
            "Slurm job 12 was cancelled (CANCELLED; CANCELLED AT 2026-12-01T00:18:44)"
        )
        timeout = JobStatus(job_id="12", state="TIMEOUT", reason="TimeLimit")
        assert scheduler_reason("12", timeout, "", "") == (
            "Slurm job 12 reached its time limit (TIMEOUT, TimeLimit)"
        )

    def test_once_slurm_forgot_the_job_the_output_tells(self) -> None:
        line = "*** JOB 12 ON node1 CANCELLED AT 2026-12-01T00:18:44 DUE TO TIME LIMIT ***"
        assert scheduler_reason("12", None, line, "") == (
            "Slurm job 12 was stopped (CANCELLED AT 2026-12-01T00:18:44 DUE TO TIME LIMIT)"
        )
        assert scheduler_reason("12", None, "", "TERM\n") == "Slurm job 12 was stopped by SIGTERM"

    def test_a_command_that_ended_by_itself_has_no_reason(self) -> None:
        assert scheduler_reason("12", JobStatus(job_id="12", state="FAILED"), "boom", "") == ""
        assert scheduler_reason("12", JobStatus(job_id="12", state="COMPLETED"), "", "") == ""


def _container_store(store_root: Path, run_id: str) -> bytes:
    """A tar of a container's store ("store/runs/<id>/manifest.toml") holding a rerun of the
    sample manifest, as ``docker cp`` would bring it back."""
    scratch = Store(store_root)
    rerun = sample_manifest(run_id=run_id, rerun_of="20261122-163012-a1b2c3")
    _, directory = scratch.write_run(rerun)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(store_root, arcname="store")
    del directory
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store holding the sample run (with a result), the original of the jobs below."""
    from envsnap.manifest import Result

    store = Store(tmp_path / "store")
    _, directory = store.write_run(sample_manifest())
    store.write_result(
        directory,
        Result(
            run_id="20261122-163012-a1b2c3",
            exit_code=0,
            started="2026-11-22T16:30:12Z",
            ended="2026-11-22T16:31:12Z",
        ),
    )
    return store


def _job_dir(store: Store, tmp_path: Path, **files: bytes) -> Path:
    record = JobRecord(
        original="20261122-163012-a1b2c3",
        target="slurm:debug",
        job_id="12",
        image="img@sha256:" + "c" * 64,
        notes=("target slurm:debug",),
    )
    contents = {JOB_FILE: record.dumps(), **{k.replace("_", "."): v for k, v in files.items()}}
    return store.new_job("20261122-163012-a1b2c3-0a1b2c3d", lambda _: contents)


class TestCollect:
    def test_a_running_job_is_left_as_it_is(self, store: Store, tmp_path: Path) -> None:
        directory = _job_dir(store, tmp_path)
        slurm = Slurm({}, FakeRunner({"scontrol": [CallResult(0, RUNNING, "")]}))
        collected = collect_job(directory, store, slurm, config=Config())
        assert (collected.state, collected.detail) == ("running", "RUNNING")
        assert directory.is_dir()

    def test_a_finished_job_joins_the_store_and_is_compared(
        self, store: Store, tmp_path: Path
    ) -> None:
        """exit_code 0 and the container's store: the rerun is imported, compared with the
        original, and the job directory is gone."""
        archive = _container_store(tmp_path / "scratch", "20261201-000000-abcdef")
        directory = store.jobs_dir / "x"
        del directory
        job = _job_dir(store, tmp_path)
        (job / STORE_ARCHIVE).write_bytes(archive)
        (job / EXIT_FILE).write_text("0\n")
        slurm = Slurm({}, FakeRunner({"scontrol": [_state("COMPLETED")]}))
        collected = collect_job(job, store, slurm, config=Config())
        assert collected.state == "collected" and collected.outcome is not None
        assert collected.outcome.rerun == "20261201-000000-abcdef"
        assert any("Slurm job 12 (COMPLETED, partition debug on node1)" in n
                   for n in collected.outcome.notes)  # fmt: skip
        assert not job.exists() and store.job_dirs() == []
        assert "20261201-000000-abcdef" in store.run_ids()

    def test_a_cancelled_job_records_the_schedulers_reason(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A run recorded, then scancel: the result says Slurm cancelled it, exit code 143."""
        from envsnap.store import load_run_dir

        job = _job_dir(store, tmp_path)
        (job / STORE_ARCHIVE).write_bytes(
            _container_store(tmp_path / "scratch", "20261201-000000-abcdef")
        )
        (job / EXIT_FILE).write_text("143\n")
        (job / STOPPED_FILE).write_text("TERM\n")
        (job / OUTPUT_FILE).write_text("*** JOB 12 ON node1 CANCELLED AT 2026-12-01T00:18:44 ***\n")
        slurm = Slurm({}, FakeRunner({"scontrol": [_state("CANCELLED", code="0:15")]}))
        collected = collect_job(job, store, slurm, config=Config())
        assert collected.outcome is not None and collected.outcome.exit_code == 143
        result = load_run_dir(collected.outcome.directory).result
        assert result is not None and result.interrupted
        assert result.error.startswith("Slurm job 12 was cancelled (CANCELLED")
        assert collected.outcome.failed()

    def test_a_job_cancelled_before_it_ran_is_a_failure_with_the_reason(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Cancelled while pending: no run, a failure saying so, the job directory gone."""
        job = _job_dir(store, tmp_path)
        slurm = Slurm({}, FakeRunner({"scontrol": [_state("CANCELLED")]}))
        collected = collect_job(job, store, slurm, config=Config())
        assert collected.state == "failed"
        assert collected.detail == "Slurm job 12 was cancelled (CANCELLED)"
        assert store.job_dirs() == []

    def test_a_job_slurm_forgot_without_a_result(self, store: Store, tmp_path: Path) -> None:
        """Purged from slurmctld and nothing written: a failure, not an endless 'running'."""
        job = _job_dir(store, tmp_path, output_log=b"envsnap-job: docker could not pull x\n")
        slurm = Slurm({}, FakeRunner({"scontrol": [GONE]}))
        collected = collect_job(job, store, slurm, config=Config())
        assert collected.state == "failed"
        assert "Slurm no longer knows job 12" in collected.detail
        assert "could not pull" in collected.detail

    def test_an_image_the_node_could_not_pull(self, store: Store, tmp_path: Path) -> None:
        """The script's own exit (125) with no store: a failure quoting the job's output."""
        job = _job_dir(store, tmp_path, output_log=b"envsnap-job: docker could not pull img\n")
        (job / EXIT_FILE).write_text("125\n")
        slurm = Slurm({}, FakeRunner({"scontrol": [_state("FAILED", "NonZeroExitCode", "125:0")]}))
        collected = collect_job(job, store, slurm, config=Config())
        assert collected.state == "failed"
        assert collected.detail == (
            "Slurm job 12 failed, exit code 125 before the rerun recorded a run: "
            "envsnap-job: docker could not pull img"
        )

    def test_a_claimed_job_is_not_collected_twice(self, store: Store, tmp_path: Path) -> None:
        """Another collect renamed it first: this one leaves it alone."""
        job = _job_dir(store, tmp_path)
        (job / EXIT_FILE).write_text("0\n")
        assert store.claim_job(job) is not None
        slurm = Slurm({}, FakeRunner({"scontrol": [_state("COMPLETED")]}))
        with pytest.raises(SlurmError, match="cannot be read"):
            collect_job(job, store, slurm, config=Config())


class TestCollectMany:
    def test_a_damaged_job_hides_no_other(self, store: Store, tmp_path: Path) -> None:
        """A job whose record is damaged is an error kept in place; the finished job beside it
        is collected."""
        from envsnap.rerunning.slurm import collect_jobs

        good = _job_dir(store, tmp_path)
        (good / STORE_ARCHIVE).write_bytes(
            _container_store(tmp_path / "scratch", "20261201-000000-abcdef")
        )
        (good / EXIT_FILE).write_text("0\n")
        bad = store.new_job("20261122-163012-a1b2c3-ffffffff", lambda _: {JOB_FILE: b"not toml ["})
        slurm = Slurm({}, FakeRunner({"scontrol": [_state("COMPLETED")]}))
        found = {c.state: c for c in collect_jobs(store, slurm, config=Config())}
        assert sorted(found) == ["collected", "error"]
        assert "cannot be read" in found["error"].detail and str(bad) in found["error"].detail
        assert store.job_dirs() == [bad]

    def test_a_job_whose_original_run_is_gone_is_kept(self, store: Store, tmp_path: Path) -> None:
        """gc removed the original: an error naming it, the job kept for when it is back."""
        from envsnap.rerunning.slurm import collect_jobs

        job = _job_dir(store, tmp_path)
        (job / STORE_ARCHIVE).write_bytes(
            _container_store(tmp_path / "scratch", "20261201-000000-abcdef")
        )
        (job / EXIT_FILE).write_text("0\n")
        store.remove_run("20261122-163012-a1b2c3")
        slurm = Slurm({}, FakeRunner({"scontrol": [_state("COMPLETED")]}))
        (collected,) = collect_jobs(store, slurm, config=Config())
        assert collected.state == "error" and "20261122-163012-a1b2c3" in collected.detail
        assert store.job_dirs() == [job]

    def test_a_cluster_that_does_not_answer_stops_the_collect(
        self, store: Store, tmp_path: Path
    ) -> None:
        """scontrol failing is the cluster's fault, not the job's: one sentence, nothing lost."""
        from envsnap.rerunning.slurm import SlurmUnreachableError, collect_jobs

        job = _job_dir(store, tmp_path)
        down = CallResult(1, "", "slurm_load_jobs error: Unable to contact slurm controller")
        slurm = Slurm({}, FakeRunner({"scontrol": [down]}))
        with pytest.raises(SlurmUnreachableError, match="Unable to contact slurm controller"):
            collect_jobs(store, slurm, config=Config())
        assert store.job_dirs() == [job]


class TestWait:
    def test_output_streams_states_are_said_and_the_end_is_collected(
        self, store: Store, tmp_path: Path
    ) -> None:
        """While the job runs its output lines are passed on as they appear and its state is
        said once; when its script writes the exit code the rerun is collected."""
        from envsnap.rerunning.slurm import SubmittedJob, wait_for_job

        job = _job_dir(store, tmp_path)
        archive = _container_store(tmp_path / "scratch", "20261201-000000-abcdef")
        polls: list[int] = []

        def sleep(_: float) -> None:
            polls.append(1)
            if len(polls) == 1:
                (job / OUTPUT_FILE).write_text("epoch 1\nepo")
            elif len(polls) == 2:
                with (job / OUTPUT_FILE).open("a") as handle:
                    handle.write("ch 2\n")
            elif len(polls) == 3:
                (job / STORE_ARCHIVE).write_bytes(archive)
                (job / EXIT_FILE).write_text("0\n")

        running = CallResult(0, RUNNING, "")
        runner = FakeRunner({"scontrol": [running, running, running, _state("COMPLETED")]})
        lines: list[str] = []
        submitted = SubmittedJob(
            job_id="12", directory=job, original="20261122-163012-a1b2c3", target="slurm"
        )
        outcome = wait_for_job(
            submitted,
            store,
            Slurm({}, runner),
            config=Config(),
            poll_s=0.0,
            on_output=lines.append,
            on_state=lines.append,
            sleep=sleep,
        )
        assert outcome.rerun == "20261201-000000-abcdef" and not outcome.interrupted
        assert lines == ["envsnap: Slurm job 12 is RUNNING", "epoch 1", "epoch 2"]
        assert store.job_dirs() == []

    def test_an_exit_code_seen_late_on_a_shared_filesystem_still_counts(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Slurm says the job ended before its exit code is visible here: the waiter looks
        again and collects the run instead of calling the job lost."""
        from envsnap.rerunning.slurm import SubmittedJob, wait_for_job

        job = _job_dir(store, tmp_path)
        archive = _container_store(tmp_path / "scratch", "20261201-000000-abcdef")
        polls: list[int] = []

        def sleep(_: float) -> None:
            polls.append(1)
            if len(polls) == 2:
                (job / STORE_ARCHIVE).write_bytes(archive)
                (job / EXIT_FILE).write_text("0\n")

        runner = FakeRunner({"scontrol": [_state("COMPLETED")]})
        submitted = SubmittedJob(
            job_id="12", directory=job, original="20261122-163012-a1b2c3", target="slurm"
        )
        outcome = wait_for_job(
            submitted, store, Slurm({}, runner), config=Config(), poll_s=0.0, sleep=sleep
        )
        assert outcome.exit_code == 0 and len(polls) == 2
