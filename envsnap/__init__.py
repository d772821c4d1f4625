"""envsnap: capture an ML experiment's environment, rebuild it, rerun it, report drift.

The public API is imported lazily so ``import envsnap`` stays cheap before training starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from envsnap.version import __version__

__all__ = [
    "__version__",
    "build",
    "capture",
    "check",
    "diff",
    "list_runs",
    "lock",
    "matrix",
    "open_run",
    "pull",
    "push",
    "rerun",
    "run_recorded",
    "seed_everything",
]

if TYPE_CHECKING:
    from envsnap.api import (
        build,
        capture,
        check,
        diff,
        list_runs,
        lock,
        matrix,
        open_run,
        pull,
        push,
        rerun,
        run_recorded,
    )
    from envsnap.capturing.seeding import seed_everything


def __getattr__(name: str) -> Any:
    if name == "seed_everything":
        from envsnap.capturing.seeding import seed_everything

        return seed_everything
    if name in __all__:
        from envsnap import api

        return getattr(api, name)
    raise AttributeError(f"module 'envsnap' has no attribute {name!r}")
