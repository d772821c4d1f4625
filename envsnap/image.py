"""From a manifest to an image definition: the base image choice, the Dockerfile (rendered purely
from templates/ and Dockerfile.base) and a deterministic build context.

No manifest value reaches the Dockerfile as text: package names and versions go to the hash-locked
requirements file (validated by lock.py), and the few values the Dockerfile holds (base reference,
labels, the Python command) are checked against strict patterns first.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from envsnap.errors import UsageError
from envsnap.manifest import Manifest

IMAGE_REPOSITORY = "envsnap/env"
# Where the project's code lives in the image: its editable packages point there, and a rerun
# mounts its checkout of the recorded commit at the same place.
CODE_DIR = "/work"
CONTEXT_MTIME = 315532800  # 1980-01-01: fixed times keep the build context and its cache stable

# repository[:tag][@sha256:digest], as docker accepts them; nothing that could end a Dockerfile
# line or start an option.
_REFERENCE = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_DIGEST_REFERENCE = re.compile(r"@sha256:[0-9a-f]{64}$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._:@/+=-]{0,256}$")
_PYTHON_COMMAND = re.compile(r"^(?:/[A-Za-z0-9._/-]+|python3(?:\.\d+)?)$")
_WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.+!]+-py3-none-any\.whl$")
# A path inside the repository: "." or segments that do not start with a dot (so no "..").
_PROJECT_PATH = re.compile(
    r"^(?:\.|[A-Za-z0-9_][A-Za-z0-9_.+-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*)$"
)

NVIDIA_CUDA_IMAGE = "nvidia/cuda"


@dataclass(frozen=True, kw_only=True)
class BaseChoice:
    """The base image chosen for a manifest and why."""

    reference: str
    reason: str


def choose_base(manifest: Manifest, *, cli_base: str = "", config_base: str = "") -> BaseChoice:
    """--base, then [tool.envsnap] base-image, then the image the run was captured in (when its
    digest is recorded), then a rule from the manifest."""
    if cli_base:
        return BaseChoice(reference=check_reference(cli_base, "--base"), reason="--base")
    if config_base:
        return BaseChoice(
            reference=check_reference(config_base, "base-image in [tool.envsnap]"),
            reason="[tool.envsnap] base-image",
        )
    container = manifest.container
    if container.inside and container.image_digest:
        repository = container.image.split("@")[0].rsplit(":", 1)[0] if container.image else ""
        if repository:
            reference = f"{repository}@{container.image_digest}"
            return BaseChoice(
                reference=check_reference(reference, "the recorded container image"),
                reason="the image the run was captured in",
            )
    return BaseChoice(reference=rule_base(manifest), reason="rule from the manifest")


def rule_base(manifest: Manifest) -> str:
    """An nvidia/cuda runtime image for CUDA runs, else python:<version>-slim-<codename>."""
    codename = manifest.host.os_codename or "bookworm"
    cuda = manifest.cuda.runtime_version
    if cuda:
        parts = [*cuda.split("."), "0", "0"][:3]
        os_tag = _ubuntu_tag(manifest) or "ubuntu22.04"
        return f"{NVIDIA_CUDA_IMAGE}:{'.'.join(parts)}-cudnn-runtime-{os_tag}"
    version = manifest.python.version or "3"
    if manifest.host.os_id not in ("debian", ""):
        codename = "bookworm"
    return f"python:{version}-slim-{codename}"


def _ubuntu_tag(manifest: Manifest) -> str:
    if manifest.host.os_id == "ubuntu" and re.match(r"^\d+\.\d+$", manifest.host.os_version):
        return f"ubuntu{manifest.host.os_version}"
    return ""


def check_reference(reference: str, origin: str) -> str:
    """An image reference safe to put in a Dockerfile, or a UsageError."""
    if not _REFERENCE.match(reference):
        raise UsageError(
            f"{origin} {reference!r} is not a valid image reference",
            hint="use repository[:tag][@sha256:digest], for example python:3.11.7-slim-bookworm",
        )
    return reference


def is_pinned(reference: str) -> bool:
    """Whether a reference names its image by digest."""
    return bool(_DIGEST_REFERENCE.search(reference))


def image_tag(manifest: Manifest) -> str:
    """The local tag of the image for an environment: one tag per env_id."""
    return f"{IMAGE_REPOSITORY}:{manifest.env_id.removeprefix('sha256:')[:20]}"


@dataclass(frozen=True, kw_only=True)
class ImagePlan:
    """Everything the Dockerfile needs, already validated."""

    base: str
    python: str = "python3"
    image_ref: str
    tool_wheel: str
    has_vcs: bool = False
    editables: tuple[str, ...] = ()  # the project's own editable packages, relative paths
    labels: Mapping[str, str] = field(default_factory=dict)


def plan_image(
    manifest: Manifest,
    *,
    base: str,
    tool_wheel: str,
    has_vcs: bool,
    envsnap_version: str,
    python: str = "python3",
    editables: tuple[str, ...] = (),
) -> ImagePlan:
    """The validated inputs of the Dockerfile for a manifest."""
    if not is_pinned(base):
        raise UsageError(
            f"the base image {base!r} is not pinned by digest", hint="resolve it first"
        )
    check_reference(base, "the base image")
    if not _PYTHON_COMMAND.match(python):
        raise UsageError(f"{python!r} is not a usable Python command", hint="use python3")
    if not _WHEEL_NAME.match(tool_wheel):
        raise UsageError(f"{tool_wheel!r} is not a pure-Python wheel file name", hint="rebuild it")
    labels = {
        "org.opencontainers.image.base.name": base,
        "dev.envsnap.run-id": manifest.run_id,
        "dev.envsnap.env-id": manifest.env_id,
        "dev.envsnap.manifest-digest": manifest.digest,
        "dev.envsnap.version": envsnap_version,
    }
    for key, value in labels.items():
        if not _LABEL_VALUE.match(value):
            raise UsageError(
                f"the label {key} would get the unsafe value {value!r}",
                hint="the manifest may have been edited; capture the run again",
            )
    for path in editables:
        if not _PROJECT_PATH.match(path):
            raise UsageError(
                f"the editable package path {path!r} is not a plain path inside the repository",
                hint="the manifest may have been edited; capture the run again",
            )
    return ImagePlan(
        base=base,
        python=python,
        editables=tuple(sorted(set(editables))),
        image_ref=image_tag(manifest),
        tool_wheel=tool_wheel,
        has_vcs=has_vcs,
        labels=labels,
    )


def render_dockerfile(plan: ImagePlan) -> str:
    """The Dockerfile for a plan: Dockerfile.base, then the Python fragment. Pure."""
    templates = resources.files("envsnap.templates")
    base = templates.joinpath("Dockerfile.base").read_text(encoding="utf-8")
    fragment = templates.joinpath("python.Dockerfile").read_text(encoding="utf-8")
    labels = " \\\n      ".join(f'{key}="{value}"' for key, value in sorted(plan.labels.items()))
    body = string.Template(fragment).substitute(
        python=plan.python,
        vcs_copy="requirements.vcs.txt " if plan.has_vcs else "",
        vcs_install=(
            " \\\n && /opt/venv/bin/python -m pip install --no-deps"
            " -r /envsnap/requirements.vcs.txt"
            if plan.has_vcs
            else ""
        ),
        editable_step=_editable_step(plan.editables),
        tool_wheel=plan.tool_wheel,
        image_ref=plan.image_ref,
        labels=labels,
    )
    return f"{base}\n{body}"


def _editable_step(paths: tuple[str, ...]) -> str:
    """The project's own editable packages, installed from its code at CODE_DIR (a rerun mounts
    the recorded commit there). Without build isolation first, so the recorded build backend is
    used; with it when the venv lacks one. Paths were validated by plan_image."""
    if not paths:
        return ""
    targets = " ".join(f'"{CODE_DIR}/{p}"' if p != "." else f'"{CODE_DIR}"' for p in paths)
    return (
        "# The project's own packages, installed editable from its code as captured; a rerun\n"
        f"# mounts its checkout of the recorded commit over {CODE_DIR}, so they import that code.\n"
        f"COPY project/ {CODE_DIR}/\n"
        "RUN --mount=type=secret,id=pip-ca --mount=type=secret,id=pip-conf \\\n"
        "    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \\\n"
        " && if [ -s /run/secrets/pip-conf ]; then "
        "export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi \\\n"
        f" && for project in {targets}; do \\\n"
        "        /opt/venv/bin/python -m pip install --no-deps --no-build-isolation "
        '-e "$project" \\\n'
        '     || /opt/venv/bin/python -m pip install --no-deps -e "$project" || exit 1; \\\n'
        "    done\n"
    )


def write_context(directory: Path, files: Mapping[str, bytes]) -> str:
    """Write the build context with fixed modes and times; return a hash of its content.

    The same files give the same context byte for byte, so docker's layer cache holds.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"context file name {name!r} escapes the context")  # a bug, not input
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
        path.chmod(0o644)
        os.utime(path, (CONTEXT_MTIME, CONTEXT_MTIME))
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    for folder in sorted({p for p in directory.rglob("*") if p.is_dir()}, reverse=True):
        folder.chmod(0o755)
        os.utime(folder, (CONTEXT_MTIME, CONTEXT_MTIME))
    return "sha256:" + digest.hexdigest()
