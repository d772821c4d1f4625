"""The run store: atomic writes, unique ids, lookup, and nothing escapes it."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from envsnap.errors import ManifestError, RunNotFoundError, StoreError, UsageError
from envsnap.manifest import Result
from envsnap.store import RUN_ID, Store, new_run_id, open_run
from tests.conftest import sample_manifest


def _write(store: Store, run_id: str, created: str = "2026-11-22T16:30:12.000000Z") -> Path:
    _, directory = store.write_run(sample_manifest(run_id=run_id, created=created), b"diff\n")
    return directory


class TestRunIds:
    def test_shape_and_time_order(self) -> None:
        """Run ids start with the UTC time, so sorting by id sorts by time."""
        early = new_run_id(datetime(2026, 11, 22, 16, 30, 12, tzinfo=UTC))
        late = new_run_id(datetime(2026, 11, 22, 16, 30, 13, tzinfo=UTC))
        assert RUN_ID.match(early) and early.startswith("20261122-163012-")
        assert early < late

    def test_unique_within_one_second(self) -> None:
        """Sixteen ids drawn in the same second are distinct."""
        now = datetime(2026, 11, 22, 16, 30, 12, tzinfo=UTC)
        assert len({new_run_id(now) for _ in range(16)}) == 16


class TestWriting:
    def test_write_creates_complete_run(self, tmp_path: Path) -> None:
        """A written run has its manifest and diff, and no temporary leftovers."""
        store = Store(tmp_path / ".envsnap")
        directory = _write(store, "20261122-163012-a1b2c3")
        assert sorted(p.name for p in directory.iterdir()) == ["diff.patch", "manifest.toml"]
        assert list((tmp_path / ".envsnap" / "tmp").iterdir()) == []
        assert store.load("20261122-163012-a1b2c3").manifest.digest.startswith("sha256:")

    def test_existing_run_is_never_overwritten(self, tmp_path: Path) -> None:
        """A clash of run ids draws a fresh id instead of replacing the stored run."""
        store = Store(tmp_path)
        first = _write(store, "20261122-163012-a1b2c3")
        before = (first / "manifest.toml").read_bytes()
        sealed, second = store.write_run(sample_manifest(run_id="20261122-163012-a1b2c3"))
        assert second != first
        assert sealed.run_id != "20261122-163012-a1b2c3"
        assert (first / "manifest.toml").read_bytes() == before

    def test_store_that_cannot_be_created(self, tmp_path: Path) -> None:
        """A store path under a regular file gives one sentence naming it."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(StoreError, match="cannot be created"):
            Store(blocker / "store").write_run(sample_manifest())

    def test_stale_temporary_entries_are_swept(self, tmp_path: Path) -> None:
        """What a killed capture left in tmp/ is removed by the next write once it is old."""
        store = Store(tmp_path)
        stale = tmp_path / "tmp" / "20261122-000000-000000.1.dead"
        stale.mkdir(parents=True)
        (stale / "manifest.toml").write_text("half")
        os.utime(stale, (0, 0))
        _write(store, "20261122-163012-a1b2c3")
        assert not stale.exists()

    def test_incomplete_run_dir_is_not_a_run(self, tmp_path: Path) -> None:
        """A run directory without a manifest is never listed."""
        store = Store(tmp_path)
        (tmp_path / "runs" / "20261122-163012-a1b2c3").mkdir(parents=True)
        assert store.run_ids() == []

    def test_result_written_beside_manifest(self, tmp_path: Path) -> None:
        """result.toml is written atomically and read back with the run."""
        store = Store(tmp_path)
        directory = _write(store, "20261122-163012-a1b2c3")
        result = Result(
            run_id="20261122-163012-a1b2c3", exit_code=0, started="s", ended="e", metrics={"x": 1.5}
        )
        store.write_result(directory, result)
        assert store.load("20261122-163012-a1b2c3").result == result
        assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


class TestScratchStore:
    """A store that is scratch (a rerun container's) writes whole files without syncing them."""

    @pytest.mark.parametrize("durable", [True, False])
    def test_syncs_only_when_durable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
    ) -> None:
        """The same run and result are written either way; only a durable store syncs."""
        synced: list[int] = []
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
        store = Store(tmp_path / "store", durable=durable)
        sealed, directory = store.write_run(sample_manifest())
        store.write_result(
            directory, Result(run_id=sealed.run_id, exit_code=0, started="s", ended="e")
        )
        assert store.load(sealed.run_id).result is not None
        assert bool(synced) is durable
        assert not [p for p in directory.iterdir() if p.name.startswith(".")]


