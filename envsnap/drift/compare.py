"""Drift: one pure function from two manifests (and two results) to a DriftReport.

Each manifest is flattened into dotted field paths; every path that differs is given a category
and a severity by the first matching rule below, then by the user's overrides.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envsnap.drift.rules import (
    CATEGORY_ORDER,
    NOT_COMPARED,
    SEVERITY_ORDER,
    Change,
    MetricTolerance,
    Severity,
    classify,
    is_rerun_pair,
    severity_rank,
)
from envsnap.errors import UsageError
from envsnap.manifest import CondaPackage, Manifest, Package, Result, to_data


@dataclass(frozen=True, kw_only=True)
class FieldDrift:
    """One field that differs between two runs."""

    path: str
    category: str
    severity: Severity
    change: Change
    old: str
    new: str


@dataclass(frozen=True, kw_only=True)
class MetricDrift:
    """One metric compared within its tolerance."""

    name: str
    old: float | None
    new: float | None
    abs_diff: float | None
    rel_diff: float | None
    rtol: float
    atol: float
    within: bool
    severity: Severity


@dataclass(frozen=True, kw_only=True)
class OutputDrift:
    """One output file whose hash differs, or that only one run produced."""

    path: str
    old_sha256: str
    new_sha256: str
    severity: Severity = "breaking"


@dataclass(frozen=True, kw_only=True)
class DriftReport:
    """Everything that differs between a reference run (old) and another run (new)."""

    old_run: str
    new_run: str
    fields: tuple[FieldDrift, ...] = ()
    exit_codes: tuple[int, int] | None = None
    outputs: tuple[OutputDrift, ...] = ()
    metrics: tuple[MetricDrift, ...] = ()
    results_compared: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def severities(self) -> list[Severity]:
        """The severity of every difference, outputs and metrics included."""
        found: list[Severity] = [f.severity for f in self.fields]
        if self.exit_codes is not None and self.exit_codes[0] != self.exit_codes[1]:
            found.append("breaking")
        found.extend(o.severity for o in self.outputs)
        found.extend(m.severity for m in self.metrics)
        return found

    @property
    def max_severity(self) -> Severity | None:
        """The worst severity found apart from expected differences; None when nothing drifted."""
        worst = [s for s in self.severities() if s != "expected"]
        return max(worst, key=severity_rank) if worst else None

    def drifted(self, threshold: Severity = "breaking") -> bool:
        """Whether any difference is at or above ``threshold``."""
        return any(severity_rank(s) >= severity_rank(threshold) for s in self.severities())

    def counts(self) -> dict[Severity, int]:
        """How many differences there are of each severity."""
        out: dict[Severity, int] = dict.fromkeys(SEVERITY_ORDER, 0)
        for severity in self.severities():
            out[severity] += 1
        return out


# --- rules ------------------------------------------------------------------------------------


def flatten_manifest(manifest: Manifest) -> dict[str, Any]:
    """Dotted paths to comparable values; list entries keyed by their name, not their position."""
    data = to_data(manifest, keep_defaults=True)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in NOT_COMPARED:
            continue
        if key == "params":
            for param in value:
                flat[f"params.{param['key']}"] = param["value"]
                flat[f"params.{param['key']}@source"] = param["source"]
        elif key == "data":
            for item in value:
                for name, v in item.items():
                    if name != "path":
                        flat[f"data.{item['path']}.{name}"] = v
        elif key == "redacted":
            for item in value:
                flat[f"redacted.{item['where']}.{item['name']}"] = item["reason"]
        elif isinstance(value, dict):
            _flatten_section(key, value, flat)
        else:
            flat[key] = value
    return flat


def _flatten_section(prefix: str, section: Mapping[str, Any], flat: dict[str, Any]) -> None:
    for key, value in section.items():
        path = f"{prefix}.{key}"
        if key == "packages" and isinstance(value, list):
            for package in value:
                base = f"{path}.{package['name']}"
                flat[base] = package.get("version", "")
                for name, v in package.items():
                    if name not in ("name", "version"):
                        flat[f"{base}.{name}"] = v
        elif key == "devices" and isinstance(value, list):
            flat[f"{prefix}.count"] = len(value)
            for device in value:
                for name, v in device.items():
                    if name != "index":
                        flat[f"{path}.{device['index']}.{name}"] = v
        elif isinstance(value, dict):
            _flatten_section(path, value, flat)
        else:
            flat[path] = value


# --- comparison -------------------------------------------------------------------------------


_NO_TOLERANCE = MetricTolerance()


def compare(
    old: Manifest,
    new: Manifest,
    *,
    old_result: Result | None = None,
    new_result: Result | None = None,
    overrides: Mapping[str, str] = {},
    ignore: Sequence[str] = (),
    tolerance: MetricTolerance = _NO_TOLERANCE,
    metric_tolerances: Mapping[str, MetricTolerance] = {},
) -> DriftReport:
    """Compare two runs: environment fields, then exit codes, outputs and metrics when both ran.

    Raises UsageError for an ``ignore`` entry that names no category and matches no field.
    """
    if ignore:
        check_ignore(ignore, flatten_manifest(old), flatten_manifest(new))
    a, b = (flatten_manifest(m) for m in _without_shared_packages(old, new))
    rerun_pair = is_rerun_pair(old, new)
    # A category's name ("python", "host") ignores that category only, not every field under the
    # section of the same name: python.packages.* belong to "packages", host.kernel to "os".
    field_patterns = [p for p in ignore if p not in CATEGORY_ORDER]
    fields: list[FieldDrift] = []
    for path in sorted(set(a) | set(b)):
        if any(_ignored(path, pattern) for pattern in field_patterns):
            continue
        in_a, in_b = path in a, path in b
        va, vb = a.get(path), b.get(path)
        if in_a and in_b and _same(va, vb):
            continue
        if _belongs_to_added_or_removed(path, a, b):
            continue
        change: Change = "changed" if in_a and in_b else ("added" if in_b else "removed")
        category, severity = classify(path, va, vb, overrides, rerun_pair=rerun_pair)
        if any(fnmatch.fnmatchcase(category, pattern) for pattern in ignore):
            continue
        fields.append(
            FieldDrift(
                path=path,
                category=category,
                severity=severity,
                change=change,
                old=_show(va) if in_a else "",
                new=_show(vb) if in_b else "",
            )
        )
    fields.sort(key=lambda f: (_category_rank(f.category), -severity_rank(f.severity), f.path))
    notes = tuple(
        dict.fromkeys(
            (*_stale_notes(old.run_id, old_result), *_stale_notes(new.run_id, new_result))
        )
    )
    if old_result is None or new_result is None:
        return DriftReport(
            old_run=old.run_id, new_run=new.run_id, fields=tuple(fields), notes=notes
        )
    return DriftReport(
        old_run=old.run_id,
        new_run=new.run_id,
        fields=tuple(fields),
        exit_codes=(old_result.exit_code, new_result.exit_code),
        outputs=_compare_outputs(old_result, new_result),
        metrics=_compare_metrics(old_result, new_result, tolerance, metric_tolerances),
        results_compared=True,
        notes=notes,
    )


def _without_shared_packages(old: Manifest, new: Manifest) -> tuple[Manifest, Manifest]:
    """Both manifests without the packages they record alike: most of two environments'
    manifests, and no difference can come of them. Flattened, a package's fields take a path
    of their own each; a thousand of them made most of the comparison's time."""

    def shared(
        a: Sequence[Package | CondaPackage], b: Sequence[Package | CondaPackage]
    ) -> set[str]:
        # The last package of a name is the one flattening keeps.
        last_b = {p.name: p for p in b}
        return {name for name, p in {p.name: p for p in a}.items() if last_b.get(name) == p}

    python = shared(old.python.packages, new.python.packages)
    conda = shared(old.conda.packages, new.conda.packages)
    if not python and not conda:
        return old, new

    def without(m: Manifest) -> Manifest:
        return dataclasses.replace(
            m,
            python=dataclasses.replace(
                m.python, packages=tuple(p for p in m.python.packages if p.name not in python)
            ),
            conda=dataclasses.replace(
                m.conda, packages=tuple(p for p in m.conda.packages if p.name not in conda)
            ),
        )

    return without(old), without(new)


