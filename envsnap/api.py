"""The library API, with the same power as the command line.

>>> import envsnap
>>> envsnap.seed_everything(42)
>>> run = envsnap.capture(name="lr-sweep", params={"lr": 0.1}, data=["data/train.csv"])
>>> run.run_id
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envsnap.capturing.capture import CaptureContext, CapturedRun, CaptureRequest, now_utc
from envsnap.config import Config, load_config
from envsnap.errors import UsageError
from envsnap.manifest import Result
from envsnap.store import Store, StoredRun

if TYPE_CHECKING:  # none of these is needed to capture, which must start fast
    from envsnap.drift.compare import DriftReport
    from envsnap.drift.matrix import Matrix, TargetResult
    from envsnap.drift.outcome import RerunOutcome
    from envsnap.drift.rules import Severity
    from envsnap.image.build import BuildOptions, BuiltImage
    from envsnap.locking.model import LockResult
    from envsnap.registry import PulledRecord, PushedRecord, RegistryOptions
    from envsnap.rerunning.request import RerunRequest, Target
    from envsnap.rerunning.slurm import Collected, SubmittedJob
    from envsnap.runindex import RunSummary

STORE_DIR_NAME = ".envsnap"


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """Where a command works: cwd, repository root, configuration and the store."""

    cwd: Path
    env: Mapping[str, str]
    repo_root: Path | None
    config: Config
    store: Store


def workspace(
    store: Path | str | None = None,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Workspace:
    """Resolve cwd, repo, configuration and store (--store > ENVSNAP_STORE > config > default)."""
    from envsnap.capturing.probes.git import find_repo_root

    here = (cwd or Path.cwd()).absolute()
    environ = dict(os.environ) if env is None else env
    repo_root = find_repo_root(here)
    config = load_config(project_root=repo_root or here, env=environ)
    if store is not None:
        root = Path(store)
    elif config.store is not None:
        root = config.store
    else:
        root = (repo_root or here) / STORE_DIR_NAME
    return Workspace(cwd=here, env=environ, repo_root=repo_root, config=config, store=Store(root))


def capture(
    *,
    name: str = "",
    notes: str = "",
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    cli_params: Sequence[str] = (),
    params_file: Path | str | None = None,
    seed: int | None = None,
    data: Sequence[str] = (),
    outputs: Sequence[str] = (),
    metrics: str = "",
    command: Sequence[str] = (),
    rerun_of: str = "",
    store: Path | str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> CapturedRun:
    """Capture the environment into a new run and return it (the command is not run)."""
    import sys

    from envsnap.capturing.capture import capture as record

    ws = workspace(store, cwd=cwd, env=env)
    seeds: dict[str, int] = {}
    determinism: dict[str, str] = {}
    # Only a process that imported the seeding module can have seeded anything.
    seeding = sys.modules.get("envsnap.capturing.seeding")
    seeded = seeding.last_seed_record() if seeding is not None else None
    if seeded is not None:
        seeds.update(seeded.libraries)
        determinism.update(seeded.settings)
    if seed is not None:
        seeds["global"] = seed
    request = CaptureRequest(
        name=name,
        notes=notes,
        tags=dict(tags or {}),
        cli_params=tuple(cli_params),
        params_file=Path(params_file) if params_file is not None else None,
        api_params=dict(params or {}),
        default_params=dict(defaults or {}),
        seeds=seeds,
        determinism=determinism,
        data=tuple(data),
        outputs=tuple(outputs),
        metrics=metrics,
        argv=tuple(command),
        rerun_of=rerun_of,
    )
    context = CaptureContext(
        cwd=ws.cwd, env=ws.env, now=now_utc(), repo_root=ws.repo_root, config=ws.config
    )
    captured = record(request, context, ws.store)
    from envsnap.capturing.active import remember_capture  # later trackers tag this run

    remember_capture(captured.run_id, ws.store.root)
    return captured


def run_recorded(
    run: CapturedRun,
    argv: Sequence[str],
    *,
    store: Path | str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run ``argv`` (the unredacted command of ``run``) with stdio passed through, then write
    result.toml: exit code, timing, output hashes and metrics."""
    from envsnap.capturing.capture import execute

    ws = workspace(store, cwd=cwd, env=env)
    return execute(run, argv, cwd=ws.cwd, env=ws.env, store=ws.store)


