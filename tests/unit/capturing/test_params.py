"""Parameters from the command line, params files and the API, with provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from envsnap.capturing.params import (
    flatten_params,
    load_params_file,
    merge_params,
    parse_cli_params,
    parse_cli_value,
)
from envsnap.errors import ParamsError
from envsnap.manifest import loads_manifest, seal_text
from tests.conftest import sample_manifest


class TestCliValues:
    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("1", 1),
            ("0.1", 0.1),
            ("1e-3", 0.001),
            ("true", True),
            ("False", False),
            ("adam", "adam"),
            ("nan", "nan"),
            ("", ""),
        ],
    )
    def test_typing(self, text: str, value: object) -> None:
        """Values are typed as int, float or bool when they read as one, else kept as text."""
        parsed = parse_cli_value(text)
        assert parsed == value and type(parsed) is type(value)

    def test_missing_equals(self) -> None:
        """--param without '=' is refused with an example of the right form."""
        with pytest.raises(ParamsError, match="is not KEY=VALUE"):
            parse_cli_params(["lr"])

    def test_conflicting_repeat(self) -> None:
        """The same key twice with different values is an error."""
        with pytest.raises(ParamsError, match="given twice"):
            parse_cli_params(["lr=0.1", "lr=0.2"])

    def test_identical_repeat(self) -> None:
        """The same key twice with the same value is accepted."""
        assert parse_cli_params(["lr=0.1", "lr=0.1"]) == {"lr": 0.1}


class TestFiles:
    def test_yaml_nested(self, tmp_path: Path) -> None:
        """Nested YAML becomes dotted keys with typed values."""
        path = tmp_path / "config.yaml"
        path.write_text("model:\n  depth: 4\n  act: relu\nlr: 0.01\nlayers: [64, 32]\n")
        assert load_params_file(path) == {
            "model.depth": 4,
            "model.act": "relu",
            "lr": 0.01,
            "layers": (64, 32),
        }

    def test_json_and_toml(self, tmp_path: Path) -> None:
        """JSON and TOML params files read the same way."""
        (tmp_path / "p.json").write_text('{"a": {"b": 1}}')
        (tmp_path / "p.toml").write_text("[a]\nb = 1\n")
        assert load_params_file(tmp_path / "p.json") == load_params_file(tmp_path / "p.toml")

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing params file is named with what to check."""
        with pytest.raises(ParamsError, match="does not exist"):
            load_params_file(tmp_path / "nope.yaml")

    def test_malformed_file(self, tmp_path: Path) -> None:
        """A params file that does not parse is reported with the parser's first line."""
        path = tmp_path / "bad.json"
        path.write_text("{not json")
        with pytest.raises(ParamsError, match="is not valid JSON"):
            load_params_file(path)

    def test_not_a_mapping(self, tmp_path: Path) -> None:
        """A params file holding a list is refused."""
        path = tmp_path / "list.yaml"
        path.write_text("- 1\n- 2\n")
        with pytest.raises(ParamsError, match="does not hold a mapping"):
            load_params_file(path)

    def test_unknown_extension(self, tmp_path: Path) -> None:
        """An unknown extension is refused with the accepted ones."""
        path = tmp_path / "p.ini"
        path.write_text("a=1")
        with pytest.raises(ParamsError, match="unknown extension"):
            load_params_file(path)


class TestMerge:
    def test_cli_overrides_file_and_records_source(self) -> None:
        """A command-line value wins over the file and is recorded as coming from the cli."""
        params, _ = merge_params([("file", {"lr": 0.1, "epochs": 3}), ("cli", {"lr": 0.2})])
        assert [(p.key, p.value, p.source) for p in params] == [
            ("epochs", 3, "file"),
            ("lr", 0.2, "cli"),
        ]

    def test_secret_params_redacted(self) -> None:
        """A secret-looking parameter value never reaches the manifest."""
        params, redacted = merge_params([("cli", {"hf_token": "hf_" + "a" * 30})])
        assert params[0].value == "<redacted>"
        assert redacted[0].name == "hf_token"


def laughs(levels: int, width: int = 9) -> str:
    """The "billion laughs": each level lists the one before ``width`` times."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def mapping_laughs(levels: int, width: int = 9) -> str:
    """The same with mappings: each level's keys each hold the whole level before."""
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: lol" for j in range(width)) + "}"]
    for level in range(1, levels):
        keys = ", ".join(f"k{j}: *m{level - 1}" for j in range(width))
        lines.append(f"m{level}: &m{level} {{{keys}}}")
    return "\n".join(lines) + "\n"


def case(name: str, content: str | bytes, *expected: str) -> Any:
    """One row of a table of files, its id the file name (the contents are too long)."""
    return pytest.param(name, content, *expected, id=name)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def one_sentence(error: ParamsError) -> str:
    text = str(error)
    assert error.exit_code == 2
    assert "\n" not in text and text.endswith("."), text
    return text


