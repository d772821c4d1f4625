"""Lock files from a manifest, with a fake index: hashes, pins, refusals and deterministic bytes."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from envsnap.distnames import file_version, version_key
from envsnap.errors import EnvsnapError
from envsnap.locking.files import lock_run, write_lock_files
from envsnap.locking.index import SimpleIndexClient, _parse_page
from envsnap.locking.model import (
    CONDA_EXPLICIT_FILE,
    CONDA_LOCK_FILE,
    REQUIREMENTS_FILE,
    SUMMARY_FILE,
    VCS_FILE,
    IndexFile,
    IndexQuery,
    LockError,
)
from envsnap.locking.plan import lock_packages, matching_hashes
from envsnap.manifest import Conda, CondaPackage, Host, Manifest, Package, Python
from envsnap.store import Store, StoredRun
from tests.conftest import sample_manifest

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "lock"
PYPI = "https://pypi.org/simple"
CU121 = "https://download.pytorch.org/whl/cu121"
MIRROR = "https://mirror.example.org/pypi/simple"


def sha(seed: str) -> str:
    """A stable fake sha256 for a file name."""
    import hashlib

    return hashlib.sha256(seed.encode()).hexdigest()


def wheel(name: str, version: str, tag: str = "py3-none-any", *, yanked: bool = False) -> IndexFile:
    filename = f"{name}-{version}-{tag}.whl"
    return IndexFile(filename=filename, sha256=sha(filename), yanked=yanked)


def sdist(name: str, version: str) -> IndexFile:
    filename = f"{name}-{version}.tar.gz"
    return IndexFile(filename=filename, sha256=sha(filename))


INDEX: dict[tuple[str, str], tuple[IndexFile, ...]] = {
    (PYPI, "numpy"): (
        wheel("numpy", "2.1.3", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"),
        wheel("numpy", "2.1.3", "cp311-cp311-macosx_14_0_arm64"),
        sdist("numpy", "2.1.3"),
        wheel("numpy", "2.1.2", "cp311-cp311-manylinux_2_17_x86_64"),
        sdist("numpy", "2.1.30"),
    ),
    (PYPI, "scipy"): (wheel("scipy", "1.14.1", "cp311-cp311-manylinux_2_17_x86_64"),),
    (PYPI, "python-dateutil"): (
        wheel("python_dateutil", "2.9.0.post0", "py2.py3-none-any"),
        sdist("python-dateutil", "2.9.0.post0"),
    ),
    (PYPI, "typing-extensions"): (
        wheel("typing_extensions", "4.12.2"),
        wheel("typing_extensions_plus", "4.12.2"),  # another project sharing a prefix
    ),
    (PYPI, "oldpkg"): (wheel("oldpkg", "1.0", yanked=True), sdist("oldpkg", "1.0")),
    (CU121, "torch"): (
        wheel("torch", "2.3.0+cu121", "cp311-cp311-linux_x86_64"),
        wheel("torch", "2.3.0+cu121", "cp310-cp310-linux_x86_64"),
        wheel("torch", "2.3.0", "cp311-cp311-linux_x86_64"),
        wheel("torch", "2.3.0+cu118", "cp311-cp311-linux_x86_64"),
    ),
    (MIRROR, "numpy"): (wheel("numpy", "2.1.3", "cp311-cp311-manylinux_2_17_x86_64"),),
}


class FakeIndex:
    """A HashSource answering from a dict; counts the times it is asked."""

    def __init__(self, pages: Mapping[tuple[str, str], tuple[IndexFile, ...]] = INDEX) -> None:
        self.pages = pages
        self.asked: list[Sequence[IndexQuery]] = []

    def files(
        self, queries: Sequence[IndexQuery]
    ) -> dict[IndexQuery, tuple[IndexFile, ...] | None]:
        self.asked.append(queries)
        return {q: self.pages.get((q.index_url, q.project)) for q in queries}


def with_packages(*packages: Package, **python: object) -> Manifest:
    return sample_manifest(python=Python(version="3.11.7", packages=packages, **python))


def mixed_manifest() -> Manifest:
    """One package of every kind the lock handles, for the golden files."""
    return sample_manifest(
        digest="sha256:" + "d" * 64,
        python=Python(
            version="3.11.7",
            packages=(
                Package(name="numpy", version="2.1.3"),
                Package(name="python-dateutil", version="2.9.0.post0"),
                Package(name="torch", version="2.3.0+cu121", index_url=CU121),
                Package(
                    name="mylib",
                    version="0.3.1",
                    source="vcs",
                    vcs="git",
                    url="https://github.com/example/mylib.git",
                    commit="0123456789abcdef0123456789abcdef01234567",
                    subdirectory="python",
                ),
                Package(
                    name="tool",
                    version="1.2.0",
                    source="url",
                    url="https://files.example.org/tool-1.2.0-py3-none-any.whl",
                    archive_hash="sha256=" + "e" * 64,
                ),
                Package(name="train-logreg", version="0.1.0", source="editable", path="."),
                Package(
                    name="scratch",
                    version="0.0.1",
                    source="local",
                    path="/home/me/scratch",
                    reinstallable=False,
                    reason="installed from a local directory whose source is not recorded",
                ),
            ),
        ),
        conda=Conda(
            present=True,
            prefix="/opt/conda",
            packages=(
                CondaPackage(
                    name="python",
                    version="3.11.7",
                    build="hab00c5b_1_cpython",
                    channel="conda-forge",
                    subdir="linux-64",
                    url="https://conda.anaconda.org/conda-forge/linux-64/python-3.11.7-hab00c5b_1_cpython.conda",
                    md5="5" * 32,
                    sha256="6" * 64,
                ),
                CondaPackage(
                    name="ca-certificates",
                    version="2024.2.2",
                    build="hbcca054_0",
                    channel="conda-forge",
                    subdir="linux-64",
                    url="https://conda.anaconda.org/conda-forge/linux-64/ca-certificates-2024.2.2-hbcca054_0.conda",
                    sha256="7" * 64,
                ),
                CondaPackage(name="local-thing", version="1.0", build="0", subdir="linux-64"),
            ),
        ),
    )


def lines_of(text: str) -> list[str]:
    return text.splitlines()


class TestIndexHashes:
    """Index packages are pinned with every hash of their exact version, sorted."""

    def test_hashes_are_complete_sorted_and_of_exactly_that_version(self) -> None:
        """All files of 2.1.3 are hashed, none of 2.1.2 or 2.1.30, in sorted order."""
        result = lock_packages(with_packages(Package(name="numpy", version="2.1.3")), FakeIndex())
        expected = sorted(f.sha256 for f in INDEX[(PYPI, "numpy")][:3])
        hashes = [
            line.strip().removeprefix("--hash=sha256:").rstrip(" \\")
            for line in lines_of(result.requirements)
            if line.strip().startswith("--hash=")
        ]
        assert hashes == expected
        assert "numpy==2.1.3 \\" in lines_of(result.requirements)
        assert result.locked_index == 1
        assert result.unlockable == ()

    def test_wheel_names_with_underscores_and_sdists_with_dashes_match(self) -> None:
        """python_dateutil wheels and python-dateutil sdists both belong to python-dateutil."""
        files = INDEX[(PYPI, "python-dateutil")]
        assert matching_hashes(files, "python-dateutil", "2.9.0.post0") == sorted(
            f.sha256 for f in files
        )

    def test_another_project_sharing_a_prefix_is_not_matched(self) -> None:
        """typing_extensions_plus files are not hashes of typing-extensions."""
        files = INDEX[(PYPI, "typing-extensions")]
        assert matching_hashes(files, "typing-extensions", "4.12.2") == [files[0].sha256]

    def test_versions_equal_under_pep440_match(self) -> None:
        """1.0 matches a 1.0.0 file; label case and separators do not matter."""
        assert version_key("1.0") == version_key("1.0.0")
        assert version_key("2.3.0+CU121") == version_key("2.3.0+cu121")
        assert version_key("1.0rc1") == version_key("1.0-rc.1")
        assert version_key("1.0.post1") == version_key("1.0-1")
        assert version_key("2.3.0") != version_key("2.3.0+cu121")
        assert version_key("not a version") is None

    def test_file_names_give_their_version(self) -> None:
        """Wheels, legacy sdists and unknown kinds parse as pip reads them."""
        assert file_version("torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl", "torch") == (
            "2.3.0+cu121"
        )
        assert file_version("Foo.Bar-1.0-1-py3-none-any.whl", "foo-bar") == "1.0"
        assert file_version("python-dateutil-2.9.0.tar.gz", "python-dateutil") == "2.9.0"
        assert file_version("six-1.16.0.zip", "six") == "1.16.0"
        assert file_version("six-1.16.0-py2.7.egg", "six") is None
        assert file_version("six-1.16.0.tar.gz", "sixx") is None

    def test_yanked_versions_are_locked_and_marked(self) -> None:
        """A version yanked in every file is still installable by == and is marked as such."""
        result = lock_packages(with_packages(Package(name="oldpkg", version="1.0")), FakeIndex())
        # the sdist is not yanked, so the version is not wholly yanked
        assert "yanked" not in result.requirements
        pages = {(PYPI, "oldpkg"): (wheel("oldpkg", "1.0", yanked=True),)}
        result = lock_packages(
            with_packages(Package(name="oldpkg", version="1.0")), FakeIndex(pages)
        )
        assert f"# oldpkg==1.0 is yanked on {PYPI}" in lines_of(result.requirements)

    def test_the_source_is_asked_once_for_every_package(self) -> None:
        """One batch lets the real client fetch the projects concurrently."""
        source = FakeIndex()
        lock_packages(mixed_manifest(), source)
        assert len(source.asked) == 1
        assert {q.project for q in source.asked[0]} == {"numpy", "python-dateutil", "torch"}


class TestIndexes:
    """Index URLs in the lock are those that serve the locked packages."""

    def test_default_pypi_writes_no_index_lines(self) -> None:
        """With PyPI only, pip's own index configuration is left alone."""
        result = lock_packages(with_packages(Package(name="numpy", version="2.1.3")), FakeIndex())
        assert not [line for line in lines_of(result.requirements) if line.startswith("--")]

    def test_local_label_packages_keep_their_index(self) -> None:
        """torch+cu121 gets only cu121 files' hashes and the cu121 index as an extra index."""
        result = lock_packages(
            with_packages(Package(name="torch", version="2.3.0+cu121", index_url=CU121)),
            FakeIndex(),
        )
        assert f"--extra-index-url {CU121}" in lines_of(result.requirements)
        assert "torch==2.3.0+cu121 \\" in lines_of(result.requirements)
        wanted = sorted(f.sha256 for f in INDEX[(CU121, "torch")][:2])
        assert matching_hashes(INDEX[(CU121, "torch")], "torch", "2.3.0+cu121") == wanted
        for other in INDEX[(CU121, "torch")][2:]:
            assert other.sha256 not in result.requirements

    def test_a_non_default_main_index_becomes_index_url(self) -> None:
        """A mirror recorded as the main index is where the lock installs from."""
        result = lock_packages(
            with_packages(Package(name="numpy", version="2.1.3"), index_url=MIRROR),
            FakeIndex(),
        )
        assert f"--index-url {MIRROR}" in lines_of(result.requirements)
        assert INDEX[(MIRROR, "numpy")][0].sha256 in result.requirements

    def test_a_local_file_index_is_not_a_lock_source(self) -> None:
        """A file:// index cannot serve a build elsewhere, so the package is unlockable."""
        result = lock_packages(
            with_packages(
                Package(name="numpy", version="2.1.3", index_url="file:///srv/wheels/simple")
            ),
            FakeIndex(),
        )
        assert [n.name for n in result.unlockable] == ["numpy"]
        assert "not an http(s) index" in result.unlockable[0].reason


