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
from pathlib import Path

from envsnap.errors import UsageError
from envsnap.imageref import is_reference, parse_reference
from envsnap.manifest import Manifest
from envsnap.template import read_template

IMAGE_REPOSITORY = "envsnap/env"
# envsnap's own environment on a base image: one image per base and envsnap build (its key is a
# hash of everything that goes into it), which every environment on that base starts from.
TOOL_REPOSITORY = "envsnap/tool"
# Where the project's code lives in the image: its editable packages point there, and a rerun
# mounts its checkout of the recorded commit at the same place.
CODE_DIR = "/work"
CONTEXT_MTIME = 315532800  # 1980-01-01: fixed times keep the build context and its cache stable

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._:@/+=-]{0,256}$")
_PYTHON_COMMAND = re.compile(r"^(?:/[A-Za-z0-9._/-]+|python3(?:\.\d+)?)$")
_WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.+!]+-py3-none-any\.whl$")
# A path inside the repository: "." or segments that do not start with a dot (so no "..").
_PROJECT_PATH = re.compile(
    r"^(?:\.|[A-Za-z0-9_][A-Za-z0-9_.+-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*)$"
)

NVIDIA_CUDA_IMAGE = "nvidia/cuda"


# nvidia/cuda runtime images NVIDIA publishes, by CUDA major.minor: the last release update and
# the Ubuntu versions it is built for (newest last). From docker hub's nvidia/cuda tag list.
_NVIDIA_CUDA_RELEASES: dict[str, tuple[int, tuple[str, ...]]] = {
    "11.8": (0, ("20.04", "22.04")),
    "12.0": (1, ("20.04", "22.04")),
    "12.1": (1, ("20.04", "22.04")),
    "12.2": (2, ("20.04", "22.04")),
    "12.3": (2, ("20.04", "22.04")),
    "12.4": (1, ("20.04", "22.04")),
    "12.5": (1, ("20.04", "22.04", "24.04")),
    "12.6": (3, ("20.04", "22.04", "24.04")),
    "12.8": (1, ("20.04", "22.04", "24.04")),
    "12.9": (1, ("20.04", "22.04", "24.04")),
    "13.0": (2, ("22.04", "24.04")),
}
# Debian releases python:<version>-slim-<codename> images are published for.
_PYTHON_IMAGE_CODENAMES = ("bullseye", "bookworm", "trixie")
_DEFAULT_CODENAME = "bookworm"


@dataclass(frozen=True, kw_only=True)
class BaseChoice:
    """The base image chosen for a manifest and why; ``adds_python`` when the base has no Python
    of its own (an nvidia/cuda runtime image) and the build installs the OS's python3 first."""

    reference: str
    reason: str
    adds_python: bool = False


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
    if container.inside and container.image_digest and is_reference(container.image):
        recorded = parse_reference(container.image, "the recorded container image")
        return BaseChoice(
            reference=check_reference(
                str(recorded.with_digest(container.image_digest)), "the recorded container image"
            ),
            reason="the image the run was captured in",
        )
    return rule_base(manifest)


def cuda_from_system(manifest: Manifest) -> bool:
    """Whether the run's CUDA runtime came from a system toolkit (a path such as
    /usr/local/cuda/version.json), not from wheels or a framework's own bundled copy."""
    return bool(manifest.cuda.runtime_version) and manifest.cuda.runtime_source.startswith("/")


def rule_base(manifest: Manifest) -> BaseChoice:
    """The base a manifest asks for when nobody named one.

    CUDA from wheels (torch's nvidia-* wheels, say) needs only the host's driver: the run's
    Python on Debian, ``python:<version>-slim-<codename>``. CUDA from a system toolkit needs
    NVIDIA's runtime image of that release, which has no Python: the build adds the OS's python3.
    """
    if cuda_from_system(manifest):
        return _nvidia_cuda_base(manifest)
    version = manifest.python.version or "3"
    codename = manifest.host.os_codename
    if manifest.host.os_id != "debian" or codename not in _PYTHON_IMAGE_CODENAMES:
        codename = _DEFAULT_CODENAME
    why = "CUDA from wheels needs only the host's driver: " if manifest.cuda.runtime_version else ""
    return BaseChoice(
        reference=f"python:{version}-slim-{codename}",
        reason=f"rule: {why}the run's Python {version} on Debian {codename}",
    )


