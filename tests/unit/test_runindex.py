"""The store's index of runs: a listing with it is the listing without it, whatever happened to
the runs or to the index since it was written."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from envsnap.errors import EnvsnapError
from envsnap.manifest import Result, dumps_manifest, seal
from envsnap.runindex import RunSummary, read_index, render_index
from envsnap.store import INDEX_FILE, Store
from tests.conftest import sample_manifest

IDS = (
    "20261122-163012-a1b2c3",
    "20261122-163013-d4e5f6",
    "20261122-163013-aaaaaa",  # the same second as the one before: ordered by creation time
    "20261122-163014-bbbbbb",
)


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / ".envsnap")
    for number, run_id in enumerate(IDS):
        created = f"2026-11-22T16:30:1{2 + number // 2}.{9 - number}00000Z"
        _, directory = store.write_run(
            sample_manifest(run_id=run_id, created=created, name=f"run-{number}")
        )
        if number % 2:
            store.write_result(
                directory,
                Result(run_id=run_id, exit_code=number, started=created, ended=created),
            )
    return store


def _without_index(store: Store) -> tuple[list[RunSummary], list[str]]:
    """The listing as it was before the index: every run read."""
    good, damaged = store.scan()
    return [RunSummary.of(run.manifest, run.result) for run in good], [
        run_id for run_id, _ in damaged
    ]


def _listed(store: Store) -> tuple[list[RunSummary], list[str]]:
    good, damaged = store.listing()
    return good, [run_id for run_id, _ in damaged]


@pytest.fixture
def settled_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file system's clock a minute ahead, so that every run counts as settled and gets
    its row at once (the real clock makes a run written this instant wait for the next one)."""
    monkeypatch.setattr(Store, "_filesystem_now", lambda self: time.time_ns() + 60 * 10**9)


def _refuse_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Store, run_id: str) -> None:
        raise AssertionError(f"run {run_id} was read although the index holds it")

    monkeypatch.setattr(Store, "load", refuse)


