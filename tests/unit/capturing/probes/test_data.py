"""Data fingerprints: a file's sha256, a directory's tree hash, paths recorded relative to base."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from envsnap.capturing.probes.data import fingerprint_data
from envsnap.errors import DataError
from envsnap.manifest import DataItem


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A project with a CSV file and a directory of shards, one in a subdirectory."""
    (tmp_path / "data" / "shards" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "train.csv").write_bytes(b"x,y\n1,2\n")
    (tmp_path / "data" / "shards" / "a.bin").write_bytes(b"A" * 10)
    (tmp_path / "data" / "shards" / "sub" / "b.bin").write_bytes(b"B" * 5)
    return tmp_path


class TestFile:
    def test_file_sha256_and_size(self, dataset: Path) -> None:
        """A file is fingerprinted by the sha256 of its content and its size."""
        assert fingerprint_data(["data/train.csv"], base=dataset) == (
            DataItem(path="data/train.csv", kind="file", sha256=sha(b"x,y\n1,2\n"), bytes=8),
        )

    def test_large_file_streamed(self, tmp_path: Path) -> None:
        """A file larger than one read chunk hashes the same as hashing it whole."""
        content = os.urandom(3 * 1024 * 1024 + 17)
        (tmp_path / "big.bin").write_bytes(content)
        (item,) = fingerprint_data(["big.bin"], base=tmp_path)
        assert (item.sha256, item.bytes) == (sha(content), len(content))


class TestDirectory:
    def test_tree_hash_is_defined_over_sorted_entries(self, dataset: Path) -> None:
        """A directory hashes "relpath\\0sha256\\n" lines, sorted by path, and counts files."""
        expected = hashlib.sha256(
            b"a.bin\0" + sha(b"A" * 10).encode() + b"\nsub/b.bin\0" + sha(b"B" * 5).encode() + b"\n"
        ).hexdigest()
        assert fingerprint_data(["data/shards"], base=dataset) == (
            DataItem(path="data/shards", kind="dir", sha256=expected, bytes=15, files=2),
        )

    def test_content_change_changes_hash(self, dataset: Path) -> None:
        """Changing one byte of one file changes the directory's hash."""
        before = fingerprint_data(["data"], base=dataset)[0].sha256
        (dataset / "data" / "shards" / "sub" / "b.bin").write_bytes(b"B" * 4 + b"C")
        assert fingerprint_data(["data"], base=dataset)[0].sha256 != before

    def test_rename_changes_hash(self, dataset: Path) -> None:
        """Renaming a file changes the hash, since paths are part of it."""
        before = fingerprint_data(["data"], base=dataset)[0].sha256
        (dataset / "data" / "train.csv").rename(dataset / "data" / "valid.csv")
        assert fingerprint_data(["data"], base=dataset)[0].sha256 != before

    def test_symlink_recorded_by_target_not_followed(self, dataset: Path) -> None:
        """A symlink inside a directory counts by its target text; its target is not read."""
        shards = dataset / "data" / "shards"
        (shards / "link").symlink_to("/nonexistent/elsewhere")
        (item,) = fingerprint_data(["data/shards"], base=dataset)
        assert (item.files, item.bytes) == (3, 15)
        (shards / "link").unlink()
        (shards / "link").symlink_to("/nonexistent/other")
        assert fingerprint_data(["data/shards"], base=dataset)[0].sha256 != item.sha256

    def test_symlinked_directory_not_descended(self, dataset: Path) -> None:
        """A symlink to a directory inside the tree is recorded as a link, not walked."""
        (dataset / "data" / "shards" / "loop").symlink_to("..")
        (item,) = fingerprint_data(["data/shards"], base=dataset)
        assert item.files == 3

    def test_empty_directory(self, tmp_path: Path) -> None:
        """An empty directory has zero files and the hash of nothing."""
        (tmp_path / "empty").mkdir()
        assert fingerprint_data(["empty"], base=tmp_path) == (
            DataItem(path="empty", kind="dir", sha256=sha(b""), bytes=0, files=0),
        )


class TestPaths:
    def test_paths_normalised_sorted_and_deduplicated(self, dataset: Path) -> None:
        """ "./data/train.csv", "data//train.csv" and an absolute path inside base are one item."""
        items = fingerprint_data(
            [
                "./data/train.csv",
                "data/shards/",
                "data//train.csv",
                str(dataset / "data" / "train.csv"),
            ],
            base=dataset,
        )
        assert [item.path for item in items] == ["data/shards", "data/train.csv"]

    def test_path_outside_base_kept_as_given(self, dataset: Path) -> None:
        """A path outside base keeps its normalised relative form."""
        base = dataset / "data" / "shards"
        (item,) = fingerprint_data(["../train.csv"], base=base)
        assert item.path == "../train.csv"

    def test_missing_path_raises_data_error(self, tmp_path: Path) -> None:
        """A missing path is a DataError with one sentence naming it and --data."""
        with pytest.raises(DataError) as caught:
            fingerprint_data(["nope.csv"], base=tmp_path)
        assert str(caught.value) == "data path 'nope.csv' does not exist; check --data."

    def test_unreadable_path_raises_data_error(self, tmp_path: Path) -> None:
        """A path that cannot be read (a symlink loop, unreadable even for root) is a DataError,
        not an OSError."""
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        with pytest.raises(DataError):
            fingerprint_data(["loop"], base=tmp_path)

    def test_no_paths(self, tmp_path: Path) -> None:
        """No paths give no items."""
        assert fingerprint_data([], base=tmp_path) == ()
