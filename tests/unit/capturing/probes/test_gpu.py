"""The GPU probe asks NVML through a small interface, only when a driver is visible, and turns
every NVML failure into ``available=False`` with a reason."""

from __future__ import annotations

import re
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from envsnap.capturing.probes.gpu import (
    NO_DRIVER_REASON,
    PynvmlApi,
    capture_gpu,
    driver_visible,
    format_cuda_version,
    start_gpu_capture,
)
from envsnap.manifest import Gpu, GpuDevice, read_manifest, to_data

GPU_DATA = Path(__file__).resolve().parents[3] / "data" / "gpu"


class NVMLError(Exception):
    """Stands in for pynvml's NVMLError, whose str() is NVML's own message."""


@dataclass(frozen=True)
class FakeDevice:
    name: str | bytes
    uuid: str | bytes = "GPU-00000000-0000-0000-0000-000000000000"
    memory: int = 85_899_345_920
    capability: tuple[int, int] = (9, 0)


@dataclass
class FakeNvml:
    """A scripted NVML: answers from its fields, raising where told to."""

    devices: list[FakeDevice] = field(default_factory=list)
    driver: str | bytes = "550.54.15"
    cuda: int = 12040
    fail_init: Exception | None = None
    fail_on: str = ""
    calls: list[str] = field(default_factory=list)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_on:
            raise NVMLError("GPU is lost")

    def init(self) -> None:
        self.calls.append("init")
        if self.fail_init is not None:
            raise self.fail_init

    def shutdown(self) -> None:
        self._call("shutdown")

    def driver_version(self) -> str | bytes:
        self._call("driver_version")
        return self.driver

    def cuda_driver_version(self) -> int:
        self._call("cuda_driver_version")
        return self.cuda

    def device_count(self) -> int:
        self._call("device_count")
        return len(self.devices)

    def device_name(self, index: int) -> str | bytes:
        self._call("device_name")
        return self.devices[index].name

    def device_uuid(self, index: int) -> str | bytes:
        self._call("device_uuid")
        return self.devices[index].uuid

    def device_memory_total(self, index: int) -> int:
        self._call("device_memory_total")
        return self.devices[index].memory

    def device_compute_capability(self, index: int) -> tuple[int, int]:
        self._call("device_compute_capability")
        return self.devices[index].capability


@pytest.fixture
def with_driver(tmp_path: Path) -> dict[str, Path]:
    """proc and dev roots where the NVIDIA driver looks loaded."""
    proc = tmp_path / "proc"
    (proc / "driver" / "nvidia").mkdir(parents=True)
    (proc / "driver" / "nvidia" / "version").write_text("NVRM version: 550.54.15\n")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").touch()
    return {"proc_root": proc, "dev_root": dev}


