"""The wheel users install holds every file of the package, and the installed envsnap works."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, WHEEL_PYTHON_VARIABLE, WHEEL_VARIABLE

pytestmark = pytest.mark.integration


def _package_files_in_git() -> set[str]:
    """Files under envsnap/ that a clone holds: tracked, plus untracked ones git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "envsnap/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line for line in out.splitlines() if (REPO / line).exists()}


class TestWheel:
    def test_wheel_holds_exactly_the_package_files_git_knows(self) -> None:
        """Every file under envsnap/ in git is in the wheel (templates included), and nothing
        else of envsnap/ is."""
        wheel = Path(os.environ[WHEEL_VARIABLE])
        with zipfile.ZipFile(wheel) as archive:
            shipped = {
                name for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")
            }
        assert shipped == _package_files_in_git()

    def test_installed_envsnap_renders_every_template(self, tmp_path: Path) -> None:
        """The installed copy (not this checkout) finds its Dockerfile templates and workflow."""
        python = os.environ[WHEEL_PYTHON_VARIABLE]
        script = (
            "import envsnap, envsnap.image.plan as i, envsnap.template as t\n"
            "assert 'site-packages' in envsnap.__file__, envsnap.__file__\n"
            "for name in ('Dockerfile.base', 'tool.Dockerfile', 'python.Dockerfile',"
            " 'github-workflow.yml', 'envsnap_venv.py'):\n"
            "    assert t.read_template(name).strip(), name\n"
            "print('ok')\n"
        )
        done = subprocess.run(
            [python, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"