def list_runs(*, store: Path | str | None = None) -> list[RunSummary]:
    """Every readable run in the store, oldest first (``scan_runs`` also names damaged ones)."""
    return scan_runs(store=store).runs


@dataclass(frozen=True, kw_only=True)
class RunListing:
    """The runs of a store, and the runs that could not be read, each with its one sentence."""

    runs: list[RunSummary]
    damaged: list[tuple[str, str]]


def scan_runs(*, store: Path | str | None = None) -> RunListing:
    """Every run in the store, oldest first; a damaged run is named, never hides the others."""
    ws = workspace(store)
    good, damaged = ws.store.listing()
    return RunListing(
        runs=good,
        damaged=[(run_id, str(error)) for run_id, error in damaged],
    )


def open_run(ref: str, *, store: Path | str | None = None) -> StoredRun:
    """A run by full id, unique prefix, ``latest``, manifest path, or registry reference
    (``registry/repo:<run-id>``, pulled into the store first)."""
    from envsnap.store import open_run as open_stored

    ws = workspace(store)
    return open_stored(ws.store, ref, pull=registry_puller(ws))


def diff(old: str, new: str, *, store: Path | str | None = None) -> DriftReport:
    """Compare two runs with the drift rules and the project's severity overrides."""
    from envsnap.drift.compare import compare
    from envsnap.store import open_run as open_stored

    ws = workspace(store)
    pull = registry_puller(ws)
    a, b = open_stored(ws.store, old, pull=pull), open_stored(ws.store, new, pull=pull)
    return compare(
        a.manifest,
        b.manifest,
        old_result=a.result,
        new_result=b.result,
        overrides=ws.config.drift_severity,
        tolerance=ws.config.metric_tolerance,
        metric_tolerances=ws.config.metrics,
    )


