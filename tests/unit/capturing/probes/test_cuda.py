"""The CUDA probe finds runtime, cuDNN and NCCL versions without importing a framework."""

from __future__ import annotations

import json
from pathlib import Path

from envsnap.capturing.probes.cuda import capture_cuda
from envsnap.manifest import Cuda, Package

TORCH_VERSION_PY = """\
from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip']
__version__ = '2.3.0+cu121'
debug = False
cuda: Optional[str] = '12.1'
git_version = '97ff6cfd9c86c5c09d7ce775ab64ec5c99230f5d'
hip: Optional[str] = None
"""

TF_BUILD_INFO = """\
# Auto-generated; do not edit.
import collections

build_info = collections.OrderedDict()
build_info = {'cpu_compiler': '/usr/lib/llvm-17/bin/clang', 'cuda_compute_capabilities': \
['sm_60', 'sm_70', 'sm_80', 'sm_89', 'compute_90'], 'cuda_version': '12.3', \
'cudnn_version': '8', 'is_cuda_build': True, 'is_rocm_build': False, 'is_tensorrt_build': False}
"""


def nvidia_wheel(site: Path, dist: str, version: str, component: str, libs: list[str]) -> None:
    """An NVIDIA wheel as pip installs it: a dist-info and ``nvidia/<component>/lib`` files."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "INSTALLER").write_text("pip\n")
    lib = site / "nvidia" / component / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    for name in libs:
        (lib / name).write_bytes(b"\x7fELF")


def pkg(name: str, version: str) -> Package:
    return Package(name=name, version=version, installer="pip")


def cuda_toolkit(root: Path, version: str, cudnn: tuple[int, int, int] | None = None) -> Path:
    """A toolkit root with version.json and, optionally, cuDNN's version header."""
    root.mkdir(parents=True)
    (root / "version.json").write_text(
        json.dumps(
            {
                "cuda": {"name": "CUDA SDK", "version": version},
                "cuda_cudart": {"name": "CUDA Runtime (cudart)", "version": version},
            }
        )
    )
    if cudnn:
        (root / "include").mkdir()
        (root / "include" / "cudnn_version.h").write_text(
            "#ifndef CUDNN_VERSION_H_\n"
            f"#define CUDNN_MAJOR {cudnn[0]}\n#define CUDNN_MINOR {cudnn[1]}\n"
            f"#define CUDNN_PATCHLEVEL {cudnn[2]}\n"
            "#define CUDNN_VERSION (CUDNN_MAJOR * 10000 + CUDNN_MINOR * 100 + CUDNN_PATCHLEVEL)\n"
            "#endif\n"
        )
    return root


class TestWheels:
    def test_nvidia_wheels_give_all_three_versions(self, tmp_path: Path) -> None:
        """nvidia-cuda-runtime, -cudnn and -nccl wheels are the first source of each version."""
        site = tmp_path / "site"
        nvidia_wheel(site, "nvidia-cuda-runtime-cu12", "12.1.105", "cuda_runtime", [])
        packages = [
            pkg("nvidia-cuda-runtime-cu12", "12.1.105"),
            pkg("nvidia-cudnn-cu12", "8.9.2.26"),
            pkg("nvidia-nccl-cu12", "2.20.5"),
            pkg("numpy", "1.26.4"),
        ]
        cuda = capture_cuda(packages, [site], env={}, system_roots=())
        assert (cuda.runtime_version, cuda.runtime_source) == (
            "12.1.105",
            "wheel nvidia-cuda-runtime-cu12",
        )
        assert (cuda.cudnn_version, cuda.cudnn_source) == ("8.9.2.26", "wheel nvidia-cudnn-cu12")
        assert (cuda.nccl_version, cuda.nccl_source) == ("2.20.5", "wheel nvidia-nccl-cu12")

    def test_unsuffixed_cuda13_wheels_are_recognised(self) -> None:
        """From CUDA 13 the wheels drop the -cuXX suffix; they are read all the same."""
        packages = [pkg("nvidia-cuda-runtime", "13.0.96"), pkg("nvidia-nccl-cu13", "2.27.7")]
        cuda = capture_cuda(packages, [], env={}, system_roots=())
        assert (cuda.runtime_version, cuda.nccl_version) == ("13.0.96", "2.27.7")

    def test_wheel_matching_the_frameworks_major_wins(self, tmp_path: Path) -> None:
        """With cu11 and cu12 wheels both installed, the one torch was built for is chosen."""
        site = tmp_path / "site"
        (site / "torch").mkdir(parents=True)
        (site / "torch" / "version.py").write_text(TORCH_VERSION_PY.replace("12.1", "11.8"))
        packages = [
            pkg("nvidia-cuda-runtime-cu11", "11.8.89"),
            pkg("nvidia-cuda-runtime-cu12", "12.4.127"),
        ]
        cuda = capture_cuda(packages, [site], env={}, system_roots=())
        assert cuda.runtime_version == "11.8.89"
        assert cuda.frameworks == {"torch": "11.8"}


