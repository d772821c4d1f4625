"""Secrets never reach a manifest: allow-listed variables, redacted values, clean URLs."""

from __future__ import annotations

import pytest

from envsnap.capturing.redact import (
    REDACTED,
    clean_url,
    has_url_credentials,
    is_utf8_text,
    printable,
    redact_argv,
    redact_param_value,
    select_environment,
    strip_url_credentials,
)
from envsnap.manifest import Command, Git, Param, seal_text
from tests.conftest import sample_manifest

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
        env = {f"NCCL_{name}": value for name, value in PLANTED.items()}
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


class TestTensorFlowVariables:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("TF_VAR_db_pass", "hunter2"),  # Terraform input
            ("TF_VAR_region", "eu-west-1"),  # Terraform, harmless but not TensorFlow's
            ("TF_CLI_CONFIG_FILE", "/home/me/.terraformrc"),  # Terraform, holds credentials
            ("TF_TOKEN_app_terraform_io", "abc"),
            ("TF_LOG", "TRACE"),
        ],
    )
    def test_other_tools_tf_variables_are_not_recorded(self, name: str, value: str) -> None:
        """TF_ is a prefix Terraform shares: only TensorFlow's own variables are allowed."""
        selection = select_environment({name: value})
        assert (selection.environment, selection.determinism, selection.redacted) == ({}, {}, ())

    @pytest.mark.parametrize(
        "name",
        [
            "TF_CPP_MIN_LOG_LEVEL",
            "TF_ENABLE_ONEDNN_OPTS",
            "TF_GPU_ALLOCATOR",
            "TF_FORCE_GPU_ALLOW_GROWTH",
            "TF_XLA_FLAGS",
            "TF_NUM_INTEROP_THREADS",
            "TF_NUM_INTRAOP_THREADS",
        ],
    )
    def test_tensorflow_variables_are_recorded(self, name: str) -> None:
        """TensorFlow's variables are allowed by name."""
        assert select_environment({name: "1"}).environment == {name: "1"}

    @pytest.mark.parametrize("name", ["TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC"])
    def test_tensorflow_determinism_variables(self, name: str) -> None:
        """TensorFlow's determinism switches land in [determinism]."""
        assert select_environment({name: "1"}).determinism == {name: "1"}


# Secrets in more shapes than the patterns were first written for: other casing, inside longer
# values, in both option forms, as key=value overrides and in URL query strings.
SECRET_ENVIRONMENT = [
    ("NCCL_DB_PASS", "hunter2", "secret-looking name"),
    ("TORCH_Passphrase", "hunter2", "secret-looking name"),
    ("MKL_pass_file", "hunter2", "secret-looking name"),
    ("CUDA_LAUNCH_ARGS", "--db-password hunter2", "value holds a secret-looking option or key"),
    ("CUDA_EXTRA", "--Api-Key=hunter2 --fast", "value holds a secret-looking option or key"),
    ("TORCH_OVERRIDES", "trainer.lr=1 db.Password=hunter2", "value holds a secret-looking"),
    ("NCCL_NOTE", "prefix-ghp_" + "a" * 36 + "-suffix", "value is a GitHub token"),
    ("OMP_NOTE", "key is sk-" + "b" * 30 + " here", "value is a API key"),
]