class TestSameListing:
    """The index changes how fast a listing is, never what it lists."""

    def test_first_and_later_listings_equal_the_full_read(
        self, tmp_path: Path, settled_clock: None
    ) -> None:
        """Built, then read back, the listing is the one every run read gives."""
        store = _store(tmp_path)
        expected = _without_index(store)
        assert _listed(store) == expected
        assert set(read_index(store.root / INDEX_FILE)) == set(IDS)
        assert _listed(store) == expected

    def test_unchanged_runs_are_not_read_again(
        self, tmp_path: Path, settled_clock: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A second listing takes every unchanged run from the index."""
        store = _store(tmp_path)
        expected = _without_index(store)
        store.listing()
        _refuse_reads(monkeypatch)
        assert _listed(store) == expected

    def test_runs_changed_this_instant_get_no_row(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Files whose last change is not before the listing began are read every time, since
        a change within the same clock tick would leave their state as it was."""
        store = _store(tmp_path)
        monkeypatch.setattr(Store, "_filesystem_now", lambda self: 0)
        assert _listed(store) == _without_index(store)
        assert read_index(store.root / INDEX_FILE) == {}

    def test_a_read_only_store_lists_without_an_index(self, tmp_path: Path) -> None:
        """Where the index cannot be written the runs are listed all the same."""
        store = _store(tmp_path)
        (store.root / INDEX_FILE).mkdir()
        assert _listed(store) == _without_index(store)

    def test_no_store_no_runs(self, tmp_path: Path) -> None:
        """A store that does not exist lists nothing and is not created."""
        assert Store(tmp_path / "none").listing() == ([], [])
        assert not (tmp_path / "none").exists()


class TestStaleRows:
    """A run added, changed, damaged or removed since the index was written is seen."""

    def test_a_new_run(self, tmp_path: Path, settled_clock: None) -> None:
        """A run captured after the listing is listed next time."""
        store = _store(tmp_path)
        store.listing()
        store.write_run(sample_manifest(run_id="20261122-163015-cccccc"))
        assert _listed(store) == _without_index(store)
        assert "20261122-163015-cccccc" in read_index(store.root / INDEX_FILE)

    def test_an_imported_run(self, tmp_path: Path, settled_clock: None) -> None:
        """A manifest imported from elsewhere is listed next time."""
        store = _store(tmp_path)
        store.listing()
        copy = tmp_path / "envsnap.lock.toml"
        copy.write_text(dumps_manifest(seal(sample_manifest(run_id="20261122-163016-dddddd"))))
        store.import_manifest(copy)
        assert "20261122-163016-dddddd" in [r.run_id for r in _listed(store)[0]]

    def test_a_result_written_later(self, tmp_path: Path, settled_clock: None) -> None:
        """A result written after the listing shows its exit code next time."""
        store = _store(tmp_path)
        store.listing()
        store.write_result(
            store.runs_dir / IDS[0],
            Result(run_id=IDS[0], exit_code=3, started="x", ended="y"),
        )
        good, _ = _listed(store)
        assert good[0].exit_code == 3

    def test_a_removed_run(self, tmp_path: Path, settled_clock: None) -> None:
        """A run gc removed is gone from the listing and from the index."""
        store = _store(tmp_path)
        store.listing()
        store.remove_run(IDS[1])
        assert IDS[1] not in [r.run_id for r in _listed(store)[0]]
        assert IDS[1] not in read_index(store.root / INDEX_FILE)

    @pytest.mark.parametrize(
        "damage",
        [
            lambda p: p.write_bytes(p.read_bytes()[:200]),
            lambda p: p.write_bytes(p.read_bytes().replace(b"run-1", b"run-9")),  # same size
            lambda p: p.write_bytes(b"\xff\xfe not toml"),
        ],
        ids=["truncated", "edited-same-size", "not-toml"],
    )
    def test_a_damaged_manifest_is_named_and_the_others_listed(
        self, tmp_path: Path, damage: object
    ) -> None:
        """A manifest damaged right after a listing, even in place and to the same size within
        the same clock tick, is named as damaged by the next listing, the others listed."""
        store = _store(tmp_path)
        store.listing()
        damage(store.runs_dir / IDS[1] / "manifest.toml")  # type: ignore[operator]
        good, damaged = _listed(store)
        assert damaged == [IDS[1]]
        assert good == _without_index(store)[0]
        assert IDS[1] not in read_index(store.root / INDEX_FILE)

    def test_a_damaged_run_is_named_every_time(self, tmp_path: Path, settled_clock: None) -> None:
        """A damaged run gets no row, so every listing reads it and names it again."""
        store = _store(tmp_path)
        (store.runs_dir / IDS[2] / "manifest.toml").write_text("broken")
        for _ in range(2):
            good, damaged = store.listing()
            assert [run_id for run_id, _ in damaged] == [IDS[2]]
            assert isinstance(damaged[0][1], EnvsnapError)
            assert len(good) == len(IDS) - 1


class TestDamagedIndex:
    """An index that cannot be trusted is ignored and written anew, silently."""

    @pytest.mark.parametrize(
        "damage",
        [
            lambda p: p.write_bytes(p.read_bytes()[:-40]),
            lambda p: p.write_bytes(p.read_bytes().replace(b"run-1", b"run-X")),
            lambda p: p.write_bytes(b"\x00" * 64),
            lambda p: p.write_text('{"schema": "envsnap.index/99", "sha256": ""}\n[]\n'),
            lambda p: p.write_text(""),
        ],
        ids=["truncated", "edited", "zeros", "other-schema", "empty"],
    )
    def test_damaged_index_is_rebuilt(
        self, tmp_path: Path, settled_clock: None, damage: object
    ) -> None:
        """The listing is the full read's, and the index is whole again afterwards."""
        store = _store(tmp_path)
        store.listing()
        damage(store.root / INDEX_FILE)  # type: ignore[operator]
        assert _listed(store) == _without_index(store)
        assert set(read_index(store.root / INDEX_FILE)) == set(IDS)

    def test_rows_never_outrank_the_manifest(self, tmp_path: Path, settled_clock: None) -> None:
        """A row whose file state no longer matches is read again from the manifest."""
        store = _store(tmp_path)
        store.listing()
        path = store.root / INDEX_FILE
        _head, body = path.read_text().split("\n", 1)
        rows = json.loads(body)
        rows[0][6][1] += 1  # another size than the manifest's: the row is stale
        rows[0][2] = "not the manifest's name"
        path.write_bytes(render_index({row[0]: row for row in rows}))
        assert _listed(store) == _without_index(store)


class TestConcurrentWriters:
    """Listings and captures at once leave an index that is whole and right."""

    def test_parallel_listings_and_writes(self, tmp_path: Path, settled_clock: None) -> None:
        """Eight threads listing while another writes runs never corrupt the index."""
        store = _store(tmp_path)
        errors: list[BaseException] = []

        def lister() -> None:
            try:
                for _ in range(15):
                    good, damaged = store.listing()
                    assert damaged == []
                    assert {r.run_id for r in good} >= set(IDS)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        def writer() -> None:
            try:
                for number in range(20):
                    base = sample_manifest(run_id=f"20261122-1640{number:02d}-eeeeee")
                    store.write_run(dataclasses.replace(base, name=f"w{number}"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=lister) for _ in range(8)]
        threads.append(threading.Thread(target=writer))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert _listed(store) == _without_index(store)
        assert len(read_index(store.root / INDEX_FILE)) == len(IDS) + 20
