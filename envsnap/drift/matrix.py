"""The drift matrix: one original run beside its reruns on several targets, as one table (a row
per drifted field, output or metric; the original, then a column per target), and its renderings:
text, JSON, Markdown and one self-contained HTML page. Pure: built from reports and manifests."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from envsnap.drift.compare import DriftReport
from envsnap.drift.outcome import RerunOutcome
from envsnap.drift.report import md_cell, md_code
from envsnap.drift.rules import CATEGORY_ORDER, Severity
from envsnap.manifest import Manifest, Result

SCHEMA = "envsnap.matrix/1"
ORIGINAL = "original"
RowKind = Literal["field", "output", "result", "metric"]
_KIND_ORDER: tuple[RowKind, ...] = ("field", "output", "result", "metric")
_ABSENT = "(absent)"
_TEXT_WIDTH = 28  # a value in the text table
_LABEL_WIDTH = 48  # a row's name there


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    """What a column ran on: the facts that most often explain a drifted metric."""

    host: str
    engine: str
    gpu: str
    driver: str
    cuda: str
    kernel: str

    @classmethod
    def of(cls, manifest: Manifest) -> HostFacts:
        gpu = manifest.gpu
        names = sorted({d.name for d in gpu.devices})
        return cls(
            host=manifest.host.hostname or "-",
            engine=manifest.tags.get("rerun.engine", "") or "-",
            gpu=f"{len(gpu.devices)} x {', '.join(names)}" if gpu.available else "none",
            driver=gpu.driver_version or "-",
            cuda=manifest.cuda.runtime_version or gpu.cuda_driver_version or "-",
            kernel=manifest.host.kernel or "-",
        )

    def items(self) -> tuple[tuple[str, str], ...]:
        return (
            ("host", self.host),
            ("engine", self.engine),
            ("gpu", self.gpu),
            ("driver", self.driver),
            ("cuda", self.cuda),
            ("kernel", self.kernel),
        )


_NO_HOST = HostFacts(host="-", engine="-", gpu="-", driver="-", cuda="-", kernel="-")


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One column's value of a row. ``severity`` None: the original's own value, or a target
    where the row did not drift (its value is the original's)."""

    severity: Severity | None
    value: str
    delta: str = ""  # a metric's new - old

    def text(self, limit: int = 0) -> str:
        """The cell as the text and Markdown renderings show it; ``limit`` clips the value only,
        so the severity and a metric's delta always show."""
        parts = [self.severity.upper()] if self.severity else []
        parts.append(_clip(self.value, limit) if limit else self.value or '""')
        if self.delta:
            parts.append(f"({self.delta})")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class Row:
    """A field, output, the exit code or a metric that drifted on at least one target."""

    kind: RowKind
    name: str
    category: str
    cells: tuple[Cell, ...]  # the original's, then one per target


@dataclass(frozen=True, kw_only=True)
class Column:
    """The original run, or a target's rerun of it."""

    name: str
    run_id: str
    host: HostFacts
    verdict: str = ""  # "" for the original; reproduced / not reproduced / not compared / error
    exit_code: int | None = None
    max_severity: str = "none"
    error: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TargetResult:
    """What one target gave back: its rerun (and the rerun's manifest, for host facts), or the
    one sentence of the error that stopped it."""

    name: str
    outcome: RerunOutcome | None = None
    manifest: Manifest | None = None
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class Matrix:
    """One original run and its reruns on every target, row by drifted thing."""

    original: str
    fail_on: Severity
    columns: tuple[Column, ...]  # the original first
    rows: tuple[Row, ...]
    sequential: bool = True

    @property
    def targets(self) -> tuple[Column, ...]:
        return self.columns[1:]

    def failed(self) -> bool:
        """Whether any target did not reproduce the run (drift at or above ``fail_on``, or no
        results to compare), or did not run."""
        return any(c.verdict != "reproduced" for c in self.targets)

    def errored(self) -> bool:
        return any(c.error for c in self.targets)