def _stale_notes(run_id: str, result: Result | None) -> tuple[str, ...]:
    if result is None:
        return ()
    return tuple(
        f"{path} of run {run_id} was not written by its command (it predates the run), so it "
        "is not counted as the run's output or metrics"
        for path in result.stale
    )


def check_ignore(patterns: Sequence[str], *flattened: Mapping[str, Any]) -> None:
    """A UsageError for an ignore entry that is neither a category (or a glob over categories)
    nor a pattern matching a field of the given flattened manifests or of the manifest schema:
    a typo (``hardwre``) must not pass silently as an ignore of nothing."""
    known: set[str] | None = None
    for pattern in patterns:
        if any(fnmatch.fnmatchcase(category, pattern) for category in CATEGORY_ORDER):
            continue
        if known is None:
            known = set(_schema_fields()).union(*flattened)
        if any(_ignored(path, pattern) for path in known):
            continue
        raise UsageError(
            f"the ignore entry {pattern!r} is neither a drift category nor a pattern matching "
            "a known field",
            hint=f"categories are {', '.join(CATEGORY_ORDER)}; field patterns look like "
            "host.kernel, host.* or python.packages.torch",
        )


def _schema_fields() -> dict[str, Any]:
    """Every field path an empty manifest has: the sections' fixed fields."""
    from envsnap.manifest import Tool

    return flatten_manifest(Manifest(run_id="", created="", tool=Tool(version="")))


