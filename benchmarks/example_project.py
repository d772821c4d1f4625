"""What the docker benchmarks share: the example project, committed in a scratch git repository
with its own venv (numpy), the command that trains it, and a subprocess runner that stops the
benchmark with the tail of a failing command's output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "train-logreg"
LOCAL_BASE = "envsnap-test/python:3.11-bookworm"
REGISTRY_BASE = f"127.0.0.1:5000/{LOCAL_BASE}"
TRAIN = [
    "--params-file", "config.json", "--seed", "42", "--data", "data/train.csv",
    "--output", "outputs/*.npy", "--metrics", "metrics.json",
    "--", "python", "train.py", "--config", "config.json", "--seed", "42", "--out", "outputs",
]  # fmt: skip


def run(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), cwd=cwd, env=dict(env), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def make_project(root: Path, base_env: Mapping[str, str]) -> dict[str, str]:
    """The example committed on main at ``root`` with its venv; the environment that activates
    it (and bases rebuilt images on the registry's test base)."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("outputs", "metrics.json"))
    (root / ".gitignore").write_text("outputs/\nmetrics.json\n.envsnap/\n.venv/\n")
    git_env = {**base_env, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@e.invalid",
               "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@e.invalid"}  # fmt: skip
    for git_args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "ex"]):
        run(["git", *git_args], cwd=root, env=git_env)
    venv = root / ".venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=base_env)
    run([str(venv / "bin" / "pip"), "install", "-q", "-r", "requirements.txt"], cwd=root,
        env=base_env)  # fmt: skip
    return {
        **base_env,
        "VIRTUAL_ENV": str(venv),
        "ENVSNAP_BASE_IMAGE": REGISTRY_BASE,
        "PATH": f"{venv / 'bin'}{os.pathsep}{base_env['PATH']}",
    }
