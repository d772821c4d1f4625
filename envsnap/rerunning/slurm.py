"""Slurm: a rerun as a batch job (``--on slurm[:PARTITION]``), waited on or collected later.

The one module that talks to Slurm, through the cluster's own CLI (``sbatch``, ``scontrol``,
``scancel``): nothing to install on the nodes but a container runtime, and the job's state in
the scheduler's words. On the submitting host the rerun is prepared as for docker (checks, image,
code, data), then a job directory is written into the store (``jobs/<run-id>-<random>/``: the
inputs as one tar archive, the job script, ``job.toml``), on a filesystem the nodes share. The job
runs the image by digest on its node (docker or podman; pulled from the target's registry when
it has one), and leaves the container's store, its exit code and, when Slurm signalled it, why,
in that directory. Whoever waits (``rerun --on slurm``) or collects later (``envsnap collect``)
imports the new run from there and compares it, as a docker rerun does.
"""

from __future__ import annotations

import math
import re
import shlex
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from envsnap.errors import EnvsnapError, InterruptError, UsageError

if TYPE_CHECKING:
    from envsnap.config import Config
    from envsnap.drift.outcome import RerunOutcome
    from envsnap.image.process import ProcessRunner
    from envsnap.rerunning.request import RerunRequest
    from envsnap.rerunning.rerun import ContainerJob
    from envsnap.store import Store

SLURM = "slurm"
JOB_FILE = "job.toml"
JOB_SCHEMA = "envsnap.slurm-job/1"
INPUT_FILE = "input.tar"
SCRIPT_FILE = "job.sh"
OUTPUT_FILE = "output.log"
STORE_ARCHIVE = "store.tar"
EXIT_FILE = "exit_code"
STOPPED_FILE = "stopped"
SCRIPT_TEMPLATE = "slurm-job.sh"
# Job states in which the job may still run or write its results (scontrol's words).
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
        "POWER_UP_NODE",
    }
)
# Ends that are the scheduler's doing, not the command's.
SCHEDULER_ENDS: Mapping[str, str] = {
    "CANCELLED": "was cancelled",
    "TIMEOUT": "reached its time limit",
    "PREEMPTED": "was preempted",
    "NODE_FAIL": "lost its node",
    "OUT_OF_MEMORY": "ran out of memory",
    "DEADLINE": "passed its deadline",
    "BOOT_FAIL": "could not boot its node",
}
_CALL_TIMEOUT_S = 60.0
# After a job's script ended (its exit code is written), how long slurmctld gets to call it ended.
_SETTLE_S = 30.0
# After Ctrl-C cancelled a job, how long its script gets to bring the container's store back.
_CANCEL_WAIT_S = 60.0
# The longest wait between two questions to slurmctld while a rerun waits on its job.
_MAX_ASK_S = 30.0
_TAIL_LINES = 40
_SLURMSTEPD = re.compile(r"\*\*\* JOB \d+ ON \S+ (CANCELLED AT \S+.*?) \*\*\*")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPTION = re.compile(r"^--[a-z][a-z-]*(?:=.*)?$")
# What the job script must not be handed by the submitting environment: a DOCKER_HOST meant
# for the submitting host would point the node's runtime elsewhere.
_NOT_EXPORTED = ("DOCKER_HOST", "DOCKER_CONTEXT")


class SlurmError(EnvsnapError):
    """Slurm refused or failed a request (sbatch, scontrol, scancel)."""


class SlurmUnreachableError(SlurmError):
    """The cluster's CLI is missing, does not answer, or cannot read job states."""


