"""Capture's recorder: what counts as a run's outputs, what it says when its result cannot be
stored, the text it refuses before probing, and the warnings it gives about partial records."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pytest

from envsnap import atomicfile
from envsnap.capturing import capture as recorder
from envsnap.capturing.capture import (
    CaptureContext,
    CapturedRun,
    CaptureRequest,
    ResultNotStoredError,
    build_manifest,
    execute,
    inside_repo,
)
from envsnap.capturing.command import CommandOutcome
from envsnap.config import Config
from envsnap.errors import EnvsnapError, UsageError
from envsnap.manifest import Git, Gpu, Host, Outputs, capture_warnings
from envsnap.store import Store
from tests.conftest import sample_manifest

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MODEL = "out/model.pt"
METRICS = "out/metrics.json"


def stored_run(tmp_path: Path) -> tuple[CapturedRun, Store]:
    """A run declaring out/model.pt and out/metrics.json, written to a store in tmp_path."""
    runs = Store(tmp_path / "store")
    manifest = sample_manifest(outputs=Outputs(globs=(MODEL,), metrics=METRICS))
    sealed, directory = runs.write_run(manifest)
    return CapturedRun(manifest=sealed, directory=directory), runs


def fake_command(exit_code: int, writes: Mapping[str, str]) -> Callable[..., CommandOutcome]:
    """A stand-in for run_command: writes ``writes`` under cwd and ends with ``exit_code``."""

    def run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> CommandOutcome:
        for name, text in writes.items():
            (cwd / name).parent.mkdir(parents=True, exist_ok=True)
            (cwd / name).write_text(text)
        return CommandOutcome(
            exit_code=exit_code, started=NOW, ended=NOW, duration_s=0.0, interrupted=False
        )

    return run


PREVIOUS = {MODEL: "previous model", METRICS: json.dumps({"acc": 0.9})}
NEW_METRICS = json.dumps({"acc": 0.95, "loss": 0.1})


class TestOnlyWhatTheCommandWrote:
    @pytest.mark.parametrize(
        ("before", "exit_code", "writes", "outputs", "metrics", "stale"),
        [
            # The issue: a crash after a good run must not inherit its model and metrics.
            (PREVIOUS, 3, {}, [], set(), [METRICS, MODEL]),
            (
                PREVIOUS,
                0,
                {MODEL: "new model!", METRICS: NEW_METRICS},
                [MODEL],
                {"acc", "loss"},
                [],
            ),
            ({}, 0, {MODEL: "model", METRICS: NEW_METRICS}, [MODEL], {"acc", "loss"}, []),
            (PREVIOUS, 0, {METRICS: NEW_METRICS}, [], {"acc", "loss"}, [MODEL]),
            (PREVIOUS, 1, {MODEL: "half a model"}, [MODEL], set(), [METRICS]),
            ({}, 3, {}, [], set(), []),
        ],
        ids=["crash", "rewrites-both", "creates-both", "rewrites-metrics", "partial", "nothing"],
    )
    def test_outputs_and_metrics_are_this_runs_only(
        self,
        tmp_path: Path,
        before: Mapping[str, str],
        exit_code: int,
        writes: Mapping[str, str],
        outputs: list[str],
        metrics: set[str],
        stale: list[str],
    ) -> None:
        """Files that predate the command are left out of outputs and metrics and listed stale."""
        work = tmp_path / "work"
        work.mkdir()
        fake_command(0, before)([], cwd=work, env={})
        run, runs = stored_run(tmp_path)
        result = execute(
            run, ["train"], cwd=work, env={}, store=runs, runner=fake_command(exit_code, writes)
        )
        assert [o.path for o in result.outputs] == outputs
        assert set(result.metrics) == metrics
        assert list(result.stale) == stale
        assert runs.load(run.run_id).result == result
        if METRICS in stale:
            assert "was not written by the command" in result.metrics_error


class TestResultNotStored:
    @pytest.mark.parametrize(("command_exit", "envsnap_exit"), [(0, 2), (3, 3), (130, 130)])
    def test_disk_full_says_what_was_stored(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        command_exit: int,
        envsnap_exit: int,
    ) -> None:
        """A full disk at result time: the sentence says the manifest is stored and the result is
        not, and a failed command keeps its own exit code (a successful one gives 2)."""
        run, runs = stored_run(tmp_path)

        def full(path: Path, data: bytes, *args: object, **kwargs: object) -> NoReturn:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(atomicfile, "write_new_file", full)
        with pytest.raises(ResultNotStoredError) as caught:
            execute(
                run, ["t"], cwd=tmp_path, env={}, store=runs, runner=fake_command(command_exit, {})
            )
        error = caught.value
        assert isinstance(error, EnvsnapError) and error.exit_code == envsnap_exit
        text = str(error)
        assert f"the command exited with {command_exit}" in text
        assert "no space left on the device" in text
        assert f"its manifest is stored in {run.directory} without a result" in text
        assert "nothing was stored" not in text and text.count(".") >= 1
        assert runs.load(run.run_id).result is None  # the manifest is intact and readable


def _context(tmp_path: Path) -> CaptureContext:
    return CaptureContext(cwd=tmp_path, env={}, now=NOW, repo_root=None, config=Config())


NOT_UTF8 = b"caf\xe9".decode("utf-8", "surrogateescape")


class TestTextThatIsNotUtf8:
    @pytest.mark.parametrize(
        ("request_", "named"),
        [
            (CaptureRequest(argv=("python", "train.py", NOT_UTF8)), "the command's argument 2"),
            (CaptureRequest(name=NOT_UTF8), "--name"),
            (CaptureRequest(tags={"team": NOT_UTF8}), "--tag"),
            (CaptureRequest(cli_params=(f"lr={NOT_UTF8}",)), "--param"),
            (CaptureRequest(data=(NOT_UTF8,)), "--data"),
            (CaptureRequest(outputs=(f"{NOT_UTF8}/*.pt",)), "--output"),
            (CaptureRequest(metrics=NOT_UTF8), "--metrics"),
        ],
    )
    def test_refused_in_one_sentence_before_probing(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        request_: CaptureRequest,
        named: str,
    ) -> None:
        """Bytes that are not UTF-8 in the command line are one UsageError naming where, shown
        escaped, raised before any probe runs."""

        def probe(ctx: CaptureContext) -> NoReturn:
            raise AssertionError("probed before refusing")

        monkeypatch.setattr(recorder, "_probe_environment", probe)
        with pytest.raises(UsageError) as caught:
            build_manifest(request_, _context(tmp_path), with_git=False)
        text = str(caught.value)
        assert text.startswith(named) and "caf\\xe9" in text
        assert "not valid UTF-8" in text and text.encode("utf-8")


class TestInsideRepo:
    @pytest.mark.parametrize(
        ("paths", "cwd", "expected"),
        [
            (["data/train.csv"], "", ("data/train.csv",)),
            (["train.csv", "../shared/x"], "exp", ("exp/train.csv", "shared/x")),
            (["/elsewhere/data"], "", ()),
            (["."], "", ()),
            (["../../outside"], "exp", ()),
            (["data/", "./data"], "", ("data",)),
        ],
    )
    def test_repository_relative(
        self, tmp_path: Path, paths: list[str], cwd: str, expected: tuple[str, ...]
    ) -> None:
        """Paths given relative to the working directory become repository-relative; the root
        itself and paths outside the repository are left out."""
        repo = tmp_path / "repo"
        assert inside_repo(paths, repo / cwd, repo) == expected

    def test_outside_any_repository(self, tmp_path: Path) -> None:
        """Without a repository nothing is excluded."""
        assert inside_repo(["data"], tmp_path, None) == ()


class TestCaptureWarnings:
    @pytest.mark.parametrize(
        ("git", "expected"),
        [
            (Git(present=True, commit="a" * 40), []),
            (
                Git(present=True, dirty=True, diff_truncated=True, diff_bytes=100),
                ["cut at 100 bytes", "git-max-diff-bytes"],
            ),
            (Git(present=True, dirty=True, reason="git diff timed out"), ["git diff timed out"]),
            (Git(present=True, submodules_dirty=("vendor/lib",)), ["vendor/lib", "submodule"]),
            (Git(present=False, reason="not inside a git repository"), []),
        ],
    )
    def test_partial_git_records_are_said(self, git: Git, expected: list[str]) -> None:
        """A cut or unread diff and dirty submodules each give a warning sentence."""
        warnings = capture_warnings(sample_manifest(git=git))
        assert len(warnings) == (1 if expected else 0)
        for word in expected:
            assert word in warnings[0]


class TestGpuProbeOverlaps:
    def test_gpu_probe_runs_while_the_other_probes_do(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The GPU probe is started before the others and collected after them: here it can only
        finish once the host probe has run, which a GPU probe run first would wait for in vain."""
        from envsnap.capturing.probes import gpu, system

        host_probed = threading.Event()
        answer = Gpu(available=False, reason="waited for the host probe")
        real_capture_host = system.capture_host

        def capture_host(**kwargs: object) -> Host:
            host_probed.set()
            return real_capture_host()

        def capture_gpu() -> Gpu:
            assert host_probed.wait(timeout=60), "GPU probe ran before the others"
            return answer

        monkeypatch.setattr(system, "capture_host", capture_host)
        monkeypatch.setattr(gpu, "capture_gpu", capture_gpu)
        manifest, _ = build_manifest(CaptureRequest(), _context(tmp_path), with_git=False)
        assert manifest.gpu == answer

    def test_a_refused_request_starts_no_gpu_probe(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Bad input is refused before the GPU probe starts."""
        from envsnap.capturing.probes import gpu

        def start_gpu_capture(*args: object) -> NoReturn:
            raise AssertionError("GPU probe started for a refused request")

        monkeypatch.setattr(gpu, "start_gpu_capture", start_gpu_capture)
        with pytest.raises(UsageError):
            build_manifest(CaptureRequest(cli_params=("no-equals",)), _context(tmp_path))
