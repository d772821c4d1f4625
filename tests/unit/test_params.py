"""Parameters from the command line, params files and the API, with provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from envsnap.errors import ParamsError
from envsnap.params import load_params_file, merge_params, parse_cli_params, parse_cli_value


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
