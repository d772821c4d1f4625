"""Secrets never reach a manifest: allow-listed variables, redacted values, clean URLs."""

from __future__ import annotations

from envsnap.redact import (
    REDACTED,
    clean_url,
    redact_argv,
    redact_param_value,
    select_environment,
    strip_url_credentials,
)

PLANTED = {
    "AWS": "AKIAABCDEFGHIJKLMNOP",
    "GH": "ghp_" + "a" * 36,
    "PAT": "github_pat_11ABCDEFG_" + "x" * 40,
    "OPENAI": "sk-" + "Z" * 40,
    "HF": "hf_" + "q" * 34,
    "SLACK": "xoxb-1234-5678-abcdef",
    "GOOGLE": "AIza" + "k" * 35,
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig_nature",
    "PEM": "-----BEGIN RSA PRIVATE KEY-----\nMIIB...",
}


class TestEnvironment:
    def test_only_allow_listed_variables_are_kept(self) -> None:
        """Variables off the allow-list (HOME, AWS_*, arbitrary) are never recorded."""
        env = {"HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x", "OMP_NUM_THREADS": "4", "FOO": "1"}
        selection = select_environment(env)
        assert selection.determinism == {"OMP_NUM_THREADS": "4"}
        assert selection.environment == {}
        assert selection.redacted == ()

    def test_secret_names_are_redacted_even_when_allowed(self) -> None:
        """An allowed variable with a secret-looking name is listed as redacted, never valued."""
        env = {"TORCH_HUB_TOKEN": "abc123", "NCCL_DEBUG": "INFO"}
        selection = select_environment(env)
        assert selection.environment == {"NCCL_DEBUG": "INFO"}
        assert [(r.name, r.reason) for r in selection.redacted] == [
            ("TORCH_HUB_TOKEN", "secret-looking name")
        ]
        assert "abc123" not in repr(selection)

    def test_planted_secret_values_are_redacted(self) -> None:
        """Every known key shape in an allowed variable's value is redacted."""
        env = {f"TF_VAR_{name}": value for name, value in PLANTED.items()}
        selection = select_environment(env)
        assert selection.environment == {}
        assert len(selection.redacted) == len(PLANTED)
        for value in PLANTED.values():
            assert value not in repr(selection)

    def test_index_url_credentials_are_stripped(self) -> None:
        """An index URL keeps its host and path but loses user and password."""
        env = {"PIP_INDEX_URL": "https://user:s3cret@pypi.example.org/simple"}
        selection = select_environment(env)
        assert selection.environment == {"PIP_INDEX_URL": "https://pypi.example.org/simple"}
        assert selection.redacted[0].reason == "URL credentials removed"

    def test_configured_extra_variables(self) -> None:
        """Configuration can allow more variables, which are still redacted if secret."""
        env = {"MY_FLAG": "1", "MY_TOKEN": "x"}
        selection = select_environment(env, extra_allowed=["MY_*"])
        assert selection.environment == {"MY_FLAG": "1"}
        assert [r.name for r in selection.redacted] == ["MY_TOKEN"]


class TestArgv:
    def test_secret_option_values(self) -> None:
        """--api-key X, --token=X and --password X lose their values; other options stay."""
        argv, redacted = redact_argv(
            ["python", "train.py", "--api-key", "k1", "--token=t2", "--password", "p3", "--lr", "1"]
        )
        assert argv == (
            "python",
            "train.py",
            "--api-key",
            REDACTED,
            f"--token={REDACTED}",
            "--password",
            REDACTED,
            "--lr",
            "1",
        )
        assert {r.name for r in redacted} == {"--api-key", "--token", "--password"}

    def test_secret_looking_arguments(self) -> None:
        """A positional argument shaped like a key is redacted."""
        argv, redacted = redact_argv(["run", PLANTED["GH"], PLANTED["HF"]])
        assert argv == ("run", REDACTED, REDACTED)
        assert len(redacted) == 2

    def test_url_arguments_lose_credentials(self) -> None:
        """A URL argument with user-info keeps the host and path only."""
        argv, _ = redact_argv(["--db", "postgres://me:pw@db.internal:5432/x"])
        assert argv == ("--db", "postgres://db.internal:5432/x")


class TestUrls:
    def test_https_with_token(self) -> None:
        """A token in a git remote is removed."""
        assert (
            strip_url_credentials("https://user:ghp_abc@github.com/o/r.git")
            == "https://github.com/o/r.git"
        )

    def test_vcs_requirement(self) -> None:
        """A git+https requirement URL loses its user-info."""
        assert (
            strip_url_credentials("git+https://tok@github.com/o/r.git@abc")
            == "git+https://github.com/o/r.git@abc"
        )

    def test_scp_like_remote(self) -> None:
        """The user of an scp-like remote is removed too."""
        assert strip_url_credentials("git@github.com:o/r.git") == "github.com:o/r.git"

    def test_clean_url_keeps_port(self) -> None:
        """clean_url keeps the port and path."""
        assert clean_url("https://u:p@host:8443/simple/") == "https://host:8443/simple/"

    def test_plain_url_untouched(self) -> None:
        """A URL without credentials is unchanged."""
        assert strip_url_credentials("https://pypi.org/simple") == "https://pypi.org/simple"


class TestParams:
    def test_secret_param(self) -> None:
        """A string parameter named like a secret is redacted."""
        value, redaction = redact_param_value("wandb.api_key", "abc")
        assert value == REDACTED
        assert redaction is not None and redaction.name == "wandb.api_key"

    def test_plain_param(self) -> None:
        """An ordinary parameter is kept."""
        assert redact_param_value("optimizer", "adam") == ("adam", None)
