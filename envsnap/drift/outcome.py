"""What a rerun did and the drift it found: the data the rerun produces and the reports render,
kept beside DriftReport so that rendering never reaches up into the rerun stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from envsnap.drift.compare import DriftReport
from envsnap.drift.rules import Severity

Verdict = Literal["reproduced", "not reproduced", "not compared"]


@dataclass(frozen=True, kw_only=True)
class RerunOutcome:
    """What a rerun did and the drift it found."""

    original: str
    rerun: str
    directory: Path
    image: str
    image_id: str
    exit_code: int
    timed_out: bool = False
    interrupted: bool = False
    missing_env: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    report: DriftReport

    def verdict(self, fail_on: Severity = "breaking") -> Verdict:
        """Drift at or above ``fail_on``: not reproduced; else, without results on both sides:
        not compared (never "reproduced"); else reproduced."""
        if self.report.drifted(fail_on):
            return "not reproduced"
        if not self.report.results_compared:
            return "not compared"
        return "reproduced"

    def failed(self, fail_on: Severity = "breaking") -> bool:
        """Whether the rerun exits 1: anything but a reproduced run."""
        return self.verdict(fail_on) != "reproduced"
