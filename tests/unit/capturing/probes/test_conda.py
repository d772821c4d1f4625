"""The conda probe reads an environment's conda-meta records without conda or a network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envsnap.capturing.probes.conda import capture_conda, channel_name, clean_conda_url

NUMPY = {
    "arch": "x86_64",
    "build": "py311h64a7726_0",
    "build_number": 0,
    "channel": "https://conda.anaconda.org/conda-forge/linux-64",
    "constrains": ["numpy-base <0a0"],
    "depends": ["libblas >=3.9.0,<4.0a0", "python >=3.11,<3.12.0a0", "python_abi 3.11.* *_cp311"],
    "extracted_package_dir": "/opt/conda/pkgs/numpy-1.26.4-py311h64a7726_0",
    "files": ["bin/f2py", "lib/python3.11/site-packages/numpy/__init__.py"],
    "fn": "numpy-1.26.4-py311h64a7726_0.conda",
    "license": "BSD-3-Clause",
    "link": {"source": "/opt/conda/pkgs/numpy-1.26.4-py311h64a7726_0", "type": 1},
    "md5": "a502d7aad449a1206efb366d6a12c52d",
    "name": "numpy",
    "package_tarball_full_path": "/opt/conda/pkgs/numpy-1.26.4-py311h64a7726_0.conda",
    "paths_data": {"paths": [{"_path": "bin/f2py", "path_type": "hardlink"}], "paths_version": 1},
    "platform": "linux",
    "requested_spec": "conda-forge::numpy=1.26",
    "sha256": "3f4365e11b28e244c95ba8579942b0802761ba7bb31c026f50d1a9ea9c728149",
    "size": 8065890,
    "subdir": "linux-64",
    "timestamp": 1707225380409,
    "url": "https://conda.anaconda.org/conda-forge/linux-64/numpy-1.26.4-py311h64a7726_0.conda",
    "version": "1.26.4",
}

PYTHON = {
    "build": "h955ad1f_0",
    "build_number": 0,
    "channel": "pkgs/main",
    "fn": "python-3.11.9-h955ad1f_0.conda",
    "md5": "5668a8845dd35bbbc9663c8f217a2ab8",
    "name": "python",
    "subdir": "linux-64",
    "url": "https://repo.anaconda.com/pkgs/main/linux-64/python-3.11.9-h955ad1f_0.conda",
    "version": "3.11.9",
}

PRIVATE = {
    "build": "py_0",
    "channel": "https://deploy:s3cret@conda.internal.example/channels/ml/noarch",
    "md5": "0" * 32,
    "name": "internal-tools",
    "subdir": "noarch",
    "url": "https://deploy:s3cret@conda.internal.example/channels/ml/noarch/internal-tools-2.0-py_0.tar.bz2",
    "version": "2.0",
}

TOKEN = {
    "build": "py3.11_cuda12.1_cudnn8.9.2_0",
    "name": "pytorch",
    "subdir": "linux-64",
    "url": "https://conda.anaconda.org/t/ab-12345678-abcd/pytorch/linux-64/pytorch-2.3.0-py3.11_cuda12.1_cudnn8.9.2_0.tar.bz2",
    "version": "2.3.0",
}


def conda_env(root: Path, *records: dict[str, Any]) -> Path:
    """An environment directory with one conda-meta record per package, named as conda does."""
    meta = root / "conda-meta"
    meta.mkdir(parents=True)
    for record in records:
        name = f"{record['name']}-{record['version']}-{record['build']}.json"
        (meta / name).write_text(json.dumps(record, indent=2, sort_keys=True))
    (meta / "history").write_text("==> 2024-05-01 10:00:00 <==\n# cmd: conda create -n train\n")
    return root


class TestCaptureConda:
    def test_absent_without_conda_meta(self, tmp_path: Path) -> None:
        """A prefix without conda-meta is not a conda environment."""
        conda = capture_conda(tmp_path)
        assert not conda.present
        assert conda.packages == ()

    def test_records_become_sorted_packages(self, tmp_path: Path) -> None:
        """Each record gives name, version, build, channel, subdir, url and hashes, by name."""
        prefix = conda_env(tmp_path / "envs" / "train", PYTHON, NUMPY)
        conda = capture_conda(prefix)
        assert (conda.present, conda.name, conda.prefix) == (True, "train", str(prefix))
        assert [p.name for p in conda.packages] == ["numpy", "python"]
        numpy = conda.packages[0]
        assert (numpy.version, numpy.build, numpy.channel, numpy.subdir) == (
            "1.26.4",
            "py311h64a7726_0",
            "conda-forge",
            "linux-64",
        )
        assert numpy.url == NUMPY["url"]
        assert (numpy.md5, numpy.sha256) == (NUMPY["md5"], NUMPY["sha256"])

    def test_defaults_channel_keeps_its_conda_name(self, tmp_path: Path) -> None:
        """A ``pkgs/main`` channel is recorded as conda names it."""
        conda = capture_conda(conda_env(tmp_path / "env", PYTHON))
        assert conda.packages[0].channel == "pkgs/main"

    def test_private_channel_loses_credentials(self, tmp_path: Path) -> None:
        """User-info in a channel or package URL never reaches the manifest."""
        conda = capture_conda(conda_env(tmp_path / "env", PRIVATE))
        package = conda.packages[0]
        assert package.channel == "https://conda.internal.example/channels/ml"
        assert package.url.startswith("https://conda.internal.example/channels/ml/noarch/")
        assert "s3cret" not in repr(conda)

    def test_anaconda_token_is_removed_and_channel_derived_from_url(self, tmp_path: Path) -> None:
        """A ``/t/<token>`` path segment is dropped; a missing channel comes from the URL."""
        conda = capture_conda(conda_env(tmp_path / "env", TOKEN))
        package = conda.packages[0]
        assert package.channel == "pytorch"
        assert "/t/" not in package.url
        assert "ab-12345678" not in repr(conda)

    def test_malformed_record_keeps_what_its_file_name_says(self, tmp_path: Path) -> None:
        """A record that is not JSON still yields name, version and build from its file name."""
        prefix = conda_env(tmp_path / "env", NUMPY)
        (prefix / "conda-meta" / "broken-pkg-1.0-h123_0.json").write_text('{"name": ')
        (prefix / "conda-meta" / "list-0.1-0.json").write_text("[1, 2]")
        conda = capture_conda(prefix)
        names = {p.name: (p.version, p.build, p.channel) for p in conda.packages}
        assert names["broken-pkg"] == ("1.0", "h123_0", "")
        assert names["list"] == ("0.1", "0", "")

    def test_base_installation_is_named_base(self, tmp_path: Path) -> None:
        """conda's own installation (it has condabin/) is the ``base`` environment."""
        prefix = conda_env(tmp_path / "miniforge3", PYTHON)
        (prefix / "condabin").mkdir()
        assert capture_conda(prefix).name == "base"


class TestChannelNames:
    def test_named_channel_passes_through(self) -> None:
        """A channel already given by name stays as it is."""
        assert channel_name("conda-forge", "", "linux-64") == "conda-forge"

    def test_file_channel_is_kept_as_url(self) -> None:
        """A local file channel stays a URL without its subdir."""
        assert channel_name("file:///opt/channel/linux-64", "", "linux-64") == "file:///opt/channel"

    def test_clean_conda_url_strips_token_and_userinfo(self) -> None:
        """Both anaconda.org tokens and user:password are removed from a URL."""
        url = "https://u:p@conda.anaconda.org/t/tok-123/chan/noarch/x-1-0.tar.bz2"
        assert clean_conda_url(url) == "https://conda.anaconda.org/chan/noarch/x-1-0.tar.bz2"
