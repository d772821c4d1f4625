"""How the engine's CLI processes run: a quick call that returns its output, or a streaming one
started in its own session and stopped the one way that cancels cleanly. ``Engine`` takes a
``ProcessRunner``; unit tests hand it a fake and check the command lines it would run."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

LineSink = Callable[[str], None]

# How long a CLI gets to cancel (BuildKit cancels the solve on SIGINT) before SIGKILL.
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class CallResult:
    """A finished quick call: exit code and what it printed (``raw`` keeps stdout's bytes, for
    a command whose output is an archive)."""

    code: int
    stdout: str
    stderr: str
    raw: bytes = b""

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}".strip()


class StreamingProcess(Protocol):
    """A long command whose output is read line by line as it comes."""

    def pump(self, on_line: LineSink, *, deadline: float | None) -> bool:
        """Feed output lines to ``on_line`` until the output closes (True) or the monotonic
        ``deadline`` passes (False)."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; ``subprocess.TimeoutExpired`` when it is not done in time."""
        ...

    def stop(self) -> None:
        """Ask it to cancel (SIGINT), then kill it when it does not end within the grace."""
        ...

    def kill(self) -> None:
        """End it now."""
        ...

    def close(self) -> None:
        """Release its output, and kill it if it still runs."""
        ...


class ProcessRunner(Protocol):
    """Runs the engine's CLI."""

    def call(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout: float | None,
        *,
        stdin: bytes | None = None,
    ) -> CallResult:
        """Run to completion, ``stdin`` fed to it, and return the output
        (``subprocess.TimeoutExpired``, ``OSError``)."""
        ...

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> StreamingProcess:
        """Start a streaming command (``OSError`` when it cannot start)."""
        ...

    def detach(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start a command that is left to finish on its own, its output discarded (``OSError``
        when it cannot start)."""
        ...


class SubprocessRunner:
    """The real runner: subprocesses, stdin closed, output captured."""

    def call(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout: float | None,
        *,
        stdin: bytes | None = None,
    ) -> CallResult:
        if stdin is None:
            done = subprocess.run(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        else:
            done = subprocess.run(
                list(argv),
                env=dict(env),
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        return CallResult(
            done.returncode,
            done.stdout.decode("utf-8", errors="replace"),
            done.stderr.decode("utf-8", errors="replace"),
            done.stdout,
        )

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> StreamingProcess:
        # Its own session: a terminal Ctrl-C reaches only us, and we stop the CLI the one way
        # that cancels cleanly (SIGINT: BuildKit cancels the solve).
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return _Streaming(process)

    def detach(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        # Its own session, so a Ctrl-C at the terminal after envsnap has ended does not stop it.
        subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


class _Streaming:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    def pump(self, on_line: LineSink, *, deadline: float | None) -> bool:
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        pending = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                wait = None
                if deadline is not None:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        return False
                if not selector.select(timeout=wait):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    on_line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
        if pending:
            on_line(pending.rstrip(b"\r").decode("utf-8", errors="replace"))
        return True

    def wait(self, timeout: float | None = None) -> int:
        return self._process.wait(timeout=timeout)

    def stop(self) -> None:
        if self._process.poll() is not None:
            return
        self._signal(signal.SIGINT)
        try:
            self._process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self._process.wait()

    def close(self) -> None:
        if self._process.stdout is not None:
            self._process.stdout.close()
        if self._process.poll() is None:
            self.kill()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)
