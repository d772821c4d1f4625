"""The [container] section: whether capture runs inside a container, which runtime, and the image,
read from marker files, /proc/1/cgroup and the environment; no subprocess."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from envsnap.manifest import Container

# Set by the images envsnap builds, as "ref@sha256:...", so a rerun inside one names its image.
IMAGE_VARIABLE = "ENVSNAP_IMAGE"

# Checked in order; "kubepods" first because a pod's cgroup path also names its runtime.
_CGROUP_MARKERS = (
    ("kubepods", "kubernetes"),
    ("libpod", "podman"),
    ("docker", "docker"),
    ("containerd", "containerd"),
    ("lxc", "lxc"),
)


def capture_container(env: Mapping[str, str], *, root: Path = Path("/")) -> Container:
    """The [container] section; ``Container()`` (outside) when no signal is found. Never raises."""
    podman = _read_containerenv(root / "run" / ".containerenv")
    runtime, detected_by = _detect_runtime(env, root, podman is not None)
    image, digest = _image(env, podman or {})
    if not runtime and env.get(IMAGE_VARIABLE):
        detected_by = IMAGE_VARIABLE
    return Container(
        inside=bool(detected_by),
        runtime=runtime,
        image=image,
        image_digest=digest,
        detected_by=detected_by,
    )


def split_image_reference(reference: str) -> tuple[str, str]:
    """Split ``ref@sha256:...`` into ``("ref", "sha256:...")``; no digest gives ``(ref, "")``."""
    reference = reference.strip()
    name, at, digest = reference.partition("@")
    if at and digest.startswith("sha256:"):
        return name, digest
    return reference, ""


def _detect_runtime(env: Mapping[str, str], root: Path, has_containerenv: bool) -> tuple[str, str]:
    if _exists(root / ".dockerenv"):
        return "docker", "/.dockerenv"
    if has_containerenv:
        return "podman", "/run/.containerenv"
    marker = env.get("container", "").strip()
    if marker:
        return marker, "container variable"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes", "KUBERNETES_SERVICE_HOST"
    cgroup = _read(root / "proc" / "1" / "cgroup")
    for needle, runtime in _CGROUP_MARKERS:
        if needle in cgroup:
            return runtime, "/proc/1/cgroup"
    return "", ""


def _image(env: Mapping[str, str], podman: Mapping[str, str]) -> tuple[str, str]:
    reference = env.get(IMAGE_VARIABLE, "").strip()
    if reference:
        return split_image_reference(reference)
    # Podman's imageid is the local image id, not a registry digest one could pull by, so only
    # a digest inside the image reference itself is recorded.
    return split_image_reference(podman.get("image", ""))


def _read_containerenv(path: Path) -> dict[str, str] | None:
    """The key="value" lines of podman's /run/.containerenv; None when the file is absent."""
    if not _exists(path):
        return None
    values: dict[str, str] = {}
    for line in _read(path).splitlines():
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip()] = value.strip().strip('"')
    return values


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
