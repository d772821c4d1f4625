"""Image references parse by the distribution grammar: ports stay ports, tags stay tags."""

from __future__ import annotations

import dataclasses

import pytest

from envsnap.errors import UsageError
from envsnap.image.plan import choose_base
from envsnap.imageref import familiar_name, parse_reference
from envsnap.manifest import Container
from tests.conftest import sample_manifest

DIGEST = "sha256:" + "8c35a5545186620f2b2dfe31b3cc6a6a6c094aef19942a78003a6caa4b367bf0"


class TestParse:
    @pytest.mark.parametrize(
        ("text", "domain", "path", "tag", "digest"),
        [
            ("python", "", "python", "", ""),
            ("python:3.11", "", "python", "3.11", ""),
            ("python:3.11.7-slim-bookworm", "", "python", "3.11.7-slim-bookworm", ""),
            (f"python@{DIGEST}", "", "python", "", DIGEST),
            (f"python:3.11@{DIGEST}", "", "python", "3.11", DIGEST),
            ("library/python", "", "library/python", "", ""),
            ("nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04", "", "nvidia/cuda",
             "12.4.1-cudnn-runtime-ubuntu22.04", ""),
            ("docker.io/library/python:3", "docker.io", "library/python", "3", ""),
            ("ghcr.io/org/team/image:v1", "ghcr.io", "org/team/image", "v1", ""),
            ("localhost/app", "localhost", "app", "", ""),
            ("localhost:5000/app:1", "localhost:5000", "app", "1", ""),
            ("127.0.0.1:5055/team/python-base", "127.0.0.1:5055", "team/python-base", "", ""),
            (f"127.0.0.1:5055/team/python-base@{DIGEST}", "127.0.0.1:5055", "team/python-base",
             "", DIGEST),
            (f"127.0.0.1:5000/a:v1@{DIGEST}", "127.0.0.1:5000", "a", "v1", DIGEST),
            ("registry.example:443/a/b_c__d-e.f:tag_1.0-x", "registry.example:443", "a/b_c__d-e.f",
             "tag_1.0-x", ""),
            ("[::1]:5000/img:2", "[::1]:5000", "img", "2", ""),
        ],
    )  # fmt: skip
    def test_forms_users_write(
        self, text: str, domain: str, path: str, tag: str, digest: str
    ) -> None:
        """Each part lands where the grammar puts it, and the reference prints back as given."""
        ref = parse_reference(text)
        assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
        assert str(ref) == text

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "Python:3",
            "python:3.11\nRUN curl evil",
            "--network=host",
            "python:3.11 AS x",
            "a b",
            "$(id)",
            "python@sha256:short",
            "python:",
            "a//b",
            "-a/b",
            "python:3:4",
            "host:port/x",
            " python",
        ],
    )
    def test_unsafe_or_malformed_references_are_refused(self, bad: str) -> None:
        """A reference that is not in the grammar is refused with one sentence."""
        with pytest.raises(UsageError, match="not a valid image reference"):
            parse_reference(bad, "--base")

    def test_with_digest_keeps_the_registry_port(self) -> None:
        """Pinning a tagged reference keeps host and port and drops only the tag."""
        ref = parse_reference("127.0.0.1:5055/team/python-base:3.11")
        assert str(ref.with_digest(DIGEST)) == f"127.0.0.1:5055/team/python-base@{DIGEST}"
        assert str(ref.with_tag("x")) == "127.0.0.1:5055/team/python-base:x"

    @pytest.mark.parametrize(
        ("name", "familiar"),
        [
            ("docker.io/library/python", "python"),
            ("index.docker.io/library/python", "python"),
            ("docker.io/org/app", "org/app"),
            ("python", "python"),
            ("127.0.0.1:5000/library/x", "127.0.0.1:5000/library/x"),
            ("not a name", "not a name"),
        ],
    )
    def test_familiar_names_compare_as_docker_prints_them(self, name: str, familiar: str) -> None:
        """Docker Hub names compare in the short form; other registries keep theirs."""
        assert familiar_name(name) == familiar


class TestRecordedImage:
    @pytest.mark.parametrize(
        "image",
        [
            "127.0.0.1:5055/team/python-base",
            f"127.0.0.1:5055/team/python-base@{DIGEST}",
            "127.0.0.1:5055/team/python-base:3.11",
        ],
    )
    def test_a_registry_port_survives_the_recorded_base(self, image: str) -> None:
        """A run captured in an image from a registry with a port is rebuilt from that
        registry, not from a port-less name docker would look up on Docker Hub."""
        m = sample_manifest(container=Container(inside=True, image=image, image_digest=DIGEST))
        choice = choose_base(m)
        assert choice.reference == f"127.0.0.1:5055/team/python-base@{DIGEST}"
        assert choice.reason == "the image the run was captured in"

    def test_an_unparseable_recorded_image_falls_back_to_the_rule(self) -> None:
        """A recorded image name that is not a reference is not used as a base."""
        m = sample_manifest(container=Container(inside=True, image="???", image_digest=DIGEST))
        assert choose_base(dataclasses.replace(m)).reason != "the image the run was captured in"