class TestPins:
    """VCS and URL packages are pinned the way pip can reinstall them."""

    def test_vcs_packages_go_to_their_own_file_pinned_to_the_commit(self) -> None:
        """A git package becomes name @ git+URL@commit#subdirectory, outside the hashed file."""
        result = lock_packages(mixed_manifest(), FakeIndex())
        pin = (
            "mylib @ git+https://github.com/example/mylib.git"
            "@0123456789abcdef0123456789abcdef01234567#subdirectory=python"
        )
        assert pin in lines_of(result.vcs_requirements)
        assert "mylib" not in result.requirements
        assert "without --require-hashes" in result.vcs_requirements
        assert result.locked_vcs == 1

    def test_a_git_plus_url_is_not_prefixed_twice(self) -> None:
        """A URL already spelt git+https:// keeps one prefix."""
        package = Package(
            name="mylib",
            version="1.0",
            source="vcs",
            vcs="git",
            url="git+https://github.com/example/mylib.git",
            commit="a" * 40,
        )
        result = lock_packages(with_packages(package), FakeIndex())
        assert f"mylib @ git+https://github.com/example/mylib.git@{'a' * 40}" in lines_of(
            result.vcs_requirements
        )

    def test_url_packages_with_a_hash_are_pinned_with_it(self) -> None:
        """A direct URL with its archive hash goes into the hashed file."""
        result = lock_packages(mixed_manifest(), FakeIndex())
        text = result.requirements
        assert "tool @ https://files.example.org/tool-1.2.0-py3-none-any.whl \\" in text
        assert f"    --hash=sha256:{'e' * 64}" in lines_of(text)

    def test_url_packages_without_a_hash_are_unlockable(self) -> None:
        """pip's hash checking needs a hash, so a URL package without one is not locked."""
        package = Package(name="tool", version="1.0", source="url", url="https://x.org/t.whl")
        result = lock_packages(with_packages(package), FakeIndex())
        assert result.unlockable[0].name == "tool"
        assert "hash" in result.unlockable[0].reason
        assert "tool" not in result.requirements


