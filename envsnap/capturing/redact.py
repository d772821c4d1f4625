"""What never reaches a manifest: environment variables off the allow-list, secret values, URL
credentials, and the values of secret-looking command-line options."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence

from envsnap.manifest import Model, Redaction, model

# TensorFlow's own variables, by name: ``TF_`` is a prefix other tools share (Terraform passes
# ``TF_VAR_*`` inputs and ``TF_CLI_CONFIG_FILE``, which hold credentials and host paths). From
# TensorFlow's documentation and sources (logging, oneDNN, GPU allocator and threads, XLA,
# determinism, cuDNN, Keras selection, distribution).
TENSORFLOW_VARIABLES: tuple[str, ...] = (
    "TF2_BEHAVIOR",
    "TF_CONFIG",
    "TF_CPP_MAX_VLOG_LEVEL",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_CPP_MIN_VLOG_LEVEL",
    "TF_CPP_VMODULE",
    "TF_CUDNN_DETERMINISTIC",
    "TF_CUDNN_RESET_RND_GEN_STATE",
    "TF_CUDNN_USE_AUTOTUNE",
    "TF_CUDNN_USE_FRONTEND",
    "TF_CUDNN_WORKSPACE_LIMIT_IN_MB",
    "TF_DETERMINISTIC_OPS",
    "TF_DEVICE_MIN_SYS_MEMORY_IN_MB",
    "TF_ENABLE_AUTO_MIXED_PRECISION",
    "TF_ENABLE_GPU_GARBAGE_COLLECTION",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "TF_FORCE_UNIFIED_MEMORY",
    "TF_GPU_ALLOCATOR",
    "TF_GPU_HOST_MEM_LIMIT_IN_MB",
    "TF_GPU_THREAD_COUNT",
    "TF_GPU_THREAD_MODE",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT",
    "TF_USE_LEGACY_KERAS",
    "TF_XLA_FLAGS",
)

# Variables that can change a result. Patterns are fnmatch-style and case-sensitive, as
# environment variable names are on POSIX.
ALLOWED_VARIABLES: tuple[str, ...] = (
    "CUDA_*",
    "NCCL_*",
    "CUBLAS_*",
    "CUDNN_*",
    "NVIDIA_*",
    "TORCH_*",
    *TENSORFLOW_VARIABLES,
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

# Variable names and parameter keys: any of these anywhere in the name, whatever the case.
_SENSITIVE_NAME = (
    r"(?i)TOKEN|SECRET|PASS|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH|COOKIE|SESSION|_DSN"
)

# Option names, ``key=value`` keys on a command line and URL query parameters, where ordinary
# names are more varied: "pass" only as a word of its own (``--db-pass``, not ``--num-passes``),
# "token" not as in ``--tokenizer`` or ``--max-tokens``.
_SENSITIVE_WORD = (
    r"api[-_.]?key|token(?!i[sz]|s(?![a-z]))|passw(?:or)?d|passphrase|(?<![a-z])pass(?![a-z])|"
    r"secret|auth|credential|private[-_.]?key|access[-_.]?key|cookie|session|dsn"
)
_OPTION = r"^--?[a-z][\w.-]*$"
# A ``key=value`` word as Hydra-style overrides write it (``db.password=x``, ``+wandb.key=x``).
_KEY_VALUE = r"^[+~]{0,2}[a-z_][\w.-]*="
# Query parameters that carry credentials in signed or token URLs, beyond the words above.
_SECRET_QUERY_NAMES = frozenset({"key", "sig", "signature"})
_SECRET_QUERY_PREFIXES = ("x-amz-", "x-goog-")

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

_URL_WITH_USERINFO = r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@"
_SCP_LIKE_USER = r"^[^/@:\s]+@(?=[^/:\s]+:)"
# A URL inside longer text (a list of index URLs, an option's value), up to a space or quote.
_URL_IN_TEXT = r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>`]+"

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


def is_secret_name(name: str) -> bool:
    """Whether a variable name or parameter key looks like it holds a secret."""
    return re.search(_SENSITIVE_NAME, name.replace(".", "_")) is not None


def is_secret_word(name: str) -> bool:
    """Whether an option name, a command-line key or a URL query parameter looks secret."""
    return re.search(_SENSITIVE_WORD, name, re.IGNORECASE) is not None


def strip_url_credentials(text: str) -> str:
    """Remove the credentials of every URL in ``text``: the user-info part
    (``https://u:p@host`` -> ``https://host``) and query or fragment parameters that carry a
    token, key or signature (``?private_token=x``, ``X-Amz-Signature=x``).

    Handles a plain URL, a ``git+https://`` requirement URL, an scp-like git remote
    (``user@host:path`` -> ``host:path``), and URLs inside longer text, such as several index
    URLs separated by spaces or an option's value.
    """
    if "://" in text:
        text = re.sub(_URL_WITH_USERINFO, r"\1", text)
        if "?" in text or "#" in text:
            text = re.sub(_URL_IN_TEXT, lambda m: _strip_query_credentials(m.group(0)), text)
    return re.sub(_SCP_LIKE_USER, "", text) if "@" in text else text


def has_url_credentials(text: str) -> bool:
    """Whether a URL in ``text`` carries a user name, a password or a secret query parameter."""
    return strip_url_credentials(text) != text


def _strip_query_credentials(url: str) -> str:
    """``url`` without the query and fragment parameters whose names look secret."""
    head, hash_mark, fragment = url.partition("#")
    base, question_mark, query = head.partition("?")
    if question_mark:
        query = _without_secret_parameters(query)
        base = f"{base}?{query}" if query else base
    if hash_mark:
        fragment = _without_secret_parameters(fragment)
        base = f"{base}#{fragment}" if fragment else base
    return base


def _without_secret_parameters(query: str) -> str:
    parts = re.split(r"[&;]", query)
    kept = [part for part in parts if not _secret_parameter(part)]
    return query if len(kept) == len(parts) else "&".join(p for p in kept if p)


def _secret_parameter(part: str) -> bool:
    from urllib.parse import unquote

    name = unquote(part.partition("=")[0]).strip().lower()
    return bool(name) and (
        name in _SECRET_QUERY_NAMES
        or name.startswith(_SECRET_QUERY_PREFIXES)
        or is_secret_word(name)
    )


def url_host(url: str) -> str:
    """The host of a URL, without credentials or port; "" when there is none."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def clean_url(url: str) -> str:
    """A URL safe to record: user-info and secret query parameters stripped; the rest of the
    query and the fragment kept."""
    if "?" in url or "#" in url:
        url = _strip_query_credentials(url)
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


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: bytes that were not UTF-8 (in argv or the
    environment) reach Python as lone surrogates, which a manifest cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` with bytes that were not UTF-8 shown as ``\\xNN`` escapes, for messages."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


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
    """Keep allow-listed variables, then redact secret names, secret values, secret options or
    keys inside values, URL credentials, and values that are not UTF-8 text."""
    allowed = _NameMatcher((*ALLOWED_VARIABLES, *DETERMINISM_VARIABLES, *extra_allowed))
    determinism: dict[str, str] = {}
    environment: dict[str, str] = {}
    redacted: list[Redaction] = []

    def cut(name: str, reason: str) -> None:
        redacted.append(Redaction(where="environment", name=printable(name), reason=reason))

    for name in sorted(env):
        if not allowed.matches(name):
            continue
        value = env[name]
        if is_secret_name(name):
            cut(name, "secret-looking name")
            continue
        if not is_utf8_text(name) or not is_utf8_text(value):
            cut(name, "not valid UTF-8 text")
            continue
        kind = secret_value_kind(value)
        if kind:
            cut(name, f"value is a {kind}")
            continue
        if _holds_secret_option(value.split()):
            cut(name, "value holds a secret-looking option or key")
            continue
        if has_url_credentials(value):
            cut(name, "URL credentials removed")
            value = strip_url_credentials(value)
        target = determinism if name in DETERMINISM_VARIABLES else environment
        target[name] = value
    return EnvironmentSelection(
        determinism=determinism, environment=environment, redacted=tuple(redacted)
    )


def _secret_option(word: str) -> str:
    """The option name when ``word`` is a secret-looking option (``--token`` or ``--token=x``),
    else ""."""
    option = word.partition("=")[0]
    if re.match(_OPTION, option, re.IGNORECASE) and is_secret_word(option.lstrip("-")):
        return option
    return ""


def _secret_key(word: str) -> str:
    """The key when ``word`` is ``key=value`` with a secret-looking key, or an option whose
    value is one (``--set=db.password=x``), else ""."""
    if word.startswith("-"):
        _option, eq, value = word.partition("=")
        return _secret_key(value) if eq and not value.startswith("-") else ""
    if not re.match(_KEY_VALUE, word, re.IGNORECASE):
        return ""
    key = word.partition("=")[0]
    return key if is_secret_word(key.lstrip("+~")) else ""


def _holds_secret_option(words: Sequence[str]) -> bool:
    return any(_secret_option(word) or _secret_key(word) for word in words)


def redact_argv(argv: Sequence[str]) -> tuple[tuple[str, ...], tuple[Redaction, ...]]:
    """Replace the values of secret-looking options (``--token X``, ``--db-pass=X``) and keys
    (``db.password=X``), any argument holding a secret-looking value, and URL credentials."""
    out: list[str] = []
    redacted: list[Redaction] = []
    expect_value_for = ""
    for index, arg in enumerate(argv):
        where = f"command.argv[{index}]"

        def note(name: str, reason: str, where: str = where) -> None:
            redacted.append(Redaction(where=where, name=name, reason=reason))

        if expect_value_for:
            out.append(REDACTED)
            note(expect_value_for, "value of a secret option")
            expect_value_for = ""
            continue
        option = _secret_option(arg)
        if option:
            if "=" in arg:
                out.append(f"{option}={REDACTED}")
                note(option, "value of a secret option")
            else:
                out.append(arg)
                expect_value_for = option
            continue
        key = _secret_key(arg)
        if key:
            out.append(arg[: arg.index(f"{key}=") + len(key) + 1] + REDACTED)
            note(key, "value of a secret key")
            continue
        kind = secret_value_kind(arg)
        if kind:
            out.append(REDACTED)
            note(f"argv[{index}]", f"a {kind}")
            continue
        if has_url_credentials(arg):
            out.append(strip_url_credentials(arg))
            note(f"argv[{index}]", "URL credentials removed")
            continue
        out.append(arg)
    return tuple(out), tuple(redacted)


def redact_param_value(key: str, value: str) -> tuple[str, Redaction | None]:
    """Redact a string parameter whose key or value looks secret."""
    if is_secret_name(key):
        return REDACTED, Redaction(where="params", name=key, reason="secret-looking name")
    kind = secret_value_kind(value)
    if kind:
        return REDACTED, Redaction(where="params", name=key, reason=f"value is a {kind}")
    if has_url_credentials(value):
        return strip_url_credentials(value), Redaction(
            where="params", name=key, reason="URL credentials removed"
        )
    return value, None
