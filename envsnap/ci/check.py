"""``envsnap check``: the current environment against a committed reference manifest, for CI.

Nothing is written to the store; only the environment is compared, because the code, the
configuration and the data of a pull request are meant to differ from the reference run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from envsnap.capturing.capture import CaptureContext, CaptureRequest, build_manifest, now_utc
from envsnap.config import Config
from envsnap.drift.compare import DriftReport, compare
from envsnap.drift.rules import Severity
from envsnap.errors import UsageError
from envsnap.manifest import read_manifest
from envsnap.store import MANIFEST_FILE

# Run facts, not environment facts: a pull request changes them by design.
RUN_CATEGORIES = ("run", "code", "config", "data")


def check_against(
    reference: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    repo_root: Path | None,
    config: Config,
    ignore: Sequence[str] = (),
) -> DriftReport:
    """Capture the environment in memory and compare it with ``reference``."""
    path = reference / MANIFEST_FILE if reference.is_dir() else reference
    if not path.is_file():
        raise UsageError(
            f"the reference manifest {reference} does not exist",
            hint="commit one (envsnap capture, then copy its manifest.toml) or fix --against",
        )
    expected = read_manifest(path)
    ctx = CaptureContext(cwd=cwd, env=env, now=now_utc(), repo_root=repo_root, config=config)
    current, _ = build_manifest(CaptureRequest(), ctx, with_git=False)
    return compare(
        expected,
        current,
        overrides=config.drift_severity,
        ignore=(*RUN_CATEGORIES, *ignore),
    )


def publish_to_github(
    report: DriftReport, *, fail_on: Severity, env: Mapping[str, str], reference: str
) -> list[str]:
    """Under GitHub Actions: write the JSON report, the job summary and the step outputs, and
    return the annotation lines to print. Outside GitHub Actions: nothing."""
    from envsnap.ci import github
    from envsnap.drift.report import render_json, render_markdown

    runner = github.RunnerFiles.from_env(env)
    if runner is None:
        return []
    report_dir = runner.temp or Path.cwd()
    report_path = report_dir / "envsnap-drift.json"
    try:
        report_path.write_text(render_json(report), encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"the drift report cannot be written to {report_path} ({exc.strerror or exc})",
            hint="check RUNNER_TEMP",
        ) from None
    drifted = report.drifted(fail_on)
    if runner.summary is not None:
        verdict = (
            f"Environment drifted from `{github.escape_code(reference)}` (at or above {fail_on})."
            if drifted
            else f"No environment drift at or above {fail_on} from "
            f"`{github.escape_code(reference)}`."
        )
        github.append_summary(runner.summary, f"{render_markdown(report)}\n{verdict}\n")
    if runner.output is not None:
        github.write_outputs(
            runner.output,
            {
                "drift": "true" if drifted else "false",
                "max-severity": report.max_severity or "none",
                "report-path": str(report_path),
            },
        )
    return github.annotation_lines(report, fail_on)
