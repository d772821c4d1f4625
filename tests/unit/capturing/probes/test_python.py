"""The Python probe reads distributions, their origins and the index configuration from files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from envsnap.capturing.probes.distributions import FoundDistribution, find_distributions
from envsnap.capturing.probes.interpreter import PythonTarget, current_target, target_for_prefix
from envsnap.capturing.probes.python import capture_python, capture_tool, read_index_config
from envsnap.distnames import normalize_name
from envsnap.manifest import Package


def dist_info(
    site: Path,
    dirname: str,
    *,
    installer: str | None = "pip",
    wheel_tags: tuple[str, ...] = ("py3-none-any",),
    direct_url: object | None = None,
    metadata: str = "",
) -> Path:
    """Write a dist-info directory as pip leaves it."""
    path = site / dirname
    path.mkdir(parents=True)
    (path / "METADATA").write_text(metadata or "Metadata-Version: 2.1\nName: x\nVersion: 0\n\n")
    if installer is not None:
        (path / "INSTALLER").write_text(installer + "\n")
    if wheel_tags:
        tags = "".join(f"Tag: {t}\n" for t in wheel_tags)
        (path / "WHEEL").write_text(f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n{tags}")
    if direct_url is not None:
        text = direct_url if isinstance(direct_url, str) else json.dumps(direct_url)
        (path / "direct_url.json").write_text(text)
    return path


def make_venv(root: Path, version: str = "3.11.7") -> Path:
    """A venv layout (pyvenv.cfg, bin/python, lib/pythonX.Y/site-packages) without a process."""
    minor = ".".join(version.split(".")[:2])
    site = root / "lib" / f"python{minor}" / "site-packages"
    site.mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "python").write_text("")
    (root / "pyvenv.cfg").write_text(
        f"home = /opt/python/bin\ninclude-system-site-packages = false\nversion = {version}\n"
    )
    return site


def target(site_dirs: tuple[Path, ...], prefix: Path) -> PythonTarget:
    return PythonTarget(
        implementation="CPython",
        version="3.11.7",
        executable=str(prefix / "bin" / "python"),
        prefix=prefix,
        base_prefix=prefix,
        site_dirs=site_dirs,
    )


def by_name(packages: tuple[Package, ...]) -> dict[str, Package]:
    return {p.name: p for p in packages}


NO_CONFIG: list[Path] = []


class TestNames:
    def test_names_are_normalised_per_pep_503(self) -> None:
        """Case and runs of ``-``, ``_`` and ``.`` collapse to one lowercase dash."""
        assert normalize_name("Zope.Interface") == "zope-interface"
        assert normalize_name("typing__extensions") == "typing-extensions"
        assert normalize_name("PyYAML") == "pyyaml"


class TestFindDistributions:
    def test_dist_info_names_give_name_and_version(self, tmp_path: Path) -> None:
        """The version comes from the dist-info directory name, not the METADATA file."""
        dist_info(tmp_path, "PyYAML-6.0.1.dist-info", metadata="Name: PyYAML\nVersion: 9\n\n")
        found = find_distributions([tmp_path])
        assert list(found) == ["pyyaml"]
        assert found["pyyaml"].version == "6.0.1"

    def test_unparseable_name_falls_back_to_metadata_headers(self, tmp_path: Path) -> None:
        """A dist-info name that does not split reads Name/Version headers from METADATA."""
        dist_info(
            tmp_path,
            "odd-name-1.0-x-y.dist-info",
            metadata="Metadata-Version: 2.1\nName: Odd_Name\nVersion: 1.0.post1\n\nbody",
        )
        found = find_distributions([tmp_path])
        assert found["odd-name"].version == "1.0.post1"

    def test_legacy_egg_info_file_and_directory(self, tmp_path: Path) -> None:
        """egg-info files and directories (``-pyX.Y`` suffix or none) are distributions too."""
        (tmp_path / "six-1.16.0-py3.11.egg-info").write_text("Name: six\nVersion: 1.16.0\n")
        legacy = tmp_path / "oldpkg.egg-info"
        legacy.mkdir()
        (legacy / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: oldpkg\nVersion: 0.3\n\n")
        found = find_distributions([tmp_path])
        assert {n: d.version for n, d in found.items()} == {"six": "1.16.0", "oldpkg": "0.3"}

    def test_first_site_directory_wins(self, tmp_path: Path) -> None:
        """A distribution shadowed by an earlier site directory is reported once, as imported."""
        first, second = tmp_path / "a", tmp_path / "b"
        dist_info(first, "numpy-2.1.3.dist-info")
        dist_info(second, "numpy-1.26.4.dist-info")
        dist_info(second, "scipy-1.14.1.dist-info")
        found = find_distributions([first, second])
        assert found["numpy"].version == "2.1.3"
        assert found["scipy"].version == "1.14.1"

    def test_missing_site_directory_is_skipped(self, tmp_path: Path) -> None:
        """A site directory that does not exist contributes nothing and raises nothing."""
        assert find_distributions([tmp_path / "absent"]) == {}


class TestSources:
    def capture(self, site: Path, repo_root: Path | None = None) -> dict[str, Package]:
        section = capture_python(
            target((site,), site), env={}, pip_config_files=NO_CONFIG, repo_root=repo_root
        )
        return by_name(section.packages)

    def test_index_package_records_installer_and_wheel_tag(self, tmp_path: Path) -> None:
        """Without direct_url.json a package came from an index; INSTALLER and WHEEL are kept."""
        dist_info(
            tmp_path,
            "six-1.16.0.dist-info",
            installer="uv",
            wheel_tags=("py3-none-any", "py2-none-any"),
        )
        six = self.capture(tmp_path)["six"]
        assert (six.source, six.installer, six.wheel_tag) == ("index", "uv", "py2.py3-none-any")
        assert six.reinstallable

    def test_platform_tags_compress_as_in_a_wheel_file_name(self, tmp_path: Path) -> None:
        """Several platform tags of one build join with dots, sorted, like a wheel file name."""
        dist_info(
            tmp_path,
            "numpy-2.1.3.dist-info",
            wheel_tags=("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"),
        )
        tag = self.capture(tmp_path)["numpy"].wheel_tag
        assert tag == "cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64"

    def test_vcs_install_keeps_commit_and_strips_credentials(self, tmp_path: Path) -> None:
        """A VCS install records vcs, commit, requested revision, subdirectory; no user-info."""
        dist_info(
            tmp_path,
            "lib-0.1.dist-info",
            direct_url={
                "url": "https://oauth2:glpat-secret@gitlab.example.com/team/lib.git",
                "vcs_info": {"vcs": "git", "commit_id": "c" * 40, "requested_revision": "v0.1"},
                "subdirectory": "python",
            },
        )
        lib = self.capture(tmp_path)["lib"]
        assert lib.source == "vcs"
        assert lib.url == "https://gitlab.example.com/team/lib.git"
        assert (lib.vcs, lib.commit, lib.requested_revision) == ("git", "c" * 40, "v0.1")
        assert lib.subdirectory == "python"
        assert lib.reinstallable

    def test_archive_url_is_cleaned_and_hashed(self, tmp_path: Path) -> None:
        """An archive install records the URL without credentials and its sha256."""
        dist_info(
            tmp_path,
            "priv-2.0.dist-info",
            direct_url={
                "url": "https://user:hunter2@files.example.com/priv-2.0-py3-none-any.whl",
                "archive_info": {"hashes": {"md5": "0" * 32, "sha256": "a" * 64}},
            },
        )
        priv = self.capture(tmp_path)["priv"]
        assert priv.source == "url"
        assert priv.url == "https://files.example.com/priv-2.0-py3-none-any.whl"
        assert "hunter2" not in repr(priv)
        assert priv.archive_hash == "sha256=" + "a" * 64

    def test_legacy_archive_hash_field(self, tmp_path: Path) -> None:
        """The deprecated ``archive_info.hash`` string is used when ``hashes`` is absent."""
        dist_info(
            tmp_path,
            "old-1.0.dist-info",
            direct_url={
                "url": "https://example.com/old-1.0.tar.gz",
                "archive_info": {"hash": "sha256=" + "b" * 64},
            },
        )
        assert self.capture(tmp_path)["old"].archive_hash == "sha256=" + "b" * 64

    def test_file_archive_is_local_and_not_reinstallable(self, tmp_path: Path) -> None:
        """A wheel installed from a local file cannot be fetched again, and says so."""
        dist_info(
            tmp_path,
            "mine-1.0.dist-info",
            direct_url={"url": "file:///tmp/dist/mine-1.0-py3-none-any.whl", "archive_info": {}},
        )
        mine = self.capture(tmp_path)["mine"]
        assert (mine.source, mine.path, mine.reinstallable) == (
            "local",
            "/tmp/dist/mine-1.0-py3-none-any.whl",
            False,
        )
        assert mine.reason

    def test_editable_inside_the_repository_is_relative_and_reinstallable(
        self, tmp_path: Path
    ) -> None:
        """An editable install of the project's own source is recorded relative to the repo."""
        repo = tmp_path / "repo"
        (repo / "src" / "proj").mkdir(parents=True)
        site = tmp_path / "site"
        dist_info(
            site,
            "proj-0.1.dist-info",
            direct_url={"url": (repo / "src" / "proj").as_uri(), "dir_info": {"editable": True}},
        )
        proj = self.capture(site, repo_root=repo)["proj"]
        assert (proj.source, proj.path, proj.reinstallable) == ("editable", "src/proj", True)
        assert proj.reason

    def test_editable_outside_the_repository_is_not_reinstallable(self, tmp_path: Path) -> None:
        """An editable install of a directory outside the project is flagged with a reason."""
        site = tmp_path / "site"
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        dist_info(
            site,
            "other-0.1.dist-info",
            direct_url={"url": elsewhere.as_uri(), "dir_info": {"editable": True}},
        )
        other = self.capture(site, repo_root=tmp_path / "repo")["other"]
        assert (other.source, other.path, other.reinstallable) == (
            "editable",
            str(elsewhere),
            False,
        )
        assert "outside" in other.reason

    def test_plain_directory_install_is_local(self, tmp_path: Path) -> None:
        """A non-editable install from a directory is local and not reinstallable."""
        dist_info(
            tmp_path / "site",
            "tool-1.0.dist-info",
            direct_url={"url": "file:///srv/tool", "dir_info": {}},
        )
        tool = self.capture(tmp_path / "site")["tool"]
        assert (tool.source, tool.path, tool.reinstallable) == ("local", "/srv/tool", False)

    def test_malformed_direct_url_is_unknown(self, tmp_path: Path) -> None:
        """direct_url.json that is not JSON makes the source unknown instead of failing."""
        dist_info(tmp_path, "broken-1.0.dist-info", direct_url="{not json")
        broken = self.capture(tmp_path)["broken"]
        assert (broken.source, broken.reinstallable) == ("unknown", False)

    def test_conda_installer_means_conda_source(self, tmp_path: Path) -> None:
        """conda-build's leftover direct_url.json is ignored when INSTALLER says conda."""
        dist_info(
            tmp_path,
            "numpy-1.26.4.dist-info",
            installer="conda",
            direct_url={"url": "file:///home/conda/feedstock_root/build", "dir_info": {}},
        )
        numpy = self.capture(tmp_path)["numpy"]
        assert (numpy.source, numpy.path, numpy.reinstallable) == ("conda", "", True)

    def test_egg_link_is_an_editable_install(self, tmp_path: Path) -> None:
        """A legacy ``.egg-link`` names the project directory whose egg-info gives the version."""
        repo = tmp_path / "repo"
        egg_info = repo / "legacy.egg-info"
        egg_info.mkdir(parents=True)
        (egg_info / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: legacy\nVersion: 0.9\n")
        site = tmp_path / "site"
        site.mkdir()
        (site / "legacy.egg-link").write_text(f"{repo}\n.\n")
        legacy = self.capture(site, repo_root=repo)["legacy"]
        assert (legacy.version, legacy.source, legacy.path) == ("0.9", "editable", ".")

    def test_envsnap_itself_is_not_a_package(self, tmp_path: Path) -> None:
        """The tool's own distribution is left out of the experiment's packages."""
        dist_info(tmp_path, "envsnap-0.1.0.dist-info")
        dist_info(tmp_path, "six-1.16.0.dist-info")
        assert list(self.capture(tmp_path)) == ["six"]

    def test_packages_are_sorted_by_name(self, tmp_path: Path) -> None:
        """Packages come out sorted by normalised name whatever the directory order."""
        for dirname in ("Zeta-1.0.dist-info", "alpha-1.0.dist-info", "Mid_Pkg-1.0.dist-info"):
            dist_info(tmp_path, dirname)
        assert list(self.capture(tmp_path)) == ["alpha", "mid-pkg", "zeta"]


class TestIndexConfig:
    def test_default_pypi_is_not_recorded(self) -> None:
        """The default PyPI index is implied and left out."""
        config = read_index_config({"PIP_INDEX_URL": "https://pypi.org/simple/"}, [])
        assert config.index_url == ""

    def test_environment_variables_beat_config_files(self, tmp_path: Path) -> None:
        """PIP_INDEX_URL overrides any file; files are read ``[global]`` then ``[install]``."""
        conf = tmp_path / "pip.conf"
        conf.write_text(
            "[global]\nindex-url = https://global.example/simple\n"
            "[install]\nindex_url = https://install.example/simple\n"
            "extra-index-url =\n  https://extra1.example/simple\n  https://extra2.example/simple\n"
        )
        from_file = read_index_config({}, [conf])
        assert from_file.index_url == "https://install.example/simple"
        assert from_file.extra_index_urls == (
            "https://extra1.example/simple",
            "https://extra2.example/simple",
        )
        from_env = read_index_config({"PIP_INDEX_URL": "https://env.example/simple"}, [conf])
        assert from_env.index_url == "https://env.example/simple"

    def test_later_files_win(self, tmp_path: Path) -> None:
        """A later configuration file (user, site, PIP_CONFIG_FILE) overrides an earlier one."""
        first, second = tmp_path / "a.conf", tmp_path / "b.conf"
        first.write_text("[global]\nindex-url = https://first.example/simple\n")
        second.write_text("[global]\nindex-url = https://second.example/simple\n")
        assert read_index_config({}, [first, second]).index_url == "https://second.example/simple"

    def test_credentials_are_stripped_from_every_index(self) -> None:
        """Index URLs keep host and path but never user-info."""
        env = {
            "PIP_INDEX_URL": "https://user:pw@mirror.example/simple",
            "PIP_EXTRA_INDEX_URL": "https://tok@extra.example/simple",
            "UV_EXTRA_INDEX_URL": "https://a:b@uv.example/simple",
        }
        config = read_index_config(env, [])
        assert config.index_url == "https://mirror.example/simple"
        assert config.extra_index_urls == (
            "https://extra.example/simple",
            "https://uv.example/simple",
        )

    def test_uv_index_used_when_pip_has_none(self) -> None:
        """UV_INDEX_URL is the index when PIP_INDEX_URL is not set."""
        assert read_index_config({"UV_INDEX_URL": "https://uv.example/simple"}, []).index_url == (
            "https://uv.example/simple"
        )

    def test_keys_are_matched_whatever_their_case(self, tmp_path: Path) -> None:
        """``INDEX_URL`` in a pip config is index-url, as pip's case-insensitive keys read it."""
        conf = tmp_path / "pip.conf"
        conf.write_text("[global]\nINDEX_URL = https://upper.example/simple\n")
        assert read_index_config({}, [conf]).index_url == "https://upper.example/simple"

    def test_config_without_index_keys_contributes_nothing(self, tmp_path: Path) -> None:
        """A pip config that sets only other options (a certificate, a timeout) adds no index."""
        conf = tmp_path / "pip.conf"
        conf.write_text("[global]\ncert = /etc/ssl/certs/ca.crt\ntimeout = 60\n")
        assert read_index_config({}, [conf]) == read_index_config({}, [])

    def test_malformed_config_file_is_ignored(self, tmp_path: Path) -> None:
        """A config file that does not parse contributes nothing and raises nothing."""
        conf = tmp_path / "pip.conf"
        conf.write_text("this is [not ini\n= =\n")
        assert read_index_config({}, [conf]).index_url == ""

    def test_default_file_list_reads_home_from_env(self, tmp_path: Path) -> None:
        """Without an explicit list, the user's pip.conf is found through HOME in ``env``."""
        site = make_venv(tmp_path / "venv")
        home = tmp_path / "home"
        (home / ".config" / "pip").mkdir(parents=True)
        (home / ".config" / "pip" / "pip.conf").write_text(
            "[global]\nextra-index-url = https://home.example/simple\n"
        )
        section = capture_python(target((site,), tmp_path / "venv"), env={"HOME": str(home)})
        assert "https://home.example/simple" in section.extra_index_urls


class TestLocalVersionLabels:
    def capture(self, site: Path, env: dict[str, str]) -> dict[str, Package]:
        section = capture_python(target((site,), site), env=env, pip_config_files=NO_CONFIG)
        return by_name(section.packages)

    def test_pytorch_family_gets_the_pytorch_index(self, tmp_path: Path) -> None:
        """torch 2.3.0+cu121 with no configured extra index points at download.pytorch.org."""
        dist_info(tmp_path, "torch-2.3.0+cu121.dist-info")
        dist_info(tmp_path, "torchvision-0.18.0+rocm6.0.dist-info")
        packages = self.capture(tmp_path, {})
        assert packages["torch"].index_url == "https://download.pytorch.org/whl/cu121"
        assert packages["torchvision"].index_url == "https://download.pytorch.org/whl/rocm6.0"
        assert packages["torch"].reinstallable

    def test_configured_extra_index_is_preferred(self, tmp_path: Path) -> None:
        """A configured extra index serves local-label builds, matching the label if one does."""
        dist_info(tmp_path, "torch-2.3.0+cpu.dist-info")
        dist_info(tmp_path, "mylib-1.0+internal.dist-info")
        env = {
            "PIP_EXTRA_INDEX_URL": "https://mirror.example/simple "
            "https://u:p@download.pytorch.org/whl/cpu"
        }
        packages = self.capture(tmp_path, env)
        assert packages["torch"].index_url == "https://download.pytorch.org/whl/cpu"
        assert packages["mylib"].index_url == "https://mirror.example/simple"

    def test_unknown_local_label_is_not_reinstallable(self, tmp_path: Path) -> None:
        """A non-PyTorch ``+label`` build with no extra index is flagged, with the reason."""
        dist_info(tmp_path, "mylib-1.0+internal.dist-info")
        mylib = self.capture(tmp_path, {})["mylib"]
        assert not mylib.reinstallable
        assert "no index serving" in mylib.reason


class TestTargets:
    def test_venv_prefix_is_read_from_pyvenv_cfg(self, tmp_path: Path) -> None:
        """A venv's version, base prefix and site-packages come from its files."""
        site = make_venv(tmp_path / "venv", version="3.12.4")
        t = target_for_prefix(tmp_path / "venv")
        assert (t.version, t.base_prefix, t.site_dirs) == ("3.12.4", Path("/opt/python"), (site,))
        assert t.executable == str(tmp_path / "venv" / "bin" / "python")

    def test_version_info_key_of_uv_and_virtualenv(self, tmp_path: Path) -> None:
        """``version_info = 3.11.7.final.0`` (virtualenv) reads as 3.11.7."""
        make_venv(tmp_path / "venv")
        (tmp_path / "venv" / "pyvenv.cfg").write_text(
            "home = /usr/bin\nimplementation = CPython\nversion_info = 3.11.7.final.0\n"
        )
        assert target_for_prefix(tmp_path / "venv").version == "3.11.7"

    def test_conda_prefix_version_comes_from_conda_meta(self, tmp_path: Path) -> None:
        """A conda environment without pyvenv.cfg takes python's version from conda-meta."""
        prefix = tmp_path / "envs" / "train"
        (prefix / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
        (prefix / "conda-meta").mkdir()
        (prefix / "conda-meta" / "python-3.11.9-hab00c5b_0_cpython.json").write_text("{}")
        t = target_for_prefix(prefix)
        assert t.version == "3.11.9"
        section = capture_python(t, env={}, pip_config_files=NO_CONFIG)
        assert section.env_kind == "conda"

    def test_activated_venv_elsewhere_is_the_target(self, tmp_path: Path) -> None:
        """VIRTUAL_ENV naming another prefix than the running one is described instead."""
        make_venv(tmp_path / "venv")
        t = current_target({"VIRTUAL_ENV": str(tmp_path / "venv")})
        assert t.prefix == tmp_path / "venv"

    def test_running_interpreter_without_activation(self) -> None:
        """With no activated environment the running interpreter is the target."""
        t = current_target({})
        assert t.prefix == Path(sys.prefix)
        assert t.version == "{}.{}.{}".format(*sys.version_info[:3])

    def test_env_kind_of_a_plain_prefix_is_system(self, tmp_path: Path) -> None:
        """A prefix with neither conda-meta nor pyvenv.cfg is a system interpreter."""
        (tmp_path / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
        section = capture_python(target_for_prefix(tmp_path), env={}, pip_config_files=NO_CONFIG)
        assert section.env_kind == "system"


class TestTool:
    def test_tool_is_found_in_the_running_environment(self, tmp_path: Path) -> None:
        """capture_tool reports the installed envsnap's version and how it was installed."""
        make_venv(tmp_path / "venv")
        tool = capture_tool(target_for_prefix(tmp_path / "venv"))
        import envsnap

        assert tool.version == envsnap.__version__
        assert tool.source in ("index", "editable", "local")

    def test_distributions_already_found_are_not_scanned_again(self) -> None:
        """Given the running interpreter's distributions, capture_tool answers from them."""
        running = current_target({})
        found = find_distributions(running.site_dirs)
        assert capture_tool(running, installed=found) == capture_tool(running)
        stand_in = FoundDistribution(
            name="envsnap", version="9.9", kind="egg-link", path=Path("/nonexistent")
        )
        assert capture_tool(running, installed={"envsnap": stand_in}).version == "9.9"

    def test_distributions_of_another_target_are_not_taken_for_the_tool(
        self, tmp_path: Path
    ) -> None:
        """For a target apart from the running interpreter, its distributions are not enough:
        the running interpreter's site directories come first."""
        make_venv(tmp_path / "venv")
        other = target_for_prefix(tmp_path / "venv")
        stand_in = FoundDistribution(
            name="envsnap", version="9.9", kind="egg-link", path=Path("/nonexistent")
        )
        tool = capture_tool(other, installed={"envsnap": stand_in})
        assert tool == capture_tool(other)
        assert tool.version != "9.9"


class TestManyDistributions:
    def test_capture_of_122_distributions(self, tmp_path: Path) -> None:
        """All 122 distributions of a typical ML venv are recorded with their sources.

        How fast that is is measured in benchmarks/bench_capture.py, not asserted here."""
        site = tmp_path / "site"
        for i in range(122):
            direct = {"url": "https://example.com/a.whl", "archive_info": {}} if i % 10 else None
            dist_info(site, f"pkg{i}-1.{i}.dist-info", direct_url=direct)
        section = capture_python(target((site,), tmp_path), env={}, pip_config_files=NO_CONFIG)
        assert len(section.packages) == 122
        assert sum(p.source == "url" for p in section.packages) == 122 - 13
