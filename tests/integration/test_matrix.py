"""The drift matrix on three real targets at once: ``a``, the local docker engine; ``b``, host B (a
second engine that shares no image with A), whose data mapping points at a changed copy of the
data file; and ``s``, the one-node Slurm cluster (partition debug, its node running host A's
engine). Captured in the base image, built and pushed, then ``envsnap matrix RUN --on a --on b
--on s`` from the workstation's repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import envsnap_command, example_project
from tests.integration.docker_env import (
    REGISTRY,
    capture_in_container,
    docker_b,
    docker_cli,
    host_b,
    registry_base,
    slurm_partitions,
)

pytestmark = pytest.mark.integration

TRAIN = (
    "--params-file config.json --seed 42 --data data/train.csv --output 'outputs/*.npy' "
    "--metrics metrics.json -- python train.py --config config.json --seed 42 --out outputs"
)


@dataclass(frozen=True)
class Fleet:
    workstation: Path
    run_id: str
    image: str


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*envsnap_command(), *args],
        cwd=cwd,
        env={**os.environ, "ENVSNAP_DOCKER": docker_cli()},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _targets(changed: Path) -> str:
    return (
        '[project]\nname = "train-logreg"\nversion = "0"\n\n'
        '[tool.envsnap.targets.a]\nengine = "docker"\n\n'
        f'[tool.envsnap.targets.b]\nengine = "docker"\ndocker-host = "{host_b()}"\n'
        f'data = {{"data/train.csv" = "{changed}"}}\n\n'
        '[tool.envsnap.targets.s]\nengine = "slurm"\npartition = "debug"\n'
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The example with targets a and b committed in its pyproject.toml, captured in the base
    image, its image built and pushed, its record pushed; b's data is the example's with one
    value changed."""
    assert "debug" in slurm_partitions()
    mnt = tmp_path_factory.mktemp("hostb-data")
    root = tmp_path_factory.mktemp("workstation") / "project"
    example_project(root, {"pyproject.toml": _targets(mnt / "train.csv")})
    text = (root / "data" / "train.csv").read_text().splitlines()
    first = text[1].split(",")
    first[0] = str(float(first[0]) + 1.0)
    text[1] = ",".join(first)
    (mnt / "train.csv").write_text("\n".join(text) + "\n")
    (run_id,) = capture_in_container(root, [f"--name matrix {TRAIN}"])
    suffix = os.urandom(3).hex()
    envs = f"{REGISTRY}/envsnap-tests/matrix-envs-{suffix}"
    built = _cli(root, "build", run_id, "--base", registry_base(), "--push", envs, "--json")
    assert built.returncode == 0, built.stderr[-3000:]
    image = json.loads(built.stdout)["registry_digest"]
    pushed = _cli(root, "push", run_id, f"{REGISTRY}/envsnap-tests/matrix-runs-{suffix}")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    yield Fleet(workstation=root, run_id=run_id, image=image)
    docker_b("image", "rm", "--force", image, check=False)


class _MatrixCells(HTMLParser):
    """The cells of the page's drift table, as its data attributes hold them, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[dict[str, Any]]] = []
        self.in_matrix = False
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "table":
            self.in_matrix = found.get("class") == "matrix"
        elif self.in_matrix and tag == "tr" and "data-kind" in found:
            self.rows.append([])
        elif self.in_matrix and tag == "td" and self.rows:
            self.rows[-1].append(
                {
                    "severity": found["data-severity"] or None,
                    "value": found["data-value"],
                    "delta": found["data-delta"],
                }
            )

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_matrix = False


@dataclass(frozen=True)
class Matrixed:
    done: subprocess.CompletedProcess[str]
    page: Path


@pytest.fixture(scope="module")
def matrixed(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Matrixed:
    """``envsnap matrix RUN --on a --on b --on s --json --html PAGE``, run once for the module."""
    page = tmp_path_factory.mktemp("page") / "matrix.html"
    done = _cli(
        fleet.workstation, "matrix", fleet.run_id, "--on", "a", "--on", "b", "--on", "s",
        "--json", "--html", str(page),
    )  # fmt: skip
    return Matrixed(done=done, page=page)


def _chromium(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on the page (scripts/chromium.sh installs it), logging to stderr."""
    chromium = os.environ.get("ENVSNAP_CHROMIUM") or shutil.which("chromium")
    assert chromium, "chromium is not installed: run scripts/chromium.sh (scripts/test.sh does)"
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    done = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--window-size=1400,1000", *mode, page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


