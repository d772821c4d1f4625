"""The drift rules: severities, categories, and which category and severity each manifest field
gets (by default, and with the project's overrides). Pure data and lookup, no comparison."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from envsnap.manifest import Model, model

if TYPE_CHECKING:
    from envsnap.manifest import Manifest

Severity = Literal["expected", "info", "warning", "breaking"]
SEVERITY_ORDER: tuple[Severity, ...] = ("expected", "info", "warning", "breaking")
CATEGORY_ORDER = (
    "code",
    "config",
    "data",
    "packages",
    "conda",
    "python",
    "cuda",
    "driver",
    "hardware",
    "os",
    "host",
    "run",
    "outputs",
    "metrics",
)
Change = Literal["changed", "added", "removed"]


def severity_rank(severity: str | None) -> int:
    """Position of a severity in expected < info < warning < breaking (None ranks lowest)."""
    return -1 if severity is None else SEVERITY_ORDER.index(_as_severity(severity))


SeverityFn = Callable[[Any, Any], Severity]


@dataclass(frozen=True)
class Rule:
    """Fields matching ``pattern`` belong to ``category`` with ``severity`` (or a function)."""

    pattern: str
    category: str
    severity: Severity | SeverityFn


def by_version(major: Severity, minor: Severity, patch: Severity) -> SeverityFn:
    """Severity from which part of a version changed (missing on one side counts as major)."""

    def decide(old: Any, new: Any) -> Severity:
        a, b = _version_parts(old), _version_parts(new)
        if not a or not b or a[0] != b[0]:
            return major
        if a[1:2] != b[1:2]:
            return minor
        return patch

    return decide


def _version_parts(value: Any) -> list[str]:
    return re.findall(r"[0-9]+|[a-zA-Z]+", str(value)) if value not in (None, "") else []


RULES: tuple[Rule, ...] = (
    Rule("run_id", "run", "expected"),
    Rule("created", "run", "expected"),
    Rule("name", "run", "expected"),
    Rule("notes", "run", "expected"),
    Rule("rerun_of", "run", "expected"),
    Rule("tags.*", "run", "expected"),
    Rule("tool.*", "run", "info"),
    Rule("redacted.*", "run", "info"),
    Rule("host.hostname", "host", "expected"),
    Rule("host.kernel", "os", "info"),
    Rule("host.os_name", "os", "info"),
    Rule("host.os_*", "os", "warning"),
    Rule("host.libc", "os", "warning"),
    Rule("host.arch", "hardware", "breaking"),
    Rule("host.cpu_model", "hardware", "warning"),
    Rule("host.*", "hardware", "info"),
    Rule("container.image_digest", "os", "warning"),
    Rule("container.*", "host", "info"),
    Rule("gpu.available", "hardware", "breaking"),
    Rule("gpu.count", "hardware", "warning"),
    Rule("gpu.driver_version", "driver", by_version("warning", "info", "info")),
    Rule("gpu.cuda_driver_version", "driver", by_version("warning", "info", "info")),
    Rule("gpu.reason", "driver", "info"),
    Rule("gpu.devices.*.uuid", "hardware", "expected"),
    Rule("gpu.devices.*.name", "hardware", "warning"),
    Rule("gpu.devices.*.compute_capability", "hardware", "warning"),
    Rule("gpu.*", "hardware", "info"),
    Rule("cuda.runtime_version", "cuda", by_version("breaking", "warning", "info")),
    Rule("cuda.cudnn_version", "cuda", by_version("breaking", "warning", "info")),
    Rule("cuda.nccl_version", "cuda", by_version("warning", "warning", "info")),
    Rule("cuda.frameworks.*", "cuda", by_version("breaking", "warning", "info")),
    Rule("cuda.*", "cuda", "info"),
    Rule("python.implementation", "python", "breaking"),
    Rule("python.version", "python", by_version("breaking", "breaking", "warning")),
    Rule("python.executable", "python", "expected"),
    Rule("python.prefix", "python", "expected"),
    # Where this host's pip looks (a mirror, a proxy, a CUDA wheel index) is the host's
    # configuration, not the experiment's: what was installed is compared package by package.
    Rule("python.index_url", "packages", "info"),
    Rule("python.extra_index_urls", "packages", "info"),
    Rule("python.packages.*.commit", "packages", "breaking"),
    Rule("python.packages.*.archive_hash", "packages", "warning"),
    Rule("python.packages.*.source", "packages", "warning"),
    Rule("python.packages.*.url", "packages", "warning"),
    Rule("python.packages.*.index_url", "packages", "warning"),
    Rule("python.packages.*.path", "packages", "expected"),
    Rule("python.packages.*.*", "packages", "info"),
    Rule("python.packages.*", "packages", "breaking"),
    Rule("python.*", "python", "info"),
    Rule("conda.prefix", "conda", "expected"),
    Rule("conda.packages.*.build", "conda", "warning"),
    Rule("conda.packages.*.channel", "conda", "warning"),
    Rule("conda.packages.*.md5", "conda", "warning"),
    Rule("conda.packages.*.sha256", "conda", "warning"),
    Rule("conda.packages.*.*", "conda", "info"),
    Rule("conda.packages.*", "conda", "breaking"),
    Rule("conda.present", "conda", "breaking"),
    Rule("conda.*", "conda", "info"),
    Rule("git.commit", "code", "breaking"),
    Rule("git.diff_sha256", "code", "breaking"),
    Rule("git.present", "code", "warning"),
    Rule("git.*", "code", "info"),
    Rule("command.argv", "config", "breaking"),
    Rule("command.*", "config", "warning"),
    Rule("params.*@source", "config", "info"),
    Rule("params.*", "config", "breaking"),
    Rule("seeds.*", "config", "breaking"),
    Rule("determinism.*", "config", "warning"),
    Rule("environment.PIP_INDEX_URL", "config", "info"),
    Rule("environment.PIP_EXTRA_INDEX_URL", "config", "info"),
    Rule("environment.UV_INDEX_URL", "config", "info"),
    Rule("environment.UV_EXTRA_INDEX_URL", "config", "info"),
    Rule("environment.*", "config", "warning"),
    Rule("outputs.*", "config", "info"),
    Rule("data.*.sha256", "data", "breaking"),
    Rule("data.*", "data", "info"),
)

# Facts a rerun changes by construction, between a run and its rerun (either way round): the
# rerun works in a detached scratch checkout with no branch, no remote and no untracked files.
# Between other runs they stay info (git.*). `envsnap diff` and the rerun report agree, since
# both ask compare(), which sees the pair in the manifests' rerun_of.
RERUN_RULES: tuple[Rule, ...] = (
    Rule("git.branch", "code", "expected"),
    Rule("git.remote_url", "code", "expected"),
    Rule("git.untracked", "code", "expected"),
    Rule("git.untracked_omitted", "code", "expected"),
)

# Derived or bookkeeping fields: they differ whenever something else does.
NOT_COMPARED = ("schema", "digest", "env_id")


def is_rerun_pair(old: Manifest, new: Manifest) -> bool:
    """Whether one of the two runs is a rerun of the other."""
    return bool(new.rerun_of and new.rerun_of == old.run_id) or bool(
        old.rerun_of and old.rerun_of == new.run_id
    )


def classify(
    path: str,
    old: Any,
    new: Any,
    overrides: Mapping[str, str] = {},
    *,
    rerun_pair: bool = False,
) -> tuple[str, Severity]:
    """Category and severity of a changed field: the first matching rule (the rerun rules first
    for a run and its rerun), then overrides."""
    category = "other"
    severity: Severity = "warning"
    for rule in (*RERUN_RULES, *RULES) if rerun_pair else RULES:
        if fnmatch.fnmatchcase(path, rule.pattern):
            category = rule.category
            severity = rule.severity if isinstance(rule.severity, str) else rule.severity(old, new)
            break
    for pattern, value in overrides.items():
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(category, pattern):
            severity = _as_severity(value)
    return category, severity


def _as_severity(value: str) -> Severity:
    for severity in SEVERITY_ORDER:
        if severity == value:
            return severity
    raise ValueError(f"unknown severity {value!r}")  # config.py validates overrides first


# --- flattening -------------------------------------------------------------------------------


@model
class MetricTolerance(Model):
    """How far a metric may move in a rerun and still count as reproduced."""

    rtol: float = 0.0
    atol: float = 0.0
