"""envsnap: capture an ML experiment's environment, rebuild it, rerun it, report drift."""

from __future__ import annotations

__version__ = "0.1.0"
