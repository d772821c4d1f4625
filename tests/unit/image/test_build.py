"""Pieces of envsnap build that need no engine (envsnap's own wheel for the image), and what
build records, against a fake engine."""

from __future__ import annotations

import io
import json
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsnap.image.build import (
    BuildOptions,
    BuiltImage,
    _same_base,
    base_packages,
    build_run,
    build_tool_wheel,
)
from envsnap.image.dockeroutput import ImageInfo
from envsnap.locking.files import lock_run
from envsnap.locking.model import IndexFile, IndexQuery
from envsnap.manifest import Package, Python
from envsnap.store import Store, StoredRun
from tests.conftest import sample_manifest


class TestToolWheel:
    def test_wheel_is_byte_stable(self) -> None:
        """Two builds of envsnap's wheel give the same bytes, so the image layer is cached."""
        assert build_tool_wheel() == build_tool_wheel()

    def test_wheel_is_installable_shape(self) -> None:
        """The wheel holds the package, its templates and metadata with a complete RECORD."""
        name, data = build_tool_wheel()
        assert name.startswith("envsnap-") and name.endswith("-py3-none-any.whl")
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            names = set(wheel.namelist())
            dist_info = name.split("-py3")[0] + ".dist-info"
            assert {"envsnap/cli.py", "envsnap/templates/Dockerfile.base"} <= names
            assert f"{dist_info}/entry_points.txt" in names
            metadata = wheel.read(f"{dist_info}/METADATA").decode()
            record = wheel.read(f"{dist_info}/RECORD").decode().splitlines()
        assert "Requires-Dist: click==" in metadata
        assert {line.split(",")[0] for line in record} == names
        assert not any("__pycache__" in n for n in names)


class TestReuseBase:
    """An image recorded for the environment is reused only for the base that was asked for."""

    BUILT_ON = "127.0.0.1:5000/envsnap-test/python@sha256:" + "a" * 64

    def test_nothing_asked(self) -> None:
        """Without --base or a configured base, the recorded image serves."""
        assert _same_base(self.BUILT_ON, "")

    def test_same_repository_by_tag(self) -> None:
        """A tag of the same repository serves: it was resolved when the image was built."""
        assert _same_base(self.BUILT_ON, "127.0.0.1:5000/envsnap-test/python:3.11-bookworm")

    def test_other_repository(self) -> None:
        """Another repository means another base: build again."""
        assert not _same_base(self.BUILT_ON, "python:3.11.7-slim-bookworm")

    def test_digest_must_match(self) -> None:
        """A pinned request serves only when the digest is the recorded one."""
        assert _same_base(self.BUILT_ON, "127.0.0.1:5000/envsnap-test/python@sha256:" + "a" * 64)
        assert not _same_base(
            self.BUILT_ON, "127.0.0.1:5000/envsnap-test/python@sha256:" + "b" * 64
        )

    def test_docker_hub_spellings_are_one_repository(self) -> None:
        """docker.io/library/python and python are the same repository."""
        assert _same_base("docker.io/library/python@sha256:" + "c" * 64, "python:3.11")


class _AnyIndex:
    """A HashSource that serves one pure wheel for every project and version asked."""

    def files(self, queries: Sequence[IndexQuery]) -> dict[IndexQuery, tuple[IndexFile, ...]]:
        return {
            q: (IndexFile(f"{q.project.replace('-', '_')}-{q.version}-py3-none-any.whl", "0" * 64),)
            for q in queries
        }


