"""The Python probe against a real venv filled by real pip: an index package, a VCS install, an
editable install and a local directory install, checked against what the venv itself reports."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from envsnap.capturing.probes.interpreter import PythonTarget, current_target, target_for_prefix
from envsnap.capturing.probes.python import capture_python, capture_tool
from envsnap.manifest import Package, Python
from tests.integration.conftest import git

pytestmark = pytest.mark.integration

SETUP_PY = """\
from setuptools import setup

setup(name={name!r}, version={version!r}, py_modules=[{module!r}])
"""


@dataclass(frozen=True)
class Venv:
    """A real venv and the projects installed into it."""

    prefix: Path
    repo: Path  # the "project repository": the editable install lives inside it
    vcs_commit: str
    vcs_repo: Path
    local_project: Path


def tiny_project(root: Path, name: str, version: str) -> Path:
    """A setuptools project with one module, buildable offline with --no-build-isolation."""
    root.mkdir(parents=True)
    module = name.replace("-", "_").replace(".", "_").lower()
    (root / "setup.py").write_text(SETUP_PY.format(name=name, version=version, module=module))
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=70.1"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (root / f"{module}.py").write_text(f"VERSION = {version!r}\n")
    return root


def pip(prefix: Path, *args: str) -> None:
    """Real pip (the test interpreter's) installing into the venv at ``prefix``."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    python = str(prefix / "bin" / "python")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(f"pip install {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv with iniconfig from PyPI, a git+file VCS install, an editable and a local install."""
    root = tmp_path_factory.mktemp("python-probe")
    prefix = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    pip(prefix, "setuptools>=70.1", "iniconfig")

    vcs_repo = tiny_project(root / "vcsproj", "vcs-proj", "0.2.0")
    git(vcs_repo, "init", "--quiet", "--initial-branch=main")
    git(vcs_repo, "add", "-A")
    git(vcs_repo, "commit", "--quiet", "-m", "vcs project")
    commit = git(vcs_repo, "rev-parse", "HEAD").strip()

    repo = root / "repo"
    editable = tiny_project(repo / "packages" / "editproj", "Edit_Proj", "1.0.dev0")
    local = tiny_project(root / "localproj", "local.proj", "3.1")
    pip(
        prefix,
        "--no-build-isolation",
        f"git+{vcs_repo.as_uri()}@{commit}",
        "-e",
        str(editable),
        str(local),
    )
    return Venv(prefix=prefix, repo=repo, vcs_commit=commit, vcs_repo=vcs_repo, local_project=local)


@pytest.fixture(scope="session")
def target(venv: Venv) -> PythonTarget:
    """The venv as the probe sees it from its files."""
    return target_for_prefix(venv.prefix)


@pytest.fixture(scope="session")
def section(venv: Venv, target: PythonTarget) -> Python:
    """The captured [python] section of the venv, with no pip configuration in play."""
    return capture_python(target, env={}, pip_config_files=[], repo_root=venv.repo)


def packages(section: Python) -> dict[str, Package]:
    return {p.name: p for p in section.packages}


class TestTarget:
    def test_venv_is_described_from_its_files(self, venv: Venv, target: PythonTarget) -> None:
        """Version, executable and site-packages of a real venv come from pyvenv.cfg and lib/."""
        minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
        assert target.version == "{}.{}.{}".format(*sys.version_info[:3])
        assert target.site_dirs == (venv.prefix / "lib" / minor / "site-packages",)
        assert Path(target.executable).parent == venv.prefix / "bin"
        assert target.base_prefix == Path(sys.base_prefix)

    def test_activated_venv_is_the_current_target(self, venv: Venv) -> None:
        """With VIRTUAL_ENV naming the venv, the current target is the venv, not this Python."""
        assert current_target({"VIRTUAL_ENV": str(venv.prefix)}).prefix == venv.prefix

    def test_env_kind_is_venv(self, section: Python) -> None:
        """A venv's section says so."""
        assert section.env_kind == "venv"


class TestInstalledPackages:
    def test_same_distributions_as_the_venv_reports(self, venv: Venv, section: Python) -> None:
        """Names and versions match importlib.metadata run inside the venv itself."""
        script = (
            "import importlib.metadata as m, json, re\n"
            "out = {}\n"
            "for d in m.distributions():\n"
            "    n = re.sub(r'[-_.]+', '-', d.metadata['Name']).lower()\n"
            "    out.setdefault(n, d.version)\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run(
            [str(venv.prefix / "bin" / "python"), "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=venv.prefix,
        )
        expected = json.loads(done.stdout)
        expected.pop("envsnap", None)
        assert {p.name: p.version for p in section.packages} == expected

    def test_index_package(self, section: Python) -> None:
        """iniconfig from the index records pip as installer and its wheel tag."""
        iniconfig = packages(section)["iniconfig"]
        assert (iniconfig.source, iniconfig.installer, iniconfig.wheel_tag) == (
            "index",
            "pip",
            "py3-none-any",
        )
        assert iniconfig.reinstallable

    def test_vcs_install(self, venv: Venv, section: Python) -> None:
        """A git+file install records git, the commit and the URL; a local repo is flagged."""
        vcs = packages(section)["vcs-proj"]
        assert (vcs.source, vcs.vcs, vcs.commit, vcs.version) == (
            "vcs",
            "git",
            venv.vcs_commit,
            "0.2.0",
        )
        assert vcs.url == venv.vcs_repo.as_uri()
        assert not vcs.reinstallable

    def test_editable_install_inside_the_repository(self, section: Python) -> None:
        """``pip install -e`` of a project inside the repository is relative and reinstallable."""
        edit = packages(section)["edit-proj"]
        assert (edit.source, edit.path, edit.version, edit.reinstallable) == (
            "editable",
            "packages/editproj",
            "1.0.dev0",
            True,
        )

    def test_local_directory_install(self, venv: Venv, section: Python) -> None:
        """``pip install ./dir`` is local, with its path, and not reinstallable."""
        local = packages(section)["local-proj"]
        assert (local.source, local.path, local.reinstallable) == (
            "local",
            str(venv.local_project),
            False,
        )
        assert local.reason

    def test_packages_are_sorted(self, section: Python) -> None:
        """Packages are listed in name order."""
        names = [p.name for p in section.packages]
        assert names == sorted(names)

    def test_credentials_in_direct_url_are_stripped(
        self, tmp_path: Path, target: PythonTarget
    ) -> None:
        """A direct_url.json carrying user:password yields a URL without them."""
        site = tmp_path / "site"
        info = site / "private_lib-1.2.dist-info"
        info.mkdir(parents=True)
        (info / "INSTALLER").write_text("pip\n")
        (info / "direct_url.json").write_text(
            json.dumps(
                {
                    "url": "https://build:ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/org/private-lib.git",
                    "vcs_info": {"vcs": "git", "commit_id": "f" * 40},
                }
            )
        )
        extended = dataclasses.replace(target, site_dirs=(*target.site_dirs, site))
        section = capture_python(extended, env={}, pip_config_files=[])
        private = packages(section)["private-lib"]
        assert private.url == "https://github.com/org/private-lib.git"
        assert "ghp_" not in repr(section)


class TestToolAndSpeed:
    def test_tool_is_the_running_envsnap(self, target: PythonTarget) -> None:
        """capture_tool names the envsnap doing the capture, here the editable checkout."""
        import envsnap

        tool = capture_tool(target)
        assert tool.version == envsnap.__version__
        assert tool.source in ("editable", "index", "local")

    def test_capture_of_the_running_interpreter_is_fast(self) -> None:
        """Capturing this interpreter's environment takes well under 0.1 s."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            capture_python(current_target(env), env=env)
            timings.append(time.perf_counter() - start)
        assert min(timings) < 0.1
