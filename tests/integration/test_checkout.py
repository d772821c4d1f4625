"""The rerun checkout against real git: the recorded commit and diff restored, and declared data
paths kept out of the checkout's code state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envsnap.capturing.probes.git import capture_git
from envsnap.checkout import materialize
from tests.integration.conftest import git

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose commit tracks code and a data file."""
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    git(root, "init", "--quiet", "--initial-branch=main")
    (root / "train.py").write_text("print('train')\n")
    (root / "data" / "train.csv").write_text("a,b\n1,2\n")
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "first")
    return root


class TestDataInTheCheckout:
    def test_data_mounted_over_the_checkout_is_not_a_code_change(
        self, repo: Path, tmp_path: Path
    ) -> None:
        """Data changed since capture, mounted over the checkout, leaves its code state clean,
        even for a git that is not told to exclude it (an older envsnap in a reused image)."""
        (repo / "data" / "train.csv").write_text("a,b\n9,9\n")
        (repo / "train.py").write_text("print('train harder')\n")
        section, patch = capture_git(repo, env=os.environ, exclude_data=["data"])
        assert section.excluded == ("data",) and b"train.csv" not in patch

        dest = tmp_path / "checkout"
        materialize(repo, section, patch, dest, env=dict(os.environ))
        assert (dest / "train.py").read_text() == "print('train harder')\n"
        (dest / "data" / "train.csv").write_text("a,b\n7,7\n")  # what the data mount shows
        plain, _ = capture_git(dest, env=os.environ)
        excluded, _ = capture_git(dest, env=os.environ, exclude_data=["data"])
        assert plain.diff_sha256 == excluded.diff_sha256 == section.diff_sha256
        assert "train.csv" not in git(dest, "status", "--porcelain")

    def test_without_exclusions_nothing_is_marked(self, repo: Path, tmp_path: Path) -> None:
        """A run that declared no data gets a plain checkout."""
        section, patch = capture_git(repo, env=os.environ)
        dest = tmp_path / "checkout"
        materialize(repo, section, patch, dest, env=dict(os.environ))
        (dest / "data" / "train.csv").write_text("changed\n")
        assert git(dest, "status", "--porcelain").strip() == "M data/train.csv"
