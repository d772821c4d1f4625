"""Unit tests never reach a daemon, the network or another process by accident."""

from __future__ import annotations

import subprocess
from typing import Any, NoReturn

import pytest


@pytest.fixture(autouse=True)
def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"unit tests must not start processes: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