class TestUnlockable:
    """What cannot be locked is named with its reason; what the build installs otherwise is not
    called unlockable."""

    def test_every_unlockable_kind_is_reported_with_its_reason(self) -> None:
        """Local, editable from outside, system, missing version and missing project."""
        packages = (
            Package(
                name="scratch",
                version="0.1",
                source="local",
                reinstallable=False,
                reason="installed from a local directory whose source is not recorded",
            ),
            Package(name="outside", version="0.2", source="editable", reinstallable=False),
            Package(name="apt-thing", version="1.0", source="system"),
            Package(name="numpy", version="9.9.9"),
            Package(name="ghost", version="1.0"),
            Package(name="odd", version="1.0", source="unknown"),
            Package(
                name="torch",
                version="2.3.0+cu999",
                reinstallable=False,
                reason="version 2.3.0+cu999 has a local label and no index serving it was recorded",
            ),
        )
        result = lock_packages(with_packages(*packages), FakeIndex())
        reasons = {note.name: note.reason for note in result.unlockable}
        assert reasons == {
            "apt-thing": "installed by the system package manager; no index serves it",
            "ghost": f"{PYPI} has no project named ghost",
            "numpy": f"version 9.9.9 is not on {PYPI}",
            "odd": "where it was installed from is unknown",
            "outside": "the manifest marks it as not reinstallable",
            "scratch": "installed from a local directory whose source is not recorded",
            "torch": "version 2.3.0+cu999 has a local label and no index serving it was recorded",
        }
        assert [n.name for n in result.unlockable] == sorted(reasons)
        assert result.locked_index == 0

    def test_the_projects_own_editable_source_and_conda_packages_are_covered(self) -> None:
        """The build installs those from the commit and the conda lock: not unlockable."""
        manifest = mixed_manifest()
        python = dataclasses.replace(
            manifest.python,
            packages=(
                *manifest.python.packages,
                Package(name="certifi", version="2024.2.2", source="conda"),
            ),
        )
        result = lock_packages(dataclasses.replace(manifest, python=python), FakeIndex())
        assert {n.name for n in result.covered_elsewhere} == {"certifi", "train-logreg"}
        assert "train-logreg" not in {n.name for n in result.unlockable}

    def test_conda_installed_python_packages_without_a_conda_record_are_unlockable(self) -> None:
        """Without conda records nothing pins them."""
        package = Package(name="certifi", version="2024.2.2", source="conda")
        result = lock_packages(with_packages(package), FakeIndex())
        assert [n.name for n in result.unlockable] == ["certifi"]


