"""The composite action's shell steps run for real, on this machine, with the files and variables
a GitHub runner provides; `envsnap check` and `envsnap ci init` end to end."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown_it import MarkdownIt

from envsnap.manifest import dumps_manifest, read_manifest, seal
from tests.integration.conftest import GIT_ENV, REPO, envsnap_command, git

pytestmark = pytest.mark.integration

ACTION = yaml.safe_load((REPO / "action.yml").read_text())
ANNOTATION = re.compile(r"^::(error|warning|notice) title=[^:,\n]*::[^\n]*$")
EXPRESSION = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")


def parse_outputs(text: str) -> dict[str, str]:
    """Read $GITHUB_OUTPUT as the runner does: name=value lines and name<<DELIM blocks."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
            i += 1
        else:
            i += 1
    return outputs


@dataclasses.dataclass
class Runner:
    """A GitHub runner's environment on this machine: temp dir, output and summary files."""

    workspace: Path
    temp: Path
    venv: Path

    @property
    def output_file(self) -> Path:
        return self.temp / "github_output"

    @property
    def summary_file(self) -> Path:
        return self.temp / "step_summary.md"

    def reset(self) -> None:
        self.output_file.write_text("")
        self.summary_file.write_text("")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVSNAP_", "VIRTUAL_ENV"))}
        env.update(GIT_ENV)
        env.update(
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}",
            GITHUB_ACTIONS="true",
            GITHUB_OUTPUT=str(self.output_file),
            GITHUB_STEP_SUMMARY=str(self.summary_file),
            RUNNER_TEMP=str(self.temp),
            GITHUB_WORKSPACE=str(self.workspace),
        )
        return env

    def run_step(
        self, name: str, inputs: dict[str, str], steps: dict[str, dict[str, str]]
    ) -> subprocess.CompletedProcess[str]:
        """Run one `run:` step of action.yml with its env expressions evaluated."""
        step = next(s for s in ACTION["runs"]["steps"] if s.get("name") == name)
        assert "${{" not in step["run"], "run scripts must take inputs through env, not expressions"
        defaults = {k: str(v.get("default", "")) for k, v in ACTION["inputs"].items()}
        values = {**defaults, **inputs}

        def evaluate(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("inputs."):
                return values[expr.removeprefix("inputs.")]
            if expr == "github.action_path":
                return str(REPO)
            if expr.startswith("steps."):
                _, step_id, _, key = expr.split(".", 3)
                return steps.get(step_id, {}).get(key, "")
            raise AssertionError(f"unexpected expression {expr}")

        step_env = {k: EXPRESSION.sub(evaluate, str(v)) for k, v in step.get("env", {}).items()}
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", step["run"]],
            cwd=self.workspace,
            env={**self.env(), **step_env},
            capture_output=True,
            text=True,
            timeout=600,
        )


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """A runner whose Python is a fresh venv; the action's install step installs envsnap into it."""
    base = tmp_path_factory.mktemp("runner")
    workspace = base / "workspace"
    shutil.copytree(REPO / "examples" / "train-logreg", workspace)
    git(workspace, "init", "--quiet", "--initial-branch=main")
    git(workspace, "add", "-A")
    git(workspace, "commit", "--quiet", "-m", "example")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    temp = base / "runner-temp"
    temp.mkdir()
    r = Runner(workspace=workspace, temp=temp, venv=venv)
    r.reset()
    done = r.run_step("Install the project and envsnap", {"install-command": "true"}, {})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "envsnap 0." in done.stdout
    return r


def _reference(runner: Runner) -> Path:
    """A reference manifest captured by the runner's own envsnap, committed as envsnap.lock.toml."""
    store = runner.temp / "store"
    done = subprocess.run(
        [str(runner.venv / "bin" / "envsnap"), "capture", "--store", str(store)],
        cwd=runner.workspace,
        env=runner.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    target = runner.workspace / "envsnap.lock.toml"
    shutil.copy(store / "runs" / done.stdout.strip() / "manifest.toml", target)
    return target


def _check(
    runner: Runner, **inputs: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, str], subprocess.CompletedProcess[str]]:
    runner.reset()
    check = runner.run_step("Check for environment drift", inputs, {})
    outputs = parse_outputs(runner.output_file.read_text())
    fail = runner.run_step(
        "Fail on drift", {}, {"check": {"exit-code": outputs.get("exit-code", "")}}
    )
    return check, outputs, fail


