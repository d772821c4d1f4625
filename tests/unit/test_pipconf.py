"""The pip configuration a build hands to the image's pip is what the host's pip would see."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from envsnap.pipconf import merged_pip_config, pip_config_files


def _parse(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {s: dict(parser.items(s)) for s in parser.sections()}


def _conf(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class TestFiles:
    def test_pips_order_global_user_site_explicit(self, tmp_path: Path) -> None:
        """Global, user, the environment's own, then PIP_CONFIG_FILE: pip's precedence."""
        explicit = tmp_path / "missing.conf"
        env = {
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_DIRS": f"{tmp_path}/xdg1:{tmp_path}/xdg2",
            "PIP_CONFIG_FILE": str(explicit),
        }
        files = pip_config_files(env, tmp_path / "venv")
        assert files == [
            tmp_path / "xdg1/pip/pip.conf",
            tmp_path / "xdg2/pip/pip.conf",
            Path("/etc/pip.conf"),
            tmp_path / "home/.pip/pip.conf",
            tmp_path / "home/.config/pip/pip.conf",
            tmp_path / "venv/pip.conf",
            explicit,
        ]

    def test_an_existing_explicit_file_drops_the_user_files(self, tmp_path: Path) -> None:
        """As pip does: PIP_CONFIG_FILE naming a file replaces the user's own files."""
        explicit = _conf(tmp_path / "company.conf", "[global]\n")
        env = {"HOME": str(tmp_path / "home"), "PIP_CONFIG_FILE": str(explicit)}
        files = pip_config_files(env, None)
        assert tmp_path / "home/.pip/pip.conf" not in files and files[-1] == explicit

    def test_dev_null_means_no_file_at_all(self, tmp_path: Path) -> None:
        """PIP_CONFIG_FILE=/dev/null is pip's way to say none, global files included."""
        env = {"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
        assert pip_config_files(env, tmp_path) == []


class TestMerge:
    def test_a_company_index_in_a_global_file_survives_a_user_file(self, tmp_path: Path) -> None:
        """/etc/pip.conf's index-url is kept when a user file sets something else."""
        system = _conf(
            tmp_path / "etc/pip.conf", "[global]\nindex-url = https://pypi.corp/simple\n"
        )
        user = _conf(tmp_path / "user.conf", "[global]\ntimeout = 60\n")
        merged = _parse(merged_pip_config({}, [system, user]))
        assert merged["global"] == {"index-url": "https://pypi.corp/simple", "timeout": "60"}

    def test_later_files_win_key_by_key(self, tmp_path: Path) -> None:
        """A later file overrides a key of an earlier one and keeps the rest."""
        first = _conf(
            tmp_path / "a.conf",
            "[global]\nindex-url = https://a/simple\ntimeout = 5\n[install]\nno-compile = yes\n",
        )
        second = _conf(tmp_path / "b.conf", "[global]\nindex_url = https://b/simple\n")
        merged = _parse(merged_pip_config({}, [first, second]))
        assert merged == {
            "global": {"index-url": "https://b/simple", "timeout": "5"},
            "install": {"no-compile": "yes"},
        }

    def test_variables_beat_every_section(self, tmp_path: Path) -> None:
        """PIP_INDEX_URL beats [global] and an [install] value alike, as in pip."""
        conf = _conf(
            tmp_path / "a.conf",
            "[global]\nindex-url = https://file/simple\n[install]\nindex-url = https://inst/simple\n",
        )
        merged = _parse(merged_pip_config({"PIP_INDEX_URL": "https://env/simple"}, [conf]))
        assert merged["global"]["index-url"] == "https://env/simple"
        assert merged["install"]["index-url"] == "https://env/simple"

    def test_host_paths_are_left_out(self, tmp_path: Path) -> None:
        """Certificates, constraints, caches and file:// or folder locations name this host's
        paths; URLs of indexes stay."""
        conf = _conf(
            tmp_path / "a.conf",
            "[global]\ncert = /etc/ssl/x.pem\nconstraint = /etc/c.txt\nfind-links = /srv/wheels\n"
            "extra-index-url = file:///srv/wheels/simple https://extra.example/simple\n",
        )
        merged = _parse(merged_pip_config({"PIP_CERT": "/x.pem", "PIP_CACHE_DIR": "/c"}, [conf]))
        assert merged == {"global": {"extra-index-url": "https://extra.example/simple"}}

    def test_nothing_configured_is_empty(self, tmp_path: Path) -> None:
        """No files and no variables: no configuration to pass."""
        assert merged_pip_config({}, [tmp_path / "none.conf"]) == ""