INJECTIONS = (
    Package(name="evil\n--index-url https://evil.example/simple", version="1.0"),
    Package(name="evil --extra-index-url=https://evil.example", version="1.0"),
    Package(name="--trusted-host", version="1.0"),
    Package(name="numpy", version="2.1.3\n--trusted-host evil.example"),
    Package(name="numpy", version="2.1.3 --hash=sha256:" + "0" * 64),
    Package(name="numpy", version="2.1.3;--x"),
    Package(name="numpy", version="2.1.3", index_url=f"{PYPI}\n--trusted-host evil.example"),
    Package(name="numpy", version="2.1.3", index_url=f"{PYPI} --trusted-host evil.example"),
    Package(
        name="mylib",
        version="1.0",
        source="vcs",
        vcs="git",
        url="https://github.com/x/y.git\n--index-url https://evil.example",
        commit="a" * 40,
    ),
    Package(
        name="mylib",
        version="1.0",
        source="vcs",
        vcs="git",
        url="https://github.com/x/y.git",
        commit="a" * 40 + " --index-url https://evil.example",
    ),
    Package(
        name="mylib",
        version="1.0",
        source="vcs",
        vcs="git",
        url="https://github.com/x/y.git",
        commit="a" * 40,
        subdirectory="sub\n--index-url https://evil.example",
    ),
    Package(
        name="tool",
        version="1.0",
        source="url",
        url="https://x.org/t.whl --index-url https://evil.example",
        archive_hash="sha256=" + "e" * 64,
    ),
    Package(
        name="tool",
        version="1.0",
        source="url",
        url="https://x.org/t.whl",
        archive_hash="sha256=" + "e" * 64 + "\n--index-url https://evil.example",
    ),
)


