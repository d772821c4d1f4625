"""The [host] section: operating system, kernel, libc, CPU and memory, read from files under a root
and from ``os``; no subprocess, so it costs well under a millisecond."""

from __future__ import annotations

import os
from pathlib import Path

from envsnap.manifest import Host

_OS_RELEASE_FILES = ("etc/os-release", "usr/lib/os-release")
# ARM kernels name no model; "Hardware" (32-bit SoCs) or the "CPU part" id is the best on offer.
_CPU_MODEL_KEYS = ("model name", "Hardware", "CPU part")


def capture_host(*, root: Path = Path("/"), hostname: str | None = None) -> Host:
    """The [host] section; fields that cannot be read stay empty. Never raises."""
    release = read_os_release(root)
    uname = os.uname()
    return Host(
        os_id=release.get("ID", ""),
        os_version=release.get("VERSION_ID", ""),
        os_codename=release.get("VERSION_CODENAME", ""),
        os_name=release.get("PRETTY_NAME", ""),
        kernel=uname.release,
        arch=uname.machine,
        libc=_libc_version(),
        cpu_model=_cpu_model(root / "proc" / "cpuinfo"),
        cpu_count=os.cpu_count() or 0,
        memory_bytes=_memory_bytes(root / "proc" / "meminfo"),
        # uname's node name is gethostname() without importing socket (~6 ms) on the hot path.
        hostname=uname.nodename if hostname is None else hostname,
    )


def read_os_release(root: Path = Path("/")) -> dict[str, str]:
    """The key/value pairs of os-release (``/etc`` first, then ``/usr/lib``); {} when absent."""
    for name in _OS_RELEASE_FILES:
        text = _read(root / name)
        if text:
            return _parse_os_release(text)
    return {}


def _parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key.strip()] = value
    return values


def _libc_version() -> str:
    # confstr answers from the running libc; platform.libc_ver reads the interpreter binary (slow).
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):  # musl, macOS, or a libc without the name
        return ""


def _cpu_model(path: Path) -> str:
    found: dict[str, str] = {}
    for line in _read(path).splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in _CPU_MODEL_KEYS and key not in found and value.strip():
            found[key] = value.strip()
        if "model name" in found:
            break
    for key in _CPU_MODEL_KEYS:
        if key in found:
            return found[key] if key != "CPU part" else f"CPU part {found[key]}"
    return ""


def _memory_bytes(path: Path) -> int:
    for line in _read(path).splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            try:
                amount = int(fields[1])
            except (IndexError, ValueError):
                return 0
            unit = fields[2].lower() if len(fields) > 2 else ""
            return amount * 1024 if unit == "kb" else amount
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
