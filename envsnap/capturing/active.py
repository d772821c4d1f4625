"""The run this process belongs to: the one ``envsnap capture -- CMD`` started it under, or the
one ``envsnap.capture()`` recorded in it. Trackers started later in the process tag that run.

Imports nothing of envsnap: the API notes a capture here, and the tracker integrations read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# What ``envsnap capture -- CMD`` exports to CMD, so a tracker running inside finds the run.
RUN_ID_VARIABLE = "ENVSNAP_RUN_ID"
STORE_DIR_VARIABLE = "ENVSNAP_STORE_DIR"


@dataclass(frozen=True, kw_only=True)
class ActiveRun:
    """The envsnap run this process belongs to: its id and, when known, its store."""

    run_id: str
    store_dir: Path | None = None


_captured_here: ActiveRun | None = None


def remember_capture(run_id: str, store_dir: Path) -> None:
    """Note that ``envsnap.capture()`` ran in this process, so a tracker run started later in it
    is tagged with that run."""
    global _captured_here
    _captured_here = ActiveRun(run_id=run_id, store_dir=store_dir.absolute())


def active_run(env: Mapping[str, str]) -> ActiveRun | None:
    """The run this process belongs to: the one ``envsnap capture -- CMD`` started it under
    (``ENVSNAP_RUN_ID``, ``ENVSNAP_STORE_DIR``), else one ``envsnap.capture()`` recorded here."""
    run_id = env.get(RUN_ID_VARIABLE, "")
    if run_id:
        store = env.get(STORE_DIR_VARIABLE, "")
        return ActiveRun(run_id=run_id, store_dir=Path(store) if store else None)
    return _captured_here