class TestPlantedEnvironment:
    @pytest.mark.parametrize(("name", "value", "reason"), SECRET_ENVIRONMENT)
    def test_left_out_and_named(self, name: str, value: str, reason: str) -> None:
        """An allowed variable holding a secret in any of these shapes is left out and named."""
        selection = select_environment({name: value})
        assert selection.environment == {} and selection.determinism == {}
        ((cut_name, cut_reason),) = [(r.name, r.reason) for r in selection.redacted]
        assert cut_name == name and cut_reason.startswith(reason)
        assert "hunter2" not in repr(selection)

    @pytest.mark.parametrize(
        ("value", "kept"),
        [
            (
                "https://pypi.org/simple https://gitlab.com/api/v4/projects/7/packages/pypi/"
                "simple?private_token=hunter2",
                "https://pypi.org/simple https://gitlab.com/api/v4/projects/7/packages/pypi/simple",
            ),
            (
                "https://idx.example/simple?Token=hunter2&format=json",
                "https://idx.example/simple?format=json",
            ),
            ("https://u:hunter2@idx.example/simple?key=hunter2", "https://idx.example/simple"),
        ],
    )
    def test_index_url_query_credentials(self, value: str, kept: str) -> None:
        """Query-string credentials leave every URL of an index variable; the rest stays."""
        selection = select_environment({"PIP_EXTRA_INDEX_URL": value})
        assert selection.environment == {"PIP_EXTRA_INDEX_URL": kept}
        assert [r.reason for r in selection.redacted] == ["URL credentials removed"]

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("OMP_NUM_THREADS", "4"),
            ("TORCH_ARGS", "--num-passes 3 --tokenizer bert --max-tokens 512"),
            ("PIP_INDEX_URL", "https://pypi.org/simple?format=json"),
            ("NCCL_SOCKET_IFNAME", "eth0"),
        ],
    )
    def test_ordinary_values_are_kept(self, name: str, value: str) -> None:
        """Words that only look near a secret (passes, tokenizer, tokens) are not redacted."""
        selection = select_environment({name: value})
        assert {**selection.environment, **selection.determinism} == {name: value}
        assert selection.redacted == ()


class TestNotUtf8:
    def test_variable_with_bytes_that_are_not_utf8(self) -> None:
        """A value that was not UTF-8 (lone surrogates in Python) is left out and named."""
        value = b"/opt/caf\xe9/lib".decode("utf-8", "surrogateescape")
        selection = select_environment({"LD_LIBRARY_PATH": value, "OMP_NUM_THREADS": "2"})
        assert selection.environment == {}
        assert selection.determinism == {"OMP_NUM_THREADS": "2"}
        assert [(r.name, r.reason) for r in selection.redacted] == [
            ("LD_LIBRARY_PATH", "not valid UTF-8 text")
        ]

    def test_name_that_is_not_utf8_is_shown_escaped(self) -> None:
        """A configured pattern matching a name that is not UTF-8 records the name escaped."""
        name = b"MYLAB_\xff".decode("utf-8", "surrogateescape")
        selection = select_environment({name: "1"}, extra_allowed=["MYLAB_*"])
        assert [r.name for r in selection.redacted] == ["MYLAB_\\xff"]
        assert [r.name.encode("utf-8") for r in selection.redacted]  # writable as UTF-8

    @pytest.mark.parametrize(
        ("text", "shown"),
        [("plain", "plain"), (b"caf\xe9".decode("utf-8", "surrogateescape"), "caf\\xe9")],
    )
    def test_printable(self, text: str, shown: str) -> None:
        """printable() shows bytes that were not UTF-8 as \\xNN."""
        assert printable(text) == shown
        assert is_utf8_text(shown)


SECRET_ARGV = [
    (["--db-pass", "hunter2"], ["--db-pass", REDACTED]),
    (["--DB-PASSWORD=hunter2"], [f"--DB-PASSWORD={REDACTED}"]),
    (["--Api-Key", "hunter2"], ["--Api-Key", REDACTED]),
    (["--pass", "hunter2"], ["--pass", REDACTED]),
    (["--passphrase=hunter2"], [f"--passphrase={REDACTED}"]),
    (["wandb.api_key=hunter2"], [f"wandb.api_key={REDACTED}"]),
    (["+db.Password=hunter2"], [f"+db.Password={REDACTED}"]),
    (["--set=db.password=hunter2"], [f"--set=db.password={REDACTED}"]),
    (["--note=ghp_" + "c" * 36], [REDACTED]),
    (
        ["https://s3.amazonaws.com/b/k?X-Amz-Credential=hunter2&X-Amz-Signature=hunter2&v=1"],
        ["https://s3.amazonaws.com/b/k?v=1"],
    ),
    (["--url=https://me:hunter2@h.example/x?sig=hunter2#f"], ["--url=https://h.example/x#f"]),
    (["--hub", "https://h.example/x?access_token=hunter2"], ["--hub", "https://h.example/x"]),
]