class TestFrameworkBuildInfo:
    def test_torch_version_py_gives_framework_and_runtime(self, tmp_path: Path) -> None:
        """torch/version.py's ``cuda`` is torch's CUDA and the runtime when no wheel says more."""
        site = tmp_path / "site"
        (site / "torch").mkdir(parents=True)
        (site / "torch" / "version.py").write_text(TORCH_VERSION_PY)
        cuda = capture_cuda([pkg("torch", "2.3.0+cu121")], [site], env={}, system_roots=())
        assert cuda.frameworks == {"torch": "12.1"}
        assert (cuda.runtime_version, cuda.runtime_source) == ("12.1", "torch/version.py")

    def test_cpu_torch_records_no_cuda(self, tmp_path: Path) -> None:
        """A CPU build (``cuda = None``) records no framework CUDA and no runtime."""
        site = tmp_path / "site"
        (site / "torch").mkdir(parents=True)
        (site / "torch" / "version.py").write_text(
            TORCH_VERSION_PY.replace("'12.1'", "None").replace("+cu121", "+cpu")
        )
        assert capture_cuda([], [site], env={}, system_roots=()) == Cuda()

    def test_tensorflow_build_info_gives_cuda_and_cudnn(self, tmp_path: Path) -> None:
        """tensorflow's build_info.py is read as text for cuda_version and cudnn_version."""
        site = tmp_path / "site"
        platform = site / "tensorflow" / "python" / "platform"
        platform.mkdir(parents=True)
        (platform / "build_info.py").write_text(TF_BUILD_INFO)
        cuda = capture_cuda([], [site], env={}, system_roots=())
        assert cuda.frameworks == {"tensorflow": "12.3"}
        assert (cuda.cudnn_version, cuda.cudnn_source) == (
            "8",
            "tensorflow/python/platform/build_info.py",
        )

    def test_cuda_named_packages_give_framework_majors(self) -> None:
        """jax-cuda12-plugin and cupy-cuda12x name the CUDA major they were built for."""
        packages = [pkg("jax-cuda12-plugin", "0.4.30"), pkg("cupy-cuda12x", "13.2.0")]
        cuda = capture_cuda(packages, [], env={}, system_roots=())
        assert cuda.frameworks == {"jax": "12", "cupy": "12"}


class TestLibraryNames:
    def test_sonames_under_site_nvidia_give_majors(self, tmp_path: Path) -> None:
        """Without package versions, libcudart.so.12 and friends give the major versions."""
        site = tmp_path / "site"
        nvidia_wheel(site, "x", "1", "cuda_runtime", ["libcudart.so.12"])
        nvidia_wheel(site, "y", "1", "cudnn", ["libcudnn.so.9", "libcudnn_ops.so.9"])
        nvidia_wheel(site, "z", "1", "nccl", ["libnccl.so.2"])
        cuda = capture_cuda([], [site], env={}, system_roots=())
        assert (cuda.runtime_version, cuda.runtime_source) == (
            "12",
            "nvidia/cuda_runtime/lib/libcudart.so.12",
        )
        assert (cuda.cudnn_version, cuda.nccl_version) == ("9", "2")


class TestSystemToolkit:
    def test_toolkit_version_json_and_cudnn_header(self, tmp_path: Path) -> None:
        """A system toolkit's version.json and cudnn_version.h are the last resort."""
        root = cuda_toolkit(tmp_path / "cuda", "12.2.140", cudnn=(8, 9, 7))
        cuda = capture_cuda([], [], env={}, system_roots=(root,))
        assert (cuda.runtime_version, cuda.runtime_source) == (
            "12.2.140",
            str(root / "version.json"),
        )
        assert (cuda.cudnn_version, cuda.cudnn_source) == (
            "8.9.7",
            str(root / "include" / "cudnn_version.h"),
        )
        assert cuda.nccl_version == ""

    def test_old_toolkit_version_txt(self, tmp_path: Path) -> None:
        """CUDA 10-era toolkits have only version.txt."""
        root = tmp_path / "cuda-10.2"
        root.mkdir()
        (root / "version.txt").write_text("CUDA Version 10.2.89\n")
        assert capture_cuda([], [], env={}, system_roots=(root,)).runtime_version == "10.2.89"

    def test_cuda_home_comes_before_default_roots(self, tmp_path: Path) -> None:
        """CUDA_HOME from the environment is consulted before the default toolkit roots."""
        chosen = cuda_toolkit(tmp_path / "cuda-12.4", "12.4.1")
        default = cuda_toolkit(tmp_path / "cuda", "11.8.0")
        cuda = capture_cuda([], [], env={"CUDA_HOME": str(chosen)}, system_roots=(default,))
        assert cuda.runtime_version == "12.4.1"

    def test_nccl_header(self, tmp_path: Path) -> None:
        """nccl.h's NCCL_MAJOR/MINOR/PATCH give the NCCL version."""
        (tmp_path / "include").mkdir()
        (tmp_path / "include" / "nccl.h").write_text(
            "#define NCCL_MAJOR 2\n#define NCCL_MINOR 18\n#define NCCL_PATCH 3\n"
        )
        cuda = capture_cuda([], [], env={}, system_roots=(tmp_path,))
        assert cuda.nccl_version == "2.18.3"

    def test_wheels_outrank_the_system_toolkit(self, tmp_path: Path) -> None:
        """What the frameworks load from wheels wins over a toolkit installed on the host."""
        root = cuda_toolkit(tmp_path / "cuda", "11.8.0", cudnn=(8, 6, 0))
        packages = [pkg("nvidia-cuda-runtime-cu12", "12.1.105")]
        cuda = capture_cuda(packages, [], env={}, system_roots=(root,))
        assert cuda.runtime_version == "12.1.105"
        assert cuda.cudnn_version == "8.6.0"


class TestNothingFound:
    def test_empty_when_nothing_is_installed(self, tmp_path: Path) -> None:
        """With no wheels, framework files or toolkit every field is empty."""
        assert capture_cuda([], [tmp_path], env={}, system_roots=(tmp_path / "none",)) == Cuda()

    def test_malformed_version_json_is_tolerated(self, tmp_path: Path) -> None:
        """A version.json that is not JSON is skipped instead of failing capture."""
        (tmp_path / "version.json").write_text("{oops")
        (tmp_path / "version.txt").write_text("CUDA Version 11.0.228\n")
        assert capture_cuda([], [], env={}, system_roots=(tmp_path,)).runtime_version == "11.0.228"
