"""Renderings of a drift report and of a run summary."""

from __future__ import annotations

import dataclasses
import json

import pytest

from envsnap.drift.compare import compare
from envsnap.drift.report import md_cell, render_json, render_markdown, render_show, render_text
from envsnap.manifest import Git, Package, Result
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


class TestShowTells:
    @pytest.mark.parametrize(
        ("git", "lines"),
        [
            (
                Git(present=True, commit="a" * 40, branch="main"),
                ["git       aaaaaaaaaaaa on main, clean"],
            ),
            (
                Git(
                    present=True,
                    commit="a" * 40,
                    branch="main",
                    untracked=tuple(f"f{i}" for i in range(1000)),
                    untracked_omitted=10550,
                ),
                ["git       aaaaaaaaaaaa on main, clean, 11550 untracked (1000 listed)"],
            ),
            (
                Git(
                    present=True,
                    commit="a" * 40,
                    dirty=True,
                    diff_truncated=True,
                    diff_bytes=8388608,
                ),
                ["warning the uncommitted diff is larger than git-max-diff-bytes and was cut"],
            ),
            (
                Git(present=True, commit="a" * 40, submodules_dirty=("vendor/lib",)),
                ["submodule(s) vendor/lib are not recorded"],
            ),
            (
                Git(present=True, commit="a" * 40, excluded=("data/train.csv",)),
                ["data left out of the code state: data/train.csv"],
            ),
        ],
        ids=["clean", "untracked-count", "diff-cut", "submodule", "excluded"],
    )
    def test_git_state(self, git: Git, lines: list[str]) -> None:
        """show counts untracked entries truly and says what the git record lacks."""
        text = render_show(sample_manifest(git=git), None)
        for line in lines:
            assert line in text

    def test_stale_files_and_errors(self) -> None:
        """A result with stale files says they were left out, with the command's error."""
        m = sample_manifest()
        result = Result(
            run_id=m.run_id,
            exit_code=3,
            started="s",
            ended="e",
            error="command 'x' was not found",
            metrics_error="metrics file metrics.json was not written by the command",
            stale=("metrics.json", "outputs/model.npy"),
        )
        text = render_show(m, result)
        assert "result    exit 3 after 0.00s, 0 outputs, 0 metrics" in text
        assert "  stale   metrics.json, outputs/model.npy: not written by this run" in text
        assert "  error   command 'x' was not found" in text


class TestNotes:
    def _report(self) -> object:
        m = sample_manifest()
        old = Result(run_id=m.run_id, exit_code=0, started="s", ended="e")
        new = dataclasses.replace(old, exit_code=3, stale=("outputs/model.npy",))
        return compare(m, m, old_result=old, new_result=new)

    def test_in_every_rendering(self) -> None:
        """A note about stale files reaches the text, JSON and Markdown reports."""
        report = self._report()
        assert "  note: outputs/model.npy of run" in render_text(report)  # type: ignore[arg-type]
        assert json.loads(render_json(report))["notes"][0].startswith("outputs/model.npy")  # type: ignore[arg-type]
        assert "- outputs/model.npy of run" in render_markdown(report)  # type: ignore[arg-type]