class TestImport:
    """A run recorded in another store (a rerun's container) joins this one whole, or not."""

    def test_import_copies_every_file(self, tmp_path: Path) -> None:
        """Manifest, diff and result arrive together under the same run id."""
        elsewhere = Store(tmp_path / "container-store")
        source = _write(elsewhere, "20261122-163012-aaaaaa")
        result = Result(run_id="20261122-163012-aaaaaa", exit_code=0, started="s", ended="e")
        elsewhere.write_result(source, result)
        store = Store(tmp_path / ".envsnap")
        target = store.import_run(source)
        assert target == store.runs_dir / "20261122-163012-aaaaaa"
        assert sorted(p.name for p in target.iterdir()) == [
            "diff.patch",
            "manifest.toml",
            "result.toml",
        ]
        assert store.load("20261122-163012-aaaaaa").result == result
        assert list(store.runs_dir.parent.joinpath("tmp").iterdir()) == []

    def test_existing_run_is_not_replaced(self, tmp_path: Path) -> None:
        """Importing a run id the store has already is refused; the stored run is untouched."""
        store = Store(tmp_path / ".envsnap")
        mine = _write(store, "20261122-163012-bbbbbb")
        before = (mine / "manifest.toml").read_bytes()
        other = _write(Store(tmp_path / "other"), "20261122-163012-bbbbbb", created="x")
        with pytest.raises(StoreError, match="already in"):
            store.import_run(other)
        assert (mine / "manifest.toml").read_bytes() == before

    def test_edited_manifest_is_not_imported(self, tmp_path: Path) -> None:
        """A manifest that fails its digest check is refused and nothing is stored."""
        source = _write(Store(tmp_path / "other"), "20261122-163012-cccccc")
        path = source / "manifest.toml"
        path.write_text(path.read_text().replace("2026-11-22T16:30:12", "2026-11-22T16:30:13"))
        store = Store(tmp_path / ".envsnap")
        with pytest.raises(ManifestError):
            store.import_run(source)
        assert not (store.runs_dir / "20261122-163012-cccccc").exists()