# --- the scheduler -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """What slurmctld says of a job."""

    job_id: str
    state: str
    reason: str = ""
    exit_code: str = ""  # "CODE:SIGNAL"
    node: str = ""
    partition: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class Slurm:
    """The cluster's CLI on this host, through ``runner`` (tests hand it a fake)."""

    def __init__(self, env: Mapping[str, str], runner: ProcessRunner | None = None) -> None:
        from envsnap.image.process import SubprocessRunner

        self.env = dict(env)
        self.runner = runner or SubprocessRunner()

    def _call(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> tuple[int, str, str]:
        import subprocess

        try:
            result = self.runner.call(argv, env or self.env, _CALL_TIMEOUT_S)
        except FileNotFoundError:
            raise SlurmUnreachableError(
                f"{argv[0]} is not on this host's PATH, so envsnap cannot reach a Slurm cluster",
                hint="run envsnap on a login node of the cluster (where sbatch works)",
            ) from None
        except subprocess.TimeoutExpired:
            raise SlurmUnreachableError(
                f"{argv[0]} did not answer within {_CALL_TIMEOUT_S:g} s",
                hint="check the cluster's controller (scontrol ping)",
            ) from None
        except OSError as exc:
            raise SlurmUnreachableError(
                f"{argv[0]} could not run ({exc.strerror or exc})"
            ) from None
        return result.code, result.stdout, result.stderr

    def submit(self, script: Path, env: Mapping[str, str]) -> str:
        """``sbatch`` the script; the job id."""
        code, out, err = self._call(("sbatch", "--parsable", str(script)), env)
        if code != 0:
            raise SlurmError(
                f"sbatch refused the rerun's job: {_one_line(err or out)}",
                hint="check the partition, the options in [tool.envsnap.targets] and sinfo",
            )
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {out.strip()!r}, not a job id")
        return job_id

    def status(self, job_id: str) -> JobStatus | None:
        """The job's state, or None when slurmctld no longer knows it (purged after MinJobAge)."""
        code, out, err = self._call(("scontrol", "show", "job", "--oneliner", job_id))
        if code != 0:
            if "invalid job id" in (err + out).lower():
                return None
            raise SlurmUnreachableError(
                f"scontrol could not read job {job_id}: {_one_line(err or out)}"
            )
        fields = parse_job_fields(out)
        return JobStatus(
            job_id=job_id,
            state=fields.get("JobState", "UNKNOWN").split()[0],
            reason="" if fields.get("Reason", "None") == "None" else fields.get("Reason", ""),
            exit_code=fields.get("ExitCode", ""),
            node="" if fields.get("NodeList") == "(null)" else fields.get("NodeList", ""),
            partition=fields.get("Partition", ""),
        )

    def cancel(self, job_id: str) -> None:
        code, out, err = self._call(("scancel", job_id))
        if code != 0:
            raise SlurmError(f"scancel could not cancel job {job_id}: {_one_line(err or out)}")


def parse_job_fields(text: str) -> dict[str, str]:
    """``scontrol show job --oneliner``'s ``Key=Value`` pairs (a value may hold spaces only in
    the last fields, which are not read)."""
    fields: dict[str, str] = {}
    for token in text.split():
        key, eq, value = token.partition("=")
        if eq and key not in fields:
            fields[key] = value
    return fields


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:300]


