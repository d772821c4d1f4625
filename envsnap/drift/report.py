"""Renderings of a DriftReport (text, JSON, Markdown) and of a manifest summary for ``show``.

Rendering never decides anything: every fact comes from the report computed in drift.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from envsnap.drift.compare import DriftReport, FieldDrift, MetricDrift
from envsnap.drift.rules import SEVERITY_ORDER, Severity
from envsnap.manifest import Manifest, Result, to_data

if TYPE_CHECKING:
    from envsnap.drift.outcome import RerunOutcome

_MAX_SHOWN = 60


def render_text(report: DriftReport, *, show_expected: bool = False) -> str:
    """A table grouped by category, worst first; expected differences only on request."""
    counts = report.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITY_ORDER) if counts[s])
    lines = [f"drift {report.old_run} -> {report.new_run}: {summary or 'no differences'}"]
    lines.extend(f"  note: {_clip(note, 300)}" for note in report.notes)
    shown = [f for f in report.fields if show_expected or f.severity != "expected"]
    hidden = len(report.fields) - len(shown)
    if shown:
        width = min(max(len(f.path) for f in shown), 48)
        category = ""
        for f in shown:
            if f.category != category:
                category = f.category
                lines.append(f"\n{category}")
            lines.append(f"  {f.severity.upper():<9} {f.path:<{width}}  {_change_text(f)}")
    if report.results_compared:
        lines.append("\noutputs")
        lines.extend(_result_lines(report))
    if hidden:
        lines.append(f"\n({hidden} expected differences hidden; --all shows them)")
    return "\n".join(lines) + "\n"


def _change_text(f: FieldDrift) -> str:
    if f.change == "added":
        return f"(absent) -> {_clip(f.new)}"
    if f.change == "removed":
        return f"{_clip(f.old)} -> (absent)"
    return f"{_clip(f.old)} -> {_clip(f.new)}"


def _clip(text: str, limit: int = _MAX_SHOWN) -> str:
    if not text:
        return '""'
    one_line = text.replace("\n", "\\n")
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _result_lines(report: DriftReport) -> list[str]:
    lines = []
    if report.exit_codes is not None:
        old, new = report.exit_codes
        state = "BREAKING" if old != new else "same"
        lines.append(f"  {state:<9} exit code  {old} -> {new}")
    for o in report.outputs:
        lines.append(
            f"  {o.severity.upper():<9} {o.path}  {o.old_sha256[:12] or '(absent)'} -> "
            f"{o.new_sha256[:12] or '(absent)'}"
        )
    for m in report.metrics:
        lines.append(f"  {m.severity.upper():<9} metric {m.name}  {_metric_text(m)}")
    if not report.outputs and not report.metrics:
        lines.append("  outputs and metrics identical")
    return lines


def _metric_text(m: MetricDrift) -> str:
    if m.old is None or m.new is None:
        return f"{_num(m.old)} -> {_num(m.new)}"
    tolerance = f"rtol={m.rtol:g} atol={m.atol:g}"
    return f"{_num(m.old)} -> {_num(m.new)} (diff {m.abs_diff:.3g}, {tolerance})"


def _num(value: float | None) -> str:
    return "(absent)" if value is None else repr(value)


def report_data(report: DriftReport) -> dict[str, Any]:
    """The report as plain data, the shape of ``--json`` output."""
    return {
        "schema": "envsnap.drift/1",
        "old_run": report.old_run,
        "new_run": report.new_run,
        "drift": report.drifted("breaking"),
        "max_severity": report.max_severity or "none",
        "counts": report.counts(),
        "fields": [to_data_full(f) for f in report.fields],
        "results_compared": report.results_compared,
        "exit_codes": list(report.exit_codes) if report.exit_codes else None,
        "outputs": [to_data_full(o) for o in report.outputs],
        "metrics": [to_data_full(m) for m in report.metrics],
        "notes": list(report.notes),
    }


def to_data_full(obj: Any) -> dict[str, Any]:
    """Every field of a small report dataclass, defaults included."""
    import dataclasses

    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def render_json(report: DriftReport) -> str:
    """Stable JSON (sorted keys, two-space indent)."""
    return json.dumps(report_data(report), indent=2, sort_keys=True, allow_nan=True) + "\n"


def render_markdown(report: DriftReport, *, show_expected: bool = False) -> str:
    """A Markdown table; every cell is escaped so manifest values cannot change the table."""
    counts = report.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITY_ORDER) if counts[s])
    lines = [
        f"### envsnap drift: `{md_code(report.old_run)}` → `{md_code(report.new_run)}`",
        "",
        f"**{md_cell(summary or 'no differences')}**",
        "",
    ]
    if report.notes:
        lines += [f"- {md_cell(note)}" for note in report.notes] + [""]
    rows = [f for f in report.fields if show_expected or f.severity != "expected"]
    if rows:
        lines += ["| severity | category | field | old | new |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| {f.severity} | {f.category} | {md_cell(f.path)} | {md_cell(_clip(f.old))} "
            f"| {md_cell(_clip(f.new))} |"
            for f in rows
        ]
    if report.results_compared:
        lines += ["", "| result | old | new | verdict |", "| --- | --- | --- | --- |"]
        if report.exit_codes is not None:
            old, new = report.exit_codes
            lines.append(f"| exit code | {old} | {new} | {'breaking' if old != new else 'same'} |")
        lines += [
            f"| {md_cell(o.path)} | {o.old_sha256[:12]} | {o.new_sha256[:12]} | {o.severity} |"
            for o in report.outputs
        ]
        lines += [
            f"| metric {md_cell(m.name)} | {_num(m.old)} | {_num(m.new)} | {m.severity} |"
            for m in report.metrics
        ]
    return "\n".join(lines) + "\n"


def md_cell(text: str) -> str:
    """Escape text for one Markdown table cell: no pipes, no line breaks, no HTML, no markup."""
    out = []
    for ch in text.replace("\r", " ").replace("\n", " "):
        if ch in "\\`*_{}[]()<>#+!|~&":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def md_code(text: str) -> str:
    """Text for inside a single-backtick code span."""
    return text.replace("`", "'").replace("\n", " ")


# --- show / list ------------------------------------------------------------------------------


def render_show(manifest: Manifest, result: Result | None) -> str:
    """A readable summary of one run."""
    m = manifest
    lines = [
        f"run       {m.run_id}" + (f"  ({m.name})" if m.name else ""),
        f"created   {m.created}",
        f"env_id    {m.env_id[:19]}",
    ]
    if m.rerun_of:
        lines.append(f"rerun of  {m.rerun_of}")
    if m.command.argv:
        lines.append(f"command   {_shell_join(m.command.argv)}   (in {m.command.cwd})")
    host = m.host
    lines.append(
        f"host      {host.os_name or f'{host.os_id} {host.os_version}'}, kernel {host.kernel}, "
        f"{host.arch}, {host.cpu_count} CPUs ({host.cpu_model}), "
        f"{host.memory_bytes / 2**30:.1f} GiB"
    )
    if m.container.inside:
        lines.append(f"container {m.container.runtime} {m.container.image}".rstrip())
    if m.gpu.available:
        names = ", ".join(sorted({d.name for d in m.gpu.devices}))
        lines.append(
            f"gpu       {len(m.gpu.devices)} x {names}, driver {m.gpu.driver_version} "
            f"(CUDA {m.gpu.cuda_driver_version})"
        )
    else:
        lines.append(f"gpu       none ({m.gpu.reason})")
    if m.cuda.runtime_version or m.cuda.cudnn_version:
        lines.append(
            f"cuda      runtime {m.cuda.runtime_version or '-'}, "
            f"cuDNN {m.cuda.cudnn_version or '-'}"
            f", NCCL {m.cuda.nccl_version or '-'}"
        )
    py = m.python
    unreinstallable = [p.name for p in py.packages if not p.reinstallable]
    lines.append(
        f"python    {py.implementation} {py.version} ({py.env_kind}), "
        f"{len(py.packages)} packages"
        + (f", not reinstallable: {', '.join(unreinstallable)}" if unreinstallable else "")
    )
    if m.conda.present:
        lines.append(f"conda     {m.conda.name}, {len(m.conda.packages)} packages")
    if m.git.present:
        from envsnap.manifest import capture_warnings

        state = "dirty" if m.git.dirty else "clean"
        untracked = len(m.git.untracked) + m.git.untracked_omitted
        listed = f" ({len(m.git.untracked)} listed)" if m.git.untracked_omitted else ""
        lines.append(
            f"git       {m.git.commit[:12]} on {m.git.branch or '(detached)'}, {state}"
            + (f", {untracked} untracked{listed}" if untracked else "")
        )
        if m.git.excluded:
            lines.append(f"          data left out of the code state: {', '.join(m.git.excluded)}")
        lines.extend(f"  warning {_clip(w, 300)}" for w in capture_warnings(m))
    else:
        lines.append(f"git       none ({m.git.reason})")
    if m.params:
        lines.append("params    " + ", ".join(f"{p.key}={p.value!r}" for p in m.params))
    if m.seeds:
        lines.append("seeds     " + ", ".join(f"{k}={v}" for k, v in sorted(m.seeds.items())))
    for item in m.data:
        files = "1 file" if item.files == 1 else f"{item.files} files"
        lines.append(f"data      {item.path}  sha256:{item.sha256[:16]}  ({files})")
    if m.redacted:
        lines.append("redacted  " + ", ".join(sorted({f"{r.where}:{r.name}" for r in m.redacted})))
    if result is not None:
        lines.append(
            f"result    exit {result.exit_code} after {result.duration_s:.2f}s, "
            f"{len(result.outputs)} outputs, {len(result.metrics)} metrics"
            + (", interrupted" if result.interrupted else "")
        )
        if result.error:
            lines.append(f"  error   {_clip(result.error, 300)}")
        if result.stale:
            lines.append(
                f"  stale   {', '.join(result.stale)}: not written by this run (older than its "
                "command), left out of its outputs and metrics"
            )
        if result.metrics_error and not result.stale:
            lines.append(f"  metrics {_clip(result.metrics_error, 300)}")
        for name, value in sorted(result.metrics.items()):
            lines.append(f"  metric  {name} = {value!r}")
    return "\n".join(lines) + "\n"


def _shell_join(argv: Iterable[str]) -> str:
    import shlex

    return shlex.join(list(argv))


def manifest_json(manifest: Manifest, result: Result | None) -> str:
    """The whole manifest (and result) as JSON."""
    data: dict[str, Any] = {"manifest": to_data(manifest)}
    if result is not None:
        data["result"] = to_data(result)
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n"


# --- rerun -----------------------------------------------------------------------------------


def _rerun_header(outcome: RerunOutcome) -> list[str]:
    if outcome.interrupted:
        state = "interrupted (Ctrl-C)"
    elif outcome.timed_out:
        state = f"stopped at the timeout (exit code {outcome.exit_code})"
    else:
        state = f"exit code {outcome.exit_code}"
    lines = [f"rerun {outcome.rerun} of {outcome.original}: {state}"]
    lines.extend(f"  note: {note}" for note in outcome.notes)
    lines.extend(
        f"  not supplied: {name} was redacted when the run was captured; pass --env {name}=VALUE"
        for name in outcome.missing_env
    )
    return lines


def _verdict_text(outcome: RerunOutcome, fail_on: Severity) -> str:
    verdict = outcome.verdict(fail_on)
    if verdict == "reproduced":
        return "reproduced"
    if verdict == "not reproduced":
        return (
            f"NOT reproduced ({fail_on} drift)"
            if fail_on == "breaking"
            else (f"NOT reproduced (drift at or above {fail_on})")
        )
    return (
        f"NOT verified (no {fail_on} environment drift, but exit code, outputs and metrics were "
        f"not compared: run {outcome.original} recorded no result)"
    )


def render_rerun_text(
    outcome: RerunOutcome, *, show_expected: bool = False, fail_on: Severity = "breaking"
) -> str:
    """The rerun's header (state, image, notes, what the user must supply) and its drift; the
    verdict is judged at ``fail_on``, as the exit code is."""
    header = [*_rerun_header(outcome), f"  verdict: {_verdict_text(outcome, fail_on)}", ""]
    return "\n".join(header) + render_text(outcome.report, show_expected=show_expected)


def render_rerun_markdown(
    outcome: RerunOutcome, *, show_expected: bool = False, fail_on: Severity = "breaking"
) -> str:
    """The rerun's header as a list, then the drift table."""
    header = [*_rerun_header(outcome), f"verdict: {_verdict_text(outcome, fail_on)}"]
    lines = [f"- {md_cell(line.strip())}" for line in header]
    return "\n".join(lines) + "\n\n" + render_markdown(outcome.report, show_expected=show_expected)


def render_rerun_json(outcome: RerunOutcome, *, fail_on: Severity = "breaking") -> str:
    """The rerun and its drift report as one JSON object (the verdict judged at ``fail_on``)."""
    data = {
        "schema": "envsnap.rerun/1",
        "original": outcome.original,
        "rerun": outcome.rerun,
        "directory": str(outcome.directory),
        "image": outcome.image,
        "image_id": outcome.image_id,
        "exit_code": outcome.exit_code,
        "timed_out": outcome.timed_out,
        "interrupted": outcome.interrupted,
        "missing_env": list(outcome.missing_env),
        "notes": list(outcome.notes),
        "verdict": outcome.verdict(fail_on),
        "fail_on": fail_on,
        "report": report_data(outcome.report),
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
