"""What never reaches a manifest: environment variables off the allow-list, secret values, URL
credentials, and the values of secret-looking command-line options."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence

from envsnap.manifest import Model, Redaction, model

# Variables that can change a result. Patterns are fnmatch-style and case-sensitive, as
# environment variable names are on POSIX.
ALLOWED_VARIABLES: tuple[str, ...] = (
    "CUDA_*",
    "NCCL_*",
    "CUBLAS_*",
    "CUDNN_*",
    "NVIDIA_*",
    "TORCH_*",
    "TF_*",
    "XLA_FLAGS",
    "JAX_*",
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "PYTHONHASHSEED",
    "LD_LIBRARY_PATH",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_PORT",
    "SLURM_NNODES",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_CPUS_PER_TASK",
    "SLURM_GPUS",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS_PER_TASK",
    "SLURM_JOB_NUM_NODES",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)

# Variables whose value decides whether a run is deterministic; recorded in [determinism].
DETERMINISM_VARIABLES: tuple[str, ...] = (
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "XLA_FLAGS",
)

# Patterns are kept as text and compiled by ``re`` on first use (and cached there): most captures
# need few of them, and compiling them all would sit on capture's start-up path.
_SENSITIVE_NAME = (
    r"(?i)TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|AUTH|COOKIE|"
    r"SESSION|_DSN"
)

_SECRET_VALUES: tuple[tuple[str, str], ...] = (
    ("AWS access key", r"AKIA[0-9A-Z]{16}"),
    ("GitHub token", r"gh[pousr]_[A-Za-z0-9]{30,}"),
    ("GitHub token", r"github_pat_\w+"),
    ("API key", r"sk-[A-Za-z0-9_-]{16,}"),
    ("Hugging Face token", r"hf_[A-Za-z0-9]{20,}"),
    ("Slack token", r"xox[abprs]-[A-Za-z0-9-]+"),
    ("Google API key", r"AIza[0-9A-Za-z_-]{30,}"),
    ("JSON web token", r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    ("private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)

_SENSITIVE_OPTION = (
    r"(?i)^--?[\w-]*(api[-_]?key|token|password|passwd|secret|auth|credential|private[-_]?key|"
    r"access[-_]?key|cookie|session)[\w-]*$"
)

_URL_WITH_USERINFO = r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@"
_SCP_LIKE_USER = r"^[^/@:\s]+@(?=[^/:\s]+:)"

REDACTED = "<redacted>"


@model
class EnvironmentSelection(Model):
    """The recorded variables, split into determinism settings and the rest, and what was cut."""

    determinism: dict[str, str]
    environment: dict[str, str]
    redacted: tuple[Redaction, ...]


def secret_value_kind(value: str) -> str:
    """The kind of secret a value contains ("" when it looks like none)."""
    for kind, pattern in _SECRET_VALUES:
        if re.search(pattern, value):
            return kind
    return ""


def strip_url_credentials(url: str) -> str:
    """Remove the user-info part of every URL in ``url`` (``https://u:p@host`` -> ``https://host``).

    Handles a plain URL, a ``git+https://`` requirement URL, an scp-like git remote
    (``user@host:path`` -> ``host:path``) and several URLs separated by spaces.
    """
    stripped = re.sub(_URL_WITH_USERINFO, r"\1", url)
    return re.sub(_SCP_LIKE_USER, "", stripped)


def has_url_credentials(url: str) -> bool:
    """Whether ``url`` carries a user name or password."""
    return strip_url_credentials(url) != url


def url_host(url: str) -> str:
    """The host of a URL, without credentials or port; "" when there is none."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def clean_url(url: str) -> str:
    """A URL safe to record: credentials stripped, query and fragment kept."""
    if "@" not in url:  # no user-info possible: skip parsing (and urllib's import) on capture
        return url
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return strip_url_credentials(url)
    if parts.username is None and parts.password is None:
        return strip_url_credentials(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _NameMatcher:
    """Matches variable names against allow-list patterns; exact names and ``PREFIX_*`` patterns
    take no regex, which keeps this off capture's start-up path."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.exact: set[str] = set()
        prefixes: list[str] = []
        self.globs: list[str] = []
        for pattern in patterns:
            head, star, tail = pattern.partition("*")
            if not star:
                self.exact.add(pattern)
            elif not tail and not any(c in head for c in "?[]*"):
                prefixes.append(head)
            else:
                self.globs.append(pattern)
        self.prefixes = tuple(prefixes)

    def matches(self, name: str) -> bool:
        if name in self.exact or name.startswith(self.prefixes):
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.globs)


def select_environment(
    env: Mapping[str, str], extra_allowed: Iterable[str] = ()
) -> EnvironmentSelection:
    """Keep allow-listed variables, then redact secret names, secret values and URL credentials."""
    allowed = _NameMatcher((*ALLOWED_VARIABLES, *DETERMINISM_VARIABLES, *extra_allowed))
    determinism: dict[str, str] = {}
    environment: dict[str, str] = {}
    redacted: list[Redaction] = []
    for name in sorted(env):
        if not allowed.matches(name):
            continue
        value = env[name]
        if re.search(_SENSITIVE_NAME, name):
            redacted.append(Redaction(where="environment", name=name, reason="secret-looking name"))
            continue
        kind = secret_value_kind(value)
        if kind:
            redacted.append(Redaction(where="environment", name=name, reason=f"value is a {kind}"))
            continue
        if has_url_credentials(value):
            redacted.append(
                Redaction(where="environment", name=name, reason="URL credentials removed")
            )
            value = strip_url_credentials(value)
        target = determinism if name in DETERMINISM_VARIABLES else environment
        target[name] = value
    return EnvironmentSelection(
        determinism=determinism, environment=environment, redacted=tuple(redacted)
    )


def redact_argv(argv: Sequence[str]) -> tuple[tuple[str, ...], tuple[Redaction, ...]]:
    """Replace the values of secret-looking options and any secret-looking argument."""
    out: list[str] = []
    redacted: list[Redaction] = []
    expect_value_for = ""
    for index, arg in enumerate(argv):
        where = f"command.argv[{index}]"
        if expect_value_for:
            out.append(REDACTED)
            redacted.append(
                Redaction(where=where, name=expect_value_for, reason="value of a secret option")
            )
            expect_value_for = ""
            continue
        option, eq, _value = arg.partition("=")
        if re.match(_SENSITIVE_OPTION, option):
            if eq:
                out.append(f"{option}={REDACTED}")
                redacted.append(
                    Redaction(where=where, name=option, reason="value of a secret option")
                )
            else:
                out.append(arg)
                expect_value_for = option
            continue
        kind = secret_value_kind(arg)
        if kind:
            out.append(REDACTED)
            redacted.append(Redaction(where=where, name=f"argv[{index}]", reason=f"a {kind}"))
            continue
        if has_url_credentials(arg):
            out.append(strip_url_credentials(arg))
            redacted.append(
                Redaction(where=where, name=f"argv[{index}]", reason="URL credentials removed")
            )
            continue
        out.append(arg)
    return tuple(out), tuple(redacted)


def redact_param_value(key: str, value: str) -> tuple[str, Redaction | None]:
    """Redact a string parameter whose key or value looks secret."""
    if re.search(_SENSITIVE_NAME, key.replace(".", "_")):
        return REDACTED, Redaction(where="params", name=key, reason="secret-looking name")
    kind = secret_value_kind(value)
    if kind:
        return REDACTED, Redaction(where="params", name=key, reason=f"value is a {kind}")
    if has_url_credentials(value):
        return strip_url_credentials(value), Redaction(
            where="params", name=key, reason="URL credentials removed"
        )
    return value, None