class TestPlantedArgv:
    @pytest.mark.parametrize(("args", "recorded"), SECRET_ARGV)
    def test_secret_redacted(self, args: list[str], recorded: list[str]) -> None:
        """Each planted secret is redacted in place and the redaction is listed."""
        argv, redacted = redact_argv(["python", "train.py", *args])
        assert argv == ("python", "train.py", *recorded)
        assert redacted and all(r.where.startswith("command.argv[") for r in redacted)
        assert "hunter2" not in repr((argv, redacted))

    @pytest.mark.parametrize(
        "args",
        [
            ["--num-passes", "3"],
            ["--tokenizer", "bert-base-uncased"],
            ["--max_new_tokens=128"],
            ["--bypass-cache"],
            ["optimizer.lr=0.1"],
            ["https://example.org/data.csv?version=2"],
        ],
    )
    def test_ordinary_arguments_are_kept(self, args: list[str]) -> None:
        """Options and URLs that only look near a secret stay as given."""
        assert redact_argv(["python", *args]) == (("python", *args), ())


class TestQueryCredentials:
    @pytest.mark.parametrize(
        ("url", "clean"),
        [
            ("https://h/simple?private_token=x", "https://h/simple"),
            ("https://h/simple?ACCESS_TOKEN=x&a=1", "https://h/simple?a=1"),
            ("https://h/f?key=x", "https://h/f"),
            (
                "https://acct.blob.core.windows.net/c/f?sv=1&sig=x",
                "https://acct.blob.core.windows.net/c/f?sv=1",
            ),
            ("https://h/f?Signature=x&Expires=1", "https://h/f?Expires=1"),
            ("https://h/f?X-Goog-Signature=x", "https://h/f"),
            ("https://h/cb#access_token=x&state=1", "https://h/cb#state=1"),
            ("git+https://h/o/r.git@v1#egg=r&token=x", "git+https://h/o/r.git@v1#egg=r"),
            ("https://h/p.whl#sha256=abc", "https://h/p.whl#sha256=abc"),
            ("https://u:p@h:8443/s?api_key=x&v=2", "https://h:8443/s?v=2"),
        ],
    )
    def test_clean_url(self, url: str, clean: str) -> None:
        """clean_url drops secret query and fragment parameters and user-info, keeps the rest."""
        assert clean_url(url) == clean
        assert strip_url_credentials(url) == clean
        assert has_url_credentials(url) is (url != clean)


class TestManifestBytes:
    def test_no_planted_secret_reaches_the_manifest(self) -> None:
        """Every planted secret above, run through capture's redaction into a sealed manifest:
        none of them is in the bytes written."""
        env = {name: value for name, value, _ in SECRET_ENVIRONMENT}
        env.update(
            {
                "TF_VAR_db_pass": "hunter2",
                "TF_CLI_CONFIG_FILE": "/hunter2/.terraformrc",
                "PIP_INDEX_URL": "https://bob:hunter2@idx.example/simple?token=hunter2",
                "LD_LIBRARY_PATH": b"/hunter2/\xe9".decode("utf-8", "surrogateescape"),
            }
        )
        argv, argv_cut = redact_argv(
            ["python", "t.py", *(a for args, _ in SECRET_ARGV for a in args)]
        )
        selection = select_environment(env)
        params = [
            redact_param_value(k, v)
            for k, v in {"db.pass": "hunter2", "x": "ghp_" + "d" * 36}.items()
        ]
        manifest = sample_manifest(
            command=Command(argv=argv, cwd="."),
            environment=selection.environment,
            determinism=selection.determinism,
            params=tuple(
                Param(key=f"p{i}", value=v, source="cli") for i, (v, _) in enumerate(params)
            ),
            git=Git(
                present=True,
                commit="a" * 40,
                remote_url=clean_url(
                    "https://oauth2:hunter2@gitlab.example/o/r.git?private_token=hunter2"
                ),
            ),
            redacted=(*argv_cut, *selection.redacted, *(r for _, r in params if r is not None)),
        )
        text = seal_text(manifest)[1].encode("utf-8")
        for secret in ("hunter2", "ghp_", "sk-", "terraformrc"):
            assert secret.encode() not in text, secret
