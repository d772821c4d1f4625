"""The library API's matrix: every target asked at once, a failing target kept as a column, and
Ctrl-C stopping the whole matrix."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from envsnap import api
from envsnap.drift.compare import compare
from envsnap.drift.outcome import RerunOutcome
from envsnap.errors import InterruptError
from envsnap.image.dockeroutput import EngineUnavailableError
from envsnap.manifest import Result
from envsnap.rerunning import targets
from envsnap.rerunning.request import RerunRequest
from envsnap.store import Store
from tests.conftest import sample_manifest


def _result(run_id: str, loss: float) -> Result:
    return Result(
        run_id=run_id,
        exit_code=0,
        started="2026-11-22T16:30:12Z",
        ended="2026-11-22T16:31:12Z",
        metrics={"loss": loss},
    )


@dataclass(frozen=True)
class _Fake:
    """A target that records a rerun in the store (with ``loss``), fails, or is interrupted."""

    label: str
    loss: float = 0.25
    fail: str = ""
    interrupted: bool = False

    def rerun(self, request: RerunRequest) -> RerunOutcome:
        if self.fail:
            raise EngineUnavailableError(self.fail)
        original = request.stored.manifest
        new = dataclasses.replace(
            original,
            run_id=f"20261122-17000{len(self.label)}-{self.label * 6}"[:22],
            rerun_of=original.run_id,
            tags={"rerun.engine": f"{self.label}-host"},
        )
        sealed, directory = request.store.write_run(new)
        result = _result(sealed.run_id, self.loss)
        request.store.write_result(directory, result)
        return RerunOutcome(
            original=original.run_id,
            rerun=sealed.run_id,
            directory=directory,
            image="envsnap-env:x",
            image_id="sha256:" + "0" * 64,
            exit_code=0,
            interrupted=self.interrupted,
            report=compare(original, sealed, old_result=request.stored.result, new_result=result),
        )


@pytest.fixture
def original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENVSNAP_STORE", raising=False)
    store = Store(tmp_path / ".envsnap")
    sealed, directory = store.write_run(sample_manifest())
    store.write_result(directory, _result(sealed.run_id, 0.25))
    return sealed.run_id


def _fleet(monkeypatch: pytest.MonkeyPatch, *fakes: _Fake) -> None:
    monkeypatch.setattr(targets, "resolve_targets", lambda specs, configured: list(fakes))


class TestMatrix:
    def test_every_target_in_turn_with_its_host_facts(
        self, original: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Columns in --on order; b's moved loss is its row; host facts from each rerun."""
        _fleet(monkeypatch, _Fake("a"), _Fake("b", loss=0.5))
        matrix = api.matrix(original, on=["a", "b"])
        assert [(c.name, c.verdict) for c in matrix.columns] == [
            ("original", ""),
            ("a", "reproduced"),
            ("b", "not reproduced"),
        ]
        assert matrix.columns[2].host.engine == "b-host"
        loss = next(r for r in matrix.rows if r.name == "loss")
        assert [c.value for c in loss.cells] == ["0.25", "0.25", "0.5"]

    def test_a_failing_target_is_a_column_and_the_others_still_run(
        self, original: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The error's sentence is the column's; the target after it ran."""
        _fleet(monkeypatch, _Fake("down", fail="the docker daemon is not running"), _Fake("a"))
        matrix = api.matrix(original, on=["down", "a"])
        assert matrix.errored()
        assert matrix.columns[1].error == "the docker daemon is not running."
        assert matrix.columns[2].verdict == "reproduced"

    def test_an_interrupted_rerun_stops_the_matrix(
        self, original: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rerun its own process saw interrupted is an InterruptError naming the target."""
        _fleet(monkeypatch, _Fake("a", interrupted=True), _Fake("b"))
        with pytest.raises(InterruptError, match="during the rerun on a"):
            api.matrix(original, on=["a", "b"])

    def test_targets_run_at_once_with_their_output_named(
        self, original: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Both reruns wait for each other at a barrier (sequential reruns would time out);
        each line of output carries its target's name; images are got one at a time."""
        barrier = threading.Barrier(2, timeout=10)
        preparing: list[str] = []

        @dataclass(frozen=True)
        class Meeting(_Fake):
            def rerun(self, request: RerunRequest) -> RerunOutcome:
                with request.prepare_lock:
                    preparing.append(f"+{self.label}")
                    time.sleep(0.05)
                    preparing.append(f"-{self.label}")
                barrier.wait()
                assert request.on_output is not None
                request.on_output("hello")
                return super().rerun(request)

        _fleet(monkeypatch, Meeting("a"), Meeting("b"))
        lines: list[str] = []
        matrix = api.matrix(original, on=["a", "b"], on_output=lines.append)
        assert [c.verdict for c in matrix.targets] == ["reproduced", "reproduced"]
        assert sorted(lines) == ["[a] hello", "[b] hello"]
        assert [p[0] for p in preparing] == ["+", "-", "+", "-"]  # never two at once

    def test_ctrl_c_cancels_every_running_rerun(
        self, original: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ctrl-C in the main thread: each rerun's registered canceller is called (its
        container killed, its job cancelled), the threads end, and the matrix is an
        InterruptError."""
        stopped: list[str] = []
        started = threading.Barrier(3, timeout=10)

        @dataclass(frozen=True)
        class Long(_Fake):
            def rerun(self, request: RerunRequest) -> RerunOutcome:
                done = threading.Event()
                assert request.cancel is not None
                request.cancel.register(lambda: (stopped.append(self.label), done.set()))
                started.wait()
                assert done.wait(10), "never cancelled"
                return dataclasses.replace(super().rerun(request), interrupted=True)

        _fleet(monkeypatch, Long("a"), Long("b"))

        def interrupt_soon() -> None:
            started.wait()
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: to the process, run in main

        threading.Thread(target=interrupt_soon, daemon=True).start()
        with pytest.raises(InterruptError, match="every target's rerun was stopped"):
            api.matrix(original, on=["a", "b"])
        assert sorted(stopped) == ["a", "b"]


def test_run_summary_is_still_importable_from_the_api() -> None:
    """list_runs's row type keeps its public name, though capture no longer loads it."""
    from envsnap.api import RunSummary
    from envsnap.runindex import RunSummary as Indexed

    assert RunSummary is Indexed
