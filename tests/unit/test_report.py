"""Renderings of a drift report and of a run summary."""

from __future__ import annotations

import dataclasses
import json

from envsnap.drift import compare
from envsnap.manifest import Package, Result
from envsnap.report import md_cell, render_json, render_markdown, render_show, render_text
from tests.conftest import sample_manifest


def _bumped() -> tuple[object, object]:
    a = sample_manifest()
    pkgs = (Package(name="numpy", version="2.2.0", installer="pip"), a.python.packages[1])
    b = dataclasses.replace(
        a,
        run_id="20261122-170000-ffffff",
        python=dataclasses.replace(a.python, packages=pkgs),
        host=dataclasses.replace(a.host, hostname="other"),
    )
    return a, b


class TestText:
    def test_groups_by_category_with_severity(self) -> None:
        """The text report names the category, the severity and old -> new."""
        a, b = _bumped()
        text = render_text(compare(a, b))  # type: ignore[arg-type]
        assert "\npackages\n" in text
        assert "BREAKING  python.packages.numpy  2.1.3 -> 2.2.0" in text
        assert "host.hostname" not in text
        assert "expected differences hidden; --all shows them" in text

    def test_all_shows_expected(self) -> None:
        """--all adds the expected differences."""
        a, b = _bumped()
        assert "host.hostname" in render_text(compare(a, b), show_expected=True)  # type: ignore[arg-type]

    def test_no_differences(self) -> None:
        """A report with nothing in it says so."""
        m = sample_manifest()
        assert "no differences" in render_text(compare(m, m))


class TestJson:
    def test_shape(self) -> None:
        """The JSON report has the verdict, counts and each field."""
        a, b = _bumped()
        data = json.loads(render_json(compare(a, b)))  # type: ignore[arg-type]
        assert data["drift"] is True
        assert data["max_severity"] == "breaking"
        assert data["counts"]["breaking"] == 1
        assert {"path": "python.packages.numpy", "old": "2.1.3", "new": "2.2.0"}.items() <= data[
            "fields"
        ][0].items()


class TestMarkdown:
    def test_table(self) -> None:
        """The Markdown report is a table with a header and one row per difference."""
        a, b = _bumped()
        md = render_markdown(compare(a, b))  # type: ignore[arg-type]
        assert "| severity | category | field | old | new |" in md
        assert "| breaking | packages | python.packages.numpy | 2.1.3 | 2.2.0 |" in md

    def test_crafted_values_stay_in_their_cell(self) -> None:
        """Pipes, newlines, HTML and backticks in a value cannot break the table."""
        cell = md_cell("x | y\n<script>`$(rm -rf /)`</script>")
        assert "|" not in cell.replace("\\|", "")
        assert "\n" not in cell
        assert "<" not in cell.replace("\\<", "")
        assert "`" not in cell.replace("\\`", "")


class TestShow:
    def test_summary_lines(self) -> None:
        """show prints the run, command, host, python and result lines."""
        m = sample_manifest()
        result = Result(run_id=m.run_id, exit_code=0, started="s", ended="e", metrics={"acc": 0.9})
        text = render_show(m, result)
        assert text.startswith("run       20261122-163012-a1b2c3  (lr-sweep-3)")
        assert "command   python train.py --lr 0.1" in text
        assert "python    CPython 3.11.7 (venv), 2 packages" in text
        assert "metric  acc = 0.9" in text
