"""docker's configuration as docker reads it: where it is, and which credentials it gives a
registry host (helpers faked; the real helper process runs in tests/integration)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from envsnap.dockerconfig import (
    HUB_API_HOST,
    HUB_CONFIG_KEY,
    DockerConfigError,
    config_path,
    registry_credentials,
)

SECRET = "s3cret-Pa55word"


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(directory: Path, config: dict[str, Any]) -> dict[str, str]:
    """docker's config written to ``directory``; the environment that names it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(directory)}


class TestLocation:
    def test_docker_config_wins_over_home(self, tmp_path: Path) -> None:
        """$DOCKER_CONFIG/config.json, else ~/.docker/config.json, else none."""
        assert config_path({"HOME": "/h"}) == Path("/h/.docker/config.json")
        assert config_path({"HOME": "/h", "DOCKER_CONFIG": "/d"}) == Path("/d/config.json")
        assert config_path({}) is None

    def test_credentials_come_from_the_file_the_environment_names(self, tmp_path: Path) -> None:
        """The same host in both files: DOCKER_CONFIG's entry is the one used."""
        _config(tmp_path / "home" / ".docker", {"auths": {"r.example": {"auth": _auth("h", "1")}}})
        env = _config(tmp_path / "d", {"auths": {"r.example": {"auth": _auth("d", "2")}}})
        from_home, _ = registry_credentials("r.example", {"HOME": str(tmp_path / "home")})
        from_config, _ = registry_credentials("r.example", {**env, "HOME": str(tmp_path / "home")})
        assert from_home is not None and from_home.username == "h"
        assert from_config is not None and from_config.username == "d"

    def test_no_config_is_a_reason_not_an_error(self, tmp_path: Path) -> None:
        """Without a config there are no credentials, and the reason names the path."""
        found, why = registry_credentials("r.example", {"DOCKER_CONFIG": str(tmp_path)})
        assert found is None and str(tmp_path / "config.json") in why

    def test_a_config_that_is_not_json(self, tmp_path: Path) -> None:
        """One sentence naming the file, never its content."""
        tmp_path.joinpath("config.json").write_text('{"auths": {"x": "' + SECRET)
        with pytest.raises(DockerConfigError, match="cannot be read as JSON") as caught:
            registry_credentials("r.example", {"DOCKER_CONFIG": str(tmp_path)})
        assert SECRET not in str(caught.value)


class TestAuths:
    @pytest.mark.parametrize(
        "key", ["r.example:5000", "https://r.example:5000", "https://r.example:5000/v2/"]
    )
    def test_keys_match_by_host_whatever_their_scheme_or_path(
        self, tmp_path: Path, key: str
    ) -> None:
        """docker login writes keys in several forms; each names the host."""
        env = _config(tmp_path, {"auths": {key: {"auth": _auth("me", SECRET)}}})
        found, _ = registry_credentials("r.example:5000", env)
        assert found is not None and (found.username, found.secret) == ("me", SECRET)
        assert SECRET not in repr(found)

    def test_docker_hub_is_found_under_its_v1_key(self, tmp_path: Path) -> None:
        """Docker Hub's credentials live under https://index.docker.io/v1/."""
        env = _config(tmp_path, {"auths": {HUB_CONFIG_KEY: {"auth": _auth("me", SECRET)}}})
        found, _ = registry_credentials(HUB_API_HOST, env)
        assert found is not None and found.username == "me"

    def test_a_token_entry_is_named_as_unsupported(self, tmp_path: Path) -> None:
        """An identity token (OAuth refresh token) is a limitation said out loud."""
        env = _config(tmp_path, {"auths": {"r.example": {"identitytoken": SECRET}}})
        found, why = registry_credentials("r.example", env)
        assert found is None and "token" in why and SECRET not in why


class TestHelpers:
    def test_a_helper_for_the_host_is_the_only_one_asked(self, tmp_path: Path) -> None:
        """credHelpers for the host before (and instead of) credsStore, with the server given."""
        asked: list[tuple[str, str]] = []

        def helper(program: str, server: str) -> str | None:
            asked.append((program, server))
            return json.dumps({"ServerURL": server, "Username": program, "Secret": SECRET})

        env = _config(tmp_path, {"credHelpers": {"r.example": "per-host"}, "credsStore": "desk"})
        found, _ = registry_credentials("r.example", env, helper)
        assert found is not None and found.username == "docker-credential-per-host"
        registry_credentials(HUB_API_HOST, env, helper)
        assert asked == [
            ("docker-credential-per-host", "r.example"),
            ("docker-credential-desk", HUB_CONFIG_KEY),
        ]

    def test_a_helper_that_cannot_run_is_a_reason(self, tmp_path: Path) -> None:
        """A helper missing from PATH leaves no credentials and says why."""

        def helper(program: str, server: str) -> str | None:
            raise FileNotFoundError(program)

        env = _config(tmp_path, {"credsStore": "missing"})
        found, why = registry_credentials("r.example", env, helper)
        assert found is None and "docker-credential-missing could not be run" in why

    def test_a_helper_with_nothing_falls_back_to_auths(self, tmp_path: Path) -> None:
        """The store has nothing for the host; an inline entry still counts."""
        env = _config(
            tmp_path,
            {"credsStore": "desk", "auths": {"r.example": {"auth": _auth("inline", "x")}}},
        )
        found, _ = registry_credentials("r.example", env, lambda p, s: None)
        assert found is not None and found.username == "inline"

    @pytest.mark.parametrize(
        ("answer", "reason"),
        [
            (json.dumps({"Username": "<token>", "Secret": SECRET}), "identity token"),
            ("not json", "not credentials"),
        ],
    )
    def test_answers_envsnap_cannot_use(self, tmp_path: Path, answer: str, reason: str) -> None:
        """An identity token or garbage from a helper: no credentials, a reason, no secret."""
        env = _config(tmp_path, {"credsStore": "t"})
        found, why = registry_credentials("r.example", env, lambda p, s: answer)
        assert found is None and reason in why and SECRET not in why

    def test_a_helper_name_docker_would_not_run(self, tmp_path: Path) -> None:
        """A name with a path in it is never run."""
        env = _config(tmp_path, {"credsStore": "../../bin/sh"})
        found, why = registry_credentials("r.example", env, lambda p, s: pytest.fail(p))
        assert found is None and "not one docker would run" in why
