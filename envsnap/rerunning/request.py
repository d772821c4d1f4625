"""What a target is asked (``RerunRequest``) and what a target is (``Target``): the seam between
the command that resolves a rerun and the engines that run it (targets.py for docker, slurm.py,
kubernetes.py), below all of them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from envsnap.config import Config
    from envsnap.drift.outcome import RerunOutcome
    from envsnap.image.build import BuildOptions
    from envsnap.rerunning.rerun import Cancellation, RerunOptions
    from envsnap.store import Store, StoredRun

__all__ = ["RerunRequest", "Target"]


@dataclass(frozen=True, kw_only=True)
class RerunRequest:
    """Everything a target needs for one rerun, resolved once by the caller."""

    stored: StoredRun
    store: Store
    build: BuildOptions
    options: RerunOptions
    config: Config
    repo_root: Path | None
    cwd: Path
    env: Mapping[str, str]
    # The registry reference RUN was given as (``REPOSITORY:<run-id>[@sha256:...]``), "" when it
    # was an id, a prefix or a path: a Kubernetes Job takes the run from there.
    record: str = ""
    on_output: Callable[[str], None] | None = None
    on_build_line: Callable[[str], None] | None = None
    echo: Callable[[str], None] | None = None
    # A matrix's reruns run at once, but get their images one at a time (two builds of one
    # environment on one engine would race), and are stopped through ``cancel`` on Ctrl-C.
    prepare_lock: contextlib.AbstractContextManager[object] = field(
        default_factory=contextlib.nullcontext
    )
    cancel: Cancellation | None = None


class Target(Protocol):
    """Where a rerun runs."""

    @property
    def label(self) -> str:
        """The target as ``--on`` named it, for reports."""
        ...

    def rerun(self, request: RerunRequest) -> RerunOutcome:
        """Rerun the request's run on this target and compare the new run with it."""
        ...
