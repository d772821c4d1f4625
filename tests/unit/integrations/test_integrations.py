"""The tracker integrations without a tracker: which run a process belongs to, the facts and tags
it gets, the MLflow provider's answers, and the one sentence when an extra is missing."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from envsnap import integrations
from envsnap.capturing import active
from envsnap.capturing.active import ActiveRun, active_run
from envsnap.cli import main
from envsnap.errors import EXIT_ERROR
from envsnap.integrations import (
    ExtraMissingError,
    flat_params,
    require_tracker,
    run_facts,
    run_files,
)
from envsnap.integrations.mlflow import EnvsnapRunContextProvider
from envsnap.manifest import Container, Gpu, GpuDevice, Param
from envsnap.store import Store, StoredRun
from tests.conftest import sample_manifest


def _stored(tmp_path: Path, **changes: object) -> StoredRun:
    store = Store(tmp_path / "store")
    sealed, _ = store.write_run(sample_manifest(**changes))
    return store.load(sealed.run_id)


class TestActiveRun:
    def test_capture_command_variables_name_the_run_and_store(self, tmp_path: Path) -> None:
        """ENVSNAP_RUN_ID and ENVSNAP_STORE_DIR, as capture -- CMD exports them, are the run."""
        env = {"ENVSNAP_RUN_ID": "20261122-163012-a1b2c3", "ENVSNAP_STORE_DIR": str(tmp_path)}
        assert active_run(env) == ActiveRun(run_id="20261122-163012-a1b2c3", store_dir=tmp_path)

    def test_a_capture_in_this_process_is_remembered(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the variables, the run envsnap.capture() recorded in this process counts."""
        monkeypatch.setattr(active, "_captured_here", None)
        assert active_run({}) is None
        active.remember_capture("20261122-163012-a1b2c3", tmp_path)
        assert active_run({}) == ActiveRun(run_id="20261122-163012-a1b2c3", store_dir=tmp_path)


class TestFacts:
    def test_a_cpu_run_says_gpu_none_and_leaves_unknown_facts_out(self, tmp_path: Path) -> None:
        """A run without GPU: envsnap.gpu is 'none'; driver and CUDA are not tagged at all."""
        run = _stored(tmp_path)
        tags = run_facts(run).as_tags()
        assert tags == {
            "envsnap.run_id": run.run_id,
            "envsnap.env_id": run.manifest.env_id,
            "envsnap.manifest_digest": run.manifest.digest,
            "envsnap.name": "lr-sweep-3",
            "envsnap.gpu": "none",
            "envsnap.python": "3.11.7",
        }

    def test_gpu_driver_cuda_and_image_digest_are_tagged(self, tmp_path: Path) -> None:
        """GPU models (distinct, sorted), count, driver, CUDA and the container image digest."""
        gpu = Gpu(
            available=True,
            driver_version="550.54.15",
            cuda_driver_version="12.4",
            devices=(
                GpuDevice(index=0, name="NVIDIA H100 80GB HBM3"),
                GpuDevice(index=1, name="NVIDIA H100 80GB HBM3"),
            ),
        )
        container = Container(inside=True, image_digest="sha256:" + "ab" * 32)
        tags = run_facts(_stored(tmp_path, gpu=gpu, container=container)).as_tags()
        assert tags["envsnap.gpu"] == "NVIDIA H100 80GB HBM3"
        assert tags["envsnap.gpu_count"] == "2"
        assert tags["envsnap.driver"] == "550.54.15"
        assert tags["envsnap.cuda"] == "12.4"
        assert tags["envsnap.image_digest"] == "sha256:" + "ab" * 32

    def test_the_image_built_for_the_environment_is_its_digest(self, tmp_path: Path) -> None:
        """Outside a container, the image the store built for the run's environment counts:
        the registry digest after a push, else the image id."""
        run = _stored(tmp_path)
        store_dir = tmp_path / "store"
        record = store_dir / "images" / f"{run.manifest.env_id.removeprefix('sha256:')}.toml"
        record.parent.mkdir()
        record.write_text(f'env_id = "{run.manifest.env_id}"\nimage_id = "sha256:1234"\n')
        assert run_facts(run, store_dir=store_dir).image_digest == "sha256:1234"

    def test_params_are_text_by_dotted_key(self, tmp_path: Path) -> None:
        """Params become sorted text values; booleans as TOML writes them, lists bracketed."""
        params = (
            Param(key="lr", value=0.1, source="cli"),
            Param(key="aug.flip", value=True, source="cli"),
            Param(key="layers", value=(1, 2), source="file"),
        )
        run = _stored(tmp_path, params=params)
        assert flat_params(run) == {"aug.flip": "true", "layers": "[1, 2]", "lr": "0.1"}

    def test_exported_files_never_include_the_diff(self, tmp_path: Path) -> None:
        """The manifest goes to trackers; the unredacted diff.patch does not."""
        store = Store(tmp_path / "store")
        sealed, directory = store.write_run(sample_manifest(), diff=b"+token = 'x'\n")
        assert [p.name for p in run_files(store.load(sealed.run_id))] == ["manifest.toml"]
        assert (directory / "diff.patch").is_file()


class TestMlflowProvider:
    def test_tags_come_from_the_stored_manifest(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Inside a capture, the provider is in context and returns the run's tags."""
        run = _stored(tmp_path)
        monkeypatch.setenv("ENVSNAP_RUN_ID", run.run_id)
        monkeypatch.setenv("ENVSNAP_STORE_DIR", str(tmp_path / "store"))
        provider = EnvsnapRunContextProvider()
        assert provider.in_context()
        assert provider.tags()["envsnap.manifest_digest"] == run.manifest.digest

    def test_an_unreadable_run_still_gives_its_id(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A run the store cannot read never fails the MLflow run: the id alone is tagged."""
        monkeypatch.setenv("ENVSNAP_RUN_ID", "20261122-163012-a1b2c3")
        monkeypatch.setenv("ENVSNAP_STORE_DIR", str(tmp_path / "missing"))
        assert EnvsnapRunContextProvider().tags() == {"envsnap.run_id": "20261122-163012-a1b2c3"}

    def test_outside_envsnap_it_is_not_in_context(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No variable and no capture in this process: MLflow skips the provider."""
        monkeypatch.delenv("ENVSNAP_RUN_ID", raising=False)
        monkeypatch.setattr(active, "_captured_here", None)
        assert not EnvsnapRunContextProvider().in_context()


class TestMissingExtra:
    def test_a_missing_tracker_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the package, the error names pip install 'envsnap[<tracker>]'."""
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
        with pytest.raises(ExtraMissingError, match=r"pip install 'envsnap\[wandb\]'"):
            require_tracker("wandb")

    def test_export_without_mlflow_is_one_sentence_and_exit_2(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """envsnap export --to mlflow without MLflow: exit 2, one sentence, nothing else."""
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
        with pytest.raises(SystemExit) as exited:
            main(["export", "latest", "--to", "mlflow"])
        assert exited.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert err == (
            "envsnap: error: exporting to MLflow needs the mlflow package, which is not "
            "installed here; install it with pip install 'envsnap[mlflow]'.\n"
        )


def test_facts_are_frozen() -> None:
    """RunFacts is data: it cannot be changed after it is made."""
    facts = integrations.RunFacts(run_id="r", env_id="e", manifest_digest="d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.run_id = "x"  # type: ignore[misc]
