"""The files under ``envsnap/templates/`` that ship in the wheel, read in one place.

A template missing from an installation (a wheel built without it) is one sentence, not a
``FileNotFoundError`` traceback.
"""

from __future__ import annotations

from importlib import resources

from envsnap.errors import EnvsnapError


class InstallationError(EnvsnapError):
    """envsnap's own installation is incomplete: a file it ships is missing."""


def read_template_bytes(name: str) -> bytes:
    """The bytes of ``envsnap/templates/<name>``, or an InstallationError naming it."""
    try:
        return resources.files("envsnap.templates").joinpath(name).read_bytes()
    except (OSError, ModuleNotFoundError) as exc:
        raise InstallationError(
            f"envsnap's template {name} is missing from its installation ({type(exc).__name__})",
            hint="reinstall envsnap (pip install --force-reinstall envsnap); "
            "if you built the wheel yourself, its package data is incomplete",
        ) from None


def read_template(name: str) -> str:
    """The text of ``envsnap/templates/<name>`` (UTF-8)."""
    return read_template_bytes(name).decode("utf-8")