@dataclass
class _FakeEngine:
    """Answers build's questions of a docker engine; each build makes a new image id."""

    provided: dict[str, str] = field(default_factory=dict)
    images: dict[str, ImageInfo] = field(default_factory=dict)
    builds: int = 0
    built_tags: list[str] = field(default_factory=list)
    build_args: list[dict[str, str]] = field(default_factory=list)
    no_cache: list[bool] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def env_builds(self) -> int:
        return sum(1 for tag in self.built_tags if tag.startswith("envsnap/env:"))

    def resolve_digest(self, ref: str) -> str:
        return "127.0.0.1:5000/base@sha256:" + "b" * 64

    def run(self, image: str, argv: Sequence[str], **kwargs: Any) -> int:
        kwargs["on_output"]("ENVSNAP-PACKAGES " + json.dumps(self.provided))
        return 0

    def build(self, *, tag: str, **kwargs: Any) -> str:
        self.builds += 1
        self.built_tags.append(tag)
        self.build_args.append(dict(kwargs.get("build_args") or {}))
        self.no_cache.append(bool(kwargs.get("no_cache")))
        image_id = f"sha256:{self.builds:064d}"
        self.images[tag] = self.images[image_id] = ImageInfo(id=image_id, repo_tags=(tag,))
        for key, info in list(self.images.items()):
            if info.id != image_id and key.startswith("sha256:"):
                self.images[key] = ImageInfo(id=info.id)  # untagged by the new build
        return image_id

    def inspect_image(self, ref: str) -> ImageInfo | None:
        return self.images.get(ref)

    def remove_image_later(self, ref: str) -> None:
        self.remove_image(ref)

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self.removed.append(ref)
        self.images.pop(ref, None)


class TestBuildRecords:
    """What build writes: the run's lock files once, and image.toml saying what was built."""

    def _runs(self, tmp_path: Path) -> tuple[Store, StoredRun, StoredRun]:
        store = Store(tmp_path / "store")
        packages = (
            Package(name="numpy", version="2.1.3", installer="pip"),
            Package(name="scipy", version="1.14.1", installer="pip"),
        )
        python = Python(version="3.11.7", packages=packages)
        ids = ("20261122-163012-a1b2c3", "20261122-163013-d4e5f6")
        runs = [store.write_run(sample_manifest(run_id=i, python=python))[1] for i in ids]
        return store, store.load(runs[0].name), store.load(runs[1].name)

    def _build(
        self, store: Store, run: StoredRun, engine: _FakeEngine, **options: Any
    ) -> BuiltImage:
        return build_run(run, store, engine, BuildOptions(**options), env={}, source=_AnyIndex())  # type: ignore[arg-type]

    def test_build_never_rewrites_the_runs_lock(self, tmp_path: Path) -> None:
        """The lock files a lock wrote stay byte for byte; what the base provides is recorded
        in image.toml and left out of the image's own requirements only."""
        store, run, _ = self._runs(tmp_path)
        _, written = lock_run(run, store, source=_AnyIndex())
        before = {p.name: p.read_bytes() for p in written}
        assert b"numpy==2.1.3" in before["requirements.lock.txt"]
        built = self._build(store, run, _FakeEngine(provided={"numpy": "2.1.3"}))
        after = {p.name: (run.directory / p.name).read_bytes() for p in written}
        assert after == before
        assert built.base_provided == ("numpy",)
        record = tomllib.loads((run.directory / "image.toml").read_text())
        assert record["base_provided"] == ["numpy"]

    def test_a_build_without_a_lock_locks_once_with_every_package(self, tmp_path: Path) -> None:
        """Built before any lock: the run's lock lists every recorded package, base or not."""
        store, run, _ = self._runs(tmp_path)
        self._build(store, run, _FakeEngine(provided={"numpy": "2.1.3"}))
        text = (run.directory / "requirements.lock.txt").read_text()
        assert "numpy==2.1.3" in text and "scipy==1.14.1" in text

    def test_a_reuse_leaves_image_toml_as_built(self, tmp_path: Path) -> None:
        """A warm build says 'reused' on output and does not rewrite what was built and when."""
        store, run, _ = self._runs(tmp_path)
        engine = _FakeEngine()
        first = self._build(store, run, engine)
        recorded = (run.directory / "image.toml").read_bytes()
        again = self._build(store, run, engine)
        assert again.reused and not first.reused and engine.env_builds == 1
        assert (run.directory / "image.toml").read_bytes() == recorded
        data = tomllib.loads(recorded.decode())
        assert "reused" not in data and data["seconds"] == first.seconds

    def test_a_rebuild_updates_every_run_of_the_environment(self, tmp_path: Path) -> None:
        """After --rebuild of one run, another run of the same environment names the new
        image, not the removed one."""
        store, run_a, run_b = self._runs(tmp_path)
        assert run_a.manifest.env_id == run_b.manifest.env_id
        engine = _FakeEngine()
        old = self._build(store, run_a, engine)
        self._build(store, run_b, engine)
        new = self._build(store, run_a, engine, rebuild=True)
        assert new.image_id != old.image_id and old.image_id in engine.removed
        for run in (run_a, run_b):
            data = tomllib.loads((run.directory / "image.toml").read_text())
            assert data["image_id"] == new.image_id