def check(
    against: Path | str,
    *,
    ignore: Sequence[str] = (),
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> DriftReport:
    """Capture the current environment in memory and compare it with a reference manifest."""
    from envsnap.ci.check import check_against

    ws = workspace(None, cwd=cwd, env=env)
    return check_against(
        Path(against),
        cwd=ws.cwd,
        env=ws.env,
        repo_root=ws.repo_root,
        config=ws.config,
        ignore=ignore,
    )


def report_to_github(
    report: DriftReport,
    *,
    fail_on: Severity = "breaking",
    reference: str = "",
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Under GitHub Actions, write the summary, outputs and JSON report; return annotations."""
    from envsnap.ci.check import publish_to_github

    return publish_to_github(
        report, fail_on=fail_on, env=dict(os.environ) if env is None else env, reference=reference
    )


def lock(run: str, *, store: Path | str | None = None) -> tuple[LockResult, list[Path]]:
    """Write the lock files of a run into its run directory."""
    from envsnap.locking.files import lock_run
    from envsnap.store import open_run as open_stored

    ws = workspace(store)
    stored = open_stored(ws.store, run, pull=registry_puller(ws))
    return lock_run(stored, ws.store, cache_dir=_index_cache(ws.config))


def build(
    run: str,
    *,
    store: Path | str | None = None,
    base: str = "",
    push: str = "",
    allow_unlocked: bool = False,
    rebuild: bool = False,
    on_line: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> BuiltImage:
    """Build (or reuse) the container image of a run; records image.toml in its directory."""
    from envsnap.image.build import build_run
    from envsnap.image.engine import Engine
    from envsnap.store import open_run as open_stored

    ws = workspace(store)
    engine = Engine.detect(ws.env, echo=echo)
    options = _build_options(
        ws, base=base, push=push, allow_unlocked=allow_unlocked, rebuild=rebuild
    )
    return build_run(
        open_stored(ws.store, run, pull=registry_puller(ws)),
        ws.store,
        engine,
        options,
        env=ws.env,
        on_line=on_line,
    )


def rerun(
    run: str,
    *,
    store: Path | str | None = None,
    on: str = "",
    partition: str = "",
    namespace: str = "",
    gpus: str = "",
    timeout_s: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    network: bool = False,
    env_values: Mapping[str, str] | None = None,
    data: Sequence[str] = (),
    base: str = "",
    allow_unlocked: bool = False,
    rebuild: bool = False,
    on_output: Callable[[str], None] | None = None,
    on_build_line: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> RerunOutcome:
    """Rerun a recorded run in its pinned image (reused or built) and compare it with the
    original: on the target ``on`` names (``NAME[:CONTEXT]``, see ``[tool.envsnap.targets]``),
    else on the docker engine the environment names (``DOCKER_HOST``: this host or another).
    ``env_values`` supplies variables whose values were redacted at capture; ``data`` maps
    recorded data paths to paths on the engine's host (``"data/x.csv=/mnt/x.csv"``);
    ``partition`` overrides a Slurm target's, ``namespace`` a Kubernetes target's. A Slurm
    rerun waits for its job; a Kubernetes rerun takes the run from its record in a registry
    (``run`` given as ``REPOSITORY:<run-id>``, or the target's ``results`` repository) and waits
    for its Job."""
    target, request = _targeted_request(**locals())  # every argument, passed on as given
    return target.rerun(request)


def submit(
    run: str,
    *,
    store: Path | str | None = None,
    on: str = "",
    partition: str = "",
    namespace: str = "",
    gpus: str = "",
    timeout_s: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    network: bool = False,
    env_values: Mapping[str, str] | None = None,
    data: Sequence[str] = (),
    base: str = "",
    allow_unlocked: bool = False,
    rebuild: bool = False,
    on_output: Callable[[str], None] | None = None,
    on_build_line: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> SubmittedJob:
    """``rerun --detach``: hand the rerun to a scheduler target (Slurm) and return at once with
    its job; ``collect`` brings it in when it has ended. The arguments are rerun's."""
    target, request = _targeted_request(**locals(), detach=True)  # every argument, as given
    from envsnap.rerunning.slurm import SlurmTarget

    assert isinstance(target, SlurmTarget)  # _targeted_request refused any other
    return target.submit(request)


def render_rerun_job(
    run: str,
    *,
    store: Path | str | None = None,
    on: str = "kubernetes",
    partition: str = "",
    namespace: str = "",
    gpus: str = "",
    timeout_s: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    network: bool = False,
    env_values: Mapping[str, str] | None = None,
    data: Sequence[str] = (),
    base: str = "",
    allow_unlocked: bool = False,
    rebuild: bool = False,
    on_output: Callable[[str], None] | None = None,
    on_build_line: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``rerun --dry-run``: the ``batch/v1`` Job a rerun on the Kubernetes target ``on`` would
    submit, checked against the official client's models when it is installed; nothing is
    submitted and the cluster is not asked, nor the registry (unless ``run`` itself is a
    registry reference, pulled as for any command). The arguments are rerun's."""
    target, request = _targeted_request(**locals(), dry_run=True)  # every argument, as given
    from envsnap.rerunning.kubernetes import KubernetesTarget, validate_job

    assert isinstance(target, KubernetesTarget)  # _targeted_request refused any other
    job = target.render(request)
    if importlib.util.find_spec("kubernetes") is not None:
        validate_job(job)
    return job


def collect(
    *,
    store: Path | str | None = None,
    wait: bool = False,
    poll_s: float = 2.0,
    on_job: Callable[[Collected], None] | None = None,
) -> list[Collected]:
    """The reruns handed to Slurm with ``rerun --detach``: each that ended is collected (its new
    run joins the store and is compared with the original, or why it recorded none is said),
    each still queued or running is listed as such. ``wait``: until none is left running."""
    import time

    from envsnap.rerunning.slurm import Slurm, collect_jobs

    ws = workspace(store)
    slurm = Slurm(ws.env)
    found: list[Collected] = []
    said: set[tuple[str, str, str]] = set()  # a job kept after an error is said once
    while True:
        running: list[Collected] = []
        for item in collect_jobs(ws.store, slurm, config=ws.config):
            if item.state == "running":
                running.append(item)
                continue
            key = (item.job_id, item.original, item.detail)
            if item.state == "error" and key in said:
                continue
            said.add(key)
            found.append(item)
            if on_job is not None:
                on_job(item)
        if not wait or not running:
            if on_job is not None:
                for item in running:
                    on_job(item)
            return found + running
        time.sleep(poll_s)


def _targeted_request(
    run: str,
    *,
    store: Path | str | None,
    on: str,
    partition: str,
    namespace: str,
    gpus: str,
    timeout_s: float | None,
    rtol: float | None,
    atol: float | None,
    network: bool,
    env_values: Mapping[str, str] | None,
    data: Sequence[str],
    base: str,
    allow_unlocked: bool,
    rebuild: bool,
    on_output: Callable[[str], None] | None,
    on_build_line: Callable[[str], None] | None,
    echo: Callable[[str], None] | None,
    detach: bool = False,
    dry_run: bool = False,
) -> tuple[Target, RerunRequest]:
    """The target ``on`` names (the caller's docker engine when none) and what it is asked;
    with ``detach``, a target that can be left to run (a scheduler's), with ``dry_run`` a
    Kubernetes target (whose Job can be shown), or a UsageError before the run is opened."""
    from envsnap.rerunning.kubernetes import KubernetesTarget
    from envsnap.rerunning.slurm import SlurmTarget
    from envsnap.rerunning.targets import DockerTarget, resolve_target
    from envsnap.store import open_run as open_stored

    ws = workspace(store)
    if partition and not on:
        raise UsageError("--partition needs --on slurm", hint="add --on slurm")
    if namespace and not on:
        raise UsageError("--namespace needs --on kubernetes", hint="add --on kubernetes")
    target = (
        resolve_target(on, ws.config.targets, partition=partition, namespace=namespace)
        if on
        else None
    )
    if detach and not isinstance(target, SlurmTarget):
        where = (
            "a Kubernetes cluster" if isinstance(target, KubernetesTarget) else "a docker engine"
        )
        raise UsageError(
            f"--detach is for Slurm targets, and --on {on or 'docker'} runs on {where}, which "
            "envsnap waits on",
            hint="leave out --detach, or rerun --on slurm",
        )
    if dry_run and not isinstance(target, KubernetesTarget):
        named = f"--on {on} is not a Kubernetes target" if on else "no --on names a target"
        raise UsageError(
            f"--dry-run shows the Job a Kubernetes rerun would submit, and {named}",
            hint="leave out --dry-run, or rerun --on kubernetes",
        )
    stored = open_stored(ws.store, run, pull=registry_puller(ws))
    request = _rerun_request(
        ws,
        stored,
        gpus=gpus,
        timeout_s=timeout_s,
        rtol=rtol,
        atol=atol,
        network=network,
        env_values=env_values,
        data=data,
        base=base,
        allow_unlocked=allow_unlocked,
        rebuild=rebuild,
        on_output=on_output,
        on_build_line=on_build_line,
        echo=echo,
        record=run,
    )
    if target is None:  # the engine the caller's environment names, as before targets
        docker_host, context = ws.env.get("DOCKER_HOST", ""), ws.env.get("DOCKER_CONTEXT", "")
        target = DockerTarget(label="", docker_host=docker_host, context=context)
    return target, request


def _rerun_request(
    ws: Workspace,
    stored: StoredRun,
    *,
    gpus: str,
    timeout_s: float | None,
    rtol: float | None,
    atol: float | None,
    network: bool,
    env_values: Mapping[str, str] | None,
    data: Sequence[str],
    base: str,
    allow_unlocked: bool,
    rebuild: bool,
    on_output: Callable[[str], None] | None,
    on_build_line: Callable[[str], None] | None,
    echo: Callable[[str], None] | None,
    record: str = "",
) -> RerunRequest:
    """What every target is asked, from the workspace and the command line's options;
    ``record`` is RUN as given, kept when it names a record in a registry."""
    from envsnap.drift.rules import MetricTolerance
    from envsnap.registry import record_reference
    from envsnap.rerunning.request import RerunRequest
    from envsnap.rerunning.rerun import RerunOptions, parse_data_options

    tolerance = None
    if rtol is not None or atol is not None:
        default = ws.config.metric_tolerance
        tolerance = MetricTolerance(
            rtol=default.rtol if rtol is None else rtol,
            atol=default.atol if atol is None else atol,
        )
    return RerunRequest(
        stored=stored,
        store=ws.store,
        build=_build_options(ws, base=base, allow_unlocked=allow_unlocked, rebuild=rebuild),
        options=RerunOptions(
            gpus=gpus,
            timeout_s=timeout_s,
            tolerance=tolerance,
            network=network,
            env=dict(env_values or {}),
            data_map=parse_data_options(data, stored.manifest),
        ),
        config=ws.config,
        repo_root=ws.repo_root,
        cwd=ws.cwd,
        env=ws.env,
        record=record if record and record_reference(record) is not None else "",
        on_output=on_output,
        on_build_line=on_build_line,
        echo=echo,
    )


def matrix(
    run: str,
    *,
    on: Sequence[str],
    store: Path | str | None = None,
    fail_on: Severity = "breaking",
    gpus: str = "",
    timeout_s: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    network: bool = False,
    env_values: Mapping[str, str] | None = None,
    base: str = "",
    allow_unlocked: bool = False,
    rebuild: bool = False,
    on_target: Callable[[str], None] | None = None,
    on_output: Callable[[str], None] | None = None,
    on_build_line: Callable[[str], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> Matrix:
    """Rerun a recorded run on every target ``on`` names, all at once, and put what each
    drifted in one matrix. Every target is resolved before the first rerun starts; a target
    whose rerun fails becomes a column with its error, and the others still run."""
    from envsnap.drift.matrix import TargetResult, build_matrix
    from envsnap.rerunning.targets import rerun_everywhere, resolve_targets
    from envsnap.store import open_run as open_stored

    ws = workspace(store)
    targets = resolve_targets(on, ws.config.targets)
    stored = open_stored(ws.store, run, pull=registry_puller(ws))
    request = _rerun_request(
        ws,
        stored,
        gpus=gpus,
        timeout_s=timeout_s,
        rtol=rtol,
        atol=atol,
        network=network,
        env_values=env_values,
        data=(),
        base=base,
        allow_unlocked=allow_unlocked,
        rebuild=rebuild,
        on_output=on_output,
        on_build_line=on_build_line,
        echo=echo,
        record=run,
    )
    results = [
        _target_result(ws, run.label, run.outcome)
        if run.outcome is not None
        else TargetResult(name=run.label, error=run.error)
        for run in rerun_everywhere(targets, request, on_target=on_target)
    ]
    return build_matrix(stored.manifest, stored.result, results, fail_on=fail_on, sequential=False)


def rerun_matrix(
    outcome: RerunOutcome, *, name: str = "", store: Path | str | None = None
) -> Matrix:
    """One rerun as a matrix of one target, for ``rerun --html`` (the matrix's page)."""
    from envsnap.drift.matrix import build_matrix

    ws = workspace(store)
    original = ws.store.load(outcome.original)
    column = _target_result(ws, name or "rerun", outcome)
    return build_matrix(original.manifest, original.result, [column])


def _target_result(ws: Workspace, name: str, outcome: RerunOutcome) -> TargetResult:
    from envsnap.drift.matrix import TargetResult
    from envsnap.store import load_run_dir

    rerun = load_run_dir(outcome.directory)
    return TargetResult(name=name, outcome=outcome, manifest=rerun.manifest)


def replay(original: Path | str, *, store: Path | str) -> Result:
    """Inside a rerun container: record this environment as a rerun of ``original`` and run its
    command; returns the result (``envsnap _replay``)."""
    from envsnap.rerunning.rerun import replay as replay_run

    ws = workspace(store)
    # The container's store is scratch, copied out when the container ends: syncing it to the
    # container's disk would protect nothing.
    scratch = Store(ws.store.root, durable=False)
    return replay_run(Path(original), store=scratch, cwd=ws.cwd, env=ws.env, config=ws.config)


def push(
    run: str,
    repository: str,
    *,
    store: Path | str | None = None,
    insecure_registry: bool = False,
    env: Mapping[str, str] | None = None,
) -> PushedRecord:
    """Push a run's record to an OCI registry repository, tagged with its run id; the result
    names it by digest (``repository:<run-id>@sha256:...``)."""
    from envsnap.registry import push_run
    from envsnap.store import open_run as open_stored

    ws = workspace(store, env=env)
    stored = open_stored(ws.store, run, pull=registry_puller(ws, insecure_registry))
    note = _record_code(ws, stored)
    pushed = push_run(stored, repository, _registry_options(ws, insecure_registry))
    return dataclasses.replace(pushed, warnings=(*note, *pushed.warnings))


def _record_code(ws: Workspace, stored: StoredRun) -> tuple[str, ...]:
    """Write the run's code into its record once (code.tar.gz: the recorded commit of this
    repository with the diff applied), so a rerun elsewhere needs no clone; returns a warning
    when it cannot be had here."""
    from envsnap.checkout import pack_code
    from envsnap.errors import EnvsnapError
    from envsnap.store import CODE_ARCHIVE

    git = stored.manifest.git
    if (stored.directory / CODE_ARCHIVE).is_file() or not (git.present and git.commit):
        return ()
    if ws.repo_root is None:
        reason = f"{ws.cwd} is not inside the run's git repository"
    else:
        patch = stored.diff_path.read_bytes() if stored.diff_path.is_file() else None
        try:
            code = pack_code(ws.repo_root, git, patch, env=ws.env)
        except EnvsnapError as exc:
            reason = exc.message
        else:
            ws.store.write_run_files(stored.directory, {CODE_ARCHIVE: code})
            return ()
    return (
        f"the record carries no code ({reason}), so a rerun elsewhere needs a clone of the "
        "repository; push from the repository the run was captured in to include it",
    )


def pull(
    reference: str,
    *,
    store: Path | str | None = None,
    insecure_registry: bool = False,
    env: Mapping[str, str] | None = None,
) -> PulledRecord:
    """Fetch a run record by tag or digest, verify every digest, and import it into the store."""
    from envsnap.registry import pull_record

    ws = workspace(store, env=env)
    return pull_record(reference, ws.store, _registry_options(ws, insecure_registry))


def registry_puller(
    ws: Workspace, insecure_registry: bool = False
) -> Callable[[str], StoredRun | None]:
    """What lets every command's RUN be a registry reference: the record, pulled into the
    store, or None for anything that does not read as a reference (oras is loaded only then)."""

    def pull_reference(ref: str) -> StoredRun | None:
        from envsnap.registry import pull_run, record_reference

        if record_reference(ref) is None:
            return None
        return pull_run(ref, ws.store, _registry_options(ws, insecure_registry))

    return pull_reference


def _registry_options(ws: Workspace, insecure: bool) -> RegistryOptions:
    from envsnap.registry import RegistryOptions

    return RegistryOptions(env=ws.env, insecure=insecure)


def _build_options(
    ws: Workspace, *, base: str, allow_unlocked: bool, rebuild: bool, push: str = ""
) -> BuildOptions:
    """What build and rerun ask of a build, with the workspace's configuration filled in."""
    from envsnap.image.build import BuildOptions

    return BuildOptions(
        base=base,
        config_base=ws.config.base_image,
        push=push,
        allow_unlocked=allow_unlocked,
        rebuild=rebuild,
        cache_dir=_index_cache(ws.config),
        base_cache_dir=ws.config.cache_dir / "bases" if ws.config.cache_dir else None,
        repo_root=ws.repo_root,
    )


def _index_cache(config: Config) -> Path | None:
    return config.cache_dir / "index" if config.cache_dir else None


def __getattr__(name: str) -> Any:
    """``RunSummary`` (what ``list_runs`` returns) stays importable from here, loaded only when
    asked for: capture does not need it."""
    if name == "RunSummary":
        from envsnap.runindex import RunSummary

        return RunSummary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
