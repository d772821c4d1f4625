"""Reruns through a real Slurm cluster: the one-node cluster of scripts/slurm.sh (Debian's
slurm-wlm and munge; its node runs the docker engine), with the store on the filesystem the
node shares. Captured in the base image; the target ``s`` pushes the image to the local registry
and the job pulls it by digest on the node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import default_sigint, envsnap_command, example_project
from tests.integration.docker_env import (
    REGISTRY,
    capture_in_container,
    docker_cli,
    registry_base,
    slurm_partitions,
)

pytestmark = pytest.mark.integration

TRAIN = (
    "--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy' "
    "--metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs"
)
# A command that says it started and then runs long enough to be cancelled.
SLOW = "-- python -c 'import time; print(\"slow started\", flush=True); time.sleep(300)'"


@dataclass(frozen=True)
class Cluster:
    project: Path
    run_id: str
    slow_id: str
    changed: Path


def _cli(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*envsnap_command(), *args],
        cwd=cwd,
        env={**os.environ, "ENVSNAP_DOCKER": docker_cli()},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The example with a Slurm target ``s`` (partition debug, images through the registry),
    two runs captured in the base image (training, and a slow command), the image built."""
    assert slurm_partitions() == ["debug", "batch"]
    root = tmp_path_factory.mktemp("login-node") / "project"
    envs = f"{REGISTRY}/envsnap-tests/slurm-envs-{os.urandom(3).hex()}"
    pyproject = (
        '[project]\nname = "train-logreg"\nversion = "0"\n\n'
        f'[tool.envsnap.targets.s]\nengine = "slurm"\npartition = "debug"\nregistry = "{envs}"\n'
        'options = ["--cpus-per-task=1"]\n'
    )
    example_project(root, {"pyproject.toml": pyproject})
    changed = tmp_path_factory.mktemp("shared-data") / "train.csv"
    lines = (root / "data" / "train.csv").read_text().splitlines()
    first = lines[1].split(",")
    first[0] = str(float(first[0]) + 1.0)
    lines[1] = ",".join(first)
    changed.write_text("\n".join(lines) + "\n")
    run_id, slow_id = capture_in_container(root, [f"--name slurm {TRAIN}", f"--name slow {SLOW}"])
    built = _cli(root, "build", run_id, "--base", registry_base())
    assert built.returncode == 0, built.stderr[-3000:]
    yield Cluster(project=root, run_id=run_id, slow_id=slow_id, changed=changed)


def _jobs(project: Path) -> list[Path]:
    jobs = project / ".envsnap" / "jobs"
    return sorted(p for p in jobs.iterdir() if not p.name.startswith(".")) if jobs.is_dir() else []


