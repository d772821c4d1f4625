"""The host probe reads os-release, cpuinfo and meminfo under a root and asks ``os`` the rest."""

from __future__ import annotations

import os
from pathlib import Path

from envsnap.capturing.probes.system import capture_host, read_os_release
from envsnap.manifest import Host

DEBIAN_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
"""

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 243.75
CPU implementer\t: 0x41
CPU part\t: 0xd0c

Hardware\t: BCM2835
"""

MEMINFO = """\
MemTotal:       24414064 kB
MemFree:        20000000 kB
"""


def make_root(
    root: Path,
    *,
    os_release: str | None = DEBIAN_OS_RELEASE,
    os_release_at: str = "etc/os-release",
    cpuinfo: str | None = X86_CPUINFO,
    meminfo: str | None = MEMINFO,
) -> Path:
    """A fake filesystem root holding the files the host probe reads."""
    for relative, text in (
        (os_release_at, os_release),
        ("proc/cpuinfo", cpuinfo),
        ("proc/meminfo", meminfo),
    ):
        if text is not None:
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return root


class TestOsRelease:
    def test_reads_etc_os_release_fields(self, tmp_path: Path) -> None:
        """ID, VERSION_ID, VERSION_CODENAME and PRETTY_NAME come from /etc/os-release, unquoted."""
        host = capture_host(root=make_root(tmp_path), hostname="h")
        assert (host.os_id, host.os_version, host.os_codename, host.os_name) == (
            "debian",
            "12",
            "bookworm",
            "Debian GNU/Linux 12 (bookworm)",
        )

    def test_falls_back_to_usr_lib(self, tmp_path: Path) -> None:
        """Without /etc/os-release the probe reads /usr/lib/os-release."""
        make_root(tmp_path, os_release_at="usr/lib/os-release")
        assert read_os_release(tmp_path)["ID"] == "debian"

    def test_etc_wins_over_usr_lib(self, tmp_path: Path) -> None:
        """/etc/os-release, the administrator's copy, takes precedence over /usr/lib."""
        make_root(tmp_path)
        (tmp_path / "usr/lib").mkdir(parents=True)
        (tmp_path / "usr/lib/os-release").write_text("ID=other\n")
        assert read_os_release(tmp_path)["ID"] == "debian"

    def test_comments_blank_lines_and_single_quotes(self, tmp_path: Path) -> None:
        """Comments and blank lines are skipped and single-quoted values unquoted."""
        make_root(tmp_path, os_release="# comment\n\nID='alpine'\nVERSION_ID=3.20.1\n")
        assert read_os_release(tmp_path) == {"ID": "alpine", "VERSION_ID": "3.20.1"}

    def test_missing_os_release_leaves_fields_empty(self, tmp_path: Path) -> None:
        """A root without os-release gives empty OS fields rather than an error."""
        host = capture_host(root=make_root(tmp_path, os_release=None), hostname="h")
        assert (host.os_id, host.os_version, host.os_name) == ("", "", "")


class TestHardware:
    def test_x86_model_name(self, tmp_path: Path) -> None:
        """On x86 the CPU model is the first "model name" line."""
        assert capture_host(root=make_root(tmp_path), hostname="h").cpu_model == "AMD EPYC 7B13"

    def test_arm_hardware_line(self, tmp_path: Path) -> None:
        """On 32-bit ARM without "model name" the "Hardware" line names the CPU."""
        host = capture_host(root=make_root(tmp_path, cpuinfo=ARM_CPUINFO), hostname="h")
        assert host.cpu_model == "BCM2835"

    def test_arm_cpu_part_last_resort(self, tmp_path: Path) -> None:
        """On ARM servers with neither line the CPU part id is recorded."""
        cpuinfo = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"
        host = capture_host(root=make_root(tmp_path, cpuinfo=cpuinfo), hostname="h")
        assert host.cpu_model == "CPU part 0xd40"

    def test_memtotal_in_bytes(self, tmp_path: Path) -> None:
        """MemTotal, given by the kernel in kB (KiB), is recorded in bytes."""
        host = capture_host(root=make_root(tmp_path), hostname="h")
        assert host.memory_bytes == 24414064 * 1024

    def test_missing_proc_files_give_zero_and_empty(self, tmp_path: Path) -> None:
        """Without /proc files the CPU model is empty and memory zero, and nothing raises."""
        host = capture_host(root=make_root(tmp_path, cpuinfo=None, meminfo=None), hostname="h")
        assert (host.cpu_model, host.memory_bytes) == ("", 0)


class TestRunningSystem:
    def test_kernel_arch_cpu_count_from_os(self, tmp_path: Path) -> None:
        """Kernel, architecture and CPU count come from os.uname and os.cpu_count."""
        host = capture_host(root=make_root(tmp_path), hostname="h")
        assert host.kernel == os.uname().release
        assert host.arch == os.uname().machine
        assert host.cpu_count == os.cpu_count()

    def test_libc_from_confstr(self, tmp_path: Path) -> None:
        """libc is what the running C library reports, e.g. "glibc 2.36"."""
        host = capture_host(root=make_root(tmp_path), hostname="h")
        assert host.libc == os.confstr("CS_GNU_LIBC_VERSION")
        assert host.libc.startswith("glibc ")

    def test_hostname_argument_wins(self, tmp_path: Path) -> None:
        """A hostname passed in is recorded as given."""
        assert capture_host(root=make_root(tmp_path), hostname="trainer-1").hostname == "trainer-1"

    def test_real_root_is_complete(self) -> None:
        """On this machine the real root gives an OS id, a CPU model and memory size."""
        host = capture_host()
        assert isinstance(host, Host)
        assert host.os_id and host.cpu_model and host.memory_bytes > 0 and host.hostname
