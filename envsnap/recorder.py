"""Capture: ask every probe, assemble the manifest, store it, and run the recorded command.

Bad input (params, data paths) is checked before any probe runs, and the slow probe (git, two
subprocesses) is started first and collected after the file-reading probes, so it runs meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envsnap.config import Config
from envsnap.errors import UsageError
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
    model,
)
from envsnap.params import flatten_params, load_params_file, merge_params, parse_cli_params
from envsnap.redact import redact_argv, select_environment
from envsnap.store import Store


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
    request: CaptureRequest, ctx: CaptureContext, *, with_git: bool = True
) -> tuple[Manifest, bytes]:
    """Probe the environment and assemble an unsealed manifest plus the git diff bytes."""
    from envsnap.probes import data as data_probe
    from envsnap.probes import git as git_probe

    # Bad input first, so nothing is probed (or written) for a command line that cannot work.
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
    data = data_probe.fingerprint_data(list(request.data), base=ctx.cwd)

    pending_git = (
        git_probe.start_git_capture(
            ctx.cwd,
            max_diff_bytes=ctx.config.git_max_diff_bytes,
            max_untracked=ctx.config.git_max_untracked,
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
        gpu=sections["gpu"],
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


def _probe_environment(ctx: CaptureContext) -> dict[str, Any]:
    from envsnap.probes import conda, container, cuda, gpu, python, system

    target = python.current_target(ctx.env)
    installed = python.find_distributions(target.site_dirs)
    python_section = python.capture_python(
        target, env=ctx.env, repo_root=ctx.repo_root, installed=installed
    )
    return {
        "tool": python.capture_tool(target, installed=installed),
        "host": system.capture_host(),
        "container": container.capture_container(ctx.env),
        "gpu": gpu.capture_gpu(),
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
    manifest, diff = build_manifest(request, ctx)
    sealed, directory = store.write_run(manifest, diff)
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
) -> Result:
    """Run the command of a stored run and write its result.toml; the command's crash is data,
    not an error, so a result is written whatever happens."""
    from envsnap.command import hash_outputs, read_metrics, run_command

    child_env = dict(env)
    child_env["ENVSNAP_RUN_ID"] = run.run_id
    if "global" in run.manifest.seeds:
        child_env["ENVSNAP_SEED"] = str(run.manifest.seeds["global"])
    outcome = run_command(argv, cwd=cwd, env=child_env)
    metrics: dict[str, float] = {}
    metrics_error = ""
    if run.manifest.outputs.metrics:
        metrics, metrics_error = read_metrics(cwd / run.manifest.outputs.metrics)
    result = Result(
        run_id=run.run_id,
        exit_code=outcome.exit_code,
        started=_timestamp(outcome.started),
        ended=_timestamp(outcome.ended),
        duration_s=outcome.duration_s,
        interrupted=outcome.interrupted,
        error=outcome.error,
        metrics_error=metrics_error,
        outputs=hash_outputs(run.manifest.outputs.globs, cwd=cwd),
        metrics=metrics,
    )
    store.write_result(run.directory, result)
    return result


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
