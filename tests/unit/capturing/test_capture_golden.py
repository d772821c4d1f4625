"""Capture's output for a fixed environment, compared whole with a golden manifest: a venv of
fake but valid dist-info, egg-info and egg-link entries built in tmp_path (every source a
package can record), with the host-bound probes (host, container, GPU) and the system CUDA roots
pinned. Written before capture was made faster, so any change a speed-up makes to what is
recorded (a package dropped, a field read differently, a section assembled in another order)
fails here, down to env_id and digest.

To rewrite the golden file after an intended change of the manifest:
``ENVSNAP_UPDATE_GOLDEN=1 pytest tests/unit/capturing/test_capture_golden.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from envsnap.capturing.capture import CaptureContext, CaptureRequest, build_manifest
from envsnap.capturing.probes import container, cuda, gpu, system
from envsnap.capturing.probes import python as python_probe
from envsnap.capturing.probes.interpreter import target_for_prefix
from envsnap.config import Config
from envsnap.manifest import (
    Container,
    Gpu,
    GpuDevice,
    Host,
    Manifest,
    from_data,
    seal_text,
    to_data,
)

GOLDEN = Path(__file__).parents[2] / "data" / "capture" / "fixture-venv.manifest.toml"
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
RUN_ID = "20261201-093000-abcdef"
SITE = "lib/python3.11/site-packages"


def _dist_info(
    site: Path,
    stem: str,
    *,
    installer: str | None = "pip",
    tags: tuple[str, ...] = ("py3-none-any",),
    direct_url: Mapping[str, Any] | str | None = None,
    metadata: str | None = None,
) -> None:
    """One ``<stem>.dist-info`` directory as pip, uv or conda leave it."""
    directory = site / f"{stem}.dist-info"
    directory.mkdir(parents=True)
    name, _, version = stem.partition("-")
    (directory / "METADATA").write_text(
        metadata or f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nText.\n"
    )
    if installer is not None:
        (directory / "INSTALLER").write_text(f"{installer}\n")
    wheel = "Wheel-Version: 1.0\nGenerator: bdist_wheel\nRoot-Is-Purelib: true\n"
    (directory / "WHEEL").write_text(wheel + "".join(f"Tag: {t}\n" for t in tags))
    if direct_url is not None:
        text = direct_url if isinstance(direct_url, str) else json.dumps(direct_url)
        (directory / "direct_url.json").write_text(text)
    (directory / "RECORD").write_text(f"{name}/__init__.py,,\n")


def build_fixture_venv(root: Path) -> tuple[Path, Path]:
    """A venv prefix and a git-less project directory beside it; returns (prefix, project)."""
    prefix, project = root / "venv", root / "project"
    site = prefix / SITE
    site.mkdir(parents=True)
    (prefix / "bin").mkdir()
    (prefix / "bin" / "python").write_text("")
    (prefix / "pyvenv.cfg").write_text(
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.7\n"
    )
    (project / "src").mkdir(parents=True)
    (project / "data.csv").write_text("x,y\n1,2\n")
    linux = (
        "cp311-cp311-manylinux_2_17_x86_64",
        "cp311-cp311-manylinux2014_x86_64",
    )
    _dist_info(site, "numpy-2.1.0", tags=linux)
    _dist_info(site, "requests-2.32.3", installer="uv")
    _dist_info(site, "six-1.16.0", tags=("py2-none-any", "py3-none-any"))
    _dist_info(site, "Pillow-10.4.0", installer=None)
    _dist_info(site, "torch-2.5.1+cu121", tags=("cp311-cp311-linux_x86_64",))
    _dist_info(site, "scikit_learn-1.5.2+cpu", tags=linux)
    _dist_info(site, "nvidia_cudnn_cu12-9.1.0.70", tags=("py3-none-manylinux2014_x86_64",))
    _dist_info(site, "nvidia_nccl_cu12-2.21.5", tags=("py3-none-manylinux2014_x86_64",))
    _dist_info(site, "nvidia_cuda_runtime_cu12-12.1.105")
    _dist_info(site, "envsnap-0.1.0")
    _dist_info(site, "condapkg-1.2.0", installer="conda")
    _dist_info(
        site,
        "vcslib-0.3.0",
        direct_url={
            "url": "https://user:s3cret@git.example.invalid/team/vcslib.git",
            "vcs_info": {"vcs": "git", "commit_id": "a" * 40, "requested_revision": "v0.3"},
        },
    )
    _dist_info(
        site,
        "archived-1.0",
        direct_url={
            "url": "https://files.example.invalid/archived-1.0.tar.gz",
            "archive_info": {"hashes": {"sha256": "b" * 64}},
        },
    )
    _dist_info(
        site,
        "localarchive-2.0",
        direct_url={"url": f"file://{root}/wheels/localarchive-2.0.whl", "archive_info": {}},
    )
    _dist_info(
        site,
        "ownproject-0.0.1",
        direct_url={"url": f"file://{project}/src", "dir_info": {"editable": True}},
    )
    _dist_info(
        site,
        "elsewhere-0.2",
        direct_url={"url": f"file://{root}/elsewhere", "dir_info": {"editable": True}},
    )
    _dist_info(site, "broken-1.0", direct_url="{not json")
    _dist_info(
        site,
        "odd.name.dist",
        metadata="Metadata-Version: 2.1\nName: Odd.Name\nVersion: 5.0\n",
    )
    # pip also leaves a dist-info beside an egg-info of the same project: the dist-info wins.
    _dist_info(site, "twice-3.0")
    egg_twice = site / "twice-3.0-py3.11.egg-info"
    egg_twice.mkdir()
    (egg_twice / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: twice\nVersion: 3.0\n")
    egg = site / "legacy_pkg-1.0-py3.11.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: legacy-pkg\nVersion: 1.0\n")
    (site / "flat-0.9.egg-info").write_text("Metadata-Version: 1.1\nName: flat\nVersion: 0.9\n")
    develop = root / "develop"
    (develop / "devpkg.egg-info").mkdir(parents=True)
    (develop / "devpkg.egg-info" / "PKG-INFO").write_text(
        "Metadata-Version: 1.1\nName: devpkg\nVersion: 0.1.dev0\n"
    )
    (site / "devpkg.egg-link").write_text(f"{develop}\n.\n")
    # Import packages and other entries capture must pass over.
    (site / "numpy").mkdir()
    (site / "six.py").write_text("")
    (site / "distutils-precedence.pth").write_text("")
    (site / "not-a-dist.dist-info").write_text("a file, not a directory")
    return prefix, project


def capture_fixture(root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sealed manifest text that capture records for the fixture venv, with this machine's
    paths replaced by ``<tmp>``."""
    prefix, project = build_fixture_venv(root)
    host = Host(
        os_id="debian",
        os_version="12",
        os_name="Debian GNU/Linux 12 (bookworm)",
        kernel="6.1.0",
        arch="x86_64",
        libc="glibc 2.36",
        cpu_model="Fixture CPU",
        cpu_count=8,
        memory_bytes=16 * 1024**3,
        hostname="fixture-host",
    )
    device = GpuDevice(
        index=0, name="NVIDIA H200", uuid="GPU-0", memory_bytes=143771 * 1024**2,
        compute_capability="9.0",
    )  # fmt: skip
    fixed_gpu = Gpu(
        available=True, driver_version="580.159.04", cuda_driver_version="13.0", devices=(device,)
    )
    real_capture_cuda = cuda.capture_cuda
    monkeypatch.setattr(system, "capture_host", lambda **_: host)
    monkeypatch.setattr(container, "capture_container", lambda *_, **__: Container())
    monkeypatch.setattr(gpu, "capture_gpu", lambda **_: fixed_gpu)
    monkeypatch.setattr(
        cuda,
        "capture_cuda",
        lambda packages, site_dirs, *, env: real_capture_cuda(
            packages, site_dirs, env=env, system_roots=(root / "no-system-cuda",)
        ),
    )
    # envsnap "runs from" the fixture venv, so [tool] does not depend on how it is installed here.
    monkeypatch.setattr(python_probe, "running_target", lambda: target_for_prefix(prefix))
    env = {
        "VIRTUAL_ENV": str(prefix),
        "HOME": str(root / "home"),
        "XDG_CONFIG_DIRS": str(root / "xdg"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "https://pypi.org/simple",
        "PIP_EXTRA_INDEX_URL": "https://ci:token@download.pytorch.org/whl/cu121",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "4",
        "NCCL_API_TOKEN": "hidden",
        "UNRELATED": "left out",
    }
    request = CaptureRequest(
        name="golden",
        notes="fixture venv",
        tags={"team": "perf"},
        cli_params=("lr=0.1", "model.depth=4", "api_key=sk-abcdefghijklmnopqrstu"),
        seeds={"global": 7},
        data=("data.csv",),
        outputs=("out/*.pt",),
        metrics="metrics.json",
        argv=("python", "train.py", "--token", "xyz"),
    )
    ctx = CaptureContext(cwd=project, env=env, now=NOW, repo_root=project, config=Config())
    manifest, diff = build_manifest(request, ctx, with_git=False)
    assert diff == b""
    # tmp_path differs from run to run: take it out before sealing, so the digest is stable too.
    data = _without_root(to_data(dataclasses.replace(manifest, run_id=RUN_ID)), str(root))
    _, text = seal_text(from_data(Manifest, data, "the fixture manifest"))
    return text


def _without_root(data: Any, root: str) -> Any:
    if isinstance(data, str):
        return data.replace(root, "<tmp>")
    if isinstance(data, dict):
        return {key: _without_root(value, root) for key, value in data.items()}
    if isinstance(data, list):
        return [_without_root(item, root) for item in data]
    return data


class TestGoldenManifest:
    def test_fixture_venv_records_what_it_always_did(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The manifest of the fixture venv equals the golden file byte for byte, env_id and
        digest included."""
        text = capture_fixture(tmp_path, monkeypatch)
        if os.environ.get("ENVSNAP_UPDATE_GOLDEN") == "1":
            GOLDEN.parent.mkdir(parents=True, exist_ok=True)
            GOLDEN.write_text(text, encoding="utf-8")
        assert text == GOLDEN.read_text(encoding="utf-8")

    def test_every_fixture_distribution_is_recorded(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each distribution of the fixture appears once in [python.packages] (envsnap itself
        in [tool]), so the golden file cannot pass by recording less."""
        text = capture_fixture(tmp_path, monkeypatch)
        names = {
            line.split('"')[1]
            for line in text.splitlines()
            if line.startswith("name = ") and '"' in line
        }
        expected = {
            "numpy", "requests", "six", "pillow", "torch", "scikit-learn",
            "nvidia-cudnn-cu12", "nvidia-nccl-cu12", "nvidia-cuda-runtime-cu12",
            "condapkg", "vcslib", "archived", "localarchive", "ownproject", "elsewhere",
            "broken", "odd-name", "twice", "legacy-pkg", "flat", "devpkg",
        }  # fmt: skip
        assert expected <= names
        assert "envsnap" not in names