def _rewrite(path: Path, target: Path, **changes: Any) -> Path:
    """A validly sealed copy of a manifest with some packages or host fields changed."""
    m = read_manifest(path)
    packages = tuple(
        dataclasses.replace(p, version=changes["packages"].get(p.name, p.version))
        for p in m.python.packages
    )
    m = dataclasses.replace(
        m,
        python=dataclasses.replace(m.python, packages=packages),
        host=dataclasses.replace(m.host, **changes.get("host", {})),
    )
    target.write_text(dumps_manifest(seal(m)))
    return target


class TestAction:
    def test_no_drift(self, runner: Runner) -> None:
        """Against this very environment's manifest: exit 0, drift=false, an empty-drift summary."""
        _reference(runner)
        check, outputs, fail = _check(runner, manifest="envsnap.lock.toml")
        assert check.returncode == 0, check.stderr
        assert outputs["drift"] == "false" and outputs["exit-code"] == "0"
        assert outputs["max-severity"] in ("none", "info", "expected")
        assert Path(outputs["report-path"]).is_file()
        assert "No environment drift at or above breaking" in runner.summary_file.read_text()
        assert fail.returncode == 0

    def test_package_bump_fails(self, runner: Runner) -> None:
        """A bumped package: exit 1, drift=true, an ::error annotation naming the package."""
        reference = _reference(runner)
        _rewrite(reference, reference, packages={"click": "0.0.1"})
        check, outputs, fail = _check(runner, manifest="envsnap.lock.toml")
        assert outputs["drift"] == "true" and outputs["max-severity"] == "breaking"
        assert outputs["exit-code"] == "1"
        errors = [line for line in check.stdout.splitlines() if line.startswith("::error")]
        assert any("python.packages.click: 0.0.1 -> " in line for line in errors), check.stdout
        assert fail.returncode == 1
        md = MarkdownIt("commonmark").enable("table")
        tokens = md.parse(runner.summary_file.read_text())
        assert any(t.type == "table_open" for t in tokens)
        cells = [t.content for t in tokens if t.type == "inline"]
        assert "python.packages.click" in cells

    def test_ignore_input(self, runner: Runner) -> None:
        """The ignore input leaves a category out of the verdict."""
        reference = _reference(runner)
        _rewrite(reference, reference, packages={"click": "0.0.1"})
        _, outputs, fail = _check(runner, manifest="envsnap.lock.toml", ignore="packages\nhost")
        assert outputs["drift"] == "false" and fail.returncode == 0

    def test_crafted_manifest_cannot_inject(self, runner: Runner) -> None:
        """Newlines and '::' in manifest values cannot forge annotations, outputs or table rows."""
        reference = _reference(runner)
        crafted = "9.9\n::error title=forged::owned\ndrift=false\n| x | y |"
        _rewrite(
            reference,
            reference,
            packages={"click": crafted},
            host={"os_name": "Evil\n::warning::forged%0A::set-output name=drift::false"},
        )
        check, outputs, _ = _check(runner, manifest="envsnap.lock.toml", **{"fail-on": "info"})
        command_lines = [line for line in check.stdout.splitlines() if line.startswith("::")]
        assert command_lines and all(ANNOTATION.match(line) for line in command_lines)
        assert not any(
            line.startswith(("::error title=forged", "::warning::forged"))
            for line in check.stdout.splitlines()
        )
        assert set(outputs) == {"drift", "max-severity", "report-path", "exit-code"}
        assert outputs["drift"] == "true"
        tokens = MarkdownIt("commonmark").enable("table").parse(runner.summary_file.read_text())
        rows = [t for t in tokens if t.type == "tr_open"]
        data_rows = [line for line in check.stdout.splitlines() if line.startswith("::")]
        assert len(rows) == len(data_rows) + 1  # one header row plus one row per difference

    def test_missing_manifest_is_an_error(self, runner: Runner) -> None:
        """A manifest input that does not exist ends in exit 2 with an ::error."""
        check, outputs, fail = _check(runner, manifest="nope.toml")
        assert outputs["exit-code"] == "2"
        assert "::error title=envsnap check failed::" in check.stdout
        assert fail.returncode == 2


