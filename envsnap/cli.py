"""The command line: parse, call one core function, render, map errors to exit codes.

Over 600 lines because it holds some twenty commands, each a screen or less of options and
rendering; the work is in the stage packages and api.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from envsnap.completion import complete_run, complete_target
from envsnap.errors import (
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_OK,
    EnvsnapError,
    InterruptError,
    UsageError,
)
from envsnap.version import version_text

if TYPE_CHECKING:
    from envsnap.rerunning.slurm import Collected, SubmittedJob

F = TypeVar("F", bound=Callable[..., Any])

SEVERITY_CHOICE = click.Choice(["info", "warning", "breaking"])
_DETAIL_LINES = 20


def store_option(func: F) -> F:
    """``--store DIR``, shared by every command that reads or writes runs."""
    return click.option(
        "--store",
        "store_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Run store directory (default: .envsnap at the git top level; env ENVSNAP_STORE).",
    )(func)


def json_option(func: F) -> F:
    """``--json``, for machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def fail_on_option(func: F) -> F:
    """``--fail-on``, shared by the commands that report drift."""
    return click.option(
        "--fail-on",
        type=SEVERITY_CHOICE,
        default="breaking",
        show_default=True,
        help="Exit 1 when drift at or above this severity is found.",
    )(func)


def markdown_option(func: F) -> F:
    """``--markdown``, for a report to paste into a pull request."""
    return click.option("--markdown", is_flag=True, help="Print the report as Markdown.")(func)


def all_option(func: F) -> F:
    """``--all``, to show expected differences too."""
    return click.option("--all", "show_all", is_flag=True, help="Also show expected differences.")(
        func
    )


def base_option(func: F) -> F:
    """``--base IMAGE``, shared by build and rerun."""
    return click.option(
        "--base", default="", metavar="IMAGE", help="Base image (resolved to a digest)."
    )(func)


def allow_unlocked_option(func: F) -> F:
    """``--allow-unlocked``, shared by build and rerun."""
    return click.option(
        "--allow-unlocked", is_flag=True, help="Build even when some packages cannot be locked."
    )(func)


