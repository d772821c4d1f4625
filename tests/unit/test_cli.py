"""The command line's own behaviour: which --debug counts, and how failures are printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envsnap import template
from envsnap.cli import debug_requested, main
from envsnap.errors import EXIT_ERROR


class TestDebugFlag:
    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (["--debug", "show", "latest"], True),
            (["-v", "--debug", "list"], True),
            (["capture", "--", "python", "t.py", "--debug"], False),
            (["capture", "--name", "x", "--", "python", "--debug"], False),
            (["show", "--debug"], False),
            (["--", "--debug"], False),
            ([], False),
        ],
    )
    def test_only_envsnaps_own_flag_before_the_subcommand_counts(
        self, args: list[str], expected: bool
    ) -> None:
        """--debug is envsnap's only before the subcommand; the user's command may use it."""
        assert debug_requested(args) is expected


class TestFailures:
    def test_a_missing_template_is_one_sentence(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A template missing from the installation is an error sentence, not a traceback."""

        monkeypatch.setattr(
            template, "resources", type("R", (), {"files": staticmethod(_MissingFiles)})
        )
        with pytest.raises(template.InstallationError, match=r"python\.Dockerfile is missing"):
            template.read_template("python.Dockerfile")

    def test_a_vanished_working_directory_is_one_sentence(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Run from a directory that was deleted: exit 2 and one sentence, no traceback."""
        gone = tmp_path / "gone"
        gone.mkdir()
        here = os.getcwd()
        os.chdir(gone)
        gone.rmdir()
        try:
            with pytest.raises(SystemExit) as exit_info:
                main(["list"])
        finally:
            os.chdir(here)
        assert exit_info.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert "current directory no longer exists" in err
        assert "Traceback" not in err

    def test_an_unexpected_exception_is_one_sentence_without_debug(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bug still ends in one sentence and exit 2; --debug shows the traceback instead."""
        import envsnap.cli as cli_module

        def boom(**_: object) -> None:
            raise RuntimeError("kaboom")

        monkeypatch.setattr(cli_module.cli, "main", boom)
        with pytest.raises(SystemExit) as exit_info:
            main(["list"])
        assert exit_info.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert "unexpected RuntimeError: kaboom" in err and "--debug" in err
        with pytest.raises(RuntimeError):
            main(["--debug", "list"])


class _MissingFiles:
    """Stands in for importlib.resources.files() of an installation without the templates."""

    def __init__(self, package: str) -> None:
        self.package = package

    def joinpath(self, name: str) -> _MissingFiles:
        self.name = name
        return self

    def read_bytes(self) -> bytes:
        raise FileNotFoundError(self.name)


class TestListDamagedStore:
    def test_list_shows_every_good_run_names_the_bad_one_and_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`envsnap list` over a store with one edited manifest prints the other runs, names the
        damaged one on stderr in one sentence, and exits 2 at the end."""
        from envsnap.store import Store
        from tests.conftest import sample_manifest

        store = Store(tmp_path / "store")
        ids = ("20261122-163012-a1b2c3", "20261122-163013-d4e5f6", "20261122-163014-aaaaaa")
        for run_id in ids:
            store.write_run(sample_manifest(run_id=run_id))
        bad = store.runs_dir / ids[1] / "manifest.toml"
        bad.write_text(bad.read_text().replace("lr-sweep-3", "edited"))
        with pytest.raises(SystemExit) as exit_info:
            main(["list", "--store", str(store.root)])
        assert exit_info.value.code == EXIT_ERROR
        out, err = capsys.readouterr()
        assert [line.split()[0] for line in out.splitlines()] == [ids[0], ids[2]]
        assert f"run {ids[1]} cannot be read" in err and "Traceback" not in err


class TestTargets:
    @pytest.mark.parametrize(
        ("argv", "words"),
        [
            (["matrix", "latest", "--on", "a", "--on", "gpu-h100"], "--on gpu-h100 names no"),
            (["rerun", "latest", "--on", "k9s"], "--on k9s names no target"),
            (["rerun", "latest", "--on", "kubernetes:"], "is not NAME or NAME:CONTEXT"),
        ],
    )
    def test_a_target_that_cannot_run_here_is_one_sentence_exit_2(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        argv: list[str],
        words: str,
    ) -> None:
        """Unknown names and malformed ones stop before the run is even opened, naming what
        [tool.envsnap.targets] has."""
        (tmp_path / "pyproject.toml").write_text(
            '[tool.envsnap.targets.a]\nengine = "docker"\n'
            '[tool.envsnap.targets.k8s]\nengine = "kubernetes"\n'
        )
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("ENVSNAP_STORE", raising=False)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert words in err and "a (docker), k8s (kubernetes)" in err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / ".envsnap").exists()

    @pytest.mark.parametrize(
        ("argv", "words"),
        [
            (["rerun", "latest", "--on", "a", "--partition", "gpu"], "--partition is for Slurm"),
            (["rerun", "latest", "--partition", "gpu"], "--partition needs --on slurm"),
            (["rerun", "latest", "--on", "a", "--detach"], "--detach is for Slurm targets"),
            (["rerun", "latest", "--detach"], "--detach is for Slurm targets"),
            (["rerun", "latest", "--on", "a", "--namespace", "ml"], "--namespace is for Kuber"),
            (["rerun", "latest", "--on", "a", "--dry-run"], "--on a is not a Kubernetes target"),
        ],
    )
    def test_scheduler_options_on_a_docker_target_are_one_sentence_exit_2(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        argv: list[str],
        words: str,
    ) -> None:
        """--partition and --detach mean a scheduler: refused for docker before the run is
        opened."""
        (tmp_path / "pyproject.toml").write_text('[tool.envsnap.targets.a]\nengine = "docker"\n')
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("ENVSNAP_STORE", raising=False)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
        assert not (tmp_path / ".envsnap").exists()
