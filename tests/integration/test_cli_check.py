"""`envsnap check` on the command line, and the Python API, end to end."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envsnap.manifest import dumps_manifest, read_manifest, seal
from tests.integration.conftest import Envsnap

pytestmark = pytest.mark.integration


def _reference(envsnap: Envsnap, project: Path) -> Path:
    run_id = envsnap("capture").stdout.strip()
    target = project / "envsnap.lock.toml"
    shutil.copy(project / ".envsnap" / "runs" / run_id / "manifest.toml", target)
    return target


class TestCheck:
    def test_no_drift_against_own_environment(self, envsnap: Envsnap, project: Path) -> None:
        """The environment a reference was captured in checks clean, and nothing is stored."""
        _reference(envsnap, project)
        before = sorted((project / ".envsnap" / "runs").iterdir())
        done = envsnap("check", "--against", "envsnap.lock.toml", "--fail-on", "warning")
        assert done.stdout.startswith("drift ") and "BREAKING" not in done.stdout
        assert sorted((project / ".envsnap" / "runs").iterdir()) == before

    def test_code_and_params_are_not_environment_drift(
        self, envsnap: Envsnap, project: Path
    ) -> None:
        """A new commit and other params since the reference do not fail the check."""
        _reference(envsnap, project)
        (project / "train.py").write_text((project / "train.py").read_text() + "\n# change\n")
        envsnap("check", "--against", "envsnap.lock.toml", "--fail-on", "info")

    def test_package_bump_fails_with_json(self, envsnap: Envsnap, project: Path) -> None:
        """A package version that differs from the reference exits 1 and names the package."""
        reference = _reference(envsnap, project)
        m = read_manifest(reference)
        bumped = tuple(
            dataclasses.replace(p, version="0.0.1") if p.name == "click" else p
            for p in m.python.packages
        )
        m = dataclasses.replace(m, python=dataclasses.replace(m.python, packages=bumped))
        reference.write_text(dumps_manifest(seal(m)))
        done = envsnap("check", "--against", "envsnap.lock.toml", "--json", check=1)
        report = json.loads(done.stdout)
        assert report["drift"] is True
        assert [f["path"] for f in report["fields"]] == ["python.packages.click"]
        md = envsnap("check", "--against", "envsnap.lock.toml", "--markdown", check=1).stdout
        assert "| breaking | packages | python.packages.click | 0.0.1 |" in md
        envsnap("check", "--against", "envsnap.lock.toml", "--ignore", "python.packages.click")

    def test_missing_reference(self, envsnap: Envsnap) -> None:
        """A reference that does not exist exits 2 with one sentence."""
        done = envsnap("check", "--against", "nope.toml", check=2)
        assert done.stderr.startswith("envsnap: error: the reference manifest nope.toml")

    def test_edited_reference(self, envsnap: Envsnap, project: Path) -> None:
        """A hand-edited reference is refused, naming it."""
        reference = _reference(envsnap, project)
        reference.write_text(reference.read_text().replace('os_id = "', 'os_id = "x'))
        done = envsnap("check", "--against", "envsnap.lock.toml", check=2)
        assert "envsnap.lock.toml was modified after it was written" in done.stderr


class TestIgnoreEntries:
    @pytest.mark.parametrize("entry", ["hardwre", "host.kernl", "pyhton.*"])
    def test_typo_exits_2_naming_the_categories(
        self, envsnap: Envsnap, project: Path, entry: str
    ) -> None:
        """An --ignore entry that is no category and matches no field is an error, not a
        silent ignore of nothing."""
        _reference(envsnap, project)
        done = envsnap("check", "--against", "envsnap.lock.toml", "--ignore", entry, check=2)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("envsnap: error: ")
        assert repr(entry) in lines[0]
        assert "categories are code, config, data, packages" in lines[0]

    def test_categories_and_fields_pass(self, envsnap: Envsnap, project: Path) -> None:
        """Known categories and field patterns are accepted together."""
        _reference(envsnap, project)
        args = ["--ignore", "hardware", "--ignore", "host.*", "--ignore", "python.packages.click"]
        envsnap("check", "--against", "envsnap.lock.toml", *args)


class TestApi:
    def test_capture_and_seed_everything(self, envsnap: Envsnap, project: Path) -> None:
        """envsnap.seed_everything then envsnap.capture record seeds, params and data in-process."""
        script = textwrap.dedent(
            """
            import json, random, envsnap
            record = envsnap.seed_everything(7)
            first = random.random()
            run = envsnap.capture(name="api", params={"model": {"depth": 4}}, data=["data"])
            print(json.dumps({"run": run.run_id, "libs": sorted(record.libraries),
                              "seeds": dict(run.manifest.seeds), "first": first}))
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=project,
            env=envsnap.env,
            capture_output=True,
            text=True,
            check=True,
        )
        data = json.loads(result.stdout)
        assert {"global", "python", "numpy"} <= set(data["libs"])
        assert data["seeds"]["global"] == 7 and data["seeds"]["python"] == 7
        random.seed(7)
        assert data["first"] == random.random()
        shown = envsnap("show", data["run"], "--json").stdout
        manifest = json.loads(shown)["manifest"]
        assert manifest["params"] == [{"key": "model.depth", "value": 4, "source": "api"}]
        assert manifest["data"][0]["path"] == "data"