class TestInjection:
    """No manifest value can add an option line to a lock file."""

    @pytest.mark.parametrize("package", INJECTIONS, ids=lambda p: repr(p.name + p.version)[:40])
    def test_an_injection_attempt_is_refused_and_writes_no_option(self, package: Package) -> None:
        """The package is unlockable and every line of the files is one the lock itself writes."""
        result = lock_packages(with_packages(package), FakeIndex())
        assert len(result.unlockable) == 1
        for text in (result.requirements, result.vcs_requirements):
            assert "evil" not in text
            for line in lines_of(text):
                assert line.startswith(("#", "    --hash=sha256:")) or line == "", line

    def test_a_run_id_with_a_newline_stays_out_of_the_header(self) -> None:
        """A hand-made manifest's run id cannot end the header comment and start an option."""
        manifest = dataclasses.replace(
            with_packages(Package(name="numpy", version="2.1.3")),
            run_id="x\n--index-url https://evil.example/simple",
            digest="sha256:x\n--trusted-host evil.example",
        )
        result = lock_packages(manifest, FakeIndex())
        assert "evil" not in result.requirements
        assert lines_of(result.requirements)[0] == "# Written by envsnap lock for run (unnamed)."

    def test_conda_urls_cannot_add_lines_to_the_explicit_lock(self) -> None:
        """A conda URL with a newline is refused, so the explicit file keeps one URL a line."""
        evil = CondaPackage(
            name="python",
            version="3.11.7",
            url="https://conda.anaconda.org/x.conda\nhttps://evil.example/y.conda",
            md5="5" * 32,
        )
        manifest = sample_manifest(conda=Conda(present=True, packages=(evil,)))
        result = lock_packages(manifest, FakeIndex())
        assert result.conda_explicit == ""
        assert result.unlockable[0].manager == "conda"


class TestConda:
    """Conda packages get an explicit lock and a conda-lock v1 file that parse back."""

    def test_explicit_lock_lists_every_package_by_url_and_hash_sorted(self) -> None:
        """md5 where recorded, else sha256; packages without a URL are unlockable."""
        result = lock_packages(mixed_manifest(), FakeIndex())
        lines = lines_of(result.conda_explicit)
        body = lines[lines.index("@EXPLICIT") + 1 :]
        assert body == [
            "https://conda.anaconda.org/conda-forge/linux-64/ca-certificates-2024.2.2-hbcca054_0.conda#sha256:"
            + "7" * 64,
            "https://conda.anaconda.org/conda-forge/linux-64/python-3.11.7-hab00c5b_1_cpython.conda#"
            + "5" * 32,
        ]
        assert "# platform: linux-64" in lines
        conda_notes = [n for n in result.unlockable if n.manager == "conda"]
        assert [(n.name, n.reason) for n in conda_notes] == [
            ("local-thing", "no download URL was recorded for it")
        ]
        assert result.locked_conda == 2

    def test_conda_lock_file_parses_back_as_version_1(self) -> None:
        """The YAML is conda-lock v1: metadata, and one entry per package with url and hash."""
        result = lock_packages(mixed_manifest(), FakeIndex())
        data = yaml.safe_load(result.conda_lock)
        assert data["version"] == 1
        assert data["metadata"]["platforms"] == ["linux-64"]
        assert data["metadata"]["channels"] == [
            {"url": "https://conda.anaconda.org/conda-forge", "used_env_vars": []}
        ]
        assert list(data["metadata"]["content_hash"]) == ["linux-64"]
        assert [(p["name"], p["manager"], p["platform"]) for p in data["package"]] == [
            ("ca-certificates", "conda", "linux-64"),
            ("python", "conda", "linux-64"),
        ]
        python = data["package"][1]
        assert python["hash"] == {"md5": "5" * 32, "sha256": "6" * 64}
        assert python["version"] == "3.11.7"
        assert python["optional"] is False

    def test_platform_comes_from_the_host_when_subdirs_do_not_decide(self) -> None:
        """Only noarch packages: the host's OS and architecture name the platform."""
        noarch = CondaPackage(
            name="tzdata",
            version="2024a",
            subdir="noarch",
            url="https://conda.anaconda.org/conda-forge/noarch/tzdata-2024a-h0c530f3_0.conda",
            md5="1" * 32,
        )
        manifest = sample_manifest(
            host=Host(os_id="debian", arch="aarch64"),
            conda=Conda(present=True, packages=(noarch,)),
        )
        result = lock_packages(manifest, FakeIndex())
        assert "# platform: linux-aarch64" in lines_of(result.conda_explicit)

    def test_no_conda_packages_means_no_conda_files(self) -> None:
        """A plain venv run gets only the pip lock."""
        result = lock_packages(sample_manifest(), FakeIndex())
        assert result.conda_explicit == result.conda_lock == ""
        assert list(result.file_texts()) == [REQUIREMENTS_FILE]


