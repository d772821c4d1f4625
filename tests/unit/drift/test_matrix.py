"""The drift matrix: its model (rows, cells, columns, verdicts) and every rendering of it."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from envsnap.drift.compare import compare
from envsnap.drift.matrix import (
    Cell,
    HostFacts,
    Matrix,
    TargetResult,
    build_matrix,
    matrix_data,
    render_matrix_html,
    render_matrix_json,
    render_matrix_markdown,
    render_matrix_text,
)
from envsnap.drift.outcome import RerunOutcome
from envsnap.manifest import DataItem, Gpu, GpuDevice, Manifest, Result
from tests.conftest import sample_manifest

HOSTILE = '<script>alert("x")</script>'


def _result(run_id: str, loss: float, exit_code: int = 0) -> Result:
    return Result(
        run_id=run_id,
        exit_code=exit_code,
        started="2026-11-22T16:30:12Z",
        ended="2026-11-22T16:31:12Z",
        metrics={"accuracy": 0.9, "loss": loss},
    )


def _rerun(original: Manifest, run_id: str, engine: str, **changes: Any) -> tuple[Manifest, Result]:
    rerun = dataclasses.replace(
        original,
        run_id=run_id,
        rerun_of=original.run_id,
        tags={**original.tags, "rerun.engine": engine},
        host=dataclasses.replace(changes.pop("host", original.host), hostname=f"box-{run_id[-1]}"),
        **changes,
    )
    return rerun, _result(run_id, 0.25)


def _target(
    name: str, original: Manifest, original_result: Result, rerun: Manifest, result: Result
) -> TargetResult:
    report = compare(original, rerun, old_result=original_result, new_result=result)
    outcome = RerunOutcome(
        original=original.run_id,
        rerun=rerun.run_id,
        directory=Path("/store/runs") / rerun.run_id,
        image="envsnap-env:abc",
        image_id="sha256:" + "1" * 64,
        exit_code=result.exit_code,
        report=report,
        notes=(f"engine {name}",),
    )
    return TargetResult(name=name, outcome=outcome, manifest=rerun)


def _matrix(b_sha: str = "c" * 64, **b_changes: Any) -> Matrix:
    """The original, target a (same data, same loss) and target b (its data changed, its loss
    moved, on a GPU host)."""
    original = sample_manifest()
    original_result = _result(original.run_id, 0.25)
    a, a_result = _rerun(original, "20261122-170000-aaaaaa", "hosta (the local engine)")
    changed = (dataclasses.replace(original.data[0], sha256=b_sha),)
    gpu = Gpu(
        available=True,
        driver_version="550.54.14",
        cuda_driver_version="12.4",
        devices=(GpuDevice(index=0, name="NVIDIA H100"),),
    )
    b, _ = _rerun(original, "20261122-170000-bbbbbb", "hostb (ssh://b)", data=changed, **b_changes)
    b = dataclasses.replace(b, gpu=gpu) if "gpu" not in b_changes else b
    b_result = _result(b.run_id, 0.31)
    return build_matrix(
        original,
        original_result,
        [
            _target("a", original, original_result, a, a_result),
            _target("b", original, original_result, b, b_result),
        ],
    )


def _row(matrix: Matrix, name: str) -> Any:
    return next(r for r in matrix.rows if r.name == name)


class TestModel:
    def test_original_first_then_targets_in_the_order_given(self) -> None:
        """The columns are the original, then each target as --on named it."""
        matrix = _matrix()
        assert [c.name for c in matrix.columns] == ["original", "a", "b"]
        assert matrix.columns[0].run_id == matrix.original
        assert [c.verdict for c in matrix.targets] == ["reproduced", "not reproduced"]

    def test_a_row_per_drifted_field_and_metric_with_a_cell_per_column(self) -> None:
        """b's data hash and loss are rows; a's cells hold the original's value, no severity."""
        matrix = _matrix()
        data = _row(matrix, "data.data/train.csv.sha256")
        assert data.cells == (
            Cell(severity=None, value="b" * 64),
            Cell(severity=None, value="b" * 64),
            Cell(severity="breaking", value="c" * 64),
        )
        loss = _row(matrix, "loss")
        assert loss.kind == "metric"
        assert loss.cells[0] == Cell(severity=None, value="0.25")
        assert loss.cells[1] == Cell(severity=None, value="0.25")
        assert loss.cells[2] == Cell(severity="breaking", value="0.31", delta="+0.06")

    def test_rows_only_expected_everywhere_are_left_out(self) -> None:
        """The hostname (expected on every rerun) is no row; the unchanged accuracy neither."""
        names = {r.name for r in _matrix().rows}
        assert "host.hostname" not in names and "accuracy" not in names

    def test_fields_come_before_metrics(self) -> None:
        """Rows are ordered fields, outputs, exit code, metrics."""
        kinds = [r.kind for r in _matrix().rows]
        assert kinds == sorted(kinds, key=["field", "output", "result", "metric"].index)

    def test_host_facts_come_from_each_run(self) -> None:
        """GPU, driver, CUDA, kernel and engine of each column's own manifest."""
        matrix = _matrix()
        b = matrix.columns[2].host
        assert (b.gpu, b.driver, b.cuda, b.engine) == (
            "1 x NVIDIA H100",
            "550.54.14",
            "12.4",
            "hostb (ssh://b)",
        )
        assert matrix.columns[0].host.gpu == "none"
        assert matrix.columns[0].host.kernel == "6.1.0-18-amd64"

    def test_failed_when_any_target_did_not_reproduce(self) -> None:
        """b's breaking drift fails the matrix; at fail-on breaking a alone would not."""
        matrix = _matrix()
        assert matrix.failed() and not matrix.errored()
        original = sample_manifest()
        result = _result(original.run_id, 0.25)
        a, a_result = _rerun(original, "20261122-170000-aaaaaa", "local")
        alone = build_matrix(original, result, [_target("a", original, result, a, a_result)])
        assert not alone.failed() and alone.rows == ()

    def test_a_target_that_could_not_rerun_is_a_column_with_its_error(self) -> None:
        """The error is the column's; its cells are empty; the matrix errored."""
        original = sample_manifest()
        result = _result(original.run_id, 0.25)
        b, b_result = _rerun(
            original,
            "20261122-170000-bbbbbb",
            "b",
            data=(DataItem(path="data/train.csv", kind="file", sha256="c" * 64),),
        )
        matrix = build_matrix(
            original,
            result,
            [
                _target("b", original, result, b, b_result),
                TargetResult(name="down", error="the docker daemon is not running."),
            ],
        )
        assert matrix.errored()
        down = matrix.columns[2]
        assert (down.verdict, down.error) == ("error", "the docker daemon is not running.")
        assert _row(matrix, "data.data/train.csv.sha256").cells[2] == Cell(severity=None, value="")


