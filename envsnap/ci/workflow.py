"""``envsnap ci init``: the GitHub Actions workflow rendered from templates/github-workflow.yml."""

from __future__ import annotations

import json
import re
import string
import sys
from pathlib import Path

from envsnap.atomicfile import write_file
from envsnap.errors import UsageError
from envsnap.template import read_template

ACTION_REF = "envsnap/envsnap@v1"
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")
_SAFE_BRANCH = re.compile(r"^[A-Za-z0-9._/-]+$")


def render_workflow(
    *,
    manifest: str,
    fail_on: str,
    default_branch: str = "main",
    python_version: str = "",
    install_command: str = "",
    action_ref: str = ACTION_REF,
) -> str:
    """The workflow text; every value is checked or quoted so it stays one YAML scalar."""
    if not _SAFE_PATH.match(manifest) or manifest.startswith("/") or ".." in manifest.split("/"):
        raise UsageError(
            f"--manifest {manifest!r} is not a plain relative path",
            hint="use letters, digits, '.', '_', '-' and '/' only, relative to the repository",
        )
    if not _SAFE_BRANCH.match(default_branch):
        raise UsageError(f"branch name {default_branch!r} cannot go into a workflow", hint="")
    template = read_template("github-workflow.yml")
    return string.Template(template).substitute(
        manifest=manifest,
        fail_on=fail_on,
        default_branch=default_branch,
        python_version=python_version or f"{sys.version_info.major}.{sys.version_info.minor}",
        # JSON strings are valid YAML double-quoted scalars: nothing inside can escape them.
        install_command=json.dumps(install_command),
        action_ref=action_ref,
    )


def write_workflow(
    target: Path, *, manifest: str, fail_on: str, force: bool, install_command: str = ""
) -> Path:
    """Write the workflow file; refuse to replace an existing one unless ``force``."""
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="pass --force to overwrite it")
    text = render_workflow(manifest=manifest, fail_on=fail_on, install_command=install_command)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_file(target, text.encode("utf-8"))
    except OSError as exc:
        raise UsageError(
            f"{target} cannot be written ({exc.strerror or exc})", hint="check the directory"
        ) from None
    return target