class TestWriting:
    """Lock files are written whole, atomically, and byte-for-byte the same each time."""

    def test_golden_files(self, tmp_path: Path) -> None:
        """Every file of the mixed manifest's lock equals its golden copy."""
        result = lock_packages(mixed_manifest(), FakeIndex())
        written = write_lock_files(Store(tmp_path), tmp_path, result)
        names = [p.name for p in written]
        assert names == [
            REQUIREMENTS_FILE,
            VCS_FILE,
            CONDA_EXPLICIT_FILE,
            CONDA_LOCK_FILE,
            SUMMARY_FILE,
        ]
        if os.environ.get("ENVSNAP_UPDATE_GOLDEN") == "1":
            GOLDEN.mkdir(parents=True, exist_ok=True)
            for path in written:
                (GOLDEN / path.name).write_bytes(path.read_bytes())
        for path in written:
            assert path.read_bytes() == (GOLDEN / path.name).read_bytes(), path.name
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp files

    def test_same_manifest_same_bytes_whatever_the_package_order(self, tmp_path: Path) -> None:
        """Locking twice, once with the packages reversed, writes identical files."""
        manifest = mixed_manifest()
        reversed_manifest = dataclasses.replace(
            manifest,
            python=dataclasses.replace(
                manifest.python, packages=tuple(reversed(manifest.python.packages))
            ),
            conda=dataclasses.replace(
                manifest.conda, packages=tuple(reversed(manifest.conda.packages))
            ),
        )
        first, second = tmp_path / "a", tmp_path / "b"
        first.mkdir()
        second.mkdir()
        write_lock_files(Store(tmp_path), first, lock_packages(manifest, FakeIndex()))
        write_lock_files(Store(tmp_path), second, lock_packages(reversed_manifest, FakeIndex()))
        for path in first.iterdir():
            assert path.read_bytes() == (second / path.name).read_bytes(), path.name

    def test_summary_names_unlockable_packages_and_file_hashes(self, tmp_path: Path) -> None:
        """lock.toml says what was left out and why, and the sha256 of each lock file."""
        import hashlib

        write_lock_files(Store(tmp_path), tmp_path, lock_packages(mixed_manifest(), FakeIndex()))
        summary = tomllib.loads((tmp_path / SUMMARY_FILE).read_text())
        assert summary["schema"] == "envsnap.lock/1"
        assert summary["counts"]["unlockable"] == 2
        assert {u["name"] for u in summary["unlockable"]} == {"scratch", "local-thing"}
        digest = hashlib.sha256((tmp_path / REQUIREMENTS_FILE).read_bytes()).hexdigest()
        assert summary["files"][REQUIREMENTS_FILE] == f"sha256:{digest}"

    def test_a_lock_without_vcs_packages_removes_an_old_vcs_file(self, tmp_path: Path) -> None:
        """Files a previous lock wrote do not outlive a lock that has no use for them."""
        (tmp_path / VCS_FILE).write_text("stale\n")
        write_lock_files(Store(tmp_path), tmp_path, lock_packages(sample_manifest(), FakeIndex()))
        assert not (tmp_path / VCS_FILE).exists()

    def test_an_unwritable_run_directory_is_a_lock_error(self, tmp_path: Path) -> None:
        """A missing directory gives one sentence, not a traceback."""
        with pytest.raises(LockError, match="cannot be written"):
            write_lock_files(
                Store(tmp_path), tmp_path / "missing", lock_packages(sample_manifest(), FakeIndex())
            )

    def test_lock_run_writes_beside_the_manifest(self, tmp_path: Path) -> None:
        """The CLI's entry point locks a stored run into its directory."""
        manifest = with_packages(Package(name="numpy", version="2.1.3"))
        run = StoredRun(run_id=manifest.run_id, directory=tmp_path, manifest=manifest, result=None)
        result, paths = lock_run(run, Store(tmp_path), source=FakeIndex())
        assert result.locked_index == 1
        assert [p.parent for p in paths] == [tmp_path, tmp_path]

    def test_a_run_is_locked_once(self, tmp_path: Path) -> None:
        """A second lock reads the lock files back without asking the index and leaves their
        bytes alone, so they never depend on which command ran last."""
        manifest = with_packages(Package(name="numpy", version="2.1.3"))
        run = StoredRun(run_id=manifest.run_id, directory=tmp_path, manifest=manifest, result=None)
        first, paths = lock_run(run, Store(tmp_path), source=FakeIndex())
        before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}
        index = FakeIndex()
        again, again_paths = lock_run(run, Store(tmp_path), source=index)
        assert index.asked == []
        assert sorted(again_paths) == sorted(paths)
        assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths} == before
        assert again.requirements == first.requirements
        assert again.locked_index == first.locked_index == 1

    def test_a_lock_file_changed_after_writing_is_refused(self, tmp_path: Path) -> None:
        """An edited requirements lock is reported in one sentence, never used."""
        manifest = with_packages(Package(name="numpy", version="2.1.3"))
        run = StoredRun(run_id=manifest.run_id, directory=tmp_path, manifest=manifest, result=None)
        lock_run(run, Store(tmp_path), source=FakeIndex())
        path = tmp_path / REQUIREMENTS_FILE
        path.write_text(path.read_text() + "evil==1.0\n")
        with pytest.raises(LockError, match="changed after it was written"):
            lock_run(run, Store(tmp_path), source=FakeIndex())