def build_matrix(
    original: Manifest,
    original_result: Result | None,
    results: Sequence[TargetResult],
    *,
    fail_on: Severity = "breaking",
    sequential: bool = True,
) -> Matrix:
    """The matrix of ``original`` and what each target gave back, in the order given."""
    columns = [
        Column(
            name=ORIGINAL,
            run_id=original.run_id,
            host=HostFacts.of(original),
            exit_code=original_result.exit_code if original_result else None,
        )
    ]
    # (kind, name) -> category, the original's value, and each target's cell by column index
    found: dict[tuple[RowKind, str], tuple[str, str, dict[int, Cell]]] = {}
    for index, result in enumerate(results, start=1):
        outcome = result.outcome
        if outcome is None:
            error = result.error or "the rerun did not run"
            columns.append(
                Column(name=result.name, run_id="", host=_NO_HOST, verdict="error", error=error)
            )
            continue
        report = outcome.report
        columns.append(
            Column(
                name=result.name,
                run_id=outcome.rerun,
                host=HostFacts.of(result.manifest) if result.manifest else _NO_HOST,
                verdict=outcome.verdict(fail_on),
                exit_code=outcome.exit_code,
                max_severity=report.max_severity or "none",
                notes=outcome.notes,
            )
        )
        for kind, name, category, old, cell in _entries(report):
            _, _, cells = found.setdefault((kind, name), (category, old, {}))
            cells[index] = cell
    rows = []
    for (kind, name), (category, old, cells) in found.items():
        if all(c.severity == "expected" for c in cells.values()):
            continue
        row_cells = [Cell(severity=None, value=old)]
        for index, column in enumerate(columns[1:], start=1):
            same = Cell(severity=None, value="" if column.error else old)
            row_cells.append(cells.get(index, same))
        rows.append(Row(kind=kind, name=name, category=category, cells=tuple(row_cells)))
    rows.sort(key=_row_order)
    return Matrix(
        original=original.run_id,
        fail_on=fail_on,
        columns=tuple(columns),
        rows=tuple(rows),
        sequential=sequential,
    )


def _row_order(row: Row) -> tuple[int, int, str]:
    category = CATEGORY_ORDER.index(row.category) if row.category in CATEGORY_ORDER else 99
    return (_KIND_ORDER.index(row.kind), category, row.name)


def _entries(report: DriftReport) -> list[tuple[RowKind, str, str, str, Cell]]:
    """Every difference of one report as (kind, name, category, original value, cell)."""
    out: list[tuple[RowKind, str, str, str, Cell]] = []
    for f in report.fields:
        old = f.old if f.change != "added" else _ABSENT
        new = f.new if f.change != "removed" else _ABSENT
        out.append(("field", f.path, f.category, old, Cell(severity=f.severity, value=new)))
    for o in report.outputs:
        old, new = o.old_sha256[:12] or _ABSENT, o.new_sha256[:12] or _ABSENT
        out.append(("output", o.path, "outputs", old, Cell(severity=o.severity, value=new)))
    if report.exit_codes is not None and report.exit_codes[0] != report.exit_codes[1]:
        old_code, new_code = report.exit_codes
        cell = Cell(severity="breaking", value=str(new_code))
        out.append(("result", "exit code", "run", str(old_code), cell))
    for m in report.metrics:
        delta = ""
        if m.old is not None and m.new is not None:
            delta = f"{float(m.new) - float(m.old):+.3g}"
        cell = Cell(severity=m.severity, value=_number(m.new), delta=delta)
        out.append(("metric", m.name, "metrics", _number(m.old), cell))
    return out


def _number(value: float | None) -> str:
    return _ABSENT if value is None else repr(value)


def matrix_of_rerun(
    original: Manifest, original_result: Result | None, target: TargetResult
) -> Matrix:
    """One rerun as a matrix of one target: ``rerun --html`` renders the same page."""
    return build_matrix(original, original_result, [target])


# --- renderings ---------------------------------------------------------------------------------


