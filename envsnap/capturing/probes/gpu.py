"""The [gpu] section: NVIDIA driver, CUDA driver API version and devices, asked of NVML through a
small interface; pynvml is imported only when a driver is visible. Capture asks on a thread of its
own (``start_gpu_capture``): importing pynvml and starting NVML took over half of a capture on an
H200 host, and most of that wait is in the driver, outside the GIL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from envsnap.manifest import Gpu, GpuDevice

NO_DRIVER_REASON = "no NVIDIA driver loaded"

T = TypeVar("T")


class NvmlApi(Protocol):
    """The few NVML calls the probe makes; devices are addressed by index."""

    def init(self) -> None: ...

    def shutdown(self) -> None: ...

    def driver_version(self) -> str | bytes: ...

    def cuda_driver_version(self) -> int: ...

    def device_count(self) -> int: ...

    def device_name(self, index: int) -> str | bytes: ...

    def device_uuid(self, index: int) -> str | bytes: ...

    def device_memory_total(self, index: int) -> int: ...

    def device_compute_capability(self, index: int) -> tuple[int, int]: ...


class PynvmlApi:
    """NVML through nvidia-ml-py; ``init`` imports pynvml and loads libnvidia-ml."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}

    def init(self) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()

    def shutdown(self) -> None:
        self._handles.clear()
        self._nvml.nvmlShutdown()

    def driver_version(self) -> str | bytes:
        return self._nvml.nvmlSystemGetDriverVersion()  # type: ignore[no-any-return]

    def cuda_driver_version(self) -> int:
        return int(self._nvml.nvmlSystemGetCudaDriverVersion())

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount())

    def device_name(self, index: int) -> str | bytes:
        return self._nvml.nvmlDeviceGetName(self._handle(index))  # type: ignore[no-any-return]

    def device_uuid(self, index: int) -> str | bytes:
        return self._nvml.nvmlDeviceGetUUID(self._handle(index))  # type: ignore[no-any-return]

    def device_memory_total(self, index: int) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle(index)).total)

    def device_compute_capability(self, index: int) -> tuple[int, int]:
        major, minor = self._nvml.nvmlDeviceGetCudaComputeCapability(self._handle(index))
        return int(major), int(minor)

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._nvml.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]


def capture_gpu(
    *,
    nvml: NvmlApi | None = None,
    proc_root: Path = Path("/proc"),
    dev_root: Path = Path("/dev"),
) -> Gpu:
    """The [gpu] section; ``available=False`` and a reason when no GPU can be read. Never raises."""
    if not driver_visible(proc_root=proc_root, dev_root=dev_root):
        return Gpu(available=False, reason=NO_DRIVER_REASON)
    api: NvmlApi = PynvmlApi() if nvml is None else nvml
    try:
        api.init()
    except ImportError:
        return Gpu(available=False, reason="nvidia-ml-py (pynvml) is not installed")
    except Exception as exc:  # pynvml's NVMLError (library not found, driver not loaded, ...)
        return Gpu(available=False, reason=f"NVML could not start: {_error_text(exc)}")
    try:
        return _read_gpu(api)
    except Exception as exc:
        return Gpu(available=False, reason=f"NVML failed: {_error_text(exc)}")
    finally:
        with contextlib.suppress(Exception):  # nothing useful to do when releasing NVML fails
            api.shutdown()


class PendingGpu:
    """The [gpu] section while a thread asks NVML for it; see ``start_gpu_capture``."""

    def __init__(self, probe: Callable[[], Gpu]) -> None:
        import threading

        self._gpu: Gpu | None = None
        self._error: BaseException | None = None
        # A daemon: a capture refused or interrupted meanwhile does not wait for NVML to exit.
        self._thread = threading.Thread(
            target=self._run, args=(probe,), name="envsnap-gpu-probe", daemon=True
        )
        self._thread.start()

    def _run(self, probe: Callable[[], Gpu]) -> None:
        try:
            self._gpu = probe()
        except BaseException as exc:  # handed to the caller of result(), as if called there
            self._error = exc

    def result(self) -> Gpu:
        """The section, once NVML has answered (as long as it takes, as before the thread)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._gpu is None:  # pragma: no cover - _run sets one or the other
            raise RuntimeError("the GPU probe ended without a result")
        return self._gpu


def start_gpu_capture(probe: Callable[[], Gpu] | None = None) -> PendingGpu:
    """Start ``capture_gpu`` (or ``probe``) on its own thread; ``result()`` collects it.

    Capture starts it before its other probes and collects it last, so loading NVML overlaps
    them; the section is the one ``capture_gpu`` gives, errors and reasons included.
    """
    return PendingGpu(capture_gpu if probe is None else probe)


def driver_visible(*, proc_root: Path = Path("/proc"), dev_root: Path = Path("/dev")) -> bool:
    """Whether an NVIDIA driver is visible (native or WSL), without loading any library."""
    candidates = (
        proc_root / "driver" / "nvidia" / "version",
        dev_root / "nvidiactl",
        dev_root / "dxg",
    )
    for path in candidates:
        try:
            if path.exists():
                return True
        except OSError:
            continue
    return False


def format_cuda_version(value: int) -> str:
    """NVML's integer CUDA version as text: 12040 -> "12.4"; "" for 0 or less."""
    if value <= 0:
        return ""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _read_gpu(api: NvmlApi) -> Gpu:
    driver = _text(api.driver_version())
    cuda = format_cuda_version(api.cuda_driver_version())
    count = api.device_count()
    devices = tuple(_read_device(api, index) for index in range(count))
    if not devices:
        return Gpu(
            available=False,
            reason="the NVIDIA driver is loaded but NVML sees no devices",
            driver_version=driver,
            cuda_driver_version=cuda,
        )
    return Gpu(
        available=True,
        driver_version=driver,
        cuda_driver_version=cuda,
        devices=tuple(sorted(devices, key=lambda d: d.index)),
    )


def _read_device(api: NvmlApi, index: int) -> GpuDevice:
    # The name must come back; uuid, memory and capability may be unsupported (MIG, old boards).
    name = _text(api.device_name(index))
    uuid = _optional(lambda: _text(api.device_uuid(index)), "")
    memory = _optional(lambda: api.device_memory_total(index), 0)
    capability = _optional(lambda: "{}.{}".format(*api.device_compute_capability(index)), "")
    return GpuDevice(
        index=index, name=name, uuid=uuid, memory_bytes=memory, compute_capability=capability
    )


def _optional(read: Callable[[], T], default: T) -> T:
    try:
        return read()
    except Exception:
        return default


def _text(value: str | bytes) -> str:
    # pynvml before 11.5 returns bytes.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