class TestMatrixOnTwoEngines:
    def test_column_b_shows_data_and_metric_drift_and_a_reproduces(
        self, fleet: Fleet, matrixed: Matrixed
    ) -> None:
        """Exit 1; a and s reproduced with nothing breaking; b names the data's hash and the
        metrics it moves, and no other breaking field; b ran on host B, s as a Slurm job; the
        reruns ran at once; --json cells are the page's."""
        done = matrixed.done
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        data = json.loads(done.stdout)
        assert [c["name"] for c in data["columns"]] == ["original", "a", "b", "s"]
        original, a, b, s = data["columns"]
        assert original["run_id"] == fleet.run_id
        assert data["sequential"] is False
        for column in (a, s):
            assert column["verdict"] == "reproduced" and column["max_severity"] != "breaking"
        assert b["verdict"] == "not reproduced" and b["max_severity"] == "breaking"
        assert b["host"]["engine"].startswith("envsnap-hostb ")
        assert "(the local engine)" in a["host"]["engine"]
        assert s["host"]["engine"].startswith("slurm:debug job ")
        assert "[s] " in done.stderr and "[b] " in done.stderr  # output named by target
        rows = data["rows"]
        assert all(r["cells"][1]["severity"] != "breaking" for r in rows)
        assert all(r["cells"][3]["severity"] != "breaking" for r in rows)
        b_breaking = {
            (r["kind"], r["name"]) for r in rows if r["cells"][2]["severity"] == "breaking"
        }
        assert {name for kind, name in b_breaking if kind == "field"} == {
            "data.data/train.csv.sha256"
        }
        assert {kind for kind, _ in b_breaking} <= {"field", "metric", "output"}
        assert any(kind == "metric" for kind, _ in b_breaking)
        metric = next(r for r in rows if r["kind"] == "metric" and r["cells"][2]["severity"])
        assert metric["cells"][2]["delta"].startswith(("+", "-"))

        html = matrixed.page.read_text(encoding="utf-8")
        assert "<script" not in html and "src=" not in html and "href=" not in html
        parser = _MatrixCells()
        parser.feed(html)
        assert parser.rows == [r["cells"] for r in rows]
        assert "link" not in parser.tags and "img" not in parser.tags

    def test_the_page_in_chromium_holds_the_json_cells_without_console_errors(
        self, matrixed: Matrixed, tmp_path: Path
    ) -> None:
        """Headless Chromium renders the page to a screenshot and, from its DOM, the same
        cells as --json, with nothing on the console (no script error, nothing refused)."""
        rows = json.loads(matrixed.done.stdout)["rows"]
        shot = tmp_path / "matrix.png"
        taken = _chromium(matrixed.page, tmp_path, f"--screenshot={shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        dumped = _chromium(matrixed.page, tmp_path, "--dump-dom")
        for run in (taken, dumped):
            console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
            assert console == [], console
        parser = _MatrixCells()
        parser.feed(dumped.stdout)
        assert parser.rows == [r["cells"] for r in rows] and rows

    def test_rerun_on_a_target_writes_the_same_page(self, fleet: Fleet, tmp_path: Path) -> None:
        """rerun --on b --html: exit 1, the page is the matrix of one target, b, on host B, whose
        cells name the data's hash."""
        page = tmp_path / "rerun.html"
        done = _cli(fleet.workstation, "rerun", fleet.run_id, "--on", "b", "--html", str(page))
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        assert "NOT reproduced" in done.stdout
        html = page.read_text(encoding="utf-8")
        assert "<th>original</th><th>b</th>" in html and "envsnap-hostb " in html
        assert 'data-name="data.data/train.csv.sha256"' in html
        assert 'data-column="b" data-severity="breaking"' in html

    def test_a_target_nobody_configured_stops_before_any_rerun(self, fleet: Fleet) -> None:
        """--on with an unknown name: exit 2, one sentence naming the configured targets, and
        no rerun was recorded."""
        before = sorted((fleet.workstation / ".envsnap" / "runs").iterdir())
        done = _cli(fleet.workstation, "matrix", fleet.run_id, "--on", "a", "--on", "gpu-h100")
        assert done.returncode == 2
        assert "gpu-h100" in done.stderr and "a (docker), b (docker)" in done.stderr
        assert "Traceback" not in done.stderr
        assert sorted((fleet.workstation / ".envsnap" / "runs").iterdir()) == before
