"""The manifest model and its canonical TOML form."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import ClassVar

import pytest

from envsnap.errors import ManifestError
from envsnap.manifest import (
    Manifest,
    Model,
    Package,
    Param,
    Result,
    compute_env_id,
    dumps_manifest,
    dumps_result,
    loads_manifest,
    loads_result,
    model,
    seal,
    seal_text,
)
from tests.conftest import sample_manifest


class TestCanonicalForm:
    def test_round_trip_is_lossless(self, manifest: Manifest) -> None:
        """A sealed manifest read back equals what was written, typed values included."""
        sealed = seal(manifest)
        again = loads_manifest(dumps_manifest(sealed), "m.toml")
        assert again == sealed
        assert again.params[0].value == 0.1
        assert isinstance(again.params[1].value, int)

    def test_sealed_text_is_the_canonical_text(self) -> None:
        """The text written when sealing equals the canonical rendering of the sealed manifest."""
        sealed, text = seal_text(sample_manifest())
        assert text == dumps_manifest(sealed)

    def test_same_content_gives_same_bytes(self) -> None:
        """Two manifests with equal content serialise to identical bytes."""
        a = seal(sample_manifest())
        b = seal(sample_manifest())
        assert dumps_manifest(a) == dumps_manifest(b)

    def test_mapping_order_does_not_change_bytes(self) -> None:
        """Mappings are written sorted, so insertion order never shows in the file."""
        a = seal(sample_manifest(seeds={"a": 1, "b": 2}))
        b = seal(sample_manifest(seeds={"b": 2, "a": 1}))
        assert dumps_manifest(a) == dumps_manifest(b)

    def test_defaults_are_left_out(self) -> None:
        """Fields at their default value are not written, keeping package entries short."""
        text = dumps_manifest(seal(sample_manifest()))
        assert "archive_hash" not in text
        assert 'schema = "envsnap.manifest/1"' in text

    def test_top_level_keys_come_first(self) -> None:
        """The file opens with schema and run id, as a reader expects."""
        text = dumps_manifest(seal(sample_manifest()))
        assert text.splitlines()[0] == 'schema = "envsnap.manifest/1"'
        assert text.splitlines()[1].startswith("run_id = ")


class TestDigestFunction:
    @pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 10_000, 1_000_003])
    def test_built_in_sha256_agrees_with_hashlib(self, size: int) -> None:
        """The SHA-256 that seals manifests without loading OpenSSL gives hashlib's digest."""
        import hashlib

        from envsnap.manifest import _sha256_hex

        data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        assert _sha256_hex(data) == hashlib.sha256(data).hexdigest()


class TestEnvId:
    def test_env_id_ignores_run_facts(self) -> None:
        """Runs in the same environment share an env_id whatever their name, params or time."""
        a = sample_manifest()
        b = sample_manifest(
            run_id="20261122-170000-ffffff", name="other", params=(), created="2026-11-23T00:00:00Z"
        )
        assert compute_env_id(a) == compute_env_id(b)

    def test_env_id_follows_packages(self) -> None:
        """A different package version gives a different env_id."""
        a = sample_manifest()
        python = dataclasses.replace(a.python, packages=(Package(name="numpy", version="2.2.0"),))
        assert compute_env_id(a) != compute_env_id(dataclasses.replace(a, python=python))

    def test_env_id_ignores_interpreter_path(self) -> None:
        """The same packages in a venv at another path share the env_id."""
        a = sample_manifest()
        python = dataclasses.replace(a.python, executable="/elsewhere/bin/python", prefix="/x")
        assert compute_env_id(a) == compute_env_id(dataclasses.replace(a, python=python))


