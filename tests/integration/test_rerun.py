"""envsnap rerun end to end on a real docker engine with a real local registry.

The example project is trained once inside a container of the test base image (envsnap captures
that run there); the host then reruns it in the image envsnap builds for it, and the drift
report must say what happened: identical metrics and outputs when nothing changed, data and
metric drift when the data changed, exit-code drift when the command fails, a stopped and
removed container when it hangs past --timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from envsnap.manifest import Manifest
from envsnap.store import Store
from tests.integration.conftest import (
    EXAMPLE,
    Envsnap,
    default_sigint,
    envsnap_command,
    example_project,
    git,
)
from tests.integration.docker_env import (
    capture_in_container,
    docker,
    docker_cli,
    registry_base,
)

pytestmark = pytest.mark.integration

TOOLS_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "logreg-tools"
version = "0.1.0"

[tool.setuptools.packages.find]
where = ["src"]
"""
TRAIN = (
    "--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy' "
    "--metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs"
)


def _rerun(root: Path, *args: str, check: int | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*envsnap_command(), "rerun", *args, "--base", registry_base()],
        cwd=root,
        env={**os.environ, "ENVSNAP_DOCKER": docker_cli()},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check is not None:
        assert done.returncode == check, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The example trained in the base image: (project dir, {what: run id}); images removed."""
    root = tmp_path_factory.mktemp("rerun") / "project"
    example_project(
        root,
        {
            "fail.py": "import os, sys\nsys.exit(3 if os.getenv('MODE') == 'fail' else 0)\n",
            "hang.py": "import os, time\nprint('hang.py started', flush=True)\n"
            "time.sleep(600 if os.getenv('MODE') == 'hang' else 0)\n",
            # The project's own package, installed editable (pip install -e tools).
            "tools/pyproject.toml": TOOLS_PYPROJECT,
            "tools/src/logreg_tools/__init__.py": "WHERE = __file__\n",
            "use_tools.py": "import sys, logreg_tools\nprint(logreg_tools.WHERE)\n"
            "sys.exit(0 if logreg_tools.WHERE.startswith('/work/tools/src/') else 4)\n",
        },
    )
    train, fail, hang, tools = capture_in_container(
        root,
        [
            f"--name train {TRAIN}",
            "--name fail -- python fail.py",
            "--name hang -- python hang.py",
            "--name tools -- python use_tools.py",
        ],
        setup="pip install --quiet wheel && pip install --quiet --no-deps --no-build-isolation "
        "-e tools",
    )
    yield root, {"train": train, "fail": fail, "hang": hang, "tools": tools}
    images = docker("images", "--quiet", "--filter", "reference=envsnap/env", check=False)
    for image in set(images.stdout.split()):
        docker("rmi", "--force", image, check=False)


def _containers(run_id: str) -> str:
    return docker("ps", "--all", "--quiet", "--filter", f"name=envsnap-rerun-{run_id}").stdout


class TestRerun:
    def test_identical_rerun_reproduces(self, trained: tuple[Path, dict[str, str]]) -> None:
        """Nothing changed: exit 0, metrics and output hashes identical, the rerun is stored."""
        root, runs = trained
        done = _rerun(root, runs["train"], "--json", check=0)
        outcome = json.loads(done.stdout)
        report = outcome["report"]
        assert outcome["exit_code"] == 0 and report["results_compared"] is True
        assert report["metrics"] == [] and report["outputs"] == []
        assert report["exit_codes"] == [0, 0]
        assert [f for f in report["fields"] if f["severity"] == "breaking"] == []
        store = Store(root / ".envsnap")
        rerun, original = store.load(outcome["rerun"]), store.load(runs["train"])
        assert rerun.manifest.rerun_of == runs["train"]
        listing = subprocess.run(
            [*envsnap_command(), "list"], cwd=root, capture_output=True, text=True
        ).stdout
        assert f"{outcome['rerun']}  " in listing and f"(rerun of {runs['train']})" in listing
        assert rerun.result is not None and original.result is not None
        assert rerun.result.metrics == original.result.metrics and rerun.result.metrics
        assert rerun.result.outputs == original.result.outputs and rerun.result.outputs
        assert rerun.manifest.git.commit == original.manifest.git.commit
        assert rerun.manifest.container.inside is True
        assert rerun.manifest.params == original.manifest.params

        # pip and setuptools come from the Debian base (linked, not installed: no INSTALLER
        # file), so only the installer may differ.
        def packages(m: Manifest) -> set[tuple[str, str, str]]:
            return {(p.name, p.version, p.source) for p in m.python.packages}

        assert packages(rerun.manifest) == packages(original.manifest)
        assert _containers(runs["train"]) == ""

    def test_project_installed_editable_imports_the_rerun_code(
        self, trained: tuple[Path, dict[str, str]]
    ) -> None:
        """The project's own package, installed editable at capture, is installed editable in
        the image from the recorded commit and imports the mounted checkout: exit 0, the same
        package set, the package recorded at the same path."""
        root, runs = trained
        done = _rerun(root, runs["tools"], "--json", check=0)
        outcome = json.loads(done.stdout)
        assert outcome["report"]["exit_codes"] == [0, 0]
        assert "/work/tools/src/logreg_tools/__init__.py" in done.stderr
        store = Store(root / ".envsnap")
        rerun = store.load(outcome["rerun"]).manifest
        original = store.load(runs["tools"]).manifest
        tools = [p for p in rerun.python.packages if p.name == "logreg-tools"]
        assert [(p.source, p.path) for p in tools] == [("editable", "tools")]
        assert {(p.name, p.version) for p in rerun.python.packages} == {
            (p.name, p.version) for p in original.python.packages
        }

    def test_working_tree_untouched(self, trained: tuple[Path, dict[str, str]]) -> None:
        """A rerun leaves the user's repository as it was: same status, same refs."""
        root, runs = trained

        def status() -> set[str]:
            out = git(root, "status", "--porcelain", "--ignored", "--untracked-files=all")
            return {line for line in out.splitlines() if not line.startswith("!! .envsnap/")}

        before, refs = status(), git(root, "for-each-ref")
        _rerun(root, runs["fail"], check=0)
        assert status() == before
        assert git(root, "for-each-ref") == refs

    def test_changed_data_is_data_and_metric_drift(
        self, trained: tuple[Path, dict[str, str]]
    ) -> None:
        """Data changed after capture: exit 1, data drift and metric drift both reported."""
        root, runs = trained
        csv = root / "data" / "train.csv"
        original = csv.read_text()
        lines = original.splitlines()
        cells = lines[1].split(",")
        cells[0] = str(float(cells[0]) + 1.0)
        lines[1] = ",".join(cells)
        csv.write_text("\n".join(lines) + "\n")
        try:
            done = _rerun(root, runs["train"], "--json", check=1)
        finally:
            csv.write_text(original)
        outcome = json.loads(done.stdout)
        report = outcome["report"]
        data = [f for f in report["fields"] if f["path"] == "data.data/train.csv.sha256"]
        assert [f["severity"] for f in data] == ["breaking"]
        assert any(not m["within"] for m in report["metrics"])
        assert any("changed since the run was captured" in n for n in outcome["notes"])

    def test_failing_command_compares_exit_codes(
        self, trained: tuple[Path, dict[str, str]]
    ) -> None:
        """The recorded command fails in the rerun: exit 1 and the exit codes 0 -> 3 shown."""
        root, runs = trained
        done = _rerun(root, runs["fail"], "--env", "MODE=fail", check=1)
        assert "exit code  0 -> 3" in done.stdout
        assert _containers(runs["fail"]) == ""

    def test_timeout_stops_and_removes_the_container(
        self, trained: tuple[Path, dict[str, str]]
    ) -> None:
        """A hang hits --timeout: exit 1, exit code 124 recorded, no container left behind."""
        root, runs = trained
        done = _rerun(
            root, runs["hang"], "--env", "MODE=hang", "--timeout", "5s", "--json", check=1
        )
        outcome = json.loads(done.stdout)
        assert outcome["timed_out"] is True and outcome["report"]["exit_codes"] == [0, 124]
        rerun = Store(root / ".envsnap").load(outcome["rerun"])
        assert rerun.result is not None and rerun.result.interrupted
        assert "timed out" in rerun.result.error
        assert _containers(runs["hang"]) == ""

    def test_ctrl_c_stops_the_container_and_still_reports(
        self, trained: tuple[Path, dict[str, str]]
    ) -> None:
        """Ctrl-C while the command runs: the container is removed, the rerun is stored with an
        interrupted result, the report is printed, and envsnap exits 2."""
        root, runs = trained
        rerun = ["rerun", runs["hang"], "--env", "MODE=hang", "--timeout", "300s"]
        rerun += ["--base", registry_base()]  # the timeout bounds the test should SIGINT be lost
        process = subprocess.Popen(
            [*envsnap_command(), *rerun],
            cwd=root,
            env={**os.environ, "ENVSNAP_DOCKER": docker_cli()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_sigint,
        )
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # the container's output streams to stderr
            seen.append(line)
            if "hang.py started" in line:
                break
        assert any("hang.py started" in line for line in seen), "".join(seen)
        assert _containers(runs["hang"]) != ""
        process.send_signal(signal.SIGINT)
        out, rest = process.communicate(timeout=120)
        err = "".join(seen) + rest
        assert process.returncode == 2, out + err
        assert "interrupted" in err and "Traceback" not in err
        assert f"of {runs['hang']}: interrupted (Ctrl-C)" in out
        assert _containers(runs["hang"]) == ""
        stored = Store(root / ".envsnap").load(out.split()[1])
        assert stored.result is not None and stored.result.interrupted

    def test_gpu_asked_on_a_host_without_one(self, trained: tuple[Path, dict[str, str]]) -> None:
        """--gpus on a host without GPUs: exit 2 before any engine is asked (none is reachable)."""
        root, runs = trained
        done = subprocess.run(
            [*envsnap_command(), "rerun", runs["fail"], "--gpus", "all"],
            cwd=root,
            env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert "no usable NVIDIA GPU" in done.stderr and "Traceback" not in done.stderr


class TestRerunErrors:
    def test_run_without_command(self, envsnap: Envsnap) -> None:
        """A run that recorded no command exits 2 and says how to make one rerunnable."""
        envsnap("capture")
        done = envsnap("rerun", "latest", check=2)
        assert "recorded no command" in done.stderr

    def test_commit_gone(self, envsnap: Envsnap) -> None:
        """A recorded commit that no longer exists exits 2 and names the commit."""
        (envsnap.cwd / "note.txt").write_text("one\n")
        git(envsnap.cwd, "add", "note.txt")
        git(envsnap.cwd, "commit", "--quiet", "-m", "doomed")
        envsnap("capture", "--", "true")
        commit = git(envsnap.cwd, "rev-parse", "HEAD").strip()
        git(envsnap.cwd, "reset", "--quiet", "--hard", "HEAD~1")
        git(envsnap.cwd, "reflog", "expire", "--expire=now", "--all")
        git(envsnap.cwd, "gc", "--quiet", "--prune=now")
        done = envsnap("rerun", "latest", check=2)
        assert f"commit {commit[:12]} is not in the repository" in done.stderr

    def test_edited_patch(self, envsnap: Envsnap) -> None:
        """A diff.patch edited after capture exits 2 before anything runs."""
        with (envsnap.cwd / "train.py").open("a") as handle:
            handle.write("# local change\n")
        run_id = envsnap("capture", "--", "true").stdout.strip().splitlines()[0]
        patch = envsnap.cwd / ".envsnap" / "runs" / run_id / "diff.patch"
        patch.write_bytes(patch.read_bytes().replace(b"local change", b"other change"))
        done = envsnap("rerun", run_id, check=2)
        assert "diff.patch does not match" in done.stderr


class TestRerunOfHostRun:
    def test_host_run_rebuilt_on_the_test_image(self, tmp_path: Path) -> None:
        """A run captured on the host (no container), in a subdirectory of its repository, reruns
        in the Debian test image in that same subdirectory with its data in place: outputs and
        metrics match, and the Python and container differences carry their severities."""
        repo = tmp_path / "repo"
        project = repo / "experiments" / "logreg"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("outputs", "metrics.json"))
        (repo / ".gitignore").write_text("outputs/\nmetrics.json\n.envsnap/\n")
        git(repo, "init", "--quiet", "--initial-branch=main")
        git(repo, "add", "-A")
        git(repo, "commit", "--quiet", "-m", "example in a subdirectory")
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "-r", "requirements.txt"],
            cwd=project,
            check=True,
            timeout=600,
        )
        env = {
            **os.environ,
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "ENVSNAP_DOCKER": docker_cli(),
        }
        capture = [*envsnap_command(), "capture", *TRAIN.replace("'", "").split()]
        done = subprocess.run(capture, cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.splitlines()[0]
        done = subprocess.run(
            [*envsnap_command(), "rerun", run_id, "--json", "--base", registry_base()],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode in (0, 1), done.stderr[-3000:]
        outcome = json.loads(done.stdout)
        docker("rmi", "--force", outcome["image"], check=False)
        report = outcome["report"]
        assert report["exit_codes"] == [0, 0] and report["outputs"] == []
        assert report["metrics"] == []
        fields = {f["path"]: f for f in report["fields"]}
        assert fields["container.image"]["severity"] == "info"
        assert fields["container.image"]["new"].startswith("envsnap/env:")
        store = Store(repo / ".envsnap")
        old = store.load(run_id).manifest
        new = store.load(outcome["rerun"]).manifest
        assert old.command.cwd == new.command.cwd == "experiments/logreg"
        assert new.data == old.data
        if old.python.version != new.python.version:
            assert old.python.version.split(".")[:2] == new.python.version.split(".")[:2]
            assert fields["python.version"]["severity"] == "warning"
        assert {p.name: p.version for p in new.python.packages} == {
            p.name: p.version for p in old.python.packages
        }
