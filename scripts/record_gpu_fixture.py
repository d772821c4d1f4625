#!/usr/bin/env python3
"""Record what NVML answers on this machine, and the [gpu] section envsnap's probe makes of it,
as a TOML fixture under tests/data/gpu/ (run it on a machine with an NVIDIA GPU).

    .venv/bin/python scripts/record_gpu_fixture.py            # print the fixture
    .venv/bin/python scripts/record_gpu_fixture.py --write    # write tests/data/gpu/<name>.toml

The [nvml] table holds the raw answers, so a test can replay them through a fake NvmlApi and
compare the probe's result with the [gpu] table.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import sys
from pathlib import Path
from typing import Any

import tomli_w

from envsnap.capturing.probes.gpu import PynvmlApi, capture_gpu
from envsnap.manifest import to_data

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "gpu"


class RecordingNvml(PynvmlApi):
    """The real NVML, keeping a copy of every answer it gives."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Any] = {"devices": []}

    def driver_version(self) -> str | bytes:
        value = super().driver_version()
        self.answers["driver_version"] = _text(value)
        return value

    def cuda_driver_version(self) -> int:
        value = super().cuda_driver_version()
        self.answers["cuda_driver_version"] = value
        return value

    def device_count(self) -> int:
        value = super().device_count()
        self.answers["device_count"] = value
        return value

    def device_name(self, index: int) -> str | bytes:
        value = super().device_name(index)
        self._device(index)["name"] = _text(value)
        return value

    def device_uuid(self, index: int) -> str | bytes:
        value = super().device_uuid(index)
        self._device(index)["uuid"] = _text(value)
        return value

    def device_memory_total(self, index: int) -> int:
        value = super().device_memory_total(index)
        self._device(index)["memory_total"] = value
        return value

    def device_compute_capability(self, index: int) -> tuple[int, int]:
        value = super().device_compute_capability(index)
        self._device(index)["compute_capability"] = list(value)
        return value

    def _device(self, index: int) -> dict[str, Any]:
        devices: list[dict[str, Any]] = self.answers["devices"]
        while len(devices) <= index:
            devices.append({"index": len(devices)})
        return devices[index]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help="write into tests/data/gpu/")
    parser.add_argument("--name", help="fixture file name (default: from the first device)")
    args = parser.parse_args(argv)

    nvml = RecordingNvml()
    gpu = capture_gpu(nvml=nvml)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = (
        f"# Recorded by scripts/record_gpu_fixture.py at {now}\n"
        f"# on {platform.node()} ({platform.platform()}, Python {platform.python_version()}).\n"
        "# [nvml] is what NVML answered; [gpu] is the section envsnap's probe made of it.\n"
    )
    body = tomli_w.dumps({"nvml": nvml.answers, "gpu": to_data(gpu)})
    text = header + body
    if not args.write:
        sys.stdout.write(text)
        return 0 if gpu.available else 1
    name = args.name or _default_name(gpu.devices[0].name if gpu.devices else "no-gpu")
    path = FIXTURES / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0 if gpu.available else 1


def _default_name(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "gpu"


if __name__ == "__main__":
    raise SystemExit(main())