class TestBadManifests:
    def test_not_toml(self) -> None:
        """A file that is not TOML is reported by name, as possibly truncated."""
        with pytest.raises(ManifestError, match=r"m\.toml is not valid TOML"):
            loads_manifest("schema = [", "m.toml")

    def test_truncated(self) -> None:
        """A file cut short of its required keys is reported as truncated."""
        text = dumps_manifest(seal(sample_manifest()))
        cut = "\n".join(line for line in text.splitlines() if not line.startswith("created"))
        with pytest.raises(ManifestError, match="lacks the required key 'created'"):
            loads_manifest(cut, "m.toml")

    def test_truncated_mid_file(self) -> None:
        """Cutting the file at half its length never yields a valid manifest."""
        text = dumps_manifest(seal(sample_manifest()))
        with pytest.raises(ManifestError):
            loads_manifest(text[: len(text) // 2], "m.toml")

    def test_unknown_schema(self) -> None:
        """A schema version this envsnap does not know is refused with both versions named."""
        text = dumps_manifest(seal(sample_manifest())).replace(
            "envsnap.manifest/1", "envsnap.manifest/9"
        )
        with pytest.raises(ManifestError, match=r"envsnap\.manifest/9"):
            loads_manifest(text, "m.toml")

    def test_edited_after_writing(self) -> None:
        """Changing any value after sealing is detected through the digest."""
        text = dumps_manifest(seal(sample_manifest()))
        edited = text.replace('version = "2.1.3"', 'version = "2.1.4"')
        assert edited != text
        with pytest.raises(ManifestError, match="modified after it was written"):
            loads_manifest(edited, "m.toml")

    def test_unknown_key(self) -> None:
        """A key the model does not have is refused, naming it."""
        text = dumps_manifest(seal(sample_manifest())) + '\n[extra]\nx = "y"\n'
        with pytest.raises(ManifestError, match="unknown key 'extra'"):
            loads_manifest(text, "m.toml")

    def test_wrong_type(self) -> None:
        """A value of the wrong type is refused with its path."""
        text = dumps_manifest(seal(sample_manifest())).replace("cpu_count = 2", 'cpu_count = "2"')
        with pytest.raises(ManifestError, match=r"host\.cpu_count"):
            loads_manifest(text, "m.toml")


class TestResult:
    def test_result_round_trip(self) -> None:
        """A result with metrics and outputs reads back equal."""
        result = Result(
            run_id="20261122-163012-a1b2c3",
            exit_code=3,
            started="2026-11-22T16:30:12.000000Z",
            ended="2026-11-22T16:30:13.000000Z",
            duration_s=1.0,
            metrics={"loss": 0.25, "epochs": 3},
        )
        assert loads_result(dumps_result(result), "r.toml") == result

    def test_param_list_values_survive(self) -> None:
        """A list parameter stays a list of typed values."""
        sealed = seal(sample_manifest(params=(Param(key="layers", value=(64, 32), source="file"),)))
        again = loads_manifest(dumps_manifest(sealed), "m.toml")
        assert again.params[0].value == (64, 32)


class TestModels:
    def test_fields_cannot_be_assigned_or_deleted(self) -> None:
        """A model is frozen: assigning or deleting a field raises FrozenInstanceError."""
        package = Package(name="numpy", version="2.1.0")
        with pytest.raises(dataclasses.FrozenInstanceError):
            package.version = "2.2.0"  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del package.version

    def test_construction_names_a_missing_or_unknown_keyword(self) -> None:
        """A missing required field or an unknown keyword is a TypeError naming it."""
        with pytest.raises(TypeError, match="missing required keyword-only argument: 'version'"):
            Package(name="numpy")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="unexpected keyword argument 'versoin'"):
            Package(name="numpy", versoin="2.1.0")  # type: ignore[call-arg]

    def test_defaults_and_factories_fill_what_is_not_given(self) -> None:
        """Fields left out take their default; factory defaults are fresh for each instance."""
        a, b = sample_manifest(), sample_manifest()
        package = Package(name="numpy", version="2.1.0")
        assert (package.source, package.reinstallable) == ("index", True)
        assert a.tags == {} and a.tags is not b.tags

    def test_equality_hash_repr_and_replace_follow_the_fields(self) -> None:
        """Equal fields make equal, equally hashed models; replace and repr work as on any
        dataclass."""
        package = Package(name="numpy", version="2.1.0")
        same = Package(name="numpy", version="2.1.0")
        assert package == same and hash(package) == hash(same)
        newer = dataclasses.replace(package, version="2.2.0")
        assert newer != package and newer.name == "numpy"
        assert repr(package).startswith("Package(name='numpy', version='2.1.0', source='index'")

    def test_a_pseudo_field_is_refused(self) -> None:
        """A ClassVar in a model class is refused when the class is made, not when it is used."""
        with pytest.raises(TypeError, match="ClassVar or InitVar"):

            @model
            class _WithClassVar(Model):
                limit: ClassVar[int] = 3
                name: str = ""


class TestReader:
    """The reader checks each row against its model without re-deriving the model per row."""

    def test_type_hints_are_resolved_once_per_class_not_per_row(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reading 2,000 params resolves no model's type hints more than once."""
        params = tuple(Param(key=f"p{i:04d}", value=i, source="file") for i in range(2000))
        text = dumps_manifest(seal(sample_manifest(params=params)))
        resolved: list[object] = []
        real = typing.get_type_hints

        def counting(cls: object, *args: object, **kwargs: object) -> dict[str, object]:
            resolved.append(cls)
            return real(cls, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(typing, "get_type_hints", counting)
        assert loads_manifest(text, "m.toml").params == params
        assert len(resolved) == len(set(resolved)) < 30

    def test_every_param_value_type_reads_back_as_itself(self) -> None:
        """bool, int, float, str and mixed lists keep their exact types: True is not 1, and
        1.0 is not 1."""
        values: tuple[object, ...] = (True, False, 1, 0, 1.0, -2.5, "1", "", (1, "a", True, 2.5))
        params = tuple(
            Param(key=f"p{i}", value=v, source="cli")  # type: ignore[arg-type]
            for i, v in enumerate(values)
        )
        again = loads_manifest(dumps_manifest(seal(sample_manifest(params=params))), "m.toml")
        read = tuple(p.value for p in again.params)
        assert read == values
        assert [type(v) for v in read] == [type(v) for v in values]
        assert [type(v) for v in read[-1]] == [int, str, bool, float]  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("edit", "where"),
        [
            (("value = 0.1", "value = {x = 1}"), "params[0].value"),
            (("value = 0.1", "value = [1, {x = 1}]"), "params[0].value"),
            (('source = "cli"', 'source = "elsewhere"'), "params[0].source"),
            (('source = "cli"', "source = 1"), "params[0].source"),
            (("cpu_count = 2", "cpu_count = true"), "host.cpu_count"),
            (("cpu_count = 2", "cpu_count = 2.5"), "host.cpu_count"),
        ],
    )
    def test_wrong_types_are_still_refused_with_their_path(
        self, edit: tuple[str, str], where: str
    ) -> None:
        """The fast paths accept exactly what the slow ones did: a table, an unknown literal or
        a bool where an int belongs is named by its path."""
        text = dumps_manifest(seal(sample_manifest()))
        assert edit[0] in text
        with pytest.raises(ManifestError, match=re.escape(f"malformed value at {where!r}")):
            loads_manifest(text.replace(edit[0], edit[1], 1), "m.toml")