class TestJson:
    def test_shape_and_cells(self) -> None:
        """Schema, columns with host facts, rows with one cell per column."""
        data = json.loads(render_matrix_json(_matrix()))
        assert data["schema"] == "envsnap.matrix/1"
        assert data["failed"] is True and data["sequential"] is True
        assert [c["name"] for c in data["columns"]] == ["original", "a", "b"]
        assert data["columns"][2]["host"]["gpu"] == "1 x NVIDIA H100"
        loss = next(r for r in data["rows"] if r["name"] == "loss")
        assert loss["cells"][2] == {"severity": "breaking", "value": "0.31", "delta": "+0.06"}
        assert all(len(r["cells"]) == 3 for r in data["rows"])

    def test_stable_bytes(self) -> None:
        """The same matrix renders to the same bytes."""
        assert render_matrix_json(_matrix()) == render_matrix_json(_matrix())


class TestText:
    def test_table(self) -> None:
        """A summary line, a column per target, host facts and the drifted rows."""
        text = render_matrix_text(_matrix())
        lines = text.splitlines()
        assert lines[0].startswith("matrix of run 20261122-163012-a1b2c3 on 2 target(s)")
        assert "one after another" in lines[0]
        assert "a reproduced, b not reproduced" in lines[0]
        assert lines[1].split() == ["original", "a", "b"]
        gpu = next(line for line in lines if line.startswith("gpu "))
        assert gpu.split() == ["gpu", "none", "none", "1", "x", "NVIDIA", "H100"]
        assert 'gpu.driver_version          ""' in text
        loss = next(line for line in lines if line.startswith("metric loss"))
        assert loss.split()[2:] == ["0.25", "0.25", "BREAKING", "0.31", "(+0.06)"]

    def test_long_values_are_clipped_but_severity_and_delta_stay(self) -> None:
        """A 64-character hash is clipped to the column; BREAKING and a metric's delta show."""
        cell = Cell(severity="breaking", value="0." + "3" * 40, delta="+0.06")
        assert cell.text(28) == "BREAKING 0." + "3" * 23 + "... (+0.06)"
        data = next(line for line in render_matrix_text(_matrix()).splitlines() if "sha256" in line)
        assert data.split()[-2:] == ["BREAKING", "c" * 25 + "..."]

    def test_nothing_drifted(self) -> None:
        """A matrix without rows says so."""
        original = sample_manifest()
        result = _result(original.run_id, 0.25)
        a, a_result = _rerun(original, "20261122-170000-aaaaaa", "local")
        matrix = build_matrix(original, result, [_target("a", original, result, a, a_result)])
        assert "no drift on any target" in render_matrix_text(matrix)