class TestRerunOnSlurm:
    def test_a_rerun_through_sbatch_reproduces(self, cluster: Cluster) -> None:
        """--on s: the job pulls the image by digest on the node and reruns; exit 0, reproduced;
        the new run records which partition, job and node it ran on; no job is left behind."""
        done = _cli(cluster.project, "rerun", cluster.run_id, "--on", "s", "--json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        data = json.loads(done.stdout)
        assert data["verdict"] == "reproduced" and data["exit_code"] == 0
        assert "@sha256:" in data["image"] and data["image"].startswith(REGISTRY)
        assert any(n.startswith("Slurm job ") and "partition debug" in n for n in data["notes"])
        assert "slurm:debug job " in Path(data["directory"], "manifest.toml").read_text()
        assert "Slurm job" in done.stderr  # the job's state was said while waiting
        assert _jobs(cluster.project) == []

    def test_a_planted_data_change_through_slurm_is_drift(self, cluster: Cluster) -> None:
        """The built-in slurm target on partition batch, the data mapped to a changed copy on
        the node: exit 1, the data's hash is breaking drift."""
        done = _cli(
            cluster.project, "rerun", cluster.run_id, "--on", "slurm", "--partition", "batch",
            "--data", f"data/train.csv={cluster.changed}", "--json",
        )  # fmt: skip
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        data = json.loads(done.stdout)
        assert data["verdict"] == "not reproduced"
        names = {f["path"] for f in data["report"]["fields"] if f["severity"] == "breaking"}
        assert "data.data/train.csv.sha256" in names
        assert any("partition batch" in n for n in data["notes"])

    def test_detach_returns_at_once_and_collect_gathers_it(self, cluster: Cluster) -> None:
        """--detach prints the job id and exits 0 with the job in the store; collect --wait
        then reports it reproduced and leaves no job; a second collect finds nothing."""
        done = _cli(cluster.project, "rerun", cluster.run_id, "--on", "s", "--detach")
        assert done.returncode == 0, done.stderr[-3000:]
        job_id = done.stdout.strip()
        assert job_id.isdigit() and f"submitted Slurm job {job_id}" in done.stderr
        assert len(_jobs(cluster.project)) == 1
        collected = _cli(cluster.project, "collect", "--wait", "--json")
        assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
        (job,) = json.loads(collected.stdout)["jobs"]
        assert job["job_id"] == job_id and job["state"] == "collected"
        assert job["rerun"]["verdict"] == "reproduced"
        assert _jobs(cluster.project) == []
        again = _cli(cluster.project, "collect")
        assert again.returncode == 0 and "no submitted reruns" in again.stderr

    def test_scancel_mid_run_is_a_result_with_the_schedulers_reason(self, cluster: Cluster) -> None:
        """A detached rerun of a slow command, cancelled with scancel once it started: collect
        exits 1 and the new run's result says Slurm cancelled it; nothing hangs."""
        done = _cli(cluster.project, "rerun", cluster.slow_id, "--on", "s", "--detach")
        assert done.returncode == 0, done.stderr[-3000:]
        job_id = done.stdout.strip()
        (job_dir,) = _jobs(cluster.project)
        output = job_dir / "output.log"
        deadline = time.monotonic() + 300
        while "slow started" not in (output.read_text() if output.exists() else ""):
            assert time.monotonic() < deadline, output.read_text() if output.exists() else ""
            time.sleep(1)
        subprocess.run(["scancel", job_id], check=True, timeout=60)
        collected = _cli(cluster.project, "collect", "--wait", "--json", timeout=300)
        assert collected.returncode == 1, collected.stdout[-3000:] + collected.stderr[-3000:]
        (job,) = json.loads(collected.stdout)["jobs"]
        assert job["state"] == "collected", job
        rerun = job["rerun"]
        assert rerun["verdict"] == "not reproduced" and rerun["interrupted"] is False
        result = Path(rerun["directory"], "result.toml").read_text()
        assert f"Slurm job {job_id} was cancelled (CANCELLED" in result
        assert "interrupted = true" in result
        assert _jobs(cluster.project) == []

    def test_ctrl_c_while_waiting_cancels_the_job_and_reports(self, cluster: Cluster) -> None:
        """Ctrl-C while rerun --on s waits on a running job: the job is cancelled (scancel), the
        rerun is stored with an interrupted result, the report is printed, exit 2; no job and
        no container is left."""
        process = subprocess.Popen(
            [*envsnap_command(), "rerun", cluster.slow_id, "--on", "s"],
            cwd=cluster.project,
            env={**os.environ, "ENVSNAP_DOCKER": docker_cli()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_sigint,
        )
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # the job's output streams to stderr
            seen.append(line)
            if "slow started" in line:
                break
        assert any("slow started" in line for line in seen), "".join(seen)
        job_id = next(line.split()[3] for line in seen if line.startswith("envsnap: Slurm job "))
        process.send_signal(signal.SIGINT)
        out, rest = process.communicate(timeout=180)
        err = "".join(seen) + rest
        assert process.returncode == 2, out + err
        assert "interrupted" in err and "Traceback" not in err
        assert f"of {cluster.slow_id}: interrupted (Ctrl-C)" in out
        state = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "JobState=CANCELLED" in state.stdout, state.stdout + state.stderr
        containers = subprocess.run(
            [docker_cli(), "ps", "-aq", "--filter", f"name=envsnap-rerun-{cluster.slow_id}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert containers.stdout.strip() == ""
        assert _jobs(cluster.project) == []

    def test_the_time_limit_is_a_result_with_the_schedulers_reason(self, cluster: Cluster) -> None:
        """--timeout 30s is Slurm's --time=1: the slow command is stopped by Slurm past its
        minute, and the rerun is a timed-out result saying so (exit 1), not a hang."""
        done = _cli(cluster.project, "rerun", cluster.slow_id, "--on", "s", "--timeout", "30s",
                    "--json", timeout=420)  # fmt: skip
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        data = json.loads(done.stdout)
        assert data["timed_out"] is True and data["verdict"] == "not reproduced"
        result = Path(data["directory"], "result.toml").read_text()
        assert "reached its time limit (TIMEOUT" in result, result
        assert _jobs(cluster.project) == []
