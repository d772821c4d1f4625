"""Integration fixtures: envsnap installed from its wheel (as users get it), a real git repository
holding the example project, and a runner for the real ``envsnap`` command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train-logreg"
# Set by scripts/test.sh (scripts/install-wheel.sh); built by the session fixture below otherwise.
WHEEL_PYTHON_VARIABLE = "ENVSNAP_TEST_PYTHON"
WHEEL_VARIABLE = "ENVSNAP_TEST_WHEEL"


def default_sigint() -> None:
    """Popen's preexec_fn for a child the test will SIGINT: the default disposition, whatever
    this test run inherited (a suite started in the background has SIGINT ignored, and a child
    would keep that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def envsnap_command() -> list[str]:
    """The installed envsnap command line: the wheel's venv, never this editable checkout."""
    return [os.environ[WHEEL_PYTHON_VARIABLE], "-m", "envsnap"]


@pytest.fixture(scope="session", autouse=True)
def _envsnap_from_wheel(tmp_path_factory: pytest.TempPathFactory) -> None:
    """envsnap as a user's ``pip install <repo>`` leaves it: a wheel in a fresh venv, apart from
    the experiment's environment (this test run's venv, "activated" through VIRTUAL_ENV the way a
    user's project venv would be, so captures describe it and not envsnap's own venv)."""
    if not os.environ.get(WHEEL_PYTHON_VARIABLE):
        where = tmp_path_factory.mktemp("wheel")
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "install-wheel.sh"), str(where / "venv"), str(where)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.exit(f"building and installing envsnap's wheel failed:\n{done.stderr}", 2)
        os.environ[WHEEL_VARIABLE] = done.stdout.strip()
        os.environ[WHEEL_PYTHON_VARIABLE] = str(where / "venv" / "bin" / "python")
    os.environ.setdefault("VIRTUAL_ENV", sys.prefix)
    bin_dir = str(Path(sys.prefix) / "bin")
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


GIT_ENV = {
    "GIT_AUTHOR_NAME": "envsnap-tests",
    "GIT_AUTHOR_EMAIL": "tests@envsnap.invalid",
    "GIT_COMMITTER_NAME": "envsnap-tests",
    "GIT_COMMITTER_EMAIL": "tests@envsnap.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    """Run real git in ``cwd`` and return its stdout."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


@dataclass
class Envsnap:
    """Runs the real command line (``python -m envsnap``) in a project directory."""

    cwd: Path
    env: dict[str, str]

    def __call__(
        self,
        *args: str,
        check: int | None = 0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*envsnap_command(), *args],
            cwd=cwd or self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check is not None and done.returncode != check:
            raise AssertionError(
                f"envsnap {' '.join(args)} exited {done.returncode}, expected {check}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done


def example_project(root: Path, extra: Mapping[str, str] | None = None) -> Path:
    """A copy of the example project (plus ``extra`` files) committed on main in a new repo."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("outputs", "metrics.json"))
    (root / ".gitignore").write_text("outputs/\nmetrics.json\n.envsnap/\n")
    for name, text in (extra or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "example")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git repository with the example project committed on main."""
    return example_project(tmp_path / "project")


@pytest.fixture
def envsnap(project: Path) -> Envsnap:
    """The envsnap CLI, run in the example project with a controlled environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ENVSNAP_") or k in (WHEEL_PYTHON_VARIABLE, WHEEL_VARIABLE)
    }
    env.update(GIT_ENV)
    return Envsnap(cwd=project, env=env)


@pytest.fixture(scope="session", autouse=True)
def _tool_images_made_here_removed() -> Iterator[None]:
    """envsnap's own image per base (envsnap/tool, the start of every environment on it) is
    left by a build on purpose; those this session made go when it ends (after the tests'
    environments: an image something is built on is refused, and stays)."""
    from datetime import UTC, datetime

    from tests.integration.docker_env import docker, docker_cli

    started = datetime.now(UTC)
    yield
    if docker_cli.cache_info().currsize == 0:
        return  # no test of this session brought docker up
    listed = docker("images", "--quiet", "--filter", "reference=envsnap/tool", check=False)
    for image in sorted(set(listed.stdout.split())):
        created = docker("image", "inspect", "--format", "{{.Created}}", image, check=False)
        try:
            made = datetime.fromisoformat(created.stdout.strip()[:26].rstrip("Z") + "+00:00")
        except ValueError:
            continue
        if made >= started:
            docker("rmi", image, check=False)