class TestLookup:
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        store = Store(tmp_path / "s")
        _write(store, "20261122-163012-a1b2c3")
        _write(store, "20261122-163012-a1ffff", created="2026-11-22T16:30:12.500000Z")
        _write(store, "20261122-163012-0b0000", created="2026-11-22T16:30:12.900000Z")
        return store

    def test_full_id_and_unique_prefix(self, store: Store) -> None:
        """A full id or a unique prefix finds the run."""
        assert store.resolve("20261122-163012-a1b2c3") == "20261122-163012-a1b2c3"
        assert store.resolve("20261122-163012-a1f") == "20261122-163012-a1ffff"

    def test_ambiguous_prefix(self, store: Store) -> None:
        """A prefix matching several runs names them and asks for more characters."""
        with pytest.raises(RunNotFoundError, match="matches 2 runs"):
            store.resolve("20261122-163012-a1")

    def test_unknown_id(self, store: Store) -> None:
        """An id that matches nothing says so and points at envsnap list."""
        with pytest.raises(RunNotFoundError, match="no run matches"):
            store.resolve("2025")

    def test_latest_orders_same_second_by_creation_time(self, store: Store) -> None:
        """latest is the last created, even when ids from one second sort otherwise."""
        assert store.resolve("latest") == "20261122-163012-0b0000"

    def test_listing_orders_ties_in_any_second(self, store: Store) -> None:
        """Runs of one second are listed by creation time even when a later second follows."""
        _write(store, "20261122-163013-000000", created="2026-11-22T16:30:13.000000Z")
        assert store.latest_runs() == [
            "20261122-163012-a1b2c3",
            "20261122-163012-a1ffff",
            "20261122-163012-0b0000",
            "20261122-163013-000000",
        ]

    def test_latest_in_empty_store(self, tmp_path: Path) -> None:
        """latest in an empty store says to capture first."""
        with pytest.raises(RunNotFoundError, match="no runs yet"):
            Store(tmp_path).resolve("latest")

    @pytest.mark.parametrize("ref", ["../etc", "/etc/passwd", "..", "a/../../b", "latest/.."])
    def test_escaping_ids_are_refused(self, store: Store, ref: str) -> None:
        """Ids with path parts never reach the filesystem."""
        with pytest.raises((RunNotFoundError, UsageError, ManifestError)):
            store.load(store.resolve(ref))

    def test_symlinked_run_is_refused(self, store: Store, tmp_path: Path) -> None:
        """A run directory that is a symlink (pointing out of the store) is not followed."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (store.runs_dir / "20261122-999999-eeeeee").symlink_to(outside)
        assert "20261122-999999-eeeeee" not in store.run_ids()
        with pytest.raises(RunNotFoundError):
            store.load("20261122-999999-eeeeee")

    def test_open_by_manifest_path(self, store: Store) -> None:
        """A manifest.toml path is accepted wherever a run is."""
        path = store.runs_dir / "20261122-163012-a1b2c3" / "manifest.toml"
        assert open_run(store, str(path)).run_id == "20261122-163012-a1b2c3"

    def test_copied_manifest_opens(self, store: Store, tmp_path: Path) -> None:
        """A manifest copied under another name (a committed reference) opens by path."""
        copy = tmp_path / "envsnap.lock.toml"
        copy.write_bytes((store.runs_dir / "20261122-163012-a1b2c3" / "manifest.toml").read_bytes())
        assert open_run(store, str(copy)).manifest.run_id == "20261122-163012-a1b2c3"

    def test_hand_edited_manifest_is_reported_by_path(self, store: Store) -> None:
        """An edited manifest in the store is refused, naming its path."""
        path = store.runs_dir / "20261122-163012-a1b2c3" / "manifest.toml"
        path.write_text(path.read_text().replace("lr-sweep-3", "renamed"))
        with pytest.raises(ManifestError, match=str(path)):
            store.load("20261122-163012-a1b2c3")

    def test_result_of_another_run_is_refused(self, store: Store) -> None:
        """A result.toml moved in from another run is detected."""
        directory = store.runs_dir / "20261122-163012-a1b2c3"
        store.write_result(
            directory,
            Result(run_id="20261122-163012-a1ffff", exit_code=0, started="s", ended="e"),
        )
        with pytest.raises(ManifestError, match="belongs to run"):
            store.load("20261122-163012-a1b2c3")


def test_sealing_does_not_mutate_input(tmp_path: Path) -> None:
    """write_run returns a sealed copy; the manifest passed in is unchanged."""
    manifest = sample_manifest()
    sealed, _ = Store(tmp_path).write_run(manifest)
    assert manifest.digest == "" and sealed.digest
    assert dataclasses.replace(sealed, digest="", env_id="") == manifest


class TestImportingAManifestByPath:
    """A manifest given by path is imported into the store; nothing is written beside it."""

    def _committed(self, tmp_path: Path, name: str = "envsnap.lock.toml") -> Path:
        source = Store(tmp_path / "elsewhere")
        _, directory = source.write_run(sample_manifest(), b"diff\n")
        project = tmp_path / "clone"
        project.mkdir(exist_ok=True)
        copy = project / name
        copy.write_bytes((directory / "manifest.toml").read_bytes())
        return copy

    @pytest.mark.parametrize("name", ["envsnap.lock.toml", "reference.toml", "manifest.toml"])
    def test_any_name_is_imported_into_the_store(self, tmp_path: Path, name: str) -> None:
        """Under any name the run lands in the store, whose directory is its home from then on,
        and the project directory holding the file is left exactly as it was."""
        copy = self._committed(tmp_path, name)
        before = sorted(p.name for p in copy.parent.iterdir())
        store = Store(tmp_path / "store")
        run = open_run(store, str(copy))
        assert run.directory == store.runs_dir / run.run_id
        assert run.manifest_path.read_bytes() == copy.read_bytes()
        assert store.run_ids() == [run.run_id]
        assert sorted(p.name for p in copy.parent.iterdir()) == before

    def test_the_same_file_twice_is_one_run(self, tmp_path: Path) -> None:
        """Importing the same manifest again finds the run imported before."""
        copy = self._committed(tmp_path)
        store = Store(tmp_path / "store")
        first = open_run(store, str(copy))
        second = open_run(store, str(copy))
        assert first.directory == second.directory
        assert store.run_ids() == [first.run_id]

    def test_a_different_run_under_an_existing_id_is_refused(self, tmp_path: Path) -> None:
        """Another manifest carrying an id the store already holds is refused, not merged."""
        copy = self._committed(tmp_path)
        store = Store(tmp_path / "store")
        store.write_run(sample_manifest(name="another"))
        with pytest.raises(StoreError, match="different run under that id"):
            open_run(store, str(copy))
        assert store.load("20261122-163012-a1b2c3").manifest.name == "another"

    def test_a_run_directory_brings_its_result_and_diff(self, tmp_path: Path) -> None:
        """<run-id>/manifest.toml of another store brings the run's diff and result with it."""
        source = Store(tmp_path / "elsewhere")
        _, directory = source.write_run(sample_manifest(), b"diff\n")
        source.write_result(
            directory,
            Result(run_id="20261122-163012-a1b2c3", exit_code=0, started="s", ended="e"),
        )
        store = Store(tmp_path / "store")
        run = open_run(store, str(directory / "manifest.toml"))
        assert run.result is not None and run.result.exit_code == 0
        assert run.diff_path.read_bytes() == b"diff\n"

    def test_an_edited_copy_is_refused_and_nothing_is_stored(self, tmp_path: Path) -> None:
        """A copy edited after writing fails its digest; the store gets nothing."""
        copy = self._committed(tmp_path)
        copy.write_text(copy.read_text().replace("lr-sweep-3", "renamed"))
        store = Store(tmp_path / "store")
        with pytest.raises(ManifestError):
            open_run(store, str(copy))
        assert store.run_ids() == []