# --- the job -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """``job.toml``: what a collect needs to finish the rerun without the submitting command."""

    original: str
    target: str
    job_id: str = ""
    submitted: str = ""
    image: str = ""
    image_id: str = ""
    partition: str = ""
    timeout_s: float | None = None
    rtol: float | None = None
    atol: float | None = None
    notes: tuple[str, ...] = ()
    missing_env: tuple[str, ...] = ()

    def dumps(self) -> bytes:
        import tomli_w

        data: dict[str, Any] = {
            "schema": JOB_SCHEMA,
            "original": self.original,
            "target": self.target,
            "job_id": self.job_id,
            "submitted": self.submitted,
            "image": self.image,
            "image_id": self.image_id,
            "partition": self.partition,
            "notes": list(self.notes),
            "missing_env": list(self.missing_env),
        }
        for key in ("timeout_s", "rtol", "atol"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return tomli_w.dumps(data).encode("utf-8")

    @classmethod
    def read(cls, path: Path) -> JobRecord:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SlurmError(f"the job record {path} cannot be read ({exc})") from None
        if data.get("schema") != JOB_SCHEMA:
            raise SlurmError(f"{path} is not an envsnap Slurm job record")
        try:
            return cls(
                original=str(data["original"]),
                target=str(data["target"]),
                job_id=str(data.get("job_id", "")),
                submitted=str(data.get("submitted", "")),
                image=str(data.get("image", "")),
                image_id=str(data.get("image_id", "")),
                partition=str(data.get("partition", "")),
                timeout_s=_number(data.get("timeout_s")),
                rtol=_number(data.get("rtol")),
                atol=_number(data.get("atol")),
                notes=tuple(str(n) for n in data.get("notes", ())),
                missing_env=tuple(str(n) for n in data.get("missing_env", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SlurmError(f"the job record {path} is incomplete ({exc})") from None


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class SubmittedJob:
    """A rerun handed to Slurm."""

    job_id: str
    directory: Path
    original: str
    target: str


# running: left for later; collected: a new run joined the store; failed: the job ended without
# recording a run (said, and its directory removed); error: the job could not be collected now
# (a damaged job record, its original run gone), kept as it is.
CollectState = Literal["running", "collected", "failed", "error"]


@dataclass(frozen=True, kw_only=True)
class Collected:
    """One job as a collect found it."""

    job_id: str
    original: str
    target: str
    state: CollectState
    detail: str = ""  # running: the scheduler's state; failed: why
    outcome: RerunOutcome | None = None


@dataclass(frozen=True, kw_only=True)
class SlurmTarget:
    """``--on slurm[:PARTITION]``: the rerun as a batch job on the cluster this host submits to."""

    label: str
    partition: str = ""
    runtime: str = "docker"
    registry: str = ""  # a repository the image is pushed to; the node pulls it by digest
    options: tuple[str, ...] = ()  # extra sbatch options, as given
    data: Mapping[str, str] = field(default_factory=dict)
    poll_s: float = 1.0
    runner: ProcessRunner | None = None

    def rerun(self, request: RerunRequest) -> RerunOutcome:
        """Submit, wait for the job to end (its output streamed), and collect it."""
        with request.prepare_lock:
            if request.cancel is not None and request.cancel.cancelled.is_set():
                raise InterruptError(f"the rerun on {self.label} was cancelled before it started")
            submitted = self.submit(request)
        slurm = Slurm(request.env, self.runner)
        cancel = request.cancel
        if cancel is not None:
            cancel.register(lambda: slurm.cancel(submitted.job_id))
        return wait_for_job(
            submitted,
            request.store,
            slurm,
            config=request.config,
            poll_s=self.poll_s,
            on_output=request.on_output,
            on_state=request.on_output,
            cancelled=cancel.cancelled.is_set if cancel is not None else None,
        )

    def submit(self, request: RerunRequest) -> SubmittedJob:
        """Prepare the rerun on this host (checks, image, code, data), write its job directory
        into the store, and ``sbatch`` it. Returns at once."""
        import os

        from envsnap.image.engine import Engine
        from envsnap.rerunning.rerun import prepare_rerun

        check_options(self.options)
        env = {k: v for k, v in request.env.items() if k not in _NOT_EXPORTED}
        engine = Engine.detect(request.env, echo=request.echo)
        build = request.build
        if self.registry:
            build = replace(build, push=self.registry)
        options = replace(
            request.options,
            data_map={**_mapped(self.data, request), **request.options.data_map},
        )
        job = prepare_rerun(
            request.stored,
            request.store,
            engine,
            build=build,
            options=options,
            repo_root=request.repo_root,
            cwd=request.cwd,
            env=request.env,
            engine_name=f"slurm:{self.partition or 'default'}",
            probe_gpus=False,
            on_build_line=request.on_build_line,
            echo=request.echo,
        )
        image = job.registry_digest or job.image
        manifest = request.stored.manifest
        record = JobRecord(
            original=manifest.run_id,
            target=self.label,
            submitted=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            image=image,
            image_id=job.image_id,
            partition=self.partition,
            timeout_s=options.timeout_s,
            rtol=options.tolerance.rtol if options.tolerance else None,
            atol=options.tolerance.atol if options.tolerance else None,
            notes=(*job.notes, f"target {self.label}"),
            missing_env=job.missing_env,
        )
        key = f"{manifest.run_id}-{os.urandom(4).hex()}"

        def files(directory: Path) -> dict[str, bytes]:
            script = render_script(
                job,
                image=image,
                pull=bool(job.registry_digest),
                directory=directory.absolute(),  # the node resolves it, not this cwd
                runtime=self.runtime,
                partition=self.partition,
                timeout_s=options.timeout_s,
                extra=self.options,
            )
            return {
                INPUT_FILE: job.files_in,
                SCRIPT_FILE: script.encode("utf-8"),
                JOB_FILE: record.dumps(),
            }

        directory = request.store.new_job(key, files)
        sbatch_env = {**env, **{f"ENVSNAP_ENV_{k}": v for k, v in job.env.items()}}
        slurm = Slurm(env, self.runner)
        try:
            job_id = slurm.submit(directory / SCRIPT_FILE, sbatch_env)
        except BaseException:
            claimed = request.store.claim_job(directory)
            if claimed is not None:
                request.store.remove_job(claimed)
            raise
        _write_record(directory, replace(record, job_id=job_id))
        return SubmittedJob(
            job_id=job_id, directory=directory, original=manifest.run_id, target=self.label
        )


def _mapped(data: Mapping[str, str], request: RerunRequest) -> dict[str, str]:
    recorded = {d.path for d in request.stored.manifest.data}
    return {path: place for path, place in data.items() if path in recorded}


def _write_record(directory: Path, record: JobRecord) -> None:
    from envsnap.atomicfile import write_file

    try:
        write_file(directory / JOB_FILE, record.dumps())
    except OSError as exc:
        raise SlurmError(
            f"the job record in {directory} could not be updated ({exc.strerror or exc}); "
            f"the job runs, and envsnap collect still finds it"
        ) from None


def check_options(options: Sequence[str]) -> None:
    """The target's extra sbatch options: each ``--name`` or ``--name=value``, one per entry (a
    value with a newline would end the ``#SBATCH`` line and inject script)."""
    for option in options:
        if "\n" in option or "\r" in option or not _OPTION.fullmatch(option):
            raise UsageError(
                f"the sbatch option {option!r} of a Slurm target is not --name or --name=value",
                hint='write each as one entry, for example options = ["--account=ml", "--qos=low"]',
            )


def render_script(
    job: ContainerJob,
    *,
    image: str,
    pull: bool,
    directory: Path,
    runtime: str,
    partition: str,
    timeout_s: float | None,
    extra: Sequence[str],
) -> str:
    """The batch script (templates/slurm-job.sh) for ``job``: every value shell-quoted, the
    recorded environment's values read from ``ENVSNAP_ENV_<NAME>`` (never written into it)."""
    from envsnap.image.engine import container_flags
    from envsnap.rerunning.rerun import CONTAINER_STORE
    from envsnap.template import read_template

    bad = sorted(name for name in job.env if not _ENV_NAME.fullmatch(name))
    if bad:
        raise UsageError(
            f"the run's environment has a variable named {bad[0]!r}, which a batch script "
            "cannot pass on",
            hint="capture the run again without it (env-allow)",
        )
    lines = []
    if partition:
        lines.append(f"--partition={partition}")
    if job.gpus:
        lines.append(f"--gpus={job.gpus}")
    if timeout_s is not None:
        lines.append(f"--time={max(1, math.ceil(timeout_s / 60))}")
    lines.extend(extra)
    flags = container_flags(
        "$name", job.mounts, job.env, job.workdir, job.user, job.network, gpus=None
    )
    quoted = " ".join('"$name"' if flag == "$name" else shlex.quote(flag) for flag in flags)
    assignments = " ".join(f'{name}="$ENVSNAP_ENV_{name}"' for name in sorted(job.env))
    values = {
        "@JOB_NAME@": job.name.rsplit("-", 1)[0],
        "@OUTPUT@": str(directory / OUTPUT_FILE),
        "@JOB_DIR@": str(directory),
        "@SBATCH_LINES@": "\n".join(f"#SBATCH {line}" for line in lines),
        "@RUNTIME@": shlex.quote(runtime),
        "@IMAGE@": shlex.quote(image),
        "@PULL@": "1" if pull else "0",
        "@CONTAINER@": job.name,
        "@ENV_ASSIGNMENTS@": assignments,
        "@CREATE_FLAGS@": quoted,
        "@ARGV@": shlex.join(job.argv),
        "@STORE@": shlex.quote(CONTAINER_STORE),
    }
    for place in (str(directory), str(directory / OUTPUT_FILE)):
        if any(ch in place for ch in "\n\r%"):
            raise UsageError(
                f"the store's path {directory} has a character an #SBATCH line cannot hold",
                hint="use a store path without newlines or '%'",
            )
    script = read_template(SCRIPT_TEMPLATE)
    for token, value in values.items():
        script = script.replace(token, value)
    return script


# --- waiting and collecting ----------------------------------------------------------------------


def wait_for_job(
    submitted: SubmittedJob,
    store: Store,
    slurm: Slurm,
    *,
    config: Config,
    poll_s: float = 1.0,
    on_output: Callable[[str], None] | None = None,
    on_state: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    cancelled: Callable[[], bool] | None = None,
) -> RerunOutcome:
    """Wait for a submitted job to end, streaming its output, then collect it. Ctrl-C (or
    ``cancelled``, a matrix's Ctrl-C, whose canceller scancels the job from the main thread)
    cancels the job and collects what it recorded as interrupted."""
    output = _OutputFollower(submitted.directory / OUTPUT_FILE)
    said = ""
    interrupted = False
    # The job directory is looked at every poll; slurmctld is asked less and less often (every
    # poll at first, then up to every _MAX_ASK_S), so a long job does not load the controller.
    ask_every, next_ask = poll_s, 0.0
    try:
        while True:
            output.pump(on_output)
            if (submitted.directory / EXIT_FILE).is_file():
                break
            now = time.monotonic()
            if now >= next_ask:
                status = slurm.status(submitted.job_id)
                if _ended(submitted.directory, status):
                    # Ended with no exit code seen: a shared filesystem may show the job's
                    # last files a little late; look again for a while before calling it lost.
                    _await_file(submitted.directory / EXIT_FILE, _SETTLE_S, poll_s, sleep)
                    break
                if status is not None and status.state != said and on_state is not None:
                    why = f" ({status.reason})" if status.reason else ""
                    on_state(f"envsnap: Slurm job {submitted.job_id} is {status.state}{why}")
                said = status.state if status is not None else said
                ask_every = min(ask_every * 1.5, _MAX_ASK_S)
                next_ask = now + ask_every
            sleep(poll_s)
    except KeyboardInterrupt:
        interrupted = True
        slurm.cancel(submitted.job_id)
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while time.monotonic() < deadline:
            if _ended(submitted.directory, slurm.status(submitted.job_id)):
                break
            sleep(poll_s)
    output.pump(on_output)
    interrupted = interrupted or (cancelled is not None and cancelled())
    collected = collect_job(
        submitted.directory, store, slurm, config=config, interrupted=interrupted, sleep=sleep
    )
    if collected.outcome is None:
        if interrupted:
            raise InterruptError(
                f"Slurm job {submitted.job_id} was cancelled (Ctrl-C) before the rerun "
                f"recorded a run: {collected.detail}"
            )
        raise SlurmError(
            f"the rerun on {submitted.target} recorded no run: {collected.detail}",
            hint="its output is above",
        )
    return collected.outcome


def _await_file(path: Path, within_s: float, poll_s: float, sleep: Callable[[float], None]) -> None:
    deadline = time.monotonic() + within_s
    while not path.is_file() and time.monotonic() < deadline:
        sleep(max(poll_s, 0.5))


def _ended(directory: Path, status: JobStatus | None) -> bool:
    """The job will write nothing more: its script wrote its exit code, or Slurm ended it."""
    if (directory / EXIT_FILE).is_file():
        return True
    return status is None or not status.active


class _OutputFollower:
    """The new whole lines of a job's output file, as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def pump(self, on_line: Callable[[str], None] | None) -> None:
        if on_line is None:
            return
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            on_line(line.decode("utf-8", "replace").rstrip("\r"))


def collect_jobs(
    store: Store,
    slurm: Slurm,
    *,
    config: Config,
) -> list[Collected]:
    """Every job in the store: a finished one is collected (its new run joins the store and is
    compared, or its failure is said) and its directory removed; a running one is left."""
    found = []
    for directory in store.job_dirs():
        try:
            collected = collect_job(directory, store, slurm, config=config)
        except SlurmUnreachableError:
            raise  # the cluster does not answer: nothing else can be collected either
        except EnvsnapError as exc:  # one job that cannot be collected hides no other
            collected = _unreadable(directory, exc)
        found.append(collected)
    return found


def collect_job(
    directory: Path,
    store: Store,
    slurm: Slurm,
    *,
    config: Config,
    interrupted: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Collected:
    """One job: running (left as it is), collected, or failed (with the scheduler's reason)."""
    record = JobRecord.read(directory / JOB_FILE)
    status = slurm.status(record.job_id) if record.job_id else None
    if not (directory / EXIT_FILE).is_file():
        if status is not None and status.active:
            why = f" ({status.reason})" if status.reason else ""
            return _collected(record, "running", f"{status.state}{why}")
        if not record.job_id:
            # Submitted, or not, by a command killed before it wrote the job id down.
            return _collected(record, "running", "submitted; its job id was not recorded")
    elif status is not None and status.active:
        # The script is done; give slurmctld a moment to say how the job ended.
        deadline = time.monotonic() + _SETTLE_S
        while status is not None and status.active and time.monotonic() < deadline:
            sleep(0.5)
            status = slurm.status(record.job_id)
    claimed = store.claim_job(directory)
    if claimed is None:
        return _collected(record, "running", "being collected by another envsnap")
    try:
        collected = _finish(claimed, record, status, store, config, interrupted)
    except BaseException:
        store.release_job(claimed, directory.name)
        raise
    store.remove_job(claimed)
    return collected


def _finish(
    directory: Path,
    record: JobRecord,
    status: JobStatus | None,
    store: Store,
    config: Config,
    interrupted: bool,
) -> Collected:
    from envsnap.drift.rules import MetricTolerance
    from envsnap.rerunning.rerun import ContainerRun, RerunOptions, finish_rerun

    output = _read_text(directory / OUTPUT_FILE)
    tail = tuple(output.splitlines()[-_TAIL_LINES:])
    stopped = scheduler_reason(record.job_id, status, output, _read_text(directory / STOPPED_FILE))
    exit_text = _read_text(directory / EXIT_FILE).strip()
    if not exit_text.lstrip("-").isdigit() or not (directory / STORE_ARCHIVE).is_file():
        why = stopped or _no_run_reason(record.job_id, status, exit_text, tail)
        return _collected(record, "failed", why)
    original = store.load(record.original)
    tolerance = None
    if record.rtol is not None or record.atol is not None:
        default = config.metric_tolerance
        tolerance = MetricTolerance(
            rtol=default.rtol if record.rtol is None else record.rtol,
            atol=default.atol if record.atol is None else record.atol,
        )
    timed_out = status is not None and status.state == "TIMEOUT"
    ran = ContainerRun(
        archive=(directory / STORE_ARCHIVE).read_bytes(),
        exit_code=int(exit_text),
        timed_out=timed_out,
        interrupted=interrupted,
        stopped=stopped if not interrupted else f"interrupted (Ctrl-C): {stopped}",
        tail=tail,
    )
    try:
        outcome = finish_rerun(
            original,
            store,
            ran,
            image=record.image,
            image_id=record.image_id,
            notes=(*record.notes, f"Slurm job {record.job_id}" + _where(status)),
            missing_env=record.missing_env,
            options=RerunOptions(timeout_s=record.timeout_s, tolerance=tolerance),
            config=config,
        )
    except EnvsnapError as exc:
        if "recorded no run" not in exc.message:
            raise
        return _collected(record, "failed", stopped or exc.message)
    return _collected(record, "collected", outcome=outcome)


def _unreadable(directory: Path, exc: EnvsnapError) -> Collected:
    try:
        record = JobRecord.read(directory / JOB_FILE)
    except SlurmError:
        record = JobRecord(original=directory.name[:22], target="?")
    return _collected(record, "error", f"{exc.message} (the job is kept in {directory})")


def _collected(
    record: JobRecord, state: CollectState, detail: str = "", outcome: RerunOutcome | None = None
) -> Collected:
    return Collected(
        job_id=record.job_id or "?",
        original=record.original,
        target=record.target,
        state=state,
        detail=detail,
        outcome=outcome,
    )


def scheduler_reason(job_id: str, status: JobStatus | None, output: str, signal: str) -> str:
    """Why Slurm stopped the job, in its own words, or "" when the job's command ended by
    itself. From slurmctld's state, or, once it forgot the job, slurmstepd's line in the
    output (``*** JOB 12 ON node1 CANCELLED AT ... DUE TO TIME LIMIT ***``)."""
    line = _SLURMSTEPD.search(output)
    if status is not None and status.state in SCHEDULER_ENDS:
        said = f"Slurm job {job_id} {SCHEDULER_ENDS[status.state]} ({status.state}"
        if status.reason:
            said += f", {status.reason}"
        return said + (f"; {line.group(1)})" if line else ")")
    if line:
        return f"Slurm job {job_id} was stopped ({line.group(1)})"
    if signal.strip():
        return f"Slurm job {job_id} was stopped by SIG{signal.strip()}"
    return ""


def _no_run_reason(
    job_id: str, status: JobStatus | None, exit_text: str, tail: Sequence[str]
) -> str:
    last = "; ".join(line.strip() for line in tail[-3:] if line.strip())
    if status is None and not exit_text:
        return f"Slurm no longer knows job {job_id}, and it left no result" + (
            f" (its output ends: {last[-300:]})" if last else ""
        )
    state = status.state if status is not None else "ended"
    code = f", exit code {exit_text}" if exit_text else ""
    return f"Slurm job {job_id} {state.lower()}{code} before the rerun recorded a run" + (
        f": {last[-300:]}" if last else ""
    )


def _where(status: JobStatus | None) -> str:
    if status is None:
        return ""
    parts = [f"partition {status.partition}" if status.partition else "", status.node]
    placed = " on ".join(p for p in parts if p)
    return f" ({status.state}, {placed})" if placed else f" ({status.state})"


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""
