"""The one error hierarchy: every failure a user can meet, each with its exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2


class EnvsnapError(Exception):
    """A failure with one sentence for the user: what went wrong and what to do next."""

    exit_code: int = EXIT_ERROR
    # Whether the command line prints ``detail`` (the tail of a tool's output) above the sentence.
    show_detail: bool = False

    def __init__(self, message: str, *, hint: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text = f"{text.rstrip('.')}; {self.hint}"
        if not text.endswith("."):
            text += "."
        return text


class UsageError(EnvsnapError):
    """The command line or a file it names is not usable as given."""


class StoreError(EnvsnapError):
    """The run store cannot be created, read or written."""


class RunNotFoundError(StoreError):
    """No run, or more than one run, matches what the user asked for."""


class ManifestError(EnvsnapError):
    """A manifest or result file is not valid: not TOML, truncated, unknown schema, edited."""


class ParamsError(UsageError):
    """A parameter on the command line or in a params file is malformed or conflicting."""


class DataError(UsageError):
    """A data path to fingerprint is missing or unreadable."""


class ProbeError(EnvsnapError):
    """An external tool a probe relies on failed in a way capture cannot work around."""


class InterruptError(EnvsnapError):
    """The user pressed Ctrl-C; nothing half-written was left behind."""