# An added or removed package, data item or device is one difference, not one per field of it.
_PRESENCE_KEYS = (
    (re.compile(r"^(python\.packages\.[^.]+)\..+$"), r"\1"),
    (re.compile(r"^(conda\.packages\.[^.]+)\..+$"), r"\1"),
    (re.compile(r"^(data\..+)\.(?!sha256$)[a-z_]+$"), r"\1.sha256"),
    (re.compile(r"^(gpu\.devices\.\d+)\.(?!name$)[a-z_]+$"), r"\1.name"),
)


def _belongs_to_added_or_removed(path: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    for pattern, replacement in _PRESENCE_KEYS:
        if pattern.match(path):
            key = pattern.sub(replacement, path)
            return (key in a) != (key in b)
    return False


def _ignored(path: str, pattern: str) -> bool:
    """An ignore pattern covers the field and everything under it."""
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + ".*")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _category_rank(category: str) -> int:
    return CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER)


def _compare_outputs(old: Result, new: Result) -> tuple[OutputDrift, ...]:
    a = {o.path: o.sha256 for o in old.outputs}
    b = {o.path: o.sha256 for o in new.outputs}
    return tuple(
        OutputDrift(path=path, old_sha256=a.get(path, ""), new_sha256=b.get(path, ""))
        for path in sorted(set(a) | set(b))
        if a.get(path) != b.get(path)
    )


def _compare_metrics(
    old: Result,
    new: Result,
    tolerance: MetricTolerance,
    per_metric: Mapping[str, MetricTolerance],
) -> tuple[MetricDrift, ...]:
    out: list[MetricDrift] = []
    for name in sorted(set(old.metrics) | set(new.metrics)):
        tol = per_metric.get(name, tolerance)
        va, vb = old.metrics.get(name), new.metrics.get(name)
        if va is None or vb is None:
            out.append(
                MetricDrift(
                    name=name,
                    old=va,
                    new=vb,
                    abs_diff=None,
                    rel_diff=None,
                    rtol=tol.rtol,
                    atol=tol.atol,
                    within=False,
                    severity="breaking",
                )
            )
            continue
        if _same(float(va), float(vb)):
            continue
        abs_diff = abs(float(vb) - float(va))
        rel_diff = abs_diff / abs(float(va)) if va else math.inf
        within = abs_diff <= tol.atol + tol.rtol * abs(float(va))
        out.append(
            MetricDrift(
                name=name,
                old=va,
                new=vb,
                abs_diff=abs_diff,
                rel_diff=rel_diff,
                rtol=tol.rtol,
                atol=tol.atol,
                within=within,
                severity="info" if within else "breaking",
            )
        )
    return tuple(out)