def matrix_data(matrix: Matrix) -> dict[str, Any]:
    """The matrix as plain data, the shape of ``--json`` output."""
    return {
        "schema": SCHEMA,
        "original": matrix.original,
        "fail_on": matrix.fail_on,
        "sequential": matrix.sequential,
        "failed": matrix.failed(),
        "columns": [
            {
                "name": c.name,
                "run_id": c.run_id,
                "verdict": c.verdict,
                "exit_code": c.exit_code,
                "max_severity": c.max_severity,
                "error": c.error,
                "notes": list(c.notes),
                "host": dict(c.host.items()),
            }
            for c in matrix.columns
        ],
        "rows": [
            {
                "kind": r.kind,
                "name": r.name,
                "category": r.category,
                "cells": [
                    {"severity": c.severity, "value": c.value, "delta": c.delta} for c in r.cells
                ],
            }
            for r in matrix.rows
        ],
    }


def render_matrix_json(matrix: Matrix) -> str:
    """Stable JSON (sorted keys, two-space indent)."""
    return json.dumps(matrix_data(matrix), indent=2, sort_keys=True) + "\n"


def _summary(matrix: Matrix) -> str:
    how = "one after another" if matrix.sequential else "in parallel"
    states = ", ".join(f"{c.name} {c.verdict}" for c in matrix.targets)
    return (
        f"matrix of run {matrix.original} on {len(matrix.targets)} target(s), rerun {how} "
        f"(fail on {matrix.fail_on}): {states}"
    )


def _row_label(row: Row) -> str:
    return row.name if row.kind == "field" else f"{row.kind} {row.name}"


def _clip(text: str, limit: int = _TEXT_WIDTH) -> str:
    one_line = text.replace("\n", "\\n") or '""'
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def render_matrix_text(matrix: Matrix) -> str:
    """Columns of fixed width: verdicts, host facts, then the drifted rows."""
    table: list[list[str]] = [["", *(c.name for c in matrix.columns)]]
    table.append(["verdict", "-", *(c.verdict for c in matrix.targets)])
    table.append(["run", *(c.run_id or "-" for c in matrix.columns)])
    for index, (fact, _) in enumerate(matrix.columns[0].host.items()):
        table.append([fact, *(_clip(c.host.items()[index][1], 40) for c in matrix.columns)])
    table.append([""] * (len(matrix.columns) + 1))
    for row in matrix.rows:
        table.append([_row_label(row), *(c.text(_TEXT_WIDTH) for c in row.cells)])
    cells = [[_clip(line[0], _LABEL_WIDTH) if line[0] else "", *line[1:]] for line in table]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [_summary(matrix)]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    if not matrix.rows:
        lines.append("no drift on any target")
    for column in matrix.targets:
        if column.error:
            lines.append(f"error on {column.name}: {column.error}")
    return "\n".join(lines) + "\n"


def render_matrix_markdown(matrix: Matrix) -> str:
    """A Markdown table for a GitHub job summary; every cell escaped."""
    names = [md_cell(c.name) for c in matrix.columns]
    lines = [
        f"### envsnap matrix: `{md_code(matrix.original)}`",
        "",
        md_cell(_summary(matrix)),
        "",
        "| | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
        "| verdict | - | " + " | ".join(md_cell(c.verdict) for c in matrix.targets) + " |",
        "| run | " + " | ".join(md_cell(c.run_id or "-") for c in matrix.columns) + " |",
    ]
    for index, (fact, _) in enumerate(matrix.columns[0].host.items()):
        values = [md_cell(c.host.items()[index][1]) for c in matrix.columns]
        lines.append(f"| {fact} | " + " | ".join(values) + " |")
    for row in matrix.rows:
        values = [md_cell(c.text(60)) for c in row.cells]
        lines.append(f"| **{md_cell(_row_label(row))}** | " + " | ".join(values) + " |")
    errors = [
        f"- error on {md_cell(c.name)}: {md_cell(c.error)}" for c in matrix.targets if c.error
    ]
    if errors:
        lines += ["", *errors]
    return "\n".join(lines) + "\n"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1b1f24;background:#fff}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top;
