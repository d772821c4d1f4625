"""Shared test helpers: a realistic manifest factory."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from envsnap.manifest import (
    Command,
    Cuda,
    DataItem,
    Git,
    Gpu,
    Host,
    Manifest,
    Outputs,
    Package,
    Param,
    Python,
    Tool,
)


def sample_manifest(**changes: Any) -> Manifest:
    """A complete manifest as a capture on a small CPU machine would write it."""
    base = Manifest(
        run_id="20261122-163012-a1b2c3",
        created="2026-11-22T16:30:12.123456Z",
        name="lr-sweep-3",
        tool=Tool(version="0.1.0", source="editable"),
        command=Command(argv=("python", "train.py", "--lr", "0.1"), cwd="."),
        params=(
            Param(key="lr", value=0.1, source="cli"),
            Param(key="model.depth", value=4, source="file"),
        ),
        seeds={"global": 42},
        determinism={"PYTHONHASHSEED": "0"},
        outputs=Outputs(globs=("outputs/*.npy",), metrics="metrics.json"),
        host=Host(
            os_id="debian",
            os_version="12",
            os_codename="bookworm",
            os_name="Debian GNU/Linux 12 (bookworm)",
            kernel="6.1.0-18-amd64",
            arch="x86_64",
            libc="glibc 2.36",
            cpu_model="AMD EPYC 7B13",
            cpu_count=2,
            memory_bytes=25_000_000_000,
            hostname="trainer-1",
        ),
        gpu=Gpu(available=False, reason="no NVIDIA driver loaded"),
        cuda=Cuda(),
        python=Python(
            implementation="CPython",
            version="3.11.7",
            executable="/opt/venv/bin/python",
            prefix="/opt/venv",
            env_kind="venv",
            packages=(
                Package(name="numpy", version="2.1.3", installer="pip"),
                Package(name="scipy", version="1.14.1", installer="pip"),
            ),
        ),
        git=Git(present=True, commit="a" * 40, branch="main", dirty=False),
        data=(DataItem(path="data/train.csv", kind="file", sha256="b" * 64, bytes=1024),),
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def manifest() -> Manifest:
    """A complete sample manifest."""
    return sample_manifest()
