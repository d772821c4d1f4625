"""The [python] section: the interpreter an experiment runs in and every distribution installed in
it, read straight from the site directories (no pip, no importlib.metadata, no subprocess) so
capture stays fast; and the package indexes pip would use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from envsnap.capturing.probes.distributions import (
    FoundDistribution,
    conda_names,
    describe_distribution,
    find_distributions,
    read_small,
)
from envsnap.capturing.probes.interpreter import (
    PythonTarget,
    env_kind,
    running_target,
    unique_dirs,
)
from envsnap.capturing.redact import clean_url
from envsnap.manifest import Model, Package, Python, Tool, model

DEFAULT_INDEX_URLS = frozenset(
    {
        "https://pypi.org/simple",
        "https://pypi.python.org/simple",
    }
)

# Distributions published on the PyTorch index with a local label (+cu121, +cpu, +rocm6.0).
PYTORCH_FAMILY = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "torchtext",
        "torchdata",
        "torchrec",
        "torchao",
        "triton",
        "pytorch-triton",
        "pytorch-triton-rocm",
        "pytorch-triton-xpu",
        "fbgemm-gpu",
        "xformers",
    }
)
PYTORCH_INDEX = "https://download.pytorch.org/whl"

TOOL_NAME = "envsnap"


# --- index configuration --------------------------------------------------------------------


@model
class IndexConfig(Model):
    """The package indexes pip or uv would install from, credentials already stripped."""

    index_url: str = ""  # "" when it is the default PyPI
    extra_index_urls: tuple[str, ...] = ()


def default_pip_config_files(env: Mapping[str, str], prefix: Path) -> list[Path]:
    """pip's configuration files, lowest precedence first, as pip itself orders them."""
    from envsnap.pipconf import pip_config_files

    return pip_config_files(env, prefix)


def read_index_config(env: Mapping[str, str], config_files: Sequence[Path]) -> IndexConfig:
    """Index URLs from pip config files (later files win) and then PIP_/UV_ variables."""
    index_url = ""
    extras: list[str] = []
    for path in config_files:
        values = _read_pip_config(path)
        if "index-url" in values:
            index_url = values["index-url"]
        if "extra-index-url" in values:
            extras = values["extra-index-url"].split()
    if env.get("PIP_INDEX_URL", "").strip():
        index_url = env["PIP_INDEX_URL"].strip()
    elif env.get("UV_INDEX_URL", "").strip():
        index_url = env["UV_INDEX_URL"].strip()
    if "PIP_EXTRA_INDEX_URL" in env:
        extras = env["PIP_EXTRA_INDEX_URL"].split()
    extras += env.get("UV_EXTRA_INDEX_URL", "").split()
    index_url = clean_url(index_url)
    if index_url.rstrip("/") in DEFAULT_INDEX_URLS:
        index_url = ""
    cleaned: list[str] = []
    for extra in extras:
        url = clean_url(extra)
        if url not in cleaned:
            cleaned.append(url)
    return IndexConfig(index_url=index_url, extra_index_urls=tuple(cleaned))


def _read_pip_config(path: Path) -> dict[str, str]:
    """``index-url``/``extra-index-url`` from one pip config; ``[install]`` beats ``[global]``."""
    text = read_small(path)
    # Neither key can be in a file without "index" in it (keys are compared lowercased): skip
    # importing configparser for the common pip.conf that sets only a certificate or timeout.
    if text is None or "index" not in text.lower():
        return {}
    import configparser

    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        return {}
    out: dict[str, str] = {}
    for section in ("global", "install"):
        if not parser.has_section(section):
            continue
        for key, value in parser.items(section):
            normalised = key.lower().replace("_", "-")
            if normalised in ("index-url", "extra-index-url"):
                out[normalised] = value.strip()
    return out


def _with_local_label_index(package: Package, config: IndexConfig) -> Package:
    """Name the index that serves a ``+label`` build, or say that none was recorded."""
    import dataclasses

    if package.source != "index" or "+" not in package.version:
        return package
    label = package.version.split("+", 1)[1]
    candidates = [*config.extra_index_urls, *([config.index_url] if config.index_url else [])]
    matching = [url for url in candidates if label in url]
    if matching or config.extra_index_urls:
        chosen = matching[0] if matching else config.extra_index_urls[0]
        return dataclasses.replace(package, index_url=chosen)
    if package.name in PYTORCH_FAMILY:
        return dataclasses.replace(package, index_url=f"{PYTORCH_INDEX}/{label}")
    if config.index_url:
        return dataclasses.replace(package, index_url=config.index_url)
    return dataclasses.replace(
        package,
        reinstallable=False,
        reason=f"version {package.version} has a local label and no index serving it was recorded",
    )


# --- the section ---------------------------------------------------------------------------


def capture_python(
    target: PythonTarget,
    *,
    env: Mapping[str, str],
    pip_config_files: Sequence[Path] | None = None,
    repo_root: Path | None = None,
    installed: Mapping[str, FoundDistribution] | None = None,
) -> Python:
    """The [python] section: interpreter, environment kind, indexes and every distribution.

    ``installed`` is ``find_distributions(target.site_dirs)`` when the caller already has it.
    """
    kind = env_kind(target.prefix)
    from_conda = conda_names(target.prefix) if kind == "conda" else frozenset()
    files = (
        pip_config_files
        if pip_config_files is not None
        else default_pip_config_files(env, target.prefix)
    )
    config = read_index_config(env, files)
    packages = [
        _with_local_label_index(describe_distribution(dist, repo_root, from_conda), config)
        for key, dist in (
            installed if installed is not None else find_distributions(target.site_dirs)
        ).items()
        if key != TOOL_NAME
    ]
    packages.sort(key=lambda p: (p.name, p.version))
    return Python(
        implementation=target.implementation,
        version=target.version,
        executable=target.executable,
        prefix=str(target.prefix),
        env_kind=kind,
        index_url=config.index_url,
        extra_index_urls=config.extra_index_urls,
        packages=tuple(packages),
    )


def capture_tool(
    target: PythonTarget, *, installed: Mapping[str, FoundDistribution] | None = None
) -> Tool:
    """The envsnap writing the manifest: the running interpreter's install, else the target's.

    ``installed`` is ``find_distributions(target.site_dirs)`` when the caller already has it:
    when envsnap runs from the target itself, as it usually does, nothing is scanned twice.
    """
    site_dirs = unique_dirs((*running_target().site_dirs, *target.site_dirs))
    if installed is not None and site_dirs == target.site_dirs:
        dist = installed.get(TOOL_NAME)
    else:
        dist = find_distributions(site_dirs).get(TOOL_NAME)
    if dist is None:
        from envsnap.version import __version__

        return Tool(version=__version__, source="local")
    package = describe_distribution(dist, None, frozenset())
    source = package.source if package.source in ("editable", "local") else "index"
    return Tool(version=package.version, source=source)
