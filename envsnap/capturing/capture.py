"""Capture: ask every probe, assemble the manifest, store it, and run the recorded command.

Bad input (params, text that is not UTF-8) is checked before any probe runs. The slow probes
are started first and collected after the file-reading ones, so they run meanwhile: the GPU probe
on a thread of its own (loading NVML waits on the driver), git as two subprocesses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envsnap.capturing.active import RUN_ID_VARIABLE, STORE_DIR_VARIABLE
from envsnap.capturing.params import (
    flatten_params,
    load_params_file,
    merge_params,
    parse_cli_params,
)
from envsnap.capturing.redact import is_utf8_text, printable, redact_argv, select_environment
from envsnap.config import Config
from envsnap.errors import EXIT_ERROR, StoreError, UsageError
from envsnap.manifest import (
    Command,
    Git,
    Manifest,
    Model,
    Outputs,
    Param,
    ParamSource,
    ParamValue,
    Result,
    capture_warnings,
    model,
)
from envsnap.store import MANIFEST_FILE, Store

if TYPE_CHECKING:
    from envsnap.capturing.command import CommandOutcome

    CommandRunner = Callable[..., CommandOutcome]


class ResultNotStoredError(StoreError):
    """The command ran, but its result.toml could not be written (a full disk, say); the run's
    manifest, written before the command started, is still in the store.

    The exit code is the command's own when it failed, so a failed training still reads as
    failed; when the command succeeded it is 2, because the run's record is incomplete.
    """

    def __init__(self, message: str, *, command_exit_code: int, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.command_exit_code = command_exit_code
        self.exit_code = command_exit_code if command_exit_code != 0 else EXIT_ERROR


@model
class CaptureRequest(Model):
    """What the user asked capture to record, before anything is probed."""

    name: str = ""
    notes: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    cli_params: Sequence[str] = ()
    params_file: Path | None = None
    api_params: Mapping[str, Any] = field(default_factory=dict)
    default_params: Mapping[str, Any] = field(default_factory=dict)
    seeds: Mapping[str, int] = field(default_factory=dict)
    determinism: Mapping[str, str] = field(default_factory=dict)
    data: Sequence[str] = ()
    outputs: Sequence[str] = ()
    metrics: str = ""
    argv: Sequence[str] = ()
    rerun_of: str = ""
    # A rerun replays the parameters its original recorded, each with its recorded source.
    recorded_params: Sequence[Param] = ()


@model
class CaptureContext(Model):
    """Where and when capture runs; passed in so nothing deep reads globals."""

    cwd: Path
    env: Mapping[str, str]
    now: datetime
    repo_root: Path | None
    config: Config


@model
class CapturedRun(Model):
    """A stored run: its sealed manifest, its directory, and its result once a command ran."""

    manifest: Manifest
    directory: Path
    result: Result | None = None

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def warnings(self) -> tuple[str, ...]:
        """What capture could not record in full, for stderr; ``show`` says the same."""
        return capture_warnings(self.manifest)


def parse_tags(items: Sequence[str]) -> dict[str, str]:
    """``["team=vision"]`` -> ``{"team": "vision"}``."""
    tags: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--tag {item!r} is not KEY=VALUE", hint="write it as --tag team=nlp")
        tags[key.strip()] = value
    return tags


def build_manifest(
    request: CaptureRequest,
    ctx: CaptureContext,
    *,
    with_git: bool = True,
    store_root: Path | None = None,
) -> tuple[Manifest, bytes]:
    """Probe the environment and assemble an unsealed manifest plus the git diff bytes.

    ``store_root``, when inside the repository, is left out of the git state.
    """
    from envsnap.capturing.probes import data as data_probe
    from envsnap.capturing.probes import git as git_probe
    from envsnap.capturing.probes import gpu as gpu_probe

    # Bad input first, so nothing is probed (or written) for a command line that cannot work.
    _require_text(request, ctx)
    layers: list[tuple[ParamSource, Mapping[str, ParamValue]]] = []
    if request.default_params:
        layers.append(("default", flatten_params(request.default_params, origin="defaults")))
    if request.params_file is not None:
        layers.append(("file", load_params_file(request.params_file)))
    if request.api_params:
        layers.append(("api", flatten_params(request.api_params, origin="params")))
    if request.cli_params:
        layers.append(("cli", parse_cli_params(request.cli_params)))
    for source in ("default", "file", "api", "cli"):
        replayed = {p.key: p.value for p in request.recorded_params if p.source == source}
        if replayed:
            layers.append((source, replayed))
    params, param_redactions = merge_params(layers)
    pending_gpu = gpu_probe.start_gpu_capture()
    data = data_probe.fingerprint_data(list(request.data), base=ctx.cwd)

    pending_git = (
        git_probe.start_git_capture(
            ctx.cwd,
            env=ctx.env,
            max_diff_bytes=ctx.config.git_max_diff_bytes,
            max_untracked=ctx.config.git_max_untracked,
            exclude_data=inside_repo([d.path for d in data], ctx.cwd, ctx.repo_root),
            exclude_private=inside_repo(
                [str(store_root)] if store_root is not None else [], ctx.cwd, ctx.repo_root
            ),
        )
        if with_git and ctx.repo_root is not None
        else None
    )
    try:
        sections = _probe_environment(ctx)
        argv, argv_redactions = redact_argv(request.argv)
        selection = select_environment(ctx.env, ctx.config.env_allow)
    except BaseException:
        if pending_git is not None:
            pending_git.cancel()
        raise
    git, diff = (
        pending_git.finish()
        if pending_git is not None
        else (Git(present=False, reason="not inside a git repository"), b"")
    )
    gpu = pending_gpu.result()
    from envsnap.store import new_run_id

    manifest = Manifest(
        run_id=new_run_id(ctx.now),
        created=_timestamp(ctx.now),
        name=request.name,
        notes=request.notes,
        rerun_of=request.rerun_of,
        tags=dict(request.tags),
        tool=sections["tool"],
        command=Command(argv=argv, cwd=relative_cwd(ctx.cwd, ctx.repo_root)),
        params=params,
        seeds=dict(request.seeds),
        determinism={**selection.determinism, **request.determinism},
        environment=selection.environment,
        outputs=Outputs(globs=tuple(sorted(set(request.outputs))), metrics=request.metrics),
        host=sections["host"],
        container=sections["container"],
        gpu=gpu,
        cuda=sections["cuda"],
        python=sections["python"],
        conda=sections["conda"],
        git=git,
        data=data,
        redacted=tuple(
            sorted(
                (*argv_redactions, *param_redactions, *selection.redacted),
                key=lambda r: (r.where, r.name),
            )
        ),
    )
    return manifest, diff


def _require_text(request: CaptureRequest, ctx: CaptureContext) -> None:
    """Refuse, in one sentence, input that is not UTF-8 text: a manifest holds text, and an
    escaped stand-in would make a rerun run something else."""
    for index, arg in enumerate(request.argv):
        _text(arg, f"the command's argument {index} ({_quoted(arg)})")
    _text(relative_cwd(ctx.cwd, ctx.repo_root), "the working directory's path")
    named: list[tuple[str, Iterable[str]]] = [
        ("--name", [request.name]),
        ("--notes", [request.notes]),
        ("--tag", [f"{k}={v}" for k, v in request.tags.items()]),
        ("--param", request.cli_params),
        ("--data", request.data),
        ("--output", request.outputs),
        ("--metrics", [request.metrics]),
        ("--params-file", [str(request.params_file or "")]),
    ]
    for option, values in named:
        for value in values:
            _text(value, f"{option} {_quoted(value)}")


def _quoted(text: str) -> str:
    """``text`` in quotes for a message, bytes that were not UTF-8 as ``\\xNN``."""
    return "'" + printable(text).replace("\n", "\\n") + "'"


def _text(value: str, what: str) -> None:
    if not is_utf8_text(value):
        raise UsageError(
            f"{what} is not valid UTF-8 text, which a manifest cannot record faithfully; "
            "nothing was run or stored",
            hint="use UTF-8 names and values (rename a file whose name is not UTF-8)",
        )


def inside_repo(paths: Iterable[str], cwd: Path, repo_root: Path | None) -> tuple[str, ...]:
    """``paths`` (relative to ``cwd``, or absolute) that lie inside the repository, relative to
    its root; the root itself and paths outside are left out."""
    if repo_root is None:
        return ()
    root = Path(os.path.normpath(repo_root.absolute()))
    found: set[str] = set()
    for given in paths:
        full = Path(os.path.normpath(cwd.absolute() / given))
        try:
            rel = full.relative_to(root).as_posix()
        except ValueError:
            continue
        if rel not in ("", "."):
            found.add(rel)
    return tuple(sorted(found))


def _probe_environment(ctx: CaptureContext) -> dict[str, Any]:
    from envsnap.capturing.probes import conda, container, cuda, python, system
    from envsnap.capturing.probes.distributions import find_distributions
    from envsnap.capturing.probes.interpreter import current_target

    target = current_target(ctx.env)
    installed = find_distributions(target.site_dirs)
    python_section = python.capture_python(
        target, env=ctx.env, repo_root=ctx.repo_root, installed=installed
    )
    return {
        "tool": python.capture_tool(target, installed=installed),
        "host": system.capture_host(),
        "container": container.capture_container(ctx.env),
        "cuda": cuda.capture_cuda(python_section.packages, target.site_dirs, env=ctx.env),
        "python": python_section,
        "conda": conda.capture_conda(Path(target.prefix)),
    }


def relative_cwd(cwd: Path, repo_root: Path | None) -> str:
    """The working directory relative to the repository root ("." outside a repository)."""
    if repo_root is None:
        return "."
    try:
        return cwd.resolve().relative_to(repo_root.resolve()).as_posix() or "."
    except ValueError:
        return "."


def capture(request: CaptureRequest, ctx: CaptureContext, store: Store) -> CapturedRun:
    """Probe, seal and store a manifest; the command, if any, is run separately."""
    manifest, diff = build_manifest(request, ctx, store_root=ctx.cwd / store.root)
    try:
        sealed, directory = store.write_run(manifest, diff)
    except UnicodeEncodeError as exc:  # a probe read text that is not UTF-8
        raise UsageError(
            f"the run holds text that is not valid UTF-8 "
            f"({_quoted(exc.object[exc.start : exc.end])}), which a manifest cannot "
            "record; nothing was stored",
            hint="report this with the output of envsnap --debug",
        ) from None
    return CapturedRun(manifest=sealed, directory=directory)


def now_utc() -> datetime:
    """The current time in UTC; a seam so callers pass time in."""
    return datetime.now(UTC)


def execute(
    run: CapturedRun,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    store: Store,
    runner: CommandRunner | None = None,
) -> Result:
    """Run the command of a stored run and write its result.toml; the command's crash is data,
    not an error, so a result is written whatever happens.

    Only files the command wrote count as its outputs and metrics: a file matching --output or
    --metrics that is unchanged since just before the command started (a previous run's) is
    left out and listed as stale. ``runner`` stands in for ``command.run_command`` in tests.

    Raises ResultNotStoredError when result.toml cannot be written.
    """
    from envsnap.capturing.command import (
        hash_outputs,
        read_metrics,
        recorded_path,
        run_command,
        stamp_outputs,
        written_since,
    )

    child_env = dict(env)
    child_env[RUN_ID_VARIABLE] = run.run_id
    child_env[STORE_DIR_VARIABLE] = str(store.root.absolute())  # trackers inside find the run
    if "global" in run.manifest.seeds:
        child_env["ENVSNAP_SEED"] = str(run.manifest.seeds["global"])
    declared = run.manifest.outputs
    before = stamp_outputs(declared.globs, declared.metrics, cwd=cwd)
    outcome = (runner or run_command)(argv, cwd=cwd, env=child_env)
    outputs, stale = hash_outputs(declared.globs, cwd=cwd, before=before)
    metrics: dict[str, float] = {}
    metrics_error = ""
    if declared.metrics:
        path, rel = cwd / declared.metrics, recorded_path(declared.metrics)
        if path.is_file() and not written_since(before, rel, path):
            stale = (*stale, rel)
            metrics_error = (
                f"metrics file {declared.metrics} was not written by the command (it is "
                "unchanged since before the command started), so its numbers are left out"
            )
        else:
            metrics, metrics_error = read_metrics(path)
    result = Result(
        run_id=run.run_id,
        exit_code=outcome.exit_code,
        started=_timestamp(outcome.started),
        ended=_timestamp(outcome.ended),
        duration_s=outcome.duration_s,
        interrupted=outcome.interrupted,
        error=outcome.error,
        metrics_error=metrics_error,
        stale=tuple(sorted(set(stale))),
        outputs=outputs,
        metrics=metrics,
    )
    try:
        store.write_result(run.directory, result)
    except StoreError as exc:
        raise _result_not_stored(run, result, exc) from None
    return result


def _result_not_stored(run: CapturedRun, result: Result, exc: StoreError) -> ResultNotStoredError:
    """What was and was not stored when result.toml could not be written."""
    import errno

    cause = exc.__context__
    hint = "check that the store is writable, and capture the run again"
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        why = "no space left on the device"
        hint = "free some space and capture the run again"
    elif isinstance(cause, OSError) and cause.strerror:
        why = cause.strerror[:1].lower() + cause.strerror[1:]
    else:
        why = exc.message
    kept = (
        f"its manifest is stored in {run.directory} without a result"
        if (run.directory / MANIFEST_FILE).is_file()
        else f"its run directory {run.directory} is gone"
    )
    return ResultNotStoredError(
        f"run {run.run_id}: the command exited with {result.exit_code}, but result.toml could "
        f"not be written ({why}), so its exit code, outputs and metrics were not recorded; {kept}",
        command_exit_code=result.exit_code,
        hint=hint,
    )


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