class CannedClient(SimpleIndexClient):
    """The real client with its network call replaced by canned pages."""

    def __init__(self, cache_dir: Path, pages: Mapping[tuple[str, str], tuple[IndexFile, ...]]):
        super().__init__(cache_dir=cache_dir, proxies={})
        self.pages = pages

    def fetch(
        self, index_url: str, project: str, versions: Sequence[str] = ()
    ) -> tuple[IndexFile, ...] | None:
        self.fetches += 1
        return self.pages.get((index_url, project))


class TestClientCache:
    """The client's cache makes a warm lock ask no index, yet finds newly published versions."""

    def test_a_warm_lock_fetches_nothing(self, tmp_path: Path) -> None:
        """The second lock with the same cache directory answers from disk."""
        manifest = with_packages(
            Package(name="numpy", version="2.1.3"), Package(name="scipy", version="1.14.1")
        )
        cold = CannedClient(tmp_path, INDEX)
        first = lock_packages(manifest, cold)
        assert cold.fetches == 2
        warm = CannedClient(tmp_path, {})
        assert lock_packages(manifest, warm) == first
        assert warm.fetches == 0

    def test_a_version_missing_from_the_cache_is_fetched_again(self, tmp_path: Path) -> None:
        """A cached page older than the version asked for does not hide it."""
        CannedClient(tmp_path, INDEX).files([IndexQuery(PYPI, "numpy", "2.1.3")])
        newer = {(PYPI, "numpy"): (*INDEX[(PYPI, "numpy")], wheel("numpy", "2.2.0"))}
        client = CannedClient(tmp_path, newer)
        result = lock_packages(with_packages(Package(name="numpy", version="2.2.0")), client)
        assert client.fetches == 1
        assert result.locked_index == 1

    def test_a_damaged_cache_file_is_ignored(self, tmp_path: Path) -> None:
        """Garbage in the cache costs a fetch, not a failure."""
        client = CannedClient(tmp_path, INDEX)
        client.files([IndexQuery(PYPI, "numpy", "2.1.3")])
        for path in tmp_path.rglob("*.json"):
            path.write_text("{not json")
        again = CannedClient(tmp_path, INDEX)
        again.files([IndexQuery(PYPI, "numpy", "2.1.3")])
        assert again.fetches == 1


