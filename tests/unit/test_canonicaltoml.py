"""The fast reader of envsnap's own TOML: whatever it returns, tomllib returns too."""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import pytest

from envsnap import canonicaltoml
from envsnap.manifest import (
    Conda,
    CondaPackage,
    GpuDevice,
    Manifest,
    Param,
    Redaction,
    Result,
    dumps_manifest,
    dumps_result,
    seal,
)
from envsnap.manifest import Gpu as GpuSection
from tests.conftest import sample_manifest


def _same(fast: Any, slow: Any) -> bool:
    # repr tells 1 from 1.0 and True from 1, and a NaN equals a NaN.
    return repr(fast) == repr(slow)


def _odd_manifest() -> Manifest:
    """A manifest with every kind of value the writer has: escapes, odd keys, inline and
    header tables, floats of every spelling."""
    base = sample_manifest()
    return seal(
        dataclasses.replace(
            base,
            notes='two\nlines, a "quote", a back\\slash, a tab\there, a bell \x07 and é',
            tags={"plain": "x", "with space": "y", "dotted.key": "z", "": "empty key"},
            params=(
                Param(key="lr", value=1e-05, source="cli"),
                Param(key="big", value=1.5e20, source="cli"),
                Param(key="inf", value=float("-inf"), source="cli"),
                Param(key="nan", value=float("nan"), source="cli"),
                Param(key="n", value=-3, source="file"),
                Param(key="flag", value=True, source="api"),
                Param(key="list", value=(1, "a", 2.5, False), source="file"),
                Param(key="long" * 30, value="v" * 120, source="default"),
            ),
            environment={"CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "4"},
            gpu=GpuSection(
                available=True,
                driver_version="550.54",
                devices=(GpuDevice(index=0, name="NVIDIA H200", memory_bytes=150_000_000_000),),
            ),
            conda=Conda(
                present=True,
                prefix="/opt/conda",
                packages=(CondaPackage(name="python", version="3.11.7", build="h1_0"),),
            ),
            redacted=(Redaction(where="environment", name="WANDB_API_KEY", reason="secret"),),
        )
    )


class TestSameAsTomllib:
    """On what envsnap writes, the reader returns exactly what tomllib returns."""

    @pytest.mark.parametrize(
        "text",
        [
            dumps_manifest(sample_manifest()),
            dumps_manifest(_odd_manifest()),
            dumps_result(
                Result(
                    run_id="20261122-163012-a1b2c3",
                    exit_code=0,
                    started="2026-11-22T16:30:12Z",
                    ended="2026-11-22T16:31:12Z",
                    duration_s=60.0,
                    metrics={"loss": 0.25, "acc": 1},
                )
            ),
            "",
        ],
        ids=["sample", "odd", "result", "empty"],
    )
    def test_written_documents(self, text: str) -> None:
        """Manifests and results as the writer renders them are read, equal to tomllib's."""
        fast = canonicaltoml.loads(text)
        assert fast is not None
        assert _same(fast, tomllib.loads(text))

    def test_every_damage_is_either_read_alike_or_left_to_tomllib(self) -> None:
        """A character dropped, doubled or replaced anywhere gives tomllib's document or None,
        never a document tomllib would refuse or read otherwise."""
        text = dumps_manifest(_odd_manifest())
        for position in range(len(text)):
            for damaged in (
                text[:position] + text[position + 1 :],
                text[:position] + text[position] + text[position:],
                text[:position] + '"' + text[position + 1 :],
                text[:position] + "[" + text[position + 1 :],
            ):
                fast = canonicaltoml.loads(damaged)
                if fast is None:
                    continue
                try:
                    slow = tomllib.loads(damaged)
                except tomllib.TOMLDecodeError:
                    pytest.fail(f"read a document tomllib refuses: {damaged!r}")
                assert _same(fast, slow), damaged


class TestLeftToTomllib:
    """Valid TOML in another layout, and invalid TOML, are left to tomllib (None)."""

    @pytest.mark.parametrize(
        "text",
        [
            "a = 1",  # no final newline
            "a = 1\r\n",
            "# a comment\na = 1\n",
            "a = 1 \n",
            "a=1\n",
            "a = 1\na = 2\n",
            'a = 1\n"a" = 2\n',
            "[t]\n[t]\n",
            "[t.u]\n[t]\n",
            "a = 1\n[a]\n",
            "a = { b = 1 }\n",
            "a = [\n    { b = 1 },\n]\n[[a]]\n",
            "[a]\n[[a]]\n",
            "a = [\n    [\n        1,\n    ],\n]\n",
            "a = [\n]\n",
            "a = [\n    1\n]\n",
            "a = 01\n",
            "a = +1\n",
            "a = 1_000\n",
            "a = 0x1f\n",
            "a = 1.\n",
            'a = "\\U0001F600"\n',
            'a = "\\ud800"\n',
            'a = "\\x41"\n',
            "a = 'literal'\n",
            'a = """multi"""\n',
            'a = "unterminated\n',
            "a = 2026-11-22\n",
            "a.b = 1\n",
            "[ t ]\n",
            '["quoted"]\n',
            "a = [\n    { b = 1, b = 2 },\n]\n",
            "a = [\n    {b = 1},\n]\n",
        ],
    )
    def test_outside_the_layout(self, text: str) -> None:
        """Anything but tomli_w's own layout returns None."""
        assert canonicaltoml.loads(text) is None