class TestToolImage:
    """envsnap's own environment is an image of its own, built once per base and envsnap."""

    def test_a_second_environment_reuses_the_tool_image(self, tmp_path: Path) -> None:
        """A new environment on the same base builds only its own packages, on the tool image."""
        store = Store(tmp_path / "store")
        engine = _FakeEngine()
        for index, name in enumerate(("numpy", "scipy")):
            python = Python(version="3.11.7", packages=(Package(name=name, version="1.0"),))
            run_id = f"20261122-16301{index}-a1b2c3"
            store.write_run(sample_manifest(run_id=run_id, python=python))
            build_run(store.load(run_id), store, engine, BuildOptions(), env={}, source=_AnyIndex())  # type: ignore[arg-type]
        tools = [t for t in engine.built_tags if t.startswith("envsnap/tool:")]
        assert len(tools) == 1 and engine.env_builds == 2
        env_args = [
            a
            for a, t in zip(engine.build_args, engine.built_tags, strict=True)
            if t.startswith("envsnap/env:")
        ]
        assert env_args == [{"ENVSNAP_TOOL": tools[0]}] * 2

    def test_a_rebuild_rebuilds_the_environment_on_the_kept_tool_image(
        self, tmp_path: Path
    ) -> None:
        """--rebuild builds the environment without the layer cache; the tool image stays."""
        store, run, _ = TestBuildRecords()._runs(tmp_path)
        engine = _FakeEngine()
        build_run(run, store, engine, BuildOptions(), env={}, source=_AnyIndex())  # type: ignore[arg-type]
        build_run(run, store, engine, BuildOptions(rebuild=True), env={}, source=_AnyIndex())  # type: ignore[arg-type]
        assert [t.split(":")[0] for t in engine.built_tags] == [
            "envsnap/tool",
            "envsnap/env",
            "envsnap/env",
        ]
        assert engine.no_cache == [False, False, True]


class TestToolDependencies:
    def test_the_whole_closure_is_named(self) -> None:
        """envsnap's own dependencies go into the image with --no-deps, so their dependencies
        must be named too: requests' urllib3 and idna, which push and pull import there."""
        from envsnap.image.build import _tool_dependencies

        names = {name for name, _ in _tool_dependencies()}
        assert {"click", "oras", "requests", "urllib3", "idna", "certifi"} <= names
        assert "envsnap" not in names


class TestBasePackagesCache:
    """What a base pinned by digest provides is read in a container once, then from the cache."""

    def test_read_once_per_pinned_base(self, tmp_path: Path) -> None:
        """A second read of the same pinned base starts no container; another base does."""
        runs: list[str] = []

        class Counting(_FakeEngine):
            def run(self, image: str, argv: Sequence[str], **kwargs: Any) -> int:
                runs.append(image)
                return super().run(image, argv, **kwargs)

        engine = Counting(provided={"numpy": "2.1.3"})
        pinned = "127.0.0.1:5000/base@sha256:" + "b" * 64
        other = "127.0.0.1:5000/base@sha256:" + "c" * 64
        for base in (pinned, pinned, other):
            found = base_packages(engine, base, cache=tmp_path)  # type: ignore[arg-type]
            assert found == {"numpy": "2.1.3"}
        assert runs == [pinned, other]

    def test_a_tag_or_a_damaged_file_is_read_again(self, tmp_path: Path) -> None:
        """A base named by tag is never cached; a damaged cache file is read around."""
        engine = _FakeEngine(provided={"numpy": "2.1.3"})
        base_packages(engine, "base:latest", cache=tmp_path)  # type: ignore[arg-type]
        assert list(tmp_path.iterdir()) == []
        pinned = "127.0.0.1:5000/base@sha256:" + "b" * 64
        base_packages(engine, pinned, cache=tmp_path)  # type: ignore[arg-type]
        (cached,) = tmp_path.iterdir()
        cached.write_text("{not json")
        assert base_packages(engine, pinned, cache=tmp_path) == {"numpy": "2.1.3"}  # type: ignore[arg-type]