class TestDamagedRuns:
    """One damaged run never hides the others, and is named with its reason."""

    def _store(self, tmp_path: Path) -> Store:
        store = Store(tmp_path / ".envsnap")
        for run_id in (
            "20261122-163012-a1b2c3",
            "20261122-163013-d4e5f6",
            "20261122-163014-aaaaaa",
        ):
            store.write_run(sample_manifest(run_id=run_id))
        return store

    @pytest.mark.parametrize(
        ("damage", "reason"),
        [
            (
                lambda p: p.write_text(p.read_text().replace("lr-sweep-3", "edited")),
                "modified after it was written",
            ),
            (lambda p: p.write_bytes(p.read_bytes()[:200]), "manifest.toml"),
            (lambda p: p.write_bytes(b"\xff\xfe not toml"), "manifest.toml"),
            (lambda p: p.unlink() or p.mkdir(), None),
        ],
        ids=["edited", "truncated", "not-toml", "not-a-file"],
    )
    def test_scan_lists_every_other_run_and_names_the_bad_one(
        self, tmp_path: Path, damage: object, reason: str | None
    ) -> None:
        """An edited, truncated or unreadable manifest leaves the other runs listed and is
        named with its reason; a directory without a manifest file is no run at all."""
        store = self._store(tmp_path)
        damage(store.runs_dir / "20261122-163013-d4e5f6" / "manifest.toml")  # type: ignore[operator]
        good, damaged = store.scan()
        assert [r.run_id for r in good] == ["20261122-163012-a1b2c3", "20261122-163014-aaaaaa"]
        if reason is None:
            assert damaged == []
        else:
            assert [run_id for run_id, _ in damaged] == ["20261122-163013-d4e5f6"]
            assert reason in str(damaged[0][1])

    def test_a_renamed_run_directory_is_refused(self, tmp_path: Path) -> None:
        """A run directory copied under another run's name is not shown as another run."""
        store = self._store(tmp_path)
        source = store.runs_dir / "20261122-163012-a1b2c3"
        copy = store.runs_dir / "20261122-163015-bbbbbb"
        copy.mkdir()
        (copy / "manifest.toml").write_bytes((source / "manifest.toml").read_bytes())
        with pytest.raises(ManifestError, match="holds the manifest of run 20261122-163012-a1b2c3"):
            store.load("20261122-163015-bbbbbb")
        good, damaged = store.scan()
        assert "20261122-163015-bbbbbb" not in [r.run_id for r in good]
        assert [run_id for run_id, _ in damaged] == ["20261122-163015-bbbbbb"]

    def test_latest_survives_a_damaged_run_in_the_same_second(self, tmp_path: Path) -> None:
        """Ordering runs of one second reads their times; a damaged one does not stop it."""
        store = Store(tmp_path / ".envsnap")
        for suffix in ("a1b2c3", "d4e5f6"):
            store.write_run(sample_manifest(run_id=f"20261122-163012-{suffix}"))
        path = store.runs_dir / "20261122-163012-d4e5f6" / "manifest.toml"
        path.write_text("broken")
        assert set(store.latest_runs()) == {"20261122-163012-a1b2c3", "20261122-163012-d4e5f6"}
