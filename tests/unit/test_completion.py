"""Completion of RUN arguments and envsnap --version, without a shell (the integration tests run
a real bash)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from envsnap.cli import cli
from envsnap.completion import run_candidates, target_candidates
from envsnap.store import Store
from envsnap.version import checkout_commit, version_text
from tests.conftest import sample_manifest


class TestTargetCompletion:
    def test_built_in_targets_and_the_projects_tables(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--on completes to docker, kubernetes, slurm and every [tool.envsnap.targets] table,
        with its engine as help; a prefix narrows them."""
        (tmp_path / "pyproject.toml").write_text(
            '[tool.envsnap.targets.h100]\nengine = "slurm"\npartition = "gpu"\n'
            '[tool.envsnap.targets.hostb]\nengine = "docker"\n'
        )
        monkeypatch.chdir(tmp_path)
        assert target_candidates("") == [
            ("docker", "the local docker engine"),
            ("h100", "slurm target"),
            ("hostb", "docker target"),
            ("kubernetes", "the current kubeconfig context's cluster"),
            ("slurm", "this host's Slurm cluster"),
        ]
        assert [name for name, _ in target_candidates("h")] == ["h100", "hostb"]

    def test_a_broken_configuration_completes_the_built_in_ones(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A table with an unknown engine: no error in the prompt, the built-in targets."""
        (tmp_path / "pyproject.toml").write_text('[tool.envsnap.targets.x]\nengine = "lsf"\n')
        monkeypatch.chdir(tmp_path)
        assert [name for name, _ in target_candidates("")] == ["docker", "kubernetes", "slurm"]


class TestRunCompletion:
    def test_latest_then_run_ids_newest_first_with_names(self, tmp_path: Path) -> None:
        """An empty word completes to latest and every run id, newest first, names as help."""
        store = Store(tmp_path / "store")
        store.write_run(sample_manifest(run_id="20261101-000000-aaaaaa", name="first"))
        store.write_run(sample_manifest(run_id="20261102-000000-bbbbbb", name="second"))
        assert run_candidates("", store=store.root) == [
            ("latest", "the newest run"),
            ("20261102-000000-bbbbbb", "second"),
            ("20261101-000000-aaaaaa", "first"),
        ]
        assert run_candidates("20261101", store=store.root) == [("20261101-000000-aaaaaa", "first")]

    def test_a_store_that_cannot_be_read_completes_only_latest(self, tmp_path: Path) -> None:
        """Completion never prints an error into the prompt."""
        blocker = tmp_path / "file"
        blocker.write_text("")
        assert run_candidates("", store=blocker) == [("latest", "the newest run")]

    @pytest.mark.parametrize(
        ("command", "params"),
        [
            ("show", ["run"]),
            ("diff", ["old", "new"]),
            ("lock", ["run"]),
            ("build", ["run"]),
            ("rerun", ["run"]),
            ("matrix", ["run"]),
            ("export", ["run"]),
        ],
    )
    def test_every_run_argument_completes_run_ids(self, command: str, params: list[str]) -> None:
        """Each RUN argument of the command line has the run completion."""
        sub = cli.commands[command]
        for param in sub.params:
            if isinstance(param, click.Argument) and param.name in params:
                assert param._custom_shell_complete is not None, (command, param.name)


class TestVersion:
    def test_a_checkout_shows_its_commit(self, tmp_path: Path) -> None:
        """From a source tree with .git, --version adds the commit HEAD's branch points to."""
        (tmp_path / "pyproject.toml").write_text("")
        (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
        (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (tmp_path / ".git" / "refs" / "heads" / "main").write_text("0123456789ab" + "c" * 28)
        assert checkout_commit(tmp_path) == "0123456789ab"
        assert version_text(tmp_path / "envsnap").endswith(" (commit 0123456789ab)")

    def test_packed_refs_are_read(self, tmp_path: Path) -> None:
        """A branch only in packed-refs (after git gc) is found there."""
        (tmp_path / "pyproject.toml").write_text("")
        (tmp_path / ".git").mkdir()
        (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        sha = "f" * 40
        (tmp_path / ".git" / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
        assert checkout_commit(tmp_path) == "f" * 12

    def test_an_installed_wheel_shows_the_version_alone(self, tmp_path: Path) -> None:
        """site-packages has no pyproject.toml or .git: no commit."""
        from envsnap import __version__

        assert version_text(tmp_path / "envsnap") == f"envsnap {__version__}"
