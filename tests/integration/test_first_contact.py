"""A user's first day: a manifest committed under any name reruns in a fresh clone with the
wheel-installed envsnap, and nothing is written into the project tree."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from envsnap.store import Store
from tests.integration.conftest import envsnap_command, example_project, git
from tests.integration.docker_env import capture_in_container, docker, docker_cli, registry_base

pytestmark = pytest.mark.integration

TRAIN = (
    "--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy' "
    "--metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs"
)
COMMITTED_LOCK = "# the project's own lock, not envsnap's\nnumpy==0.0.0\n"


def _envsnap(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*envsnap_command(), *args],
        cwd=cwd,
        env={**os.environ, "ENVSNAP_DOCKER": docker_cli()},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _tree(root: Path) -> dict[str, bytes]:
    """Every file of a working tree outside .git and the store, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {".git", ".envsnap"} & set(p.relative_to(root).parts)
    }


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project whose run was captured, its manifest committed as envsnap.lock.toml beside
    its own requirements.lock.txt, then cloned afresh (no store in the clone)."""
    base = tmp_path_factory.mktemp("first-contact")
    origin = example_project(base / "origin", {"requirements.lock.txt": COMMITTED_LOCK})
    (run_id,) = capture_in_container(origin, [f"--name reference {TRAIN}"])
    manifest = origin / ".envsnap" / "runs" / run_id / "manifest.toml"
    (origin / "envsnap.lock.toml").write_bytes(manifest.read_bytes())
    git(origin, "add", "envsnap.lock.toml")
    git(origin, "commit", "--quiet", "-m", "reference environment")
    clone = base / "clone"
    git(base, "clone", "--quiet", str(origin), str(clone))
    yield clone
    images = docker("images", "--quiet", "--filter", "reference=envsnap/env", check=False)
    for image in set(images.stdout.split()):
        docker("rmi", "--force", image, check=False)


class TestCommittedManifest:
    def test_lock_of_a_committed_manifest_writes_only_into_the_store(self, clone: Path) -> None:
        """`lock envsnap.lock.toml` locks into the store; the project's own
        requirements.lock.txt and every other file of the clone stay as they were."""
        before = _tree(clone)
        done = _envsnap(clone, "lock", "envsnap.lock.toml", "--json")
        assert done.returncode == 0, done.stderr
        files = [Path(p) for p in json.loads(done.stdout)["files"]]
        assert files and all(p.is_relative_to(clone / ".envsnap" / "runs") for p in files)
        assert _tree(clone) == before
        assert (clone / "requirements.lock.txt").read_text() == COMMITTED_LOCK

    def test_rerun_of_a_committed_manifest_runs_in_a_fresh_clone(self, clone: Path) -> None:
        """`rerun envsnap.lock.toml` builds and reruns; the environment shows no drift above
        info, and as the committed file holds no result, outputs and metrics are reported as
        not compared (exit 1, never "reproduced"). The manifest given twice is one run; the
        tree outside the store is untouched."""
        before = _tree(clone)
        done = _envsnap(clone, "rerun", "envsnap.lock.toml", "--json", "--base", registry_base())
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        outcome = json.loads(done.stdout)
        assert outcome["verdict"] == "not compared"
        assert outcome["report"]["max_severity"] in ("info", "expected", None)
        store = Store(clone / ".envsnap")
        original = store.load(store.run_ids()[0])
        assert store.load(outcome["rerun"]).manifest.rerun_of == original.run_id
        originals = [i for i in store.run_ids() if not store.load(i).manifest.rerun_of]
        assert originals == [original.run_id]  # imported once, by lock and rerun alike
        assert _tree(clone) == before
        assert not (clone / "image.toml").exists() and not (clone / "lock.toml").exists()