def rebuild_option(func: F) -> F:
    """``--rebuild``, shared by build and rerun."""
    return click.option(
        "--rebuild", is_flag=True, help="Build from scratch, even when the image exists."
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Echo the external commands envsnap runs.")
@click.version_option(version_text(), message="%(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Capture an ML experiment's environment, rebuild it, rerun it and report drift."""
    ctx.obj = {"debug": debug, "verbose": verbose}


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("--name", default="", help="A short name for the run.")
@click.option("--notes", default="", help="Free text kept with the run.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="A label (repeatable).")
@click.option("--param", "params", multiple=True, metavar="K=V", help="A parameter (repeatable).")
@click.option(
    "--params-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML, JSON or TOML file of parameters (nested keys become dotted).",
)
@click.option("--seed", type=int, default=None, help="The run's seed; exported as ENVSNAP_SEED.")
@click.option("--data", multiple=True, metavar="PATH", help="File or directory to fingerprint.")
@click.option("--output", "outputs", multiple=True, metavar="GLOB", help="Output files to hash.")
@click.option(
    "--metrics", default="", metavar="FILE", help="JSON file of metrics the command writes."
)
@store_option
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def capture(
    name: str,
    notes: str,
    tags: tuple[str, ...],
    params: tuple[str, ...],
    params_file: Path | None,
    seed: int | None,
    data: tuple[str, ...],
    outputs: tuple[str, ...],
    metrics: str,
    store_dir: Path | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Record the environment into a new run; with -- CMD, run CMD and record its result.

    Prints the run id on stdout (a JSON object with --json).
    """
    from envsnap import api
    from envsnap.capturing.capture import parse_tags

    run = api.capture(
        name=name,
        notes=notes,
        tags=parse_tags(tags),
        cli_params=params,
        params_file=params_file,
        seed=seed,
        data=data,
        outputs=outputs,
        metrics=metrics,
        command=command,
        store=store_dir,
    )
    for warning in run.warnings:
        click.echo(f"envsnap: warning: {warning}", err=True)
    if not command:
        _emit_run(run.run_id, run.directory, None, as_json)
        return
    if not as_json:
        click.echo(run.run_id)
        sys.stdout.flush()
    result = api.run_recorded(run, command, store=store_dir)
    if result.error:
        click.echo(f"envsnap: {result.error}", err=True)
    if as_json:
        _emit_run(run.run_id, run.directory, result.exit_code, as_json)
    click.echo(
        f"envsnap: run {run.run_id} ended with exit code {result.exit_code}; "
        f"result in {run.directory / 'result.toml'}",
        err=True,
    )
    raise SystemExit(result.exit_code)


def _emit_run(run_id: str, directory: Path, exit_code: int | None, as_json: bool) -> None:
    if not as_json:
        click.echo(run_id)
        return
    import json

    payload: dict[str, Any] = {"run_id": run_id, "manifest": str(directory / "manifest.toml")}
    if exit_code is not None:
        payload["exit_code"] = exit_code
        payload["result"] = str(directory / "result.toml")
    click.echo(json.dumps(payload, sort_keys=True))


@cli.command("list")
@store_option
@json_option
def list_runs(store_dir: Path | None, as_json: bool) -> None:
    """List the runs in the store, oldest first."""
    from envsnap import api

    listing = api.scan_runs(store=store_dir)
    runs = listing.runs
    if as_json:
        import json

        click.echo(json.dumps([r.to_json() for r in runs], indent=2))
    elif not runs and not listing.damaged:
        click.echo("no runs yet; record one with 'envsnap capture'", err=True)
    if runs and not as_json:
        lines = (
            f"{r.run_id}  {r.created[:19]}  {r.exit_text:<7}  {r.env_id[7:19]}  {r.name}".rstrip()
            + (f"  (rerun of {r.rerun_of})" if r.rerun_of else "")
            for r in runs
        )
        click.echo("\n".join(lines))  # one write: echo by line took a third of a long list
    for run_id, sentence in listing.damaged:
        click.echo(f"envsnap: error: run {run_id} cannot be read: {sentence}", err=True)
    if listing.damaged:
        raise SystemExit(EXIT_ERROR)


@cli.command()
@click.argument("run", shell_complete=complete_run)
@store_option
@json_option
def show(run: str, store_dir: Path | None, as_json: bool) -> None:
    """Show one run: a summary, or the whole manifest with --json."""
    from envsnap import api
    from envsnap.drift import report

    stored = api.open_run(run, store=store_dir)
    if as_json:
        click.echo(report.manifest_json(stored.manifest, stored.result), nl=False)
    else:
        click.echo(report.render_show(stored.manifest, stored.result), nl=False)


@cli.command()
@click.argument("old", shell_complete=complete_run)
@click.argument("new", shell_complete=complete_run)
@all_option
@fail_on_option
@markdown_option
@store_option
@json_option
def diff(
    old: str,
    new: str,
    show_all: bool,
    fail_on: str,
    markdown: bool,
    store_dir: Path | None,
    as_json: bool,
) -> None:
    """Compare two runs; exit 1 on drift that matters, 0 otherwise."""
    from envsnap import api
    from envsnap.drift import report

    drift = api.diff(old, new, store=store_dir)
    if as_json:
        click.echo(report.render_json(drift), nl=False)
    elif markdown:
        click.echo(report.render_markdown(drift, show_expected=show_all), nl=False)
    else:
        click.echo(report.render_text(drift, show_expected=show_all), nl=False)
    raise SystemExit(EXIT_DRIFT if drift.drifted(fail_on) else EXIT_OK)  # type: ignore[arg-type]


@cli.command()
@click.argument("run", shell_complete=complete_run)
@store_option
@json_option
def lock(run: str, store_dir: Path | None, as_json: bool) -> None:
    """Write hash-locked requirements (and conda locks) for a run, in its run directory."""
    from envsnap import api

    result, paths = api.lock(run, store=store_dir)
    if as_json:
        import json

        payload = {
            "run_id": result.run_id,
            "files": [str(p) for p in paths],
            "unlockable": [
                {"name": n.name, "version": n.version, "reason": n.reason}
                for n in result.unlockable
            ],
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        for path in paths:
            click.echo(str(path))
        for note in result.unlockable:
            click.echo(f"not locked: {note.name} {note.version}: {note.reason}", err=True)
    raise SystemExit(EXIT_OK)


@cli.command()
@click.argument("run", shell_complete=complete_run)
@base_option
@click.option(
    "--push", default="", metavar="REPOSITORY", help="Push the image and record its digest."
)
@allow_unlocked_option
@rebuild_option
@store_option
@json_option
@click.pass_context
def build(
    ctx: click.Context,
    run: str,
    base: str,
    push: str,
    allow_unlocked: bool,
    rebuild: bool,
    store_dir: Path | None,
    as_json: bool,
) -> None:
    """Build a container image for a run, pinned by digest and hash; print reference and digest."""
    from envsnap import api

    verbose = bool(ctx.obj and ctx.obj.get("verbose"))
    show = (lambda line: click.echo(line, err=True)) if verbose else None
    built = api.build(
        run,
        store=store_dir,
        base=base,
        push=push,
        allow_unlocked=allow_unlocked,
        rebuild=rebuild,
        on_line=_build_progress(verbose),
        echo=show,
    )
    if as_json:
        import json

        click.echo(json.dumps(built.to_json(), indent=2, sort_keys=True))
        return
    click.echo(f"{built.reference} {built.image_id}")
    if built.registry_digest:
        click.echo(built.registry_digest)
    state = "pulled by digest" if built.pulled else "reused" if built.reused else "built"
    click.echo(f"envsnap: {state} in {built.elapsed:.1f}s from {built.base}", err=True)
    for note in built.unlocked:
        click.echo(f"envsnap: not locked: {note}", err=True)


def _build_progress(verbose: bool) -> Callable[[str], None] | None:
    """-v: the whole docker build log; on a terminal: each build step's title; else nothing."""

    def show(line: str) -> None:
        click.echo(line, err=True)

    if verbose:
        return show
    if sys.stderr.isatty():
        from envsnap.image.dockeroutput import progress_printer

        return progress_printer(show)
    return None


def rerun_options(func: F) -> F:
    """The options rerun and matrix share: GPUs, timeout, tolerances, network, variables, and
    the image's base, lock and rebuild choices."""
    for option in reversed(_RERUN_OPTIONS):
        func = option(func)
    return func


_RERUN_OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option(
        "--gpus",
        default="",
        metavar="all|N|device=ID|none",
        help="GPUs for the container (default: as many as the original used).",
    ),
    click.option(
        "--timeout",
        "timeout",
        default="",
        metavar="DURATION",
        help="Stop the rerun after this long (90s, 30m, 2h; a bare number is seconds).",
    ),
    click.option("--rtol", type=float, default=None, help="Relative tolerance for every metric."),
    click.option("--atol", type=float, default=None, help="Absolute tolerance for every metric."),
    click.option("--network", is_flag=True, help="Give the container network access."),
    click.option(
        "--env",
        "env_items",
        multiple=True,
        metavar="NAME=VALUE",
        help="A variable for the container, e.g. one redacted at capture (repeatable).",
    ),
    base_option,
    allow_unlocked_option,
    rebuild_option,
)


def on_option(func: F) -> F:
    """``--on NAME[:CONTEXT]``: where a rerun runs."""
    return click.option(
        "--on",
        "on",
        default="",
        metavar="NAME[:CONTEXT]",
        shell_complete=complete_target,
        help="Rerun on this target ([tool.envsnap.targets.NAME]; docker: the local engine, "
        "docker:CONTEXT: a docker context; slurm[:PARTITION]: this host's Slurm cluster; "
        "kubernetes[:CONTEXT]: the cluster of a kubeconfig context, the current one by "
        "default). After a configured NAME, :CONTEXT is the docker context, the Slurm "
        "partition or the kubeconfig context.",
    )(func)


@cli.command()
@click.argument("run", shell_complete=complete_run)
@on_option
@rerun_options
@click.option(
    "--data",
    "data_items",
    multiple=True,
    metavar="PATH=HOSTPATH",
    help="Where a recorded data path lives on the engine's host (repeatable).",
)
@click.option("--partition", default="", help="The Slurm partition (with --on slurm).")
@click.option(
    "--namespace",
    default="",
    help="The Kubernetes namespace of the Job (with --on kubernetes; default: the target's, "
    "else default).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Submit the rerun to the scheduler (Slurm) and return; envsnap collect gathers it.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the Kubernetes Job the rerun would submit (YAML; JSON with --json) and submit "
    "nothing; no cluster is needed.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as one self-contained HTML page.",
)
@fail_on_option
@markdown_option
@all_option
@store_option
@json_option
@click.pass_context
def rerun(
    ctx: click.Context,
    run: str,
    on: str,
    gpus: str,
    timeout: str,
    rtol: float | None,
    atol: float | None,
    network: bool,
    env_items: tuple[str, ...],
    base: str,
    allow_unlocked: bool,
    rebuild: bool,
    data_items: tuple[str, ...],
    partition: str,
    namespace: str,
    detach: bool,
    dry_run: bool,
    html_file: Path | None,
    fail_on: str,
    markdown: bool,
    show_all: bool,
    store_dir: Path | None,
    as_json: bool,
) -> None:
    """Rerun a recorded run in its pinned image and report drift; exit 1 when it drifted.

    The container's output streams to stderr; the report goes to stdout. With --on slurm the
    rerun is a batch job, waited on (or, with --detach, left to envsnap collect). With --on
    kubernetes it is a Job that takes the run from its record in a registry (give RUN as
    REPOSITORY:RUN_ID, or set results in the target's table) and pushes the new run's record
    there; --dry-run prints that Job instead.
    """
    from envsnap import api
    from envsnap.drift import report
    from envsnap.rerunning.rerun import parse_duration, parse_env_options

    verbose = bool(ctx.obj and ctx.obj.get("verbose"))
    stream = lambda line: click.echo(line, err=True)  # noqa: E731
    if detach and html_file is not None:
        raise UsageError("--html needs the rerun's report, which --detach does not wait for")
    if dry_run and (detach or html_file is not None):
        raise UsageError(
            "--dry-run only prints the Job, so there is nothing to --detach and no report for "
            "--html",
            hint="leave out --detach and --html",
        )
    rerun_or_submit: Callable[..., RerunOutcome | SubmittedJob | dict[str, Any]] = (
        api.render_rerun_job if dry_run else api.submit if detach else api.rerun
    )
    done = rerun_or_submit(
        run,
        store=store_dir,
        on=on,
        partition=partition,
        namespace=namespace,
        gpus=gpus,
        timeout_s=parse_duration(timeout) if timeout else None,
        rtol=rtol,
        atol=atol,
        network=network,
        env_values=parse_env_options(env_items),
        data=data_items,
        base=base,
        allow_unlocked=allow_unlocked,
        rebuild=rebuild,
        on_output=stream,
        on_build_line=_build_progress(verbose),
        echo=stream if verbose else None,
    )
    from envsnap.drift.outcome import RerunOutcome

    if isinstance(done, dict):
        _print_job(done, as_json)
        raise SystemExit(EXIT_OK)
    if not isinstance(done, RerunOutcome):
        _print_submitted(done, as_json)
        raise SystemExit(EXIT_OK)
    outcome = done
    if as_json:
        click.echo(report.render_rerun_json(outcome, fail_on=fail_on), nl=False)  # type: ignore[arg-type]
    elif markdown:
        click.echo(
            report.render_rerun_markdown(outcome, show_expected=show_all, fail_on=fail_on),  # type: ignore[arg-type]
            nl=False,
        )
    else:
        click.echo(
            report.render_rerun_text(outcome, show_expected=show_all, fail_on=fail_on),  # type: ignore[arg-type]
            nl=False,
        )
    if html_file is not None:
        from envsnap.drift.matrix import render_matrix_html

        page = api.rerun_matrix(outcome, name=on or "rerun", store=store_dir)
        _write_page(html_file, render_matrix_html(page))
    if outcome.interrupted:
        raise InterruptError(f"rerun {outcome.rerun} was interrupted; its report is above")
    raise SystemExit(EXIT_DRIFT if outcome.failed(fail_on) else EXIT_OK)  # type: ignore[arg-type]


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    """What rerun --dry-run shows: the Job, as kubectl create -f - takes it."""
    if as_json:
        import json

        click.echo(json.dumps(job, indent=2, sort_keys=True))
        return
    from envsnap.rerunning.kubernetes import job_yaml

    click.echo(job_yaml(job), nl=False)


def _print_submitted(job: SubmittedJob, as_json: bool) -> None:
    """What rerun --detach submitted: the job id on stdout (or JSON), the next step on stderr."""
    if as_json:
        import json

        data = {
            "schema": "envsnap.submitted/1",
            "job_id": job.job_id,
            "original": job.original,
            "target": job.target,
            "directory": str(job.directory),
        }
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(job.job_id)
    click.echo(
        f"envsnap: submitted Slurm job {job.job_id}: a rerun of {job.original} on {job.target}; "
        "envsnap collect gathers it when it has ended",
        err=True,
    )


@cli.command()
@click.option("--wait", is_flag=True, help="Wait until every submitted rerun has ended.")
@fail_on_option
@store_option
@json_option
def collect(wait: bool, fail_on: str, store_dir: Path | None, as_json: bool) -> None:
    """Gather the reruns submitted with rerun --detach that have ended.

    Each ended job's new run joins the store and its report is printed; jobs still queued or
    running are listed and left. Exit 1 when a collected rerun did not reproduce (or recorded no
    run), 2 when a job could not be collected (it is kept, and the others are collected), 0
    otherwise.
    """
    import json

    from envsnap import api
    from envsnap.drift import report

    printed: list[dict[str, Any]] = []

    def show(item: Collected) -> None:
        where = f"Slurm job {item.job_id} (rerun of {item.original} on {item.target})"
        if as_json:
            entry: dict[str, Any] = {
                "job_id": item.job_id,
                "original": item.original,
                "target": item.target,
                "state": item.state,
                "detail": item.detail,
            }
            if item.outcome is not None:
                entry["rerun"] = json.loads(
                    report.render_rerun_json(item.outcome, fail_on=fail_on)  # type: ignore[arg-type]
                )
            printed.append(entry)
        elif item.outcome is not None:
            click.echo(f"== {where}")
            click.echo(
                report.render_rerun_text(item.outcome, fail_on=fail_on),  # type: ignore[arg-type]
                nl=False,
            )
        elif item.state == "running":
            click.echo(f"{where}: still {item.detail}")
        elif item.state == "error":
            click.echo(f"envsnap: error: {where}: {item.detail}", err=True)
        else:
            click.echo(f"{where}: failed: {item.detail}")

    found = api.collect(store=store_dir, wait=wait, on_job=show)
    if as_json:
        data = {"schema": "envsnap.collect/1", "jobs": printed}
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not found:
        click.echo("envsnap: no submitted reruns to collect", err=True)
    failed = [
        c
        for c in found
        if c.state == "failed" or (c.outcome is not None and c.outcome.failed(fail_on))  # type: ignore[arg-type]
    ]
    errored = any(c.state == "error" for c in found)
    raise SystemExit(EXIT_ERROR if errored else EXIT_DRIFT if failed else EXIT_OK)


def _write_page(path: Path, page: str) -> None:
    """An HTML report, written whole or not at all; its path on stderr."""
    from envsnap.atomicfile import write_file

    try:
        write_file(path, page.encode("utf-8"))
    except OSError as exc:
        raise EnvsnapError(
            f"the HTML report cannot be written to {path} ({exc.strerror or exc})",
            hint="choose a writable path for --html",
        ) from None
    click.echo(f"envsnap: HTML report written to {path}", err=True)


@cli.command()
@click.argument("run", shell_complete=complete_run)
@click.option(
    "--on",
    "on",
    multiple=True,
    required=True,
    metavar="NAME[:CONTEXT]",
    shell_complete=complete_target,
    help="A target to rerun on (repeatable; see rerun --on).",
)
@rerun_options
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the matrix as one self-contained HTML page.",
)
@fail_on_option
@markdown_option
@store_option
@json_option
@click.pass_context
def matrix(
    ctx: click.Context,
    run: str,
    on: tuple[str, ...],
    gpus: str,
    timeout: str,
    rtol: float | None,
    atol: float | None,
    network: bool,
    env_items: tuple[str, ...],
    base: str,
    allow_unlocked: bool,
    rebuild: bool,
    html_file: Path | None,
    fail_on: str,
    markdown: bool,
    store_dir: Path | None,
    as_json: bool,
) -> None:
    """Rerun a run on every --on target at once and report one drift matrix.

    Exit 1 when any target drifted at or above --fail-on, 2 when a target could not rerun.
    """
    from envsnap import api
    from envsnap.drift import matrix as matrices
    from envsnap.rerunning.rerun import parse_duration, parse_env_options

    verbose = bool(ctx.obj and ctx.obj.get("verbose"))
    stream = lambda line: click.echo(line, err=True)  # noqa: E731
    table = api.matrix(
        run,
        on=on,
        store=store_dir,
        fail_on=fail_on,  # type: ignore[arg-type]
        gpus=gpus,
        timeout_s=parse_duration(timeout) if timeout else None,
        rtol=rtol,
        atol=atol,
        network=network,
        env_values=parse_env_options(env_items),
        base=base,
        allow_unlocked=allow_unlocked,
        rebuild=rebuild,
        on_target=lambda name: click.echo(f"envsnap: rerunning on {name}", err=True),
        on_output=stream,
        on_build_line=_build_progress(verbose),
        echo=stream if verbose else None,
    )
    if as_json:
        click.echo(matrices.render_matrix_json(table), nl=False)
    elif markdown:
        click.echo(matrices.render_matrix_markdown(table), nl=False)
    else:
        click.echo(matrices.render_matrix_text(table), nl=False)
    if html_file is not None:
        _write_page(html_file, matrices.render_matrix_html(table))
    for column in table.targets:
        if column.error:
            click.echo(f"envsnap: error: {column.name}: {column.error}", err=True)
    raise SystemExit(EXIT_ERROR if table.errored() else EXIT_DRIFT if table.failed() else EXIT_OK)


@cli.command("_replay", hidden=True)
@click.argument("original", type=click.Path(dir_okay=False, path_type=Path))
@store_option
def replay(original: Path, store_dir: Path | None) -> None:
    """Inside a rerun container: record this environment as a rerun and run its command."""
    from envsnap import api

    result = api.replay(original, store=store_dir or Path(".envsnap"))
    if result.error:
        click.echo(f"envsnap: {result.error}", err=True)
    raise SystemExit(result.exit_code)


@cli.command()
@click.option(
    "--against",
    required=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="The committed reference manifest (for example envsnap.lock.toml).",
)
@fail_on_option
@click.option(
    "--ignore",
    multiple=True,
    metavar="CATEGORY.FIELD",
    help="A category or field pattern to leave out (repeatable), e.g. hardware, host.kernel.",
)
@markdown_option
@all_option
@json_option
def check(
    against: Path,
    fail_on: str,
    ignore: tuple[str, ...],
    markdown: bool,
    show_all: bool,
    as_json: bool,
) -> None:
    """Compare the current environment with a reference manifest; exit 1 on drift.

    Nothing is stored. Under GitHub Actions it also writes annotations, the job summary and the
    step outputs drift, max-severity and report-path.
    """
    from envsnap import api
    from envsnap.drift import report

    drift = api.check(against, ignore=ignore)
    if as_json:
        click.echo(report.render_json(drift), nl=False)
    elif markdown:
        click.echo(report.render_markdown(drift, show_expected=show_all), nl=False)
    else:
        click.echo(report.render_text(drift, show_expected=show_all), nl=False)
    for line in api.report_to_github(drift, fail_on=fail_on, reference=str(against)):  # type: ignore[arg-type]
        click.echo(line)
    raise SystemExit(EXIT_DRIFT if drift.drifted(fail_on) else EXIT_OK)  # type: ignore[arg-type]


@cli.group()
def ci() -> None:
    """Set up continuous integration for drift checks."""


@ci.command("init")
@click.option(
    "--manifest",
    default="envsnap.lock.toml",
    show_default=True,
    help="The reference manifest the workflow checks against.",
)
@click.option("--fail-on", type=SEVERITY_CHOICE, default="breaking", show_default=True)
@click.option(
    "--path",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".github/workflows/envsnap-drift.yml"),
    show_default=True,
)
@click.option("--force", is_flag=True, help="Overwrite an existing workflow file.")
def ci_init(manifest: str, fail_on: str, target: Path, force: bool) -> None:
    """Write a GitHub Actions workflow that fails pull requests on environment drift."""
    from envsnap.ci import workflow as ci_workflow

    written = ci_workflow.write_workflow(target, manifest=manifest, fail_on=fail_on, force=force)
    click.echo(str(written))


@cli.command()
@click.argument("run", shell_complete=complete_run)
@click.option("--to", "tracker", type=click.Choice(["mlflow", "wandb"]), required=True)
@click.option("--experiment", default="", help="MLflow experiment (created when missing).")
@click.option("--project", default="", help="W&B project (default: WANDB_PROJECT).")
@click.option("--run-id", "tracker_run_id", default="", help="Log into this tracker run.")
@store_option
def export(
    run: str,
    tracker: str,
    experiment: str,
    project: str,
    tracker_run_id: str,
    store_dir: Path | None,
) -> None:
    """Log a run's manifest, result, lock files, params and metrics to MLflow or W&B."""
    from envsnap.integrations import export_run

    done = export_run(
        run,
        to=tracker,
        store=store_dir,
        experiment=experiment,
        project=project,
        tracker_run_id=tracker_run_id,
    )
    click.echo(done.tracker_run_id)
    click.echo(f"envsnap: exported {', '.join(done.files)} to {done.location}", err=True)


def insecure_registry_option(func: F) -> F:
    """``--insecure-registry``, shared by push and pull."""
    return click.option(
        "--insecure-registry",
        is_flag=True,
        help="Allow plain HTTP or an unverified certificate for this registry "
        "(loopback registries need no flag).",
    )(func)


@cli.command()
@click.argument("run", shell_complete=complete_run)
@click.argument("repository")
@insecure_registry_option
@store_option
@json_option
def push(
    run: str, repository: str, insecure_registry: bool, store_dir: Path | None, as_json: bool
) -> None:
    """Push a run's record to an OCI registry REPOSITORY, tagged with the run id.

    Prints the reference by digest (REPOSITORY:<run-id>@sha256:...). Credentials come from
    docker's config (docker login).
    """
    from envsnap import api

    pushed = api.push(run, repository, store=store_dir, insecure_registry=insecure_registry)
    for warning in pushed.warnings:
        click.echo(f"envsnap: warning: {warning}", err=True)
    if as_json:
        import json

        click.echo(json.dumps(pushed.to_json(), indent=2, sort_keys=True))
        return
    click.echo(pushed.reference)


@cli.command()
@click.argument("reference")
@insecure_registry_option
@store_option
@json_option
def pull(reference: str, insecure_registry: bool, store_dir: Path | None, as_json: bool) -> None:
    """Fetch a run record (REPOSITORY:<run-id> or @sha256:...), verify it, and store it.

    Every digest is checked before anything is stored; prints the run id.
    """
    from envsnap import api

    pulled = api.pull(reference, store=store_dir, insecure_registry=insecure_registry)
    if as_json:
        import json

        click.echo(json.dumps(pulled.to_json(), indent=2, sort_keys=True))
        return
    click.echo(pulled.run.run_id)
    state = "was already in" if pulled.already_stored else "is now in"
    click.echo(f"envsnap: run {pulled.run.run_id} {state} {pulled.run.directory}", err=True)


@cli.command("gc")
@click.option("--older-than", default="", metavar="AGE", help="Runs older than this (7d, 12h).")
@click.option("--name", "names", multiple=True, metavar="GLOB", help="Runs named so (repeatable).")
@click.option(
    "--tag", "tags", multiple=True, metavar="K=V", help="Runs with this tag (repeatable)."
)
@click.option("--keep-images", is_flag=True, help="Leave images no run uses.")
@click.option("--force", is_flag=True, help="Also remove runs a rerun points to.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@store_option
@json_option
def gc_command(
    older_than: str,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    keep_images: bool,
    force: bool,
    dry_run: bool,
    store_dir: Path | None,
    as_json: bool,
) -> None:
    """Remove runs by age, name or tag (all given must match), and images no run uses."""
    from envsnap import api, gc
    from envsnap.capturing.capture import parse_tags

    plan = gc.collect(
        api.workspace(store_dir).store,
        older_than=older_than,
        names=names,
        tags=parse_tags(tags),
        force=force,
        images=not keep_images,
        dry_run=dry_run,
    )
    if as_json:
        import json

        click.echo(json.dumps(plan.to_json(dry_run=dry_run), indent=2))
    else:
        click.echo("\n".join(gc.describe(plan, dry_run=dry_run)))


def debug_requested(args: list[str]) -> bool:
    """Whether envsnap's own ``--debug`` was given: only before the subcommand counts, never a
    word of the user's command (``capture -- python t.py --debug``) or of a later option."""
    for arg in args:
        if arg == "--debug":
            return True
        if arg == "--" or not arg.startswith("-"):
            return False
    return False


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; an EnvsnapError becomes one sentence and its exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = debug_requested(args)
    try:
        os.getcwd()
    except FileNotFoundError:
        click.echo(
            "envsnap: error: the current directory no longer exists; "
            "cd into your project and run the command again.",
            err=True,
        )
        sys.exit(EXIT_ERROR)
    try:
        cli.main(args=args, prog_name="envsnap", standalone_mode=False)
    except EnvsnapError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        if exc.detail and exc.show_detail:  # a failed build's log tail, before the sentence
            for line in exc.detail.splitlines()[-_DETAIL_LINES:]:
                click.echo(f"  | {line}", err=True)
        click.echo(f"envsnap: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("envsnap: error: interrupted; nothing half-written was left behind.", err=True)
        sys.exit(InterruptError.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("envsnap: error: interrupted; nothing half-written was left behind.", err=True)
        sys.exit(InterruptError.exit_code)
    except click.ClickException as exc:
        click.echo(f"envsnap: error: {exc.format_message()}", err=True)
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            click.echo(f"Try '{exc.ctx.command_path} --help'.", err=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except Exception as exc:  # a bug: still one sentence, the traceback only on request
        if debug:
            raise
        click.echo(
            f"envsnap: error: unexpected {type(exc).__name__}: {exc}; run again with --debug "
            "for the traceback and report it.",
            err=True,
        )
        sys.exit(EXIT_ERROR)