class TestCiInit:
    def test_writes_a_valid_workflow(self, tmp_path: Path) -> None:
        """ci init writes a workflow that actionlint accepts, and refuses to overwrite it."""
        env = {**os.environ, **GIT_ENV}
        cmd = [*envsnap_command(), "ci", "init", "--manifest", "envsnap.lock.toml"]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        workflow = tmp_path / ".github" / "workflows" / "envsnap-drift.yml"
        data = yaml.safe_load(workflow.read_text())
        assert data["permissions"] == {"contents": "read"}
        assert set(data[True]) == {"pull_request", "push"}  # YAML 1.1 reads `on` as true
        lint = subprocess.run(
            [
                shutil.which("actionlint", path=str(Path(sys.executable).parent)) or "actionlint",
                str(workflow),
            ],
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert again.returncode == 2 and "already exists" in again.stderr
        forced = subprocess.run([*cmd, "--force"], cwd=tmp_path, env=env, capture_output=True)
        assert forced.returncode == 0

    def test_refuses_unsafe_manifest_path(self, tmp_path: Path) -> None:
        """A manifest path that could break out of its YAML scalar is refused."""
        done = subprocess.run(
            [*envsnap_command(), "ci", "init", "--manifest", "x\n  evil: true"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and "not a plain relative path" in done.stderr
        assert not (tmp_path / ".github").exists()


SELFTEST_MANIFEST = REPO / "tests" / "data" / "action" / "bumped.toml"


def bumped_manifest() -> str:
    """The manifest committed for the action's self-test on GitHub (see its README)."""
    from envsnap.manifest import Host, Manifest, Package, Python, Tool

    packages = (
        Package(name="click", version="8.0.0", wheel_tag="py3-none-any", installer="pip"),
        Package(name="nvidia-ml-py", version="12.535.108", installer="pip"),
        Package(name="pip", version="24.0", wheel_tag="py3-none-any", installer="pip"),
        Package(name="pyyaml", version="6.0.1", installer="pip"),
        Package(name="tomli-w", version="1.0.0", wheel_tag="py3-none-any", installer="pip"),
    )
    manifest = Manifest(
        run_id="20261123-000000-a0b1c2",
        created="2026-11-23T00:00:00.000000Z",
        name="action-selftest",
        notes="committed reference for .github/workflows/action-selftest.yml; click is bumped",
        tool=Tool(version="0.1.0"),
        host=Host(os_id="ubuntu", os_version="24.04", arch="x86_64", cpu_count=4),
        python=Python(
            implementation="CPython",
            version="3.11.0",
            executable="/opt/hostedtoolcache/Python/3.11.0/x64/bin/python",
            prefix="/opt/hostedtoolcache/Python/3.11.0/x64",
            env_kind="system",
            packages=packages,
        ),
    )
    return dumps_manifest(seal(manifest))


class TestCommittedSelfTestManifest:
    def test_committed_file_is_current(self) -> None:
        """tests/data/action/bumped.toml is exactly what bumped_manifest() makes, and reads back
        as a valid, sealed manifest."""
        assert SELFTEST_MANIFEST.read_text() == bumped_manifest()
        assert read_manifest(SELFTEST_MANIFEST).name == "action-selftest"

    def test_check_against_it_reports_the_bump(self) -> None:
        """envsnap check against it, with the action self-test's ignore list, fails on click."""
        ignore = ["host", "hardware", "os", "python", "driver", "cuda", "conda"]
        done = subprocess.run(
            [*envsnap_command(), "check", "--against", str(SELFTEST_MANIFEST)]
            + [arg for category in ignore for arg in ("--ignore", category)],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"},
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "python.packages.click" in done.stdout
