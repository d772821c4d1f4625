"""docker's client configuration as docker reads it: where it lives ($DOCKER_CONFIG, else
~/.docker) and the credentials it gives a registry host: the credential helper named for that
host, else the credential store, else the inline ``auths`` entry of ``docker login``.

Helpers run as docker runs them (``docker-credential-<name> get``, the server on stdin), found
on the caller's PATH. Nothing here writes a file or shows a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsnap.errors import UsageError

# docker's names for Docker Hub: the API host, and the key its config and helpers use.
HUB_API_HOST = "registry-1.docker.io"
HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_HUB_KEYS = ("index.docker.io", "docker.io", HUB_API_HOST)
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# (program, server) -> the helper's answer on stdout, or None when it holds nothing for the
# server; OSError when it cannot be run.
CredentialHelper = Callable[[str, str], "str | None"]


class DockerConfigError(UsageError):
    """docker's configuration file cannot be read."""


@dataclass(frozen=True)
class Credentials:
    """A user name and its password or token; the secret never appears in a repr."""

    username: str
    secret: str = field(repr=False)


def config_path(env: Mapping[str, str]) -> Path | None:
    """Where docker keeps its configuration: $DOCKER_CONFIG/config.json, else
    ~/.docker/config.json (None without either variable)."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".docker" / "config.json"
    return None


def registry_credentials(
    host: str, env: Mapping[str, str], helper: CredentialHelper | None = None
) -> tuple[Credentials | None, str]:
    """The credentials docker would send to ``host`` (``name[:port]``), and when there are
    none, why (for the error sentence). ``helper`` runs a credential helper; by default the
    real ``docker-credential-<name>`` on ``env``'s PATH."""
    path = config_path(env)
    if path is None or not path.is_file():
        return None, f"there is no docker config at {path}" if path else "HOME is not set"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise DockerConfigError(
            f"docker's config {path} cannot be read as JSON",
            hint="fix or remove it (docker login writes it)",
        ) from None
    if not isinstance(config, dict):
        config = {}
    keys = _HUB_KEYS if host == HUB_API_HOST else (host,)
    notes: list[str] = []
    helpers = config.get("credHelpers")
    helpers = helpers if isinstance(helpers, dict) else {}
    # A helper named for the host is the only one asked for it, as docker does.
    name = next((helpers[k] for k in keys if isinstance(helpers.get(k), str)), "")
    name = name or config.get("credsStore") or ""
    if isinstance(name, str) and name:
        server = HUB_CONFIG_KEY if host == HUB_API_HOST else host
        found = _from_helper(name, server, helper or _helper_runner(env), notes)
        if found is not None:
            return found, ""
    auths = config.get("auths")
    for key, entry in (auths if isinstance(auths, dict) else {}).items():
        if _config_host(key) in keys and isinstance(entry, dict):
            found = _from_auths_entry(entry, host, notes)
            if found is not None:
                return found, ""
    notes.append(f"{path} holds no credentials for {host}")
    return None, "; ".join(notes)


def _config_host(key: str) -> str:
    """A config key (``https://host/v1/``, ``host:port``) as the host it names."""
    return key.split("://", 1)[-1].split("/", 1)[0]


def _from_helper(
    name: str, server: str, run: CredentialHelper, notes: list[str]
) -> Credentials | None:
    program = f"docker-credential-{name}"
    if not _HELPER_NAME.match(name):
        notes.append(f"the credential helper name {name!r} is not one docker would run")
        return None
    try:
        answer = run(program, server)
    except OSError:
        notes.append(f"{program} could not be run")
        return None
    if answer is None:
        return None
    try:
        data = json.loads(answer)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        notes.append(f"{program} answered something that is not credentials")
        return None
    if username == "<token>":
        notes.append(f"{program} holds an identity token, which envsnap cannot use yet")
        return None
    return Credentials(username, secret)


def _from_auths_entry(entry: Mapping[str, Any], host: str, notes: list[str]) -> Credentials | None:
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            text = base64.b64decode(entry["auth"]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            text = ""
        username, colon, secret = text.partition(":")
        if colon:
            return Credentials(username, secret)
        notes.append(f"the auth entry for {host} in docker's config is not user:password")
        return None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"])
    if entry.get("identitytoken") or entry.get("registrytoken"):
        notes.append(f"docker's config holds a token for {host}, which envsnap cannot use yet")
    return None


def _helper_runner(env: Mapping[str, str]) -> CredentialHelper:
    """``docker-credential-<name> get`` with the server on stdin, found on ``env``'s PATH."""

    def run(program: str, server: str) -> str | None:
        import shutil
        import subprocess

        path = shutil.which(program, path=env.get("PATH", ""))
        if path is None:
            raise FileNotFoundError(program)
        try:
            done = subprocess.run(
                [path, "get"], input=server.encode(), capture_output=True, env=dict(env), timeout=30
            )
        except subprocess.TimeoutExpired:
            raise OSError(f"{program} did not answer") from None
        return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None

    return run