max-width:28em;overflow-wrap:anywhere}
th{background:#f6f8fa}
td.sev-breaking{background:#ffd7d5}td.sev-warning{background:#fff1c2}
td.sev-info{background:#ddf4ff}td.sev-expected{background:#f6f8fa;color:#57606a}
.sev{font-weight:600;font-size:.8em;text-transform:uppercase;margin-right:.4em}
.delta{color:#57606a;margin-left:.4em}.empty{color:#57606a;font-style:italic}
.verdict-reproduced{color:#1a7f37}.verdict-error,.verdict-not-reproduced,
.verdict-not-compared{color:#cf222e;font-weight:600}
code{font-family:ui-monospace,monospace}
"""


def render_matrix_html(matrix: Matrix, *, title: str = "") -> str:
    """One self-contained page: inline CSS, no script, nothing fetched; every value escaped."""

    def esc(text: str) -> str:
        return html.escape(text, quote=True)

    heading = title or f"envsnap drift matrix of run {matrix.original}"
    head = "".join(f"<th>{esc(c.name)}</th>" for c in matrix.columns)
    facts = []
    for c in matrix.columns:
        verdict = c.verdict or "original"
        facts.append(f'<td class="verdict-{esc(verdict.replace(" ", "-"))}">{esc(verdict)}</td>')
    fact_rows = [f"<tr><th>verdict</th>{''.join(facts)}</tr>"]
    fact_rows.append(
        "<tr><th>run</th>"
        + "".join(f"<td><code>{esc(c.run_id or '-')}</code></td>" for c in matrix.columns)
        + "</tr>"
    )
    for index, (fact, _) in enumerate(matrix.columns[0].host.items()):
        values = "".join(f"<td>{esc(c.host.items()[index][1])}</td>" for c in matrix.columns)
        fact_rows.append(f"<tr><th>{esc(fact)}</th>{values}</tr>")
    drift_rows = []
    for row in matrix.rows:
        cells = []
        for column, cell in zip(matrix.columns, row.cells, strict=True):
            severity = cell.severity or ""
            inner = f'<span class="sev">{esc(severity)}</span>' if severity else ""
            if cell.value or column.error:
                inner += f'<span class="val">{esc(cell.value)}</span>'
            else:  # an empty value must not read as a missing cell
                inner += '<span class="val empty">(empty)</span>'
            if cell.delta:
                inner += f'<span class="delta">{esc(cell.delta)}</span>'
            cells.append(
                f'<td class="sev-{esc(severity or "none")}" data-column="{esc(column.name)}" '
                f'data-severity="{esc(severity)}" data-value="{esc(cell.value)}" '
                f'data-delta="{esc(cell.delta)}">{inner}</td>'
            )
        drift_rows.append(
            f'<tr data-kind="{esc(row.kind)}" data-name="{esc(row.name)}">'
            f"<th>{esc(_row_label(row))}</th>{''.join(cells)}</tr>"
        )
    body = [
        f"<h1>{esc(heading)}</h1>",
        f"<p>{esc(_summary(matrix))}</p>",
        "<h2>Hosts</h2>",
        f'<table class="hosts"><tr><th></th>{head}</tr>{"".join(fact_rows)}</table>',
        "<h2>Drift</h2>",
    ]
    if drift_rows:
        body.append(f'<table class="matrix"><tr><th></th>{head}</tr>{"".join(drift_rows)}</table>')
    else:
        body.append("<p>No drift on any target.</p>")
    errors = [c for c in matrix.targets if c.error]
    if errors:
        body.append("<h2>Errors</h2><ul>")
        body += [f"<li>{esc(c.name)}: {esc(c.error)}</li>" for c in errors]
        body.append("</ul>")
    notes = [c for c in matrix.targets if c.notes]
    if notes:
        body.append("<h2>Notes</h2>")
        for c in notes:
            items = "".join(f"<li>{esc(n)}</li>" for n in c.notes)
            body.append(f"<h3>{esc(c.name)}</h3><ul>{items}</ul>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{esc(heading)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