class TestMarkdown:
    def test_table_rows(self) -> None:
        """A header with every column, host facts, then a row per drifted thing."""
        md = render_matrix_markdown(_matrix())
        assert "| | original | a | b |" in md
        assert "| --- | --- | --- | --- |" in md
        assert "| **metric loss** | 0.25 | 0.25 | BREAKING 0.31 \\(\\+0.06\\) |" in md
        assert "| gpu | none | none | 1 x NVIDIA H100 |" in md

    def test_hostile_values_cannot_break_the_table(self) -> None:
        """A pipe or HTML in a value is escaped, never markup."""
        matrix = _matrix(host=dataclasses.replace(sample_manifest().host, kernel=f"a|b{HOSTILE}"))
        md = render_matrix_markdown(matrix)
        assert "<script>" not in md and "a\\|b\\<script\\>" in md


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.cells: list[dict[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = {k: v or "" for k, v in attrs}
        if tag == "td" and "data-value" in found:
            self.cells.append(found)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class TestHtml:
    def test_self_contained(self) -> None:
        """Inline CSS, no script, nothing fetched, a policy that forbids any of it."""
        page = render_matrix_html(_matrix())
        parser = _Page()
        parser.feed(page)
        assert "script" not in parser.tags and "link" not in parser.tags
        assert "src=" not in page and "href=" not in page and "http://" not in page
        assert "https://" not in page and "url(" not in page
        assert "<style>" in page and "default-src 'none'" in page

    def test_cells_coloured_by_severity_with_deltas(self) -> None:
        """A breaking cell has its class; a metric cell shows its delta."""
        page = render_matrix_html(_matrix())
        assert 'class="sev-breaking" data-column="b" data-severity="breaking" ' in page
        assert '<span class="delta">+0.06</span>' in page
        assert "td.sev-breaking{" in page

    def test_cells_are_the_json_cells(self) -> None:
        """Each drift cell's data attributes are the --json cell, in the same order."""
        matrix = _matrix()
        parser = _Page()
        parser.feed(render_matrix_html(matrix))
        cells = [
            {
                "severity": c["data-severity"] or None,
                "value": c["data-value"],
                "delta": c["data-delta"],
            }
            for c in parser.cells
        ]
        assert cells == [c for r in matrix_data(matrix)["rows"] for c in r["cells"]]

    def test_an_empty_value_reads_as_empty(self) -> None:
        """A field that became "" shows (empty), never a blank cell; its data-value stays ""."""
        page = render_matrix_html(_matrix())
        assert (
            'data-column="original" data-severity="" data-value="" data-delta="">'
            '<span class="val empty">(empty)</span></td>'
        ) in page

    def test_host_facts_and_verdicts(self) -> None:
        """Every column's GPU, driver, CUDA and kernel, and each target's verdict."""
        parser = _Page()
        parser.feed(render_matrix_html(_matrix()))
        text = "".join(parser.text)
        for fact in ("NVIDIA H100", "550.54.14", "12.4", "6.1.0-18-amd64", "not reproduced"):
            assert fact in text

    def test_hostile_values_are_escaped(self) -> None:
        """A value holding <script> is text on the page, in cells and attributes alike."""
        host = dataclasses.replace(sample_manifest().host, kernel=HOSTILE)
        matrix = _matrix(b_sha=HOSTILE, host=host)
        page = render_matrix_html(matrix, title=HOSTILE)
        assert "<script>" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
        parser = _Page()
        parser.feed(page)
        assert "script" not in parser.tags
        assert HOSTILE in "".join(parser.text)
        assert any(c["data-value"] == HOSTILE for c in parser.cells)

    def test_an_error_column_is_named(self) -> None:
        """A target that could not rerun has its sentence on the page."""
        original = sample_manifest()
        result = _result(original.run_id, 0.25)
        matrix = build_matrix(original, result, [TargetResult(name="b", error=f"no {HOSTILE}")])
        page = render_matrix_html(matrix)
        assert "b: no &lt;script&gt;" in page and "verdict-error" in page


class TestHostFacts:
    def test_without_a_gpu_or_engine_tag(self) -> None:
        """An original run has no engine tag and no GPU: dashes and none."""
        facts = HostFacts.of(sample_manifest())
        assert facts.engine == "-" and facts.gpu == "none" and facts.driver == "-"