def _nvidia_cuda_base(manifest: Manifest) -> BaseChoice:
    recorded = manifest.cuda.runtime_version
    parts = recorded.split(".")
    minor = ".".join(parts[:2])
    if minor not in _NVIDIA_CUDA_RELEASES:
        known = ", ".join(_NVIDIA_CUDA_RELEASES)
        raise UsageError(
            f"the run's CUDA toolkit {recorded} has no nvidia/cuda runtime image envsnap knows "
            f"(it knows {known})",
            hint="name a base image with --base or [tool.envsnap] base-image",
        )
    last_update, ubuntus = _NVIDIA_CUDA_RELEASES[minor]
    # version.json names the release (12.4.1); other sources name a component build (12.4.131),
    # which is not a tag: then the release's last update is taken.
    update = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    release = f"{minor}.{update if update <= last_update else last_update}"
    ubuntu = ubuntus[-1]
    if manifest.host.os_id == "ubuntu" and manifest.host.os_version in ubuntus:
        ubuntu = manifest.host.os_version
    major, minor_number = (int(p) for p in minor.split("."))
    if not manifest.cuda.cudnn_version:
        flavour = "runtime"
    elif (major, minor_number) >= (12, 4):
        flavour = "cudnn-runtime"
    else:
        flavour = f"cudnn{manifest.cuda.cudnn_version.split('.')[0]}-runtime"
    return BaseChoice(
        reference=f"{NVIDIA_CUDA_IMAGE}:{release}-{flavour}-ubuntu{ubuntu}",
        reason=f"rule: CUDA {recorded} from the system toolkit, NVIDIA's runtime image of that "
        f"release on Ubuntu {ubuntu}, with the OS's python3 added",
        adds_python=True,
    )


def check_reference(reference: str, origin: str) -> str:
    """An image reference safe to put in a Dockerfile (it parses by the distribution grammar),
    or a UsageError naming ``origin``."""
    parse_reference(reference, origin)
    return reference


def is_pinned(reference: str) -> bool:
    """Whether a reference names its image by digest."""
    return is_reference(reference) and parse_reference(reference).pinned


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
    adds_python: bool = False  # the base has no Python: the OS's python3 is installed first
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
    adds_python: bool = False,
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
        adds_python=adds_python,
        labels=labels,
    )


def render_tool_dockerfile(plan: ImagePlan) -> str:
    """The Dockerfile of envsnap's own environment on the plan's base: Dockerfile.base (with
    the OS's python3 when the base has none), then the tool fragment. Pure."""
    base = read_template("Dockerfile.base")
    fragment = read_template("tool.Dockerfile")
    body = string.Template(fragment).substitute(python=plan.python, tool_wheel=plan.tool_wheel)
    return f"{base}{_OS_PYTHON_STEP if plan.adds_python else ''}\n{body}"


def tool_tag(base: str, context_digest: str) -> str:
    """The tag of envsnap's own environment built on ``base`` from a context whose content hash
    (``write_context``) is ``context_digest``: equal tags, equal images."""
    key = hashlib.sha256(f"{base}\n{context_digest}".encode()).hexdigest()
    return f"{TOOL_REPOSITORY}:{key[:20]}"


def render_dockerfile(plan: ImagePlan) -> str:
    """The Dockerfile of the environment: the experiment's packages on the tool image (build
    argument ENVSNAP_TOOL, see ``render_tool_dockerfile``). Pure."""
    fragment = read_template("python.Dockerfile")
    labels = " \\\n      ".join(f'{key}="{value}"' for key, value in sorted(plan.labels.items()))
    return string.Template(fragment).substitute(
        python=plan.python,
        vcs_copy="requirements.vcs.txt " if plan.has_vcs else "",
        vcs_install=(
            " \\\n && /opt/venv/bin/python -m pip install --no-deps"
            " -r /envsnap/requirements.vcs.txt"
            if plan.has_vcs
            else ""
        ),
        editable_step=_editable_step(plan.editables),
        image_ref=plan.image_ref,
        labels=labels,
    )


# For a base without Python (NVIDIA's CUDA runtime images): the OS's own python3 and venv.
_OS_PYTHON_STEP = (
    "\n# The base has no Python of its own (an nvidia/cuda runtime image): the OS's python3.\n"
    "RUN apt-get update \\\n"
    " && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends"
    " python3 python3-venv ca-certificates \\\n"
    " && rm -rf /var/lib/apt/lists/*\n"
)


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