class TestHostileFiles:
    """Params files built to exhaust memory, time or other TOML readers are refused in one
    sentence, before anything expands."""

    @pytest.mark.parametrize(
        ("name", "content", "expected"),
        [
            case("laughs.yaml", laughs(9), "expands through YAML anchors and aliases"),
            case("laughs7.yaml", laughs(7), "expands through YAML anchors and aliases"),
            case("keys.yaml", mapping_laughs(9), "expands through YAML anchors and aliases"),
            case("keys6.yaml", mapping_laughs(6, 16), "expands through YAML anchors and aliases"),
            case("loop.yaml", "a: &a [1, *a]\n", "contains itself"),
            case("loop-map.yaml", "a: &a {b: *a}\n", "contains itself"),
            case("deep.json", '{"a":' * 70 + "1" + "}" * 70, "more than 64 levels deep"),
            case("deeper.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
            case("deep.yaml", "a: " + "[" * 70 + "]" * 70 + "\n", "more than 64 levels deep"),
        ],
    )
    def test_expansion_and_nesting(
        self, tmp_path: Path, name: str, content: str, expected: str
    ) -> None:
        """Alias bombs, self-reference and deep nesting: refused, naming the file."""
        path = write(tmp_path, name, content)
        with pytest.raises(ParamsError) as info:
            load_params_file(path)
        text = one_sentence(info.value)
        assert expected in text and str(path) in text

    def test_aliases_within_reason_are_expanded(self, tmp_path: Path) -> None:
        """Anchors, aliases and merge keys of an ordinary config still read as written."""
        path = write(
            tmp_path,
            "config.yaml",
            "base: &base {lr: 0.1, layers: [64, 32]}\ntrain: {<<: *base, lr: 0.01}\neval: *base\n",
        )
        assert load_params_file(path) == {
            "base.lr": 0.1,
            "base.layers": (64, 32),
            "train.lr": 0.01,
            "train.layers": (64, 32),
            "eval.lr": 0.1,
            "eval.layers": (64, 32),
        }

    @pytest.mark.parametrize(
        ("name", "content"),
        [
            case("big.yaml", "seed: 9223372036854775808\n"),
            case("small.yaml", "seed: -9223372036854775809\n"),
            case("big.json", '{"run": {"seed": 123456789012345678901234567890}}'),
            case("big.toml", "seed = 18446744073709551615\n"),
            case("list.yaml", "seeds: [1, 9223372036854775808]\n"),
        ],
    )
    def test_integers_outside_64_bits_are_refused(
        self, tmp_path: Path, name: str, content: str
    ) -> None:
        """No TOML reader but Python's reads them back, so they are refused, with the fix."""
        with pytest.raises(ParamsError) as info:
            load_params_file(write(tmp_path, name, content))
        text = one_sentence(info.value)
        assert "outside the signed 64-bit range" in text and "quote it" in text

    def test_the_64_bit_limits_themselves_are_integers(self, tmp_path: Path) -> None:
        """The largest and smallest 64-bit integers are kept as integers."""
        path = write(tmp_path, "edge.yaml", "hi: 9223372036854775807\nlo: -9223372036854775808\n")
        assert load_params_file(path) == {"hi": 2**63 - 1, "lo": -(2**63)}

    def test_a_huge_integer_on_the_command_line_stays_text(self) -> None:
        """--param seed=<20 digits> is kept as the text typed, like nan."""
        assert parse_cli_value("99999999999999999999") == "99999999999999999999"
        assert parse_cli_value("-9223372036854775808") == -(2**63)

    @pytest.mark.parametrize(
        ("name", "content", "expected"),
        [
            case("latin1.yaml", "name: café\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at"),
            case("binary.toml", b"a = 1\n\xff\xfe\x00\x01", "not UTF-8 text (byte 0xff at"),
            case("utf16.json", '{"a": 1}'.encode("utf-16"), "is UTF-16 text, not UTF-8"),
        ],
    )
    def test_non_utf8_bytes(self, tmp_path: Path, name: str, content: bytes, expected: str) -> None:
        """Bytes that are not UTF-8 are named in one sentence that says to save as UTF-8."""
        with pytest.raises(ParamsError) as info:
            load_params_file(write(tmp_path, name, content))
        text = one_sentence(info.value)
        assert expected in text and "save it as UTF-8" in text

    def test_a_byte_order_mark_is_accepted(self, tmp_path: Path) -> None:
        """A UTF-8 file an editor started with a byte order mark reads as without one."""
        path = write(tmp_path, "bom.json", b'\xef\xbb\xbf{"a": 1}')
        assert load_params_file(path) == {"a": 1}

    def test_a_file_past_the_size_limit_is_not_read_whole(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A params file larger than the limit (or /dev/zero) is refused, not read into memory."""
        monkeypatch.setattr("envsnap.capturing.params.MAX_PARAMS_FILE_BYTES", 1024)
        with pytest.raises(ParamsError, match="larger than"):
            load_params_file(write(tmp_path, "huge.json", "{" + '"a": 1, ' * 200 + '"b": 2}'))

    def test_api_values_that_contain_themselves_are_refused(self) -> None:
        """A mapping or list given to the API that contains itself is one sentence, not a
        RecursionError."""
        looped: dict[str, object] = {}
        looped["self"] = looped
        with pytest.raises(ParamsError, match="levels deep"):
            flatten_params(looped, origin="params")
        listed: list[object] = []
        listed.append(listed)
        with pytest.raises(ParamsError, match="cannot be recorded"):
            flatten_params({"x": listed}, origin="params")


class TestLargeFiles:
    """A large, honest params file works end to end."""

    def test_ten_megabytes_of_params_read_back_from_the_manifest(self, tmp_path: Path) -> None:
        """200,000 keys in 10 MB load, merge, seal and read back equal."""
        data = {
            f"group{g:03d}": {
                f"param_{i:06d}": i if i % 3 == 0 else i / 8 if i % 3 == 1 else f"v{i:080d}"
                for i in range(g * 2000, (g + 1) * 2000)
            }
            for g in range(100)
        }
        path = write(tmp_path, "big.json", json.dumps(data, indent=2))
        assert path.stat().st_size > 10_000_000
        flat = load_params_file(path)
        assert len(flat) == 200_000
        params, _ = merge_params([("file", flat)])
        sealed, text = seal_text(sample_manifest(params=params))
        again = loads_manifest(text, "m.toml")
        assert again == sealed
        assert again.params[3].value == 3 and again.params[4].value == 0.5
