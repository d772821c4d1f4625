"""The benchmark's surroundings: where its venv lives, how it is built, and the throwaway git
project that `envsnap capture` runs in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_VENV = BENCH_DIR / ".work" / "venv"
SETUP_SCRIPT = BENCH_DIR / "setup_env.sh"
EXAMPLE_PROJECT = REPO_ROOT / "examples" / "train-logreg"

# Variables that would change what a peer does or where it writes; the benchmark sets its own.
_SCRUBBED_PREFIXES = ("ENVSNAP_", "WANDB_", "PYTHON", "PIP_REQUIRE_VIRTUALENV", "CONDA_")


class BenchError(Exception):
    """A benchmark precondition failed; the message says what to do."""


def ensure_venv(venv: Path, *, reinstall: bool) -> None:
    """Runs setup_env.sh: builds the venv when it is missing (minutes, once), and reinstalls
    envsnap from the working tree (seconds) when asked, so that what is measured is current."""
    ready = (venv / ".stack-installed").is_file() and (venv / "bin" / "envsnap").is_file()
    if venv != DEFAULT_VENV:
        if not ready:
            raise BenchError(f"{venv} is not a ready benchmark venv; see {SETUP_SCRIPT.name}")
        return  # someone else's venv: measured as it is
    if ready and not reinstall:
        return
    print(f"running {SETUP_SCRIPT.name} (minutes the first time, then seconds)...", flush=True)
    result = subprocess.run(
        ["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr + result.stdout).strip().splitlines()[-20:])
        raise BenchError(f"{SETUP_SCRIPT.name} failed (exit {result.returncode}):\n{tail}")


def peer_environment(venv: Path, scratch: Path) -> dict[str, str]:
    """The environment every peer runs with: this venv activated, nothing else's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wandb_dir = scratch / "wandb"
    wandb_dir.mkdir(exist_ok=True)
    env.update(
        WANDB_SILENT="true",
        WANDB_MODE="offline",
        WANDB_DIR=str(wandb_dir),
        WANDB_CONFIG_DIR=str(wandb_dir / "config"),
        WANDB_CACHE_DIR=str(wandb_dir / "cache"),
        WANDB_DATA_DIR=str(wandb_dir / "data"),
    )
    return env


def make_git_project(destination: Path) -> Path:
    """Copies the train-logreg example into a fresh git repository with one commit."""
    shutil.copytree(
        EXAMPLE_PROJECT,
        destination,
        ignore=shutil.ignore_patterns("outputs", "metrics.json", "__pycache__"),
    )
    git = shutil.which("git")
    if git is None:
        raise BenchError("git is not on PATH; the benchmark captures inside a git repository")
    identity = ["-c", "user.name=envsnap-bench", "-c", "user.email=bench@example.invalid"]
    for args in (
        ["init", "--quiet", "--initial-branch=main"],
        ["add", "--all"],
        [*identity, "commit", "--quiet", "--no-gpg-sign", "-m", "benchmark project"],
    ):
        subprocess.run([git, *args], cwd=destination, check=True, capture_output=True)
    return destination


def count_distributions(python: Path) -> int:
    """Installed distributions in the venv, by normalised name, as importlib.metadata sees them."""
    code = (
        "import importlib.metadata as m, re\n"
        "print(len({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower()"
        " for d in m.distributions()}))"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())
