"""``envsnap rerun``: a recorded run again, in its pinned image, and the drift it shows.

On the host: check the run can be rerun (command, code, GPUs, data), get its image (reused or
built), materialise the recorded commit and diff in a scratch directory, and run the container:
no privileges, no network unless asked, code and data mounted, a scratch store. Inside, the
image's own envsnap replays the run (``envsnap _replay``): it captures the container's
environment as a new run with ``rerun_of`` set, runs the recorded command and writes the result.
Back on the host the new run joins the store and is compared with the original.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from envsnap.capturing.redact import REDACTED
from envsnap.drift.outcome import RerunOutcome
from envsnap.drift.rules import MetricTolerance
from envsnap.errors import EnvsnapError, InterruptError, UsageError
from envsnap.image.plan import CODE_DIR
from envsnap.manifest import Gpu, Manifest, Result
from envsnap.store import CODE_ARCHIVE, Store

if TYPE_CHECKING:
    from envsnap.config import Config
    from envsnap.drift.compare import DriftReport
    from envsnap.image.build import BuildOptions, BuiltImage
    from envsnap.image.dockeroutput import Mount
    from envsnap.image.engine import Engine
    from envsnap.store import StoredRun

CONTAINER_ORIGINAL = "/envsnap/original"
# The engine a rerun runs on, handed to the replay inside and recorded as a tag of the new run.
ENGINE_VARIABLE = "ENVSNAP_RERUN_ENGINE"
ENGINE_TAG = "rerun.engine"
CONTAINER_STORE = "/envsnap/store"
IMAGE_UID = 10001  # the non-root user Dockerfile.base creates
EXIT_INTERRUPTED = 130
# What the container runs: the image's own envsnap replays the original run (see replay()).
REPLAY_ARGV = (
    "envsnap",
    "_replay",
    f"{CONTAINER_ORIGINAL}/manifest.toml",
    "--store",
    CONTAINER_STORE,
)
_TAIL_LINES = 40

# The oldest driver each CUDA major runs on (minor-version compatibility), and the driver each
# toolkit release shipped with (below it, PTX JIT and some features fail). From NVIDIA's CUDA
# toolkit release notes, table "CUDA Toolkit and Corresponding Driver Versions" (Linux).
CUDA_MAJOR_MIN_DRIVER: Mapping[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
CUDA_TOOLKIT_DRIVER: Mapping[str, str] = {
    "11.0": "450.36.06",
    "11.1": "455.23",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}
_GPUS = re.compile(r"^(?:all|none|[1-9][0-9]{0,2}|device=[0-9A-Za-z,-]+)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# What a rerun showed: "not compared" when one of the runs (the original, in practice: a
# manifest copied without its result.toml, or a capture whose result could not be written) has
# no result, so exit code, outputs and metrics could not be compared.


class GpuError(UsageError):
    """GPUs were asked for (or the run needs them) and this host cannot provide them."""


class Cancellation:
    """Ctrl-C for reruns that run in threads (a matrix's): only the main thread sees the
    interrupt, so it calls ``cancel()``, and each rerun has registered how to stop its work
    (kill its container, cancel its job). A rerun registered after the cancel is stopped at
    once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stoppers: list[Callable[[], None]] = []
        self.cancelled = threading.Event()

    def register(self, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stoppers.append(stop)
            late = self.cancelled.is_set()
        if late:
            _quietly(stop)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            stoppers = list(self._stoppers)
        for stop in stoppers:
            _quietly(stop)


def _quietly(stop: Callable[[], None]) -> None:
    # Stopping is best effort: a container already gone, a job already ended.
    with contextlib.suppress(Exception):
        stop()


@dataclass(frozen=True, kw_only=True)
class RerunOptions:
    """What the user asked of the rerun."""

    gpus: str = ""  # "": as many as the original used; "none": none; all | N | device=...
    timeout_s: float | None = None
    tolerance: MetricTolerance | None = None
    network: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    # Recorded data path -> where that data lives on the engine's host (--data PATH=HOSTPATH).
    data_map: Mapping[str, str] = field(default_factory=dict)


# --- checks before anything runs ---------------------------------------------------------------


def check_rerunnable(manifest: Manifest) -> None:
    """Refuse a run that recorded no command, or one whose command line lost a redacted value."""
    argv = manifest.command.argv
    if not argv:
        raise UsageError(
            f"run {manifest.run_id} recorded no command, so there is nothing to rerun",
            hint="capture with 'envsnap capture ... -- CMD' to make a run rerunnable",
        )
    if any(REDACTED in arg for arg in argv):
        raise UsageError(
            f"the command of run {manifest.run_id} had secret values that were redacted when it "
            "was captured, so it cannot be rerun as recorded",
            hint="pass secrets through environment variables (rerun --env NAME=VALUE) instead "
            "of the command line",
        )
    cwd = PurePosixPath(manifest.command.cwd or ".")
    if cwd.is_absolute() or ".." in cwd.parts:
        raise UsageError(
            f"run {manifest.run_id} records the working directory {str(cwd)!r}, which is not "
            "inside its repository",
            hint="capture from inside the repository",
        )
    for item in manifest.data:
        # Capture records a path relative to the working directory, or absolute: never '..'.
        if ".." in PurePosixPath(item.path).parts:
            raise UsageError(
                f"run {manifest.run_id} records the data path {item.path!r}, which envsnap "
                "would not have written",
                hint="the manifest was made by hand; capture the run again",
            )


def parse_env_options(items: Sequence[str]) -> dict[str, str]:
    """``["HF_TOKEN=..."]`` -> ``{"HF_TOKEN": "..."}``, for --env."""
    values: dict[str, str] = {}
    for position, item in enumerate(items, start=1):
        name, eq, value = item.partition("=")
        if not eq or not _ENV_NAME.fullmatch(name):
            # Not echoed: a malformed --env may well be a secret typed without its name.
            raise UsageError(
                f"--env number {position} is not NAME=VALUE with a valid variable name",
                hint="write it as --env NAME=VALUE",
            )
        values[name] = value
    return values


def parse_data_options(items: Sequence[str], manifest: Manifest) -> dict[str, str]:
    """``["data/train.csv=/mnt/shared/train.csv"]`` -> ``{"data/train.csv": "/mnt/..."}``, for
    --data: each recorded data path mapped to an absolute path on the engine's host."""
    recorded = {d.path for d in manifest.data}
    mapping: dict[str, str] = {}
    for item in items:
        path, eq, host_path = item.partition("=")
        if not eq or not path or not host_path:
            raise UsageError(
                f"--data {item!r} is not RECORDED_PATH=HOST_PATH",
                hint="for example --data data/train.csv=/mnt/shared/train.csv",
            )
        if path not in recorded:
            known = ", ".join(sorted(recorded)) or "none"
            raise UsageError(
                f"--data names {path!r}, which run {manifest.run_id} did not record as data "
                f"(it recorded: {known})",
                hint="map one of the recorded data paths",
            )
        if not PurePosixPath(host_path).is_absolute() or ".." in PurePosixPath(host_path).parts:
            raise UsageError(
                f"--data {item!r} maps to {host_path!r}, which is not an absolute path",
                hint="give the data's absolute path on the host the engine runs on",
            )
        mapping[path] = host_path
    return mapping


def missing_environment(manifest: Manifest, supplied: Mapping[str, str]) -> tuple[str, ...]:
    """Variables the original had but whose values were redacted, and --env did not supply."""
    return tuple(
        sorted(
            {
                r.name
                for r in manifest.redacted
                if r.where == "environment" and r.name not in supplied
            }
        )
    )


def _check_gpus(asked: str) -> None:
    if asked and not _GPUS.fullmatch(asked):
        raise UsageError(
            f"--gpus {asked!r} is not all, none, a count or device=ID[,ID]",
            hint="for example --gpus all, --gpus 2 or --gpus device=0,1",
        )


def choose_gpus(original: Gpu, asked: str, host: Callable[[], Gpu]) -> str | None:
    """The value of ``docker run --gpus``, or None for none; GpuError when the host lacks them.

    ``host`` probes this host's GPUs; it is only called when GPUs are wanted.
    """
    _check_gpus(asked)
    if asked == "none":
        return None
    used = len(original.devices)
    if not asked and used == 0:
        return None
    wanted = asked or str(used)
    found = host()
    if not found.available:
        why = f" ({found.reason})" if found.reason else ""
        if asked:
            raise GpuError(
                f"--gpus {asked} was asked for, but this host has no usable NVIDIA GPU{why}",
                hint="rerun on a host with GPUs, or leave out --gpus",
            )
        raise GpuError(
            f"the original run used {used} GPU(s) ({_device_names(original)}), but this host has "
            f"no usable NVIDIA GPU{why}",
            hint="rerun on a host with GPUs, or pass --gpus none to run on the CPU anyway",
        )
    if wanted.isdigit() and int(wanted) > len(found.devices):
        raise GpuError(
            f"{wanted} GPU(s) are needed but this host has {len(found.devices)}",
            hint="pass --gpus with fewer devices, or rerun on a bigger host",
        )
    return wanted


def scheduled_gpus(original: Gpu, asked: str) -> str | None:
    """The GPU count to ask a scheduler for (it, not this host, provides them), or None for
    none: as many as the original used unless ``--gpus`` says; a count only, since the
    scheduler picks the devices."""
    _check_gpus(asked)
    if asked == "none":
        return None
    if asked and not asked.isdigit():
        raise UsageError(
            f"--gpus {asked} names devices, but on a scheduler the scheduler picks them",
            hint="ask for a count, for example --gpus 1",
        )
    wanted = asked or str(len(original.devices))
    return None if wanted == "0" else wanted


def check_driver(cuda_runtime: str, host: Gpu) -> str:
    """A GpuError when the host driver is too old for the image's CUDA runtime; a note (or "")
    when it meets the major's minimum but not the toolkit's own driver."""
    if not cuda_runtime or not host.available or not host.driver_version:
        return ""
    parts = cuda_runtime.split(".")
    if not parts[0].isdigit():
        return ""
    major_min = CUDA_MAJOR_MIN_DRIVER.get(int(parts[0]))
    driver = host.driver_version
    if major_min and _version_tuple(driver) < _version_tuple(major_min):
        raise GpuError(
            f"this host's NVIDIA driver {driver} is too old for CUDA {cuda_runtime}, which needs "
            f"driver {major_min} or newer",
            hint="update the driver, or rerun on a host with a newer one",
        )
    toolkit = CUDA_TOOLKIT_DRIVER.get(".".join(parts[:2]))
    if toolkit and _version_tuple(driver) < _version_tuple(toolkit):
        return (
            f"driver {driver} is older than {toolkit}, which CUDA {cuda_runtime} shipped with: "
            "it runs under minor-version compatibility, without PTX JIT"
        )
    return ""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def _device_names(gpu: Gpu) -> str:
    names = sorted({d.name for d in gpu.devices})
    return ", ".join(names) or "unknown devices"


# --- the rerun ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ContainerJob:
    """A rerun ready for an engine: its image, what goes into the container (one tar archive
    extracted at ``/``), and how the container is set up. A target runs it (here, on a docker
    engine; rerunning/slurm.py, in a batch job) and hands back the container's store."""

    image: str
    image_id: str
    name: str
    argv: tuple[str, ...]
    files_in: bytes
    mounts: tuple[Mount, ...]
    env: Mapping[str, str]
    workdir: str
    user: str
    network: bool
    gpus: str | None
    notes: tuple[str, ...]
    missing_env: tuple[str, ...]
    registry_digest: str = ""  # the image by digest in a registry, when the build pushed it


@dataclass(frozen=True, kw_only=True)
class ContainerRun:
    """What came back from a rerun's container, wherever it ran."""

    archive: bytes  # the container's store, as ``docker cp`` writes it (a tar of "store/")
    exit_code: int
    timed_out: bool = False
    interrupted: bool = False
    # Why the container stopped before its command ended, in the engine's words ("" when it did
    # not, or for the default wording of a timeout or Ctrl-C).
    stopped: str = ""
    tail: tuple[str, ...] = ()  # the last lines of its output, for errors


def rerun_run(
    stored: StoredRun,
    store: Store,
    engine: Engine,
    *,
    build: BuildOptions,
    options: RerunOptions,
    config: Config,
    repo_root: Path | None,
    cwd: Path,
    env: Mapping[str, str],
    on_output: Callable[[str], None] | None = None,
    on_build_line: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
    prepare_lock: AbstractContextManager[object] | None = None,
    cancel: Cancellation | None = None,
) -> RerunOutcome:
    """Rerun a stored run in its image on ``engine`` and compare the new run with it.
    ``prepare_lock`` is held while the image is got; ``cancel`` (a matrix's Ctrl-C) kills the
    container, and the rerun is then recorded as interrupted."""
    with prepare_lock or contextlib.nullcontext():
        if cancel is not None and cancel.cancelled.is_set():
            raise InterruptError("the rerun was cancelled before it started")
        job = prepare_rerun(
            stored,
            store,
            engine,
            build=build,
            options=options,
            repo_root=repo_root,
            cwd=cwd,
            env=env,
            on_build_line=on_build_line,
            echo=echo,
        )
    if cancel is not None:
        cancel.register(lambda: engine.kill_container(job.name))
    tail: deque[str] = deque(maxlen=_TAIL_LINES)

    def take(line: str) -> None:
        tail.append(line)
        if on_output is not None:
            on_output(line)

    ran = engine.run_isolated(
        job.image,
        job.argv,
        name=job.name,
        files_in=job.files_in,
        copy_out=CONTAINER_STORE,
        mounts=job.mounts,
        env=job.env,
        workdir=job.workdir,
        user=job.user,
        network=job.network,
        gpus=job.gpus,
        timeout=options.timeout_s,
        on_output=take,
    )
    interrupted = ran.interrupted or (cancel is not None and cancel.cancelled.is_set())
    came_back = ContainerRun(
        archive=ran.archive,
        exit_code=EXIT_INTERRUPTED if interrupted else ran.exit_code,
        timed_out=ran.timed_out and not interrupted,
        interrupted=interrupted,
        tail=tuple(tail),
    )
    return finish_rerun(
        stored,
        store,
        came_back,
        image=job.image,
        image_id=job.image_id,
        notes=job.notes,
        missing_env=job.missing_env,
        options=options,
        config=config,
    )


def prepare_rerun(
    stored: StoredRun,
    store: Store,
    engine: Engine,
    *,
    build: BuildOptions,
    options: RerunOptions,
    repo_root: Path | None,
    cwd: Path,
    env: Mapping[str, str],
    engine_name: str = "",
    host_gpus: Callable[[], Gpu] | None = None,
    probe_gpus: bool = True,
    on_build_line: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> ContainerJob:
    """Every check that can refuse the rerun (before the engine is asked anything), then the
    engine's answer, the image (reused, pulled or built on ``engine``) and what goes into the
    container. ``engine_name`` says where the rerun runs (default: the engine's own words);
    ``probe_gpus`` False when a scheduler, not this host, provides the GPUs (the count asked for
    is then passed on unchecked)."""
    from envsnap.checkout import materialize, unpack_code
    from envsnap.image.build import build_run

    manifest = stored.manifest
    plan = _preflight(
        stored,
        options,
        repo_root=repo_root,
        cwd=cwd,
        env=env,
        echo=echo,
        host_gpus=host_gpus,
        probe_gpus=probe_gpus,
    )
    engine.info()  # the daemon answers, before anything is built or checked out
    engine_name = engine_name or engine.describe()
    built = build_run(stored, store, engine, build, env=env, on_line=on_build_line)
    with tempfile.TemporaryDirectory(prefix="envsnap-rerun-") as scratch:
        code = Path(scratch) / "code"
        if plan.code_archive is not None:
            unpack_code(plan.code_archive, manifest.git, code)
        else:
            assert plan.repo_root is not None  # the preflight made sure of one or the other
            materialize(plan.repo_root, manifest.git, plan.patch, code, env=env, echo=echo)
        workdir = str(PurePosixPath(CODE_DIR) / manifest.command.cwd)
        user, owner = _container_user()
        files_in = _container_files(stored, code, plan, owner)
    return ContainerJob(
        image=built.reference,
        image_id=built.image_id,
        name=f"envsnap-rerun-{manifest.run_id}-{os.urandom(3).hex()}",
        argv=REPLAY_ARGV,
        files_in=files_in,
        mounts=plan.data_mounts,
        env={**container_environment(manifest, options.env), ENGINE_VARIABLE: engine_name},
        workdir=workdir,
        user=user,
        network=options.network,
        gpus=plan.gpus,
        notes=(*plan.notes, f"engine {engine_name}", *_image_notes(built)),
        missing_env=plan.missing_env,
        registry_digest=built.registry_digest,
    )


def finish_rerun(
    stored: StoredRun,
    store: Store,
    ran: ContainerRun,
    *,
    image: str,
    image_id: str,
    notes: Sequence[str],
    missing_env: Sequence[str],
    options: RerunOptions,
    config: Config,
) -> RerunOutcome:
    """The new run the container recorded joins the store (with a result saying why it stopped,
    when it stopped before its command ended) and is compared with the original."""
    with tempfile.TemporaryDirectory(prefix="envsnap-rerun-") as scratch:
        scratch_store = Path(scratch) / "store"
        _unpack_results(ran.archive, scratch_store)
        new_dir = _recorded_run(scratch_store, ran.exit_code, ran.tail)
        if not (new_dir / "result.toml").is_file():
            _write_stopped_result(Store(scratch_store), new_dir, ran, options.timeout_s)
        directory = store.import_run(new_dir)
    return RerunOutcome(
        original=stored.manifest.run_id,
        rerun=directory.name,
        directory=directory,
        image=image,
        image_id=image_id,
        exit_code=ran.exit_code,
        timed_out=ran.timed_out,
        interrupted=ran.interrupted,
        missing_env=tuple(missing_env),
        notes=tuple(notes),
        report=compare_with_original(stored, directory, config, options),
    )


@dataclass(frozen=True, kw_only=True)
class _Preflight:
    """What the checks before any container found: where things are and what to tell."""

    repo_root: Path | None  # None when the code comes from the record's code archive
    patch: bytes | None
    code_archive: bytes | None
    gpus: str | None
    data_copies: Mapping[str, Path]  # container path -> this machine's file or directory
    data_mounts: tuple[Mount, ...]  # engine-host paths, read-only at the recorded place
    notes: tuple[str, ...]
    missing_env: tuple[str, ...]


def _preflight(
    stored: StoredRun,
    options: RerunOptions,
    *,
    repo_root: Path | None,
    cwd: Path,
    env: Mapping[str, str],
    echo: Callable[[str], None] | None,
    host_gpus: Callable[[], Gpu] | None = None,
    probe_gpus: bool = True,
) -> _Preflight:
    """Every check that can refuse a rerun, done before the engine is asked anything."""
    from envsnap.capturing.probes.data import fingerprint_data
    from envsnap.capturing.probes.gpu import capture_gpu
    from envsnap.checkout import CodeError, check_commit, check_restorable
    from envsnap.image.dockeroutput import Mount

    manifest = stored.manifest
    check_rerunnable(manifest)
    patch = stored.diff_path.read_bytes() if stored.diff_path.is_file() else None
    check_restorable(manifest.git, patch)
    archive_path = stored.directory / CODE_ARCHIVE
    code_archive = archive_path.read_bytes() if archive_path.is_file() else None
    if code_archive is None:
        if repo_root is None:
            raise CodeError(
                "envsnap rerun needs the git repository the run was captured in, or a run record "
                f"that carries its code (envsnap push does), and {cwd} is not inside a repository",
                hint="run it from a clone of the project, or pull the run from its registry",
            )
        check_commit(repo_root, manifest.git.commit, env=env, echo=echo)
    notes: list[str] = []
    host_gpu: list[Gpu] = []

    def probe_host() -> Gpu:
        host_gpu.append((host_gpus or capture_gpu)())
        return host_gpu[0]

    if probe_gpus:
        gpus = choose_gpus(manifest.gpu, options.gpus, probe_host)
    else:
        gpus = scheduled_gpus(manifest.gpu, options.gpus)
    if gpus is not None and host_gpu:
        note = check_driver(manifest.cuda.runtime_version, host_gpu[0])
        if note:
            notes.append(note)
    data_base = (repo_root or cwd) / manifest.command.cwd
    workdir = PurePosixPath(CODE_DIR) / manifest.command.cwd
    copies: dict[str, Path] = {}
    mounts: list[Mount] = []
    for item in manifest.data:
        target = (
            str(workdir / item.path) if not PurePosixPath(item.path).is_absolute() else item.path
        )
        if item.path in options.data_map:
            host_path = options.data_map[item.path]
            mounts.append(Mount(source=Path(host_path), target=target))
            notes.append(f"data {item.path} read from {host_path} on the engine's host")
            continue
        local = Path(item.path) if PurePosixPath(item.path).is_absolute() else data_base / item.path
        if not local.exists():
            raise UsageError(
                f"the run's data {item.path} is not at {local}",
                hint=f"put it there, or map it with --data {item.path}=/path/on/the/engine/host",
            )
        copies[target] = local
    unmapped = [d.path for d in manifest.data if d.path not in options.data_map]
    current = {d.path: d for d in fingerprint_data(unmapped, base=data_base)}
    notes.extend(
        f"data {item.path} changed since the run was captured"
        for item in manifest.data
        if item.path in current and current[item.path].sha256 != item.sha256
    )
    return _Preflight(
        repo_root=repo_root if code_archive is None else None,
        patch=patch,
        code_archive=code_archive,
        gpus=gpus,
        data_copies=copies,
        data_mounts=tuple(mounts),
        notes=tuple(notes),
        missing_env=missing_environment(manifest, options.env),
    )


def _container_files(stored: StoredRun, code: Path, plan: _Preflight, owner: int) -> bytes:
    """What goes into the container, as one tar archive extracted at ``/`` (``docker cp``, so
    the engine may be another host's): the code at CODE_DIR, the original manifest, an empty
    store, and the data not mapped on the engine's host, read-only, at the place the command saw
    it. ``docker cp`` makes root the owner of what it copies (its archive mode cannot name the
    image's user on a container not yet started), so the code and the store are writable by
    all: the container is the command's alone."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:

        def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = owner
            info.uname = info.gname = ""
            info.mode |= 0o777 if info.isdir() else 0o666
            return info

        def read_only(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info = owned(info)
            info.mode &= ~0o222
            if info.isdir():
                info.mode |= 0o111
            return info

        for folder in ("/envsnap", CONTAINER_ORIGINAL, CONTAINER_STORE):
            entry = tarfile.TarInfo(folder.lstrip("/"))
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(owned(entry))
        manifest = stored.manifest_path.read_bytes()
        entry = tarfile.TarInfo(f"{CONTAINER_ORIGINAL.lstrip('/')}/manifest.toml")
        entry.size, entry.mode = len(manifest), 0o444
        archive.addfile(read_only(entry), io.BytesIO(manifest))
        # The data goes in (or is mounted) at its own place: the checkout's copy of a tracked data
        # file must not be there first (a mount cannot replace a file docker cp put down).
        data_places = [m.target for m in plan.data_mounts] + list(plan.data_copies)

        def code_file(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            place = "/" + info.name
            if any(place == t or place.startswith(t.rstrip("/") + "/") for t in data_places):
                return None
            return owned(info)

        archive.add(code, arcname=CODE_DIR.lstrip("/"), filter=code_file)
        for target, local in sorted(plan.data_copies.items()):
            archive.add(local, arcname=target.lstrip("/"), filter=read_only)
    return buffer.getvalue()


def _unpack_results(archive: bytes, scratch_store: Path) -> None:
    """The container's store, as ``docker cp`` brought it back, into ``scratch_store``."""
    import io
    import tarfile

    scratch_store.mkdir(parents=True, exist_ok=True)
    if not archive:
        return
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        # The archive's top folder is the store's own name ("store"); its contents go here.
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            member.name = str(PurePosixPath(*parts[1:])) if len(parts) > 1 else "."
        tar.extractall(scratch_store, filter="data")


def container_environment(manifest: Manifest, supplied: Mapping[str, str]) -> dict[str, str]:
    """The recorded allow-listed variables and determinism settings, plus what --env supplies."""
    from envsnap.capturing.redact import DETERMINISM_VARIABLES

    values = dict(manifest.environment)
    values.update((k, v) for k, v in manifest.determinism.items() if k in DETERMINISM_VARIABLES)
    values.update(supplied)
    # The container user may have no home of its own; /tmp is the container's, not this host's.
    values["HOME"] = "/tmp"  # noqa: S108
    return values


def _container_user() -> tuple[str, int]:
    """Who the command runs as (numeric, so ``docker cp --archive`` can hand it what goes in
    without looking the name up), and who owns the archive: this host's user when it is not
    root (files it writes stay ours); as root, the image's unprivileged user."""
    uid = os.geteuid()
    if uid != 0:
        return f"{uid}:{os.getegid()}", uid
    return f"{IMAGE_UID}:{IMAGE_UID}", IMAGE_UID


def _recorded_run(scratch_store: Path, exit_code: int, tail: Sequence[str]) -> Path:
    runs = sorted((scratch_store / "runs").glob("*/manifest.toml"))
    if len(runs) != 1:
        last = "; ".join(line.strip() for line in list(tail)[-3:] if line.strip())
        raise EnvsnapError(
            f"the rerun container recorded no run (exit code {exit_code}"
            + (f": {last[-300:]}" if last else "")
            + ")",
            hint="its output is above; check that the image runs envsnap (envsnap build)",
            detail="\n".join(tail),
        )
    return runs[0].parent


def _write_stopped_result(
    scratch: Store, run_dir: Path, ran: ContainerRun, timeout_s: float | None
) -> None:
    """A container stopped before the command ended wrote no result; record that it stopped."""
    from envsnap.capturing.capture import now_utc
    from envsnap.store import load_run_dir

    run = load_run_dir(run_dir)
    moment = now_utc().isoformat(timespec="microseconds").replace("+00:00", "Z")
    exit_code = ran.exit_code
    if ran.stopped:
        error = ran.stopped
    elif ran.interrupted:
        error = "interrupted (Ctrl-C); the container was stopped and removed"
    elif ran.timed_out and timeout_s is not None:
        error = f"timed out after {timeout_s:g} s; the container was stopped and removed"
    else:
        error = f"the container ended with exit code {exit_code} before the command finished"
    result = Result(
        run_id=run.run_id,
        exit_code=exit_code,
        started=run.manifest.created,
        ended=moment,
        interrupted=True,
        error=error,
    )
    scratch.write_result(run_dir, result)


def compare_with_original(
    stored: StoredRun, directory: Path, config: Config, options: RerunOptions
) -> DriftReport:
    """The new run in ``directory`` compared with the original, with the configuration's
    severities and the rerun's tolerances (the configuration's when it gives none)."""
    from envsnap.drift.compare import compare
    from envsnap.store import load_run_dir

    new = load_run_dir(directory)
    return compare(
        stored.manifest,
        new.manifest,
        old_result=stored.result,
        new_result=new.result,
        overrides=config.drift_severity,
        tolerance=options.tolerance or config.metric_tolerance,
        metric_tolerances={} if options.tolerance else config.metrics,
    )


def _image_notes(built: BuiltImage) -> tuple[str, ...]:
    state = "pulled by digest" if built.pulled else "reused" if built.reused else "built"
    notes = [f"image {built.reference} ({state}, base {built.base})"]
    notes.extend(f"not locked, installed as found: {n}" for n in built.unlocked)
    return tuple(notes)


# --- inside the container ----------------------------------------------------------------------


def replay(
    original: Path, *, store: Store, cwd: Path, env: Mapping[str, str], config: Config
) -> Result:
    """Inside the rerun container: capture this environment as a rerun of ``original`` with the
    original's command, parameters, seeds, data and outputs, run the command, write the result."""
    from envsnap.capturing.capture import CaptureContext, CaptureRequest, capture, execute, now_utc
    from envsnap.capturing.probes.git import find_repo_root
    from envsnap.manifest import read_manifest

    manifest = read_manifest(original)
    tags = dict(manifest.tags)
    if env.get(ENGINE_VARIABLE):
        tags[ENGINE_TAG] = env[ENGINE_VARIABLE]  # which engine (host) this rerun ran on
    request = CaptureRequest(
        name=manifest.name,
        notes=manifest.notes,
        tags=tags,
        recorded_params=manifest.params,
        seeds=dict(manifest.seeds),
        data=tuple(d.path for d in manifest.data),
        outputs=manifest.outputs.globs,
        metrics=manifest.outputs.metrics,
        argv=manifest.command.argv,
        rerun_of=manifest.run_id,
    )
    context = CaptureContext(
        cwd=cwd, env=env, now=now_utc(), repo_root=find_repo_root(cwd), config=config
    )
    run = capture(request, context, store)
    return execute(run, manifest.command.argv, cwd=cwd, env=env, store=store)


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1.5h"`` or ``"600"`` -> seconds, for --timeout."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(
            f"--timeout {text!r} is not a duration", hint="write it as 90s, 30m, 2h or 600"
        )
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * scale
