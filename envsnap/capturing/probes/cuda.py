"""The CUDA runtime, cuDNN and NCCL the project's frameworks would load, read from package
versions, framework build files, library names and the system toolkit, never by importing a
framework."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from envsnap.manifest import Cuda, Model, Package, model

DEFAULT_SYSTEM_ROOTS: tuple[Path, ...] = (Path("/usr/local/cuda"), Path("/opt/cuda"), Path("/usr"))

# Patterns are kept as text and compiled by ``re`` on first use (and cached there): an environment
# without CUDA needs few of them, and compiling all would sit on capture's start-up path.
# NVIDIA's wheels: nvidia-cuda-runtime-cu12 (cu11, ...), and unsuffixed names from CUDA 13 on.
_WHEELS = {
    "runtime": r"^nvidia-cuda-runtime(?:-cu(\d+))?$",
    "cudnn": r"^nvidia-cudnn(?:-cu(\d+))?$",
    "nccl": r"^nvidia-nccl(?:-cu(\d+))?$",
}
# Where each library sits inside site-packages/nvidia/<component>/lib.
_LIBRARIES = {
    "runtime": r"^libcudart\.so\.(\d+(?:\.\d+)*)$",
    "cudnn": r"^libcudnn\.so\.(\d+(?:\.\d+)*)$",
    "nccl": r"^libnccl\.so\.(\d+(?:\.\d+)*)$",
}
# Packages whose name says which CUDA major they were built for.
_CUDA_NAMED_PACKAGES = {
    "jax": r"^jax-cuda(\d+)-(?:plugin|pjrt)$",
    "cupy": r"^cupy-cuda(\d+)x?$",
}
# No name matching _WHEELS or _CUDA_NAMED_PACKAGES lacks one of these prefixes.
_CUDA_NAME_PREFIXES = ("nvidia-", "jax-cuda", "cupy-cuda")
_TORCH_CUDA = r"""(?m)^cuda\s*(?::[^=\n]*)?=\s*['"]([^'"]+)['"]"""
_TF_KEY = r"""['"]{key}['"]\s*:\s*['"]([^'"]*)['"]"""
_DEFINE = r"^#define\s+{name}\s+(\d+)"
_VERSION_TXT = r"CUDA Version\s+(\d+(?:\.\d+)*)"


@model
class _Reading(Model):
    version: str
    source: str


def capture_cuda(
    packages: Sequence[Package],
    site_dirs: Sequence[Path],
    *,
    env: Mapping[str, str],
    system_roots: Sequence[Path] = DEFAULT_SYSTEM_ROOTS,
) -> Cuda:
    """The [cuda] section; empty strings for whatever cannot be found. Never raises."""
    try:
        return _capture(packages, site_dirs, env, system_roots)
    except Exception:  # a probe must not stop capture; an empty section says "not found"
        return Cuda()


def _capture(
    packages: Sequence[Package],
    site_dirs: Sequence[Path],
    env: Mapping[str, str],
    system_roots: Sequence[Path],
) -> Cuda:
    frameworks: dict[str, str] = {}
    framework_readings: dict[str, _Reading] = {}
    # Most environments have no such package, and then no name pattern is ever compiled.
    cuda_packages = [p for p in packages if p.name.startswith(_CUDA_NAME_PREFIXES)]
    torch_text = _read_first(site_dirs, ("torch", "version.py"))
    if torch_text is not None:
        match = re.search(_TORCH_CUDA, torch_text)
        if match:
            frameworks["torch"] = match.group(1)
            framework_readings["runtime"] = _Reading(
                version=match.group(1), source="torch/version.py"
            )
    tf_text = _read_first(site_dirs, ("tensorflow", "python", "platform", "build_info.py"))
    if tf_text is not None:
        tf_source = "tensorflow/python/platform/build_info.py"
        cuda_version = _search(_TF_KEY.format(key="cuda_version"), tf_text)
        cudnn_version = _search(_TF_KEY.format(key="cudnn_version"), tf_text)
        if cuda_version:
            frameworks["tensorflow"] = cuda_version
            framework_readings.setdefault(
                "runtime", _Reading(version=cuda_version, source=tf_source)
            )
        if cudnn_version:
            framework_readings["cudnn"] = _Reading(version=cudnn_version, source=tf_source)
    for package in cuda_packages:
        for framework, pattern in _CUDA_NAMED_PACKAGES.items():
            match = re.match(pattern, package.name)
            if match:
                frameworks.setdefault(framework, match.group(1))

    wanted_major = next(iter(frameworks.values()), "").split(".")[0]
    readings: dict[str, _Reading] = {}
    for component in ("runtime", "cudnn", "nccl"):
        reading = (
            _from_wheels(component, cuda_packages, wanted_major)
            or framework_readings.get(component)
            or _from_library_names(component, site_dirs)
            or _from_system(component, _roots(env, system_roots))
        )
        if reading is not None:
            readings[component] = reading
    empty = _Reading(version="", source="")
    runtime = readings.get("runtime", empty)
    cudnn = readings.get("cudnn", empty)
    nccl = readings.get("nccl", empty)
    return Cuda(
        runtime_version=runtime.version,
        runtime_source=runtime.source,
        cudnn_version=cudnn.version,
        cudnn_source=cudnn.source,
        nccl_version=nccl.version,
        nccl_source=nccl.source,
        frameworks=frameworks,
    )


def _from_wheels(component: str, packages: Sequence[Package], wanted_major: str) -> _Reading | None:
    """The NVIDIA wheel for ``component``; with several, the one for the frameworks' CUDA major."""
    candidates: list[tuple[str, Package]] = []
    for package in packages:
        match = re.match(_WHEELS[component], package.name)
        if match and package.version:
            candidates.append((match.group(1) or package.version.split(".")[0], package))
    if not candidates:
        return None
    preferred = [c for c in candidates if c[0] == wanted_major] or candidates
    _, chosen = max(preferred, key=lambda c: _version_key(c[1].version))
    return _Reading(version=chosen.version, source=f"wheel {chosen.name}")


def _from_library_names(component: str, site_dirs: Sequence[Path]) -> _Reading | None:
    """``site-packages/nvidia/*/lib/libcudart.so.12`` and the like: the soname's version."""
    pattern = _LIBRARIES[component]
    for site_dir in site_dirs:
        nvidia = site_dir / "nvidia"
        try:
            packages = sorted(os.listdir(nvidia))
        except OSError:
            continue
        found: list[tuple[str, str]] = []
        for package in packages:
            try:
                names = os.listdir(nvidia / package / "lib")
            except OSError:
                continue
            for name in names:
                match = re.match(pattern, name)
                if match:
                    found.append((match.group(1), f"nvidia/{package}/lib/{name}"))
        if found:
            version, source = max(found, key=lambda f: _version_key(f[0]))
            return _Reading(version=version, source=source)
    return None


def _roots(env: Mapping[str, str], system_roots: Sequence[Path]) -> list[Path]:
    roots = [Path(env[v]) for v in ("CUDA_HOME", "CUDA_PATH") if env.get(v)]
    return [*roots, *system_roots]


def _from_system(component: str, roots: Iterable[Path]) -> _Reading | None:
    """A toolkit's version.json/version.txt, or the cuDNN/NCCL version headers under a root."""
    for root in roots:
        if component == "runtime":
            reading = _toolkit_version(root)
        elif component == "cudnn":
            reading = _header_version(
                root,
                ("cudnn_version.h", "cudnn.h"),
                ("CUDNN_MAJOR", "CUDNN_MINOR", "CUDNN_PATCHLEVEL"),
            )
        else:
            reading = _header_version(root, ("nccl.h",), ("NCCL_MAJOR", "NCCL_MINOR", "NCCL_PATCH"))
        if reading is not None:
            return reading
    return None


def _toolkit_version(root: Path) -> _Reading | None:
    text = _read(root / "version.json")
    if text is not None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        cuda = data.get("cuda") if isinstance(data, dict) else None
        version = cuda.get("version") if isinstance(cuda, dict) else None
        if isinstance(version, str) and version:
            return _Reading(version=version, source=str(root / "version.json"))
    text = _read(root / "version.txt")
    if text is not None:
        match = re.search(_VERSION_TXT, text)
        if match:
            return _Reading(version=match.group(1), source=str(root / "version.txt"))
    return None


def _header_version(
    root: Path, headers: Sequence[str], names: tuple[str, str, str]
) -> _Reading | None:
    for header in headers:
        path = root / "include" / header
        text = _read(path)
        if text is None:
            continue
        parts: list[str] = []
        for name in names:
            part = _search(_DEFINE.format(name=name), text)
            if not part:
                break
            parts.append(part)
        if parts:
            return _Reading(version=".".join(parts), source=str(path))
    return None


def _read_first(site_dirs: Sequence[Path], relative: tuple[str, ...]) -> str | None:
    for site_dir in site_dirs:
        text = _read(site_dir.joinpath(*relative))
        if text is not None:
            return text
    return None


def _read(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _search(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1) if match else ""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0]))
