"""envsnap gc on a real store in a temporary directory: what it chooses, what it keeps (runs a
rerun points to, runs it cannot read), images no run uses, and removal that leaves no trace."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from envsnap import gc
from envsnap.errors import RunNotFoundError, UsageError
from envsnap.store import Store
from tests.conftest import sample_manifest

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _run(store: Store, run_id: str, **changes: object) -> str:
    created = f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T{run_id[9:11]}:{run_id[11:13]}:00Z"
    sealed, _ = store.write_run(sample_manifest(run_id=run_id, created=created, **changes))
    return sealed.run_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


class TestChoosing:
    def test_no_filter_chooses_no_run(self, store: Store) -> None:
        """gc without --older-than, --name or --tag removes no run."""
        _run(store, "20261101-000000-aaaaaa")
        assert gc.plan(store, gc.Selection(), now=NOW).runs == ()

    def test_every_given_filter_must_match(self, store: Store) -> None:
        """Age, name glob and tag together: only runs matching all three are chosen."""
        old = _run(store, "20261101-000000-aaaaaa", name="sweep-1", tags={"team": "nlp"})
        _run(store, "20261130-230000-bbbbbb", name="sweep-2", tags={"team": "nlp"})
        _run(store, "20261101-000000-cccccc", name="sweep-3", tags={"team": "vision"})
        _run(store, "20261101-000000-dddddd", name="baseline", tags={"team": "nlp"})
        selection = gc.Selection(
            older_than=gc.parse_age("7d"), names=("sweep-*",), tags={"team": "nlp"}
        )
        assert [r.run_id for r in gc.plan(store, selection, now=NOW).runs] == [old]

    def test_a_run_a_rerun_points_to_is_kept_unless_forced(self, store: Store) -> None:
        """The original of a rerun that stays is kept, with the reason; --force removes it."""
        original = _run(store, "20261101-000000-aaaaaa", name="sweep-1")
        rerun = _run(store, "20261102-000000-bbbbbb", name="rerun", rerun_of=original)
        selection = gc.Selection(names=("sweep-*",))
        kept = gc.plan(store, selection, now=NOW)
        assert kept.runs == ()
        assert kept.kept == ((original, f"rerun {rerun} points to it (--force removes it)"),)
        forced = gc.plan(store, gc.Selection(names=("sweep-*",), force=True), now=NOW)
        assert [r.run_id for r in forced.runs] == [original]

    def test_a_run_and_its_rerun_can_go_together(self, store: Store) -> None:
        """When the rerun goes too, nothing points to the original any more."""
        original = _run(store, "20261101-000000-aaaaaa", name="sweep-1")
        rerun = _run(store, "20261102-000000-bbbbbb", name="sweep-1-rerun", rerun_of=original)
        chosen = gc.plan(store, gc.Selection(names=("sweep-*",)), now=NOW)
        assert [r.run_id for r in chosen.runs] == [original, rerun]

    @pytest.mark.parametrize("text", ["", "7 days", "-1d", "1y"])
    def test_a_bad_age_is_a_usage_error(self, text: str) -> None:
        """--older-than takes 90s, 30m, 12h, 7d or 2w."""
        with pytest.raises(UsageError, match="is not a duration"):
            gc.parse_age(text)


class TestImages:
    def _image(self, store: Store, env_id: str) -> Path:
        path = store.root / "images" / f"{env_id.removeprefix('sha256:')}.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f'env_id = "{env_id}"\nreference = "envsnap/x:{env_id[7:19]}"\n')
        return path

    def test_only_images_no_remaining_run_uses_are_removed(self, store: Store) -> None:
        """The image of a removed run's environment goes (engine, then record); one a kept run
        shares stays."""
        gone = _run(store, "20261101-000000-aaaaaa", name="old")
        env_id = store.load(gone).manifest.env_id
        used = self._image(store, env_id)
        orphan = self._image(store, "sha256:" + "0" * 64)
        removed: list[str] = []
        chosen = gc.collect(store, now=NOW, remove_image=removed.append)
        assert removed == ["envsnap/x:000000000000"]
        assert not orphan.exists() and used.exists()
        assert chosen.runs == ()

    def test_a_dry_run_touches_nothing(self, store: Store) -> None:
        """--dry-run plans and describes, and removes no run, image or record."""
        run_id = _run(store, "20261101-000000-aaaaaa", name="old")
        orphan = self._image(store, "sha256:" + "0" * 64)

        def refuse(reference: str) -> None:
            raise AssertionError(reference)

        chosen = gc.collect(store, names=["old"], dry_run=True, now=NOW, remove_image=refuse)
        assert store.run_ids() == [run_id] and orphan.exists()
        assert gc.describe(chosen, dry_run=True)[0].startswith(f"would remove run {run_id}")


class TestRemoveRun:
    def test_a_removed_run_leaves_nothing_in_runs_or_tmp(self, store: Store) -> None:
        """Store.remove_run moves the run out of runs/ in one rename, then deletes it."""
        run_id = _run(store, "20261101-000000-aaaaaa")
        store.remove_run(run_id)
        assert store.run_ids() == []
        assert os.listdir(store.root / "tmp") == []

    def test_an_unknown_or_malformed_run_is_refused(self, store: Store) -> None:
        """A run id that is not one, or not in the store, is a not-found error."""
        with pytest.raises(RunNotFoundError):
            store.remove_run("../etc")
        with pytest.raises(RunNotFoundError):
            store.remove_run("20261101-000000-aaaaaa")