class TestNoDriver:
    def test_no_driver_files_means_unavailable(self, tmp_path: Path) -> None:
        """Without /proc/driver/nvidia/version or /dev/nvidiactl the GPU is unavailable."""
        nvml = FakeNvml(devices=[FakeDevice(name="H100")])
        gpu = capture_gpu(nvml=nvml, proc_root=tmp_path / "proc", dev_root=tmp_path / "dev")
        assert gpu == Gpu(available=False, reason=NO_DRIVER_REASON)
        assert nvml.calls == []

    def test_no_driver_does_not_import_pynvml(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The default, real NVML is not even imported when no driver is visible."""
        monkeypatch.delitem(sys.modules, "pynvml", raising=False)
        capture_gpu(proc_root=tmp_path, dev_root=tmp_path)
        assert "pynvml" not in sys.modules

    @pytest.mark.parametrize("marker", ["proc/driver/nvidia/version", "dev/nvidiactl", "dev/dxg"])
    def test_any_driver_file_counts(self, tmp_path: Path, marker: str) -> None:
        """Each of the driver's proc file, its control device and WSL's dxg shows a driver."""
        (tmp_path / marker).parent.mkdir(parents=True)
        (tmp_path / marker).touch()
        assert driver_visible(proc_root=tmp_path / "proc", dev_root=tmp_path / "dev")


class TestDevices:
    def test_reads_driver_cuda_and_devices(self, with_driver: dict[str, Path]) -> None:
        """Driver, CUDA driver version and each device are read and NVML is shut down."""
        nvml = FakeNvml(
            devices=[
                FakeDevice(name="NVIDIA H100 80GB HBM3", uuid="GPU-a"),
                FakeDevice(name="NVIDIA H100 80GB HBM3", uuid="GPU-b"),
            ]
        )
        gpu = capture_gpu(nvml=nvml, **with_driver)
        assert gpu == Gpu(
            available=True,
            driver_version="550.54.15",
            cuda_driver_version="12.4",
            devices=(
                GpuDevice(
                    index=0,
                    name="NVIDIA H100 80GB HBM3",
                    uuid="GPU-a",
                    memory_bytes=85_899_345_920,
                    compute_capability="9.0",
                ),
                GpuDevice(
                    index=1,
                    name="NVIDIA H100 80GB HBM3",
                    uuid="GPU-b",
                    memory_bytes=85_899_345_920,
                    compute_capability="9.0",
                ),
            ),
        )
        assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown"

    def test_bytes_from_old_pynvml_are_decoded(self, with_driver: dict[str, Path]) -> None:
        """Older pynvml returns bytes for names and versions; they are recorded as text."""
        nvml = FakeNvml(driver=b"470.82.01", devices=[FakeDevice(name=b"Tesla T4", uuid=b"GPU-t")])
        gpu = capture_gpu(nvml=nvml, **with_driver)
        assert gpu.driver_version == "470.82.01"
        assert (gpu.devices[0].name, gpu.devices[0].uuid) == ("Tesla T4", "GPU-t")

    def test_unsupported_optional_fields_are_left_empty(self, with_driver: dict[str, Path]) -> None:
        """A device that cannot report its memory (MIG, old boards) is still recorded."""
        nvml = FakeNvml(devices=[FakeDevice(name="A100")], fail_on="device_memory_total")
        gpu = capture_gpu(nvml=nvml, **with_driver)
        assert gpu.available and gpu.devices[0].memory_bytes == 0
        assert gpu.devices[0].compute_capability == "9.0"

    def test_zero_devices(self, with_driver: dict[str, Path]) -> None:
        """A driver with no visible devices is unavailable but keeps the driver version."""
        gpu = capture_gpu(nvml=FakeNvml(), **with_driver)
        assert (gpu.available, gpu.driver_version) == (False, "550.54.15")
        assert "no devices" in gpu.reason

    @pytest.mark.parametrize(
        ("value", "text"), [(12040, "12.4"), (11080, "11.8"), (12100, "12.10"), (0, "")]
    )
    def test_cuda_version_format(self, value: int, text: str) -> None:
        """NVML's integer CUDA version 12040 is written "12.4"."""
        assert format_cuda_version(value) == text


class TestFailures:
    def test_init_error_names_nvml_message(self, with_driver: dict[str, Path]) -> None:
        """An NVML error at init (library missing, driver mismatch) becomes the reason."""
        nvml = FakeNvml(fail_init=NVMLError("Driver/library version mismatch"))
        gpu = capture_gpu(nvml=nvml, **with_driver)
        assert gpu.available is False
        assert gpu.reason == "NVML could not start: Driver/library version mismatch"
        assert "shutdown" not in nvml.calls

    def test_missing_pynvml(self, with_driver: dict[str, Path]) -> None:
        """Without nvidia-ml-py installed the reason says so."""
        nvml = FakeNvml(fail_init=ModuleNotFoundError("No module named 'pynvml'"))
        assert "not installed" in capture_gpu(nvml=nvml, **with_driver).reason

    def test_error_during_query_is_caught_and_nvml_shut_down(
        self, with_driver: dict[str, Path]
    ) -> None:
        """An NVML error while reading devices gives a reason, and NVML is still shut down."""
        nvml = FakeNvml(devices=[FakeDevice(name="A100")], fail_on="device_name")
        gpu = capture_gpu(nvml=nvml, **with_driver)
        assert gpu == Gpu(available=False, reason="NVML failed: GPU is lost")
        assert nvml.calls[-1] == "shutdown"

    def test_shutdown_error_is_ignored(self, with_driver: dict[str, Path]) -> None:
        """A failure releasing NVML does not spoil what was read."""
        nvml = FakeNvml(devices=[FakeDevice(name="A100")], fail_on="shutdown")
        assert capture_gpu(nvml=nvml, **with_driver).available

    def test_real_nvml(self, with_driver: dict[str, Path]) -> None:
        """The real NVML binding: on a GPU host it reads what the driver itself reports (the
        version in /proc/driver/nvidia/version, named NVIDIA devices with memory and a compute
        capability, as the H200 ground truth lists); elsewhere it reports an NVML error."""
        if driver_visible():
            gpu = capture_gpu(nvml=PynvmlApi())
            assert gpu.available, gpu.reason
            proc_text = Path("/proc/driver/nvidia/version").read_text(errors="replace")
            assert gpu.driver_version and gpu.driver_version in proc_text
            assert re.fullmatch(r"\d+\.\d+", gpu.cuda_driver_version)
            assert gpu.devices
            for device in gpu.devices:
                assert device.name.startswith("NVIDIA"), device.name
                assert device.uuid.startswith("GPU-")
                assert device.memory_bytes > 0
                assert re.fullmatch(r"\d+\.\d+", device.compute_capability)
        else:
            gpu = capture_gpu(nvml=PynvmlApi(), **with_driver)
            assert not gpu.available
            assert gpu.reason.startswith(("NVML could not start:", "nvidia-ml-py"))


def replay_h200() -> tuple[FakeNvml, dict[str, object]]:
    """A fake NVML answering as the recorded H200 did, and the [gpu] section recorded there."""
    recorded = tomllib.loads((GPU_DATA / "nvidia-h200-nvml.toml").read_text())
    nvml = recorded["nvml"]
    fake = FakeNvml(
        devices=[
            FakeDevice(
                name=d["name"],
                uuid=d["uuid"],
                memory=d["memory_total"],
                capability=(d["compute_capability"][0], d["compute_capability"][1]),
            )
            for d in nvml["devices"]
        ],
        driver=nvml["driver_version"],
        cuda=nvml["cuda_driver_version"],
    )
    assert len(fake.devices) == nvml["device_count"]
    return fake, recorded["gpu"]


class TestOnItsOwnThread:
    """Capture asks NVML on a thread of its own; what it gets back is what capture_gpu gives."""

    def test_recorded_h200_replays_the_same_through_the_thread(
        self, with_driver: dict[str, Path]
    ) -> None:
        """The H200's recorded answers give the recorded [gpu] section through the thread too."""
        fake, recorded = replay_h200()
        pending = start_gpu_capture(lambda: capture_gpu(nvml=fake, **with_driver))
        assert to_data(pending.result()) == recorded
        assert fake.calls[-1] == "shutdown"

    def test_failures_keep_their_reason(self, with_driver: dict[str, Path]) -> None:
        """An NVML that cannot start gives the same unavailable section and reason."""
        nvml = FakeNvml(fail_init=NVMLError("Driver Not Loaded"))
        pending = start_gpu_capture(lambda: capture_gpu(nvml=nvml, **with_driver))
        assert pending.result() == capture_gpu(nvml=nvml, **with_driver)
        assert not pending.result().available

    def test_no_driver(self, tmp_path: Path) -> None:
        """Without a driver the thread answers as capture_gpu does, without NVML."""
        pending = start_gpu_capture(lambda: capture_gpu(proc_root=tmp_path, dev_root=tmp_path))
        assert pending.result() == Gpu(available=False, reason=NO_DRIVER_REASON)

    def test_runs_on_another_thread_while_the_caller_goes_on(self) -> None:
        """The probe runs on a thread that is not the caller's, and the caller is not held up
        while it runs: here the probe waits for the caller to signal it."""
        caller_went_on = threading.Event()
        ran_on: list[threading.Thread] = []

        def probe() -> Gpu:
            ran_on.append(threading.current_thread())
            assert caller_went_on.wait(timeout=60), "start_gpu_capture waited for the probe"
            return Gpu(available=False, reason="test")

        pending = start_gpu_capture(probe)
        caller_went_on.set()
        assert pending.result() == Gpu(available=False, reason="test")
        assert ran_on and ran_on[0] is not threading.current_thread()

    def test_an_exception_reaches_the_caller(self) -> None:
        """Should a probe raise after all, result() raises it, as a direct call would."""

        def probe() -> Gpu:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            start_gpu_capture(probe).result()


class TestRecordedH200:
    """NVML's answers recorded on a real NVIDIA H200 replay through the probe to the [gpu]
    section envsnap wrote there (tests/data/gpu/, checked against nvidia-smi and torch)."""

    def test_replayed_answers_give_the_recorded_section(self, with_driver: dict[str, Path]) -> None:
        """Replaying [nvml] through the probe gives the recorded [gpu] section whole."""
        fake, recorded = replay_h200()
        gpu = capture_gpu(nvml=fake, **with_driver)
        assert to_data(gpu) == recorded

    def test_recorded_section_matches_the_ground_truth(self) -> None:
        """What the probe wrote there agrees with nvidia-smi's and torch's answers on that host:
        NVIDIA H200, driver 580.159.04, 143771 MiB, compute capability 9.0, CUDA 13.0."""
        gpu = tomllib.loads((GPU_DATA / "nvidia-h200-nvml.toml").read_text())["gpu"]
        assert gpu["driver_version"] == "580.159.04"
        assert gpu["cuda_driver_version"] == "13.0"
        (device,) = gpu["devices"]
        assert device["name"] == "NVIDIA H200"
        assert device["memory_bytes"] // 2**20 == 143771
        assert device["compute_capability"] == "9.0"

    def test_whole_run_manifest_agrees_with_its_nvml_answers(self) -> None:
        """The CUDA 13 run captured on the same host verifies and holds the same [gpu] facts."""
        manifest = read_manifest(GPU_DATA / "h200-torch-cu130.manifest.toml")
        gpu = tomllib.loads((GPU_DATA / "nvidia-h200-nvml.toml").read_text())["gpu"]
        assert manifest.gpu.driver_version == gpu["driver_version"]
        assert [d.name for d in manifest.gpu.devices] == ["NVIDIA H200"]
        assert manifest.cuda.runtime_version.startswith("13.0")