class TestPageParsing:
    """Both simple-index formats give file names, hashes and yanked flags."""

    def test_pep691_json(self) -> None:
        """The JSON API's files become IndexFiles."""
        body = json.dumps(
            {
                "meta": {"api-version": "1.1"},
                "name": "six",
                "files": [
                    {"filename": "six-1.16.0.tar.gz", "hashes": {"sha256": "AB" * 32}},
                    {"filename": "six-1.0.tar.gz", "hashes": {}, "yanked": "broken"},
                ],
            }
        ).encode()
        files = _parse_page(body, "application/vnd.pypi.simple.v1+json", "u", PYPI, "six")
        assert files == (
            IndexFile(filename="six-1.16.0.tar.gz", sha256="ab" * 32),
            IndexFile(filename="six-1.0.tar.gz", sha256="", yanked=True),
        )

    def test_pep503_html_with_encoded_local_labels(self) -> None:
        """Anchors give the name (decoded), the sha256 fragment and data-yanked."""
        body = (
            "<html><body>"
            f'<a href="/whl/torch-2.3.0%2Bcu121-cp311-cp311-linux_x86_64.whl#sha256={"c" * 64}">'
            "torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl</a>"
            f'<a href="torch-2.2.0.tar.gz#sha256={"d" * 64}" data-yanked="">'
            "torch-2.2.0.tar.gz</a>"
            '<a href="torch-2.1.0.tar.gz#md5=00">torch-2.1.0.tar.gz</a>'
            "</body></html>"
        ).encode()
        files = _parse_page(body, "text/html; charset=utf-8", f"{CU121}/torch/", CU121, "torch")
        assert files == (
            IndexFile(filename="torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl", sha256="c" * 64),
            IndexFile(filename="torch-2.2.0.tar.gz", sha256="d" * 64, yanked=True),
            IndexFile(filename="torch-2.1.0.tar.gz", sha256=""),
        )

    def test_a_page_that_is_not_an_index_is_an_error(self) -> None:
        """A JSON body without files, or an image, is refused with a sentence."""
        with pytest.raises(EnvsnapError, match="not a package index page"):
            _parse_page(b"{}", "application/json", "u", PYPI, "six")
        with pytest.raises(EnvsnapError, match="not a package index page"):
            _parse_page(b"\x89PNG", "image/png", "u", PYPI, "six")


class TestBaseProvided:
    """Packages the base image has at the recorded version are neither locked nor unlockable."""

    def test_provided_at_the_recorded_version_is_left_to_the_base(self) -> None:
        """An NGC torch build no index serves is covered by the base; numpy at another version
        than the base's is still locked from the index."""
        torch = Package(name="torch", version="2.3.0a0+40ec155e58", source="system")
        numpy = Package(name="numpy", version="2.1.3")
        provided = {"torch": "2.3.0a0+40ec155e58", "numpy": "1.26.4"}
        result = lock_packages(with_packages(torch, numpy), FakeIndex(), provided=provided)
        assert result.base_provided == ("torch",)
        assert result.unlockable == ()
        assert [(n.name, n.reason) for n in result.covered_elsewhere] == [
            ("torch", "provided by the base image at this version; not installed again")
        ]
        assert "numpy==2.1.3 \\" in lines_of(result.requirements)
        assert "torch" not in result.requirements

    def test_without_a_base_the_same_package_is_unlockable(self) -> None:
        """The same torch, with no base that provides it, cannot be locked."""
        torch = Package(name="torch", version="2.3.0a0+40ec155e58", source="system")
        result = lock_packages(with_packages(torch), FakeIndex())
        assert [n.name for n in result.unlockable] == ["torch"]
        assert result.base_provided == ()


class TestAnIndexThatKnowsNothing:
    """An index that has none of several projects asked of it is a wrong index URL (or a proxy
    answering 404 for everything), not a list of unlockable packages."""

    WRONG = "https://mirror.example.org/simpel"

    def test_several_projects_all_missing_is_one_lock_error(self, tmp_path: Path) -> None:
        """Three packages, none on their index: one sentence naming the index and them, exit
        code 2, and no lock file written."""
        manifest = with_packages(
            *(Package(name=name, version="1.0") for name in ("six", "numpy", "scipy")),
            index_url=self.WRONG,
        )
        run = StoredRun(run_id=manifest.run_id, directory=tmp_path, manifest=manifest, result=None)
        with pytest.raises(LockError) as info:
            lock_run(run, Store(tmp_path), source=FakeIndex())
        assert str(info.value).startswith(
            f"{self.WRONG} has none of the 3 projects asked of it (numpy, scipy, six); "
        )
        assert info.value.exit_code == 2
        assert list(tmp_path.iterdir()) == []

    def test_one_missing_project_is_still_unlockable(self) -> None:
        """A single project the index lacks may really be gone: it is reported, not fatal."""
        manifest = with_packages(Package(name="ghost", version="1.0"), index_url=self.WRONG)
        result = lock_packages(manifest, FakeIndex())
        assert [(n.name, n.reason) for n in result.unlockable] == [
            ("ghost", f"{self.WRONG} has no project named ghost")
        ]

    def test_an_index_serving_some_projects_is_asked_no_further(self) -> None:
        """One project found on the index is enough: the missing ones are unlockable."""
        packages = (Package(name="numpy", version="2.1.3"), Package(name="ghost", version="1.0"))
        result = lock_packages(with_packages(*packages), FakeIndex())
        assert [n.name for n in result.unlockable] == ["ghost"]
        assert result.locked_index == 1
