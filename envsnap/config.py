"""Settings in one cascade: defaults < ``[tool.envsnap]`` in pyproject.toml < ``ENVSNAP_*``.

The environment is passed in, never read from ``os.environ`` here, so tests and callers decide it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, get_args

from envsnap.drift.rules import CATEGORY_ORDER, SEVERITY_ORDER, MetricTolerance
from envsnap.errors import UsageError
from envsnap.kubernetes_table import TABLE_KEYS as KUBERNETES_KEYS
from envsnap.kubernetes_table import KubernetesConfig, parse_table
from envsnap.manifest import Model, model

TargetEngine = Literal["docker", "slurm", "kubernetes"]
TARGET_ENGINES: tuple[str, ...] = get_args(TargetEngine)


@model
class TargetConfig(Model):
    """One ``[tool.envsnap.targets.<name>]`` table: where ``--on NAME`` reruns a run."""

    name: str = ""
    engine: TargetEngine = "docker"
    docker_host: str = ""  # docker: DOCKER_HOST of the engine ("" with no context: the local one)
    context: str = ""  # docker: a docker context
    partition: str = ""  # slurm
    runtime: str = ""  # slurm: the container runtime on the nodes (docker, podman)
    # slurm: a repository the image is pushed to, so that the nodes pull it by digest
    registry: str = ""
    # Recorded data path -> where that data lives on the target's hosts.
    data: Mapping[str, str] = field(default_factory=dict)
    options: tuple[str, ...] = ()  # extra scheduler options, passed through as given
    # kubernetes: the whole table (its context, namespace, secrets, volumes, data on volumes...)
    kubernetes: KubernetesConfig | None = None


@model
class Config(Model):
    """Every setting envsnap reads, resolved once per command."""

    store: Path | None = None
    env_allow: tuple[str, ...] = ()
    git_max_diff_bytes: int = 8 * 1024 * 1024
    git_max_untracked: int = 1000
    base_image: str = ""
    drift_severity: Mapping[str, str] = field(default_factory=dict)
    metric_tolerance: MetricTolerance = MetricTolerance()
    metrics: Mapping[str, MetricTolerance] = field(default_factory=dict)
    cache_dir: Path | None = None
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)
    source: str = "defaults"


_KEYS = {
    "store",
    "env-allow",
    "git-max-diff-bytes",
    "git-max-untracked",
    "base-image",
    "drift",
    "metrics",
    "rtol",
    "atol",
    "targets",
}
# Each engine's keys besides ``engine``: a key of another engine is refused, not ignored.
_DOCKER_KEYS = frozenset({"docker-host", "context", "data"})
_SLURM_KEYS = frozenset({"partition", "runtime", "registry", "data", "options"})
_ENGINE_KEYS: Mapping[str, frozenset[str]] = {
    "docker": _DOCKER_KEYS,
    "slurm": _SLURM_KEYS,
    "kubernetes": KUBERNETES_KEYS,
}
_TARGET_KEYS = frozenset({"engine"}).union(*_ENGINE_KEYS.values())
# The container runtimes a Slurm node may run the image with.
SLURM_RUNTIMES = ("docker", "podman")


def load_config(*, project_root: Path, env: Mapping[str, str]) -> Config:
    """Read ``[tool.envsnap]`` from ``project_root/pyproject.toml`` and apply ``ENVSNAP_*``."""
    pyproject = project_root / "pyproject.toml"
    table: Mapping[str, Any] = {}
    source = "defaults"
    if pyproject.is_file():
        table = _read_tool_table(pyproject)
        if table:
            source = str(pyproject)
    config = _from_table(table, str(pyproject))
    store = config.store
    if store is not None and not store.is_absolute():
        store = project_root / store
    if env.get("ENVSNAP_STORE"):
        store = Path(env["ENVSNAP_STORE"])
    allow = config.env_allow
    if env.get("ENVSNAP_ENV_ALLOW"):
        allow = allow + tuple(p.strip() for p in env["ENVSNAP_ENV_ALLOW"].split(",") if p.strip())
    return Config(
        store=store,
        env_allow=allow,
        git_max_diff_bytes=config.git_max_diff_bytes,
        git_max_untracked=config.git_max_untracked,
        base_image=env.get("ENVSNAP_BASE_IMAGE") or config.base_image,
        drift_severity=config.drift_severity,
        metric_tolerance=config.metric_tolerance,
        metrics=config.metrics,
        cache_dir=_cache_dir(env),
        targets=config.targets,
        source=source,
    )


def _cache_dir(env: Mapping[str, str]) -> Path:
    """ENVSNAP_CACHE_DIR, else $XDG_CACHE_HOME/envsnap, else ~/.cache/envsnap."""
    if env.get("ENVSNAP_CACHE_DIR"):
        return Path(env["ENVSNAP_CACHE_DIR"])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "envsnap"
    return Path(env.get("HOME") or Path.home()) / ".cache" / "envsnap"


def _read_tool_table(pyproject: Path) -> Mapping[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(
            f"{pyproject} cannot be read as TOML ({exc})", hint="fix the file"
        ) from None
    tool = data.get("tool", {})
    table = tool.get("envsnap", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise UsageError(f"[tool.envsnap] in {pyproject} is not a table", hint="fix the file")
    return table


def _from_table(table: Mapping[str, Any], origin: str) -> Config:
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise UsageError(
            f"[tool.envsnap] in {origin} has unknown key {unknown[0]!r}",
            hint=f"use one of {', '.join(sorted(_KEYS))}",
        )
    store = table.get("store")
    drift = table.get("drift", {})
    if not isinstance(drift, dict) or any(
        not isinstance(v, str) or v not in SEVERITY_ORDER for v in drift.values()
    ):
        raise UsageError(
            f"[tool.envsnap.drift] in {origin} must map field patterns to a severity",
            hint=f"use one of {', '.join(SEVERITY_ORDER)}",
        )
    for pattern in drift:
        _check_drift_pattern(str(pattern), origin)
    metrics_table = table.get("metrics", {})
    if not isinstance(metrics_table, dict):
        raise UsageError(f"[tool.envsnap.metrics] in {origin} is not a table", hint="fix it")
    metrics = {
        str(name): _tolerance(value, f"[tool.envsnap.metrics.{name}] in {origin}")
        for name, value in metrics_table.items()
    }
    return Config(
        store=Path(_typed(table, "store", str, origin)) if store is not None else None,
        env_allow=tuple(_typed(table, "env-allow", list, origin, [])),
        git_max_diff_bytes=_typed(table, "git-max-diff-bytes", int, origin, 8 * 1024 * 1024),
        git_max_untracked=_typed(table, "git-max-untracked", int, origin, 1000),
        base_image=_typed(table, "base-image", str, origin, ""),
        drift_severity=dict(drift),
        metric_tolerance=_tolerance(
            {k: table[k] for k in ("rtol", "atol") if k in table}, f"[tool.envsnap] in {origin}"
        ),
        metrics=metrics,
        targets=_targets(table.get("targets", {}), origin),
    )


def _targets(table: Any, origin: str) -> dict[str, TargetConfig]:
    """``[tool.envsnap.targets.<name>]`` tables, each checked whole: a typo in a fleet's
    configuration must not send a rerun somewhere else."""
    if not isinstance(table, dict):
        raise UsageError(f"[tool.envsnap.targets] in {origin} is not a table", hint="fix it")
    targets: dict[str, TargetConfig] = {}
    for name, value in sorted(table.items()):
        where = f"[tool.envsnap.targets.{name}] in {origin}"
        if not isinstance(value, dict):
            raise UsageError(f"{where} is not a table", hint="fix it")
        if ":" in name or not name:
            raise UsageError(
                f"{where} has a name with ':' in it, which --on NAME:CONTEXT could not name",
                hint="rename the target",
            )
        unknown = sorted(set(value) - _TARGET_KEYS)
        if unknown:
            raise UsageError(
                f"{where} has unknown key {unknown[0]!r}",
                hint=f"use one of {', '.join(sorted(_TARGET_KEYS))}",
            )
        engine = value.get("engine")
        if engine not in TARGET_ENGINES:
            raise UsageError(
                f"{where} has engine {engine!r}",
                hint=f"set engine to one of {', '.join(TARGET_ENGINES)}",
            )
        foreign = sorted(set(value) - _ENGINE_KEYS[engine] - {"engine"})
        if foreign:
            raise UsageError(
                f"{where} has key {foreign[0]!r}, which a {engine} target does not use",
                hint=f"a {engine} target takes {', '.join(sorted(_ENGINE_KEYS[engine]))}",
            )
        if engine == "kubernetes":
            targets[name] = TargetConfig(
                name=name, engine=engine, kubernetes=parse_table(value, where)
            )
            continue
        data = value.get("data", {})
        if not isinstance(data, dict) or any(
            not isinstance(k, str) or not isinstance(v, str) or not v.startswith("/")
            for k, v in data.items()
        ):
            raise UsageError(
                f"data in {where} must map recorded data paths to absolute paths",
                hint='for example data = {"data/train.csv" = "/mnt/shared/train.csv"}',
            )
        options = value.get("options", [])
        texts = {k: value.get(k, "") for k in ("docker-host", "context", "partition", "runtime")}
        texts["registry"] = value.get("registry", "")
        if not isinstance(options, list) or any(not isinstance(o, str) for o in options):
            raise UsageError(f"options in {where} must be a list of strings", hint="fix it")
        for key, text in sorted(texts.items()):
            if not isinstance(text, str):
                raise UsageError(f"{key} in {where} must be a string", hint="fix the value")
        if texts["runtime"] and texts["runtime"] not in SLURM_RUNTIMES:
            raise UsageError(
                f"runtime in {where} is {texts['runtime']!r}",
                hint=f"set it to one of {', '.join(SLURM_RUNTIMES)}",
            )
        targets[name] = TargetConfig(
            name=name,
            engine=engine,
            docker_host=texts["docker-host"],
            context=texts["context"],
            partition=texts["partition"],
            runtime=texts["runtime"],
            registry=texts["registry"],
            data=dict(sorted(data.items())),
            options=tuple(options),
        )
    return targets


def _check_drift_pattern(pattern: str, origin: str) -> None:
    """Refuse a [tool.envsnap.drift] key that is neither a category (or a glob over categories)
    nor a field pattern under a manifest section: a typo must not silently override nothing."""
    import dataclasses
    import fnmatch

    from envsnap.manifest import Manifest

    if any(fnmatch.fnmatchcase(category, pattern) for category in CATEGORY_ORDER):
        return
    head = pattern.split(".", 1)[0]
    if any(fnmatch.fnmatchcase(f.name, head) for f in dataclasses.fields(Manifest)):
        return
    raise UsageError(
        f"[tool.envsnap.drift] in {origin} has {pattern!r}, which is neither a drift category "
        "nor a field pattern",
        hint=f"categories are {', '.join(CATEGORY_ORDER)}; field patterns start with a manifest "
        "section, as in host.kernel or python.packages.pip",
    )


def _tolerance(value: Any, origin: str) -> MetricTolerance:
    if not isinstance(value, dict) or set(value) - {"rtol", "atol"}:
        raise UsageError(f"{origin} must hold only rtol and atol", hint="fix the table")
    for key in ("rtol", "atol"):
        number = value.get(key, 0.0)
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise UsageError(f"{key} in {origin} must be a number >= 0", hint="fix the value")
    return MetricTolerance(rtol=float(value.get("rtol", 0.0)), atol=float(value.get("atol", 0.0)))


_TYPE_NAMES = {int: "an integer", str: "a string", list: "a list of strings"}


def _typed(table: Mapping[str, Any], key: str, tp: type, origin: str, default: Any = None) -> Any:
    value = table.get(key, default)
    if not isinstance(value, tp) or (isinstance(value, bool) and tp is int):
        raise UsageError(
            f"{key} in [tool.envsnap] of {origin} must be {_TYPE_NAMES[tp]}", hint="fix the value"
        )
    return value
