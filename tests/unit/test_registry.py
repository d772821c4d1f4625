"""Run records in OCI registries: the artifact's layout, verified pulls, docker's credentials,
and one sentence for every way a registry fails. Against a registry faked in memory on
127.0.0.1 (tests/unit/fake_registry.py); the real one is tests/integration/test_registry.py."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envsnap import registry
from envsnap.cli import main
from envsnap.errors import EXIT_ERROR, StoreError, UsageError
from envsnap.manifest import Result
from envsnap.registry import (
    ANNOTATION_CREATED,
    ANNOTATION_ENV_ID,
    ANNOTATION_IMAGE,
    ANNOTATION_MANIFEST_DIGEST,
    ANNOTATION_RUN_ID,
    FILE_MEDIA_TYPES,
    RECORD_MEDIA_TYPE,
    NotARecordError,
    RecordIntegrityError,
    RecordNotFoundError,
    RegistryAuthError,
    RegistryError,
    RegistryOptions,
    is_loopback,
    pull_record,
    push_run,
    record_reference,
)
from envsnap.store import RECORD_FILES, Store, StoredRun, open_run
from tests.conftest import sample_manifest
from tests.unit.fake_registry import FakeRegistry, closed_port, serve, serve_bytes

RUN = "20261122-163012-a1b2c3"
IMAGE = "127.0.0.1:5000/team/envs@sha256:" + "c" * 64
SECRET = "s3cret-Pa55word"
LOCK = b"numpy==2.1.3 \\\n    --hash=sha256:" + b"d" * 64 + b"\n"


def _run(root: Path, *, image: str = IMAGE, name: str = "lr-sweep-3") -> StoredRun:
    """A stored run with every kind of file a record holds."""
    store = Store(root)
    sealed, directory = store.write_run(sample_manifest(name=name), b"diff --git a/t b/t\n")
    store.write_result(directory, Result(run_id=RUN, exit_code=0, started="s", ended="e"))
    image_toml = f'schema = "envsnap.image/1"\nenv_id = "{sealed.env_id}"\n'
    if image:
        image_toml += f'registry_digest = "{image}"\n'
    store.write_run_files(
        directory,
        {
            "requirements.lock.txt": LOCK,
            "lock.toml": b'schema = "envsnap.lock/1"\n',
            "image.toml": image_toml.encode(),
        },
    )
    return store.load(RUN)


def _options(tmp_path: Path, **changes: Any) -> RegistryOptions:
    env = {"DOCKER_CONFIG": str(tmp_path / "docker"), "PATH": ""}
    return RegistryOptions(**{"env": env, "timeout_s": 5.0, **changes})


def _docker_config(tmp_path: Path, config: dict[str, Any]) -> None:
    (tmp_path / "docker").mkdir(exist_ok=True)
    (tmp_path / "docker" / "config.json").write_text(json.dumps(config))


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with serve() as state:
        yield state


@pytest.fixture
def pushed(tmp_path: Path, fake: FakeRegistry) -> tuple[StoredRun, str]:
    """A run with every file, pushed to the fake registry; its run and reference."""
    run = _run(tmp_path / "origin")
    return run, push_run(run, f"{fake.host}/team/runs", _options(tmp_path)).reference


def _oci_manifest(fake: FakeRegistry, tag: str = RUN) -> dict[str, Any]:
    body, _ = fake.manifests[fake.tags[("team/runs", tag)]]
    return dict(json.loads(body))


class TestReferences:
    @pytest.mark.parametrize(
        "text",
        [
            RUN,
            "20261122",
            "latest",
            "runs/manifest.toml",
            "./x/y:z",
            "/abs/path:1",
            "127.0.0.1:5000/team/runs",
            "Not A/Reference:x",
        ],
    )
    def test_run_ids_prefixes_paths_and_bare_repositories_are_not_references(
        self, text: str
    ) -> None:
        """Only a repository with a tag or digest reads as a registry reference."""
        assert record_reference(text) is None

    @pytest.mark.parametrize(
        "text",
        [
            f"127.0.0.1:5000/team/runs:{RUN}",
            "registry.example/team/runs@sha256:" + "a" * 64,
            f"ghcr.io/org/runs:{RUN}@sha256:" + "a" * 64,
        ],
    )
    def test_tags_and_digests_are_references(self, text: str) -> None:
        """A tag, a digest, or both make a reference."""
        assert record_reference(text) is not None

    def test_open_run_asks_the_puller_only_about_what_is_not_a_path(self, tmp_path: Path) -> None:
        """RUN that names an existing file never reaches the puller; a reference does."""
        store = Store(tmp_path / "store")
        run = _run(tmp_path / "store")
        asked: list[str] = []

        def pull(ref: str) -> StoredRun | None:
            asked.append(ref)
            return run if "/" in ref else None

        assert open_run(store, str(run.manifest_path), pull=pull).run_id == RUN
        assert open_run(store, "latest", pull=pull).run_id == RUN
        assert open_run(store, f"r.example/team/runs:{RUN}", pull=pull) is run
        assert asked == ["latest", f"r.example/team/runs:{RUN}"]


class TestFormat:
    def test_every_file_of_a_run_record_has_a_media_type(self) -> None:
        """The store's record files are the lock and image stages' names, each with its type."""
        from envsnap.image.build import IMAGE_FILE
        from envsnap.locking import model

        stage_names = {
            model.REQUIREMENTS_FILE,
            model.VCS_FILE,
            model.CONDA_EXPLICIT_FILE,
            model.CONDA_LOCK_FILE,
            model.SUMMARY_FILE,
            IMAGE_FILE,
        }
        from envsnap.store import CODE_ARCHIVE

        assert stage_names | {CODE_ARCHIVE} <= set(RECORD_FILES)
        assert list(FILE_MEDIA_TYPES) == list(RECORD_FILES)
        assert len(set(FILE_MEDIA_TYPES.values())) == len(FILE_MEDIA_TYPES)

    def test_the_artifact_has_its_type_a_layer_per_file_and_the_digests_as_annotations(
        self, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """Config, layers and annotations say what the record is without fetching a blob."""
        run, _ = pushed
        document = _oci_manifest(fake)
        assert document["artifactType"] == RECORD_MEDIA_TYPE
        assert document["config"]["mediaType"] == RECORD_MEDIA_TYPE
        layers = {
            layer["annotations"]["org.opencontainers.image.title"]: layer
            for layer in document["layers"]
        }
        assert list(layers) == [
            "manifest.toml",
            "result.toml",
            "diff.patch",
            "requirements.lock.txt",
            "lock.toml",
            "image.toml",
        ]
        for name, layer in layers.items():
            data = (run.directory / name).read_bytes()
            assert layer["mediaType"] == FILE_MEDIA_TYPES[name]
            assert layer["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
            assert layer["size"] == len(data)
        assert document["annotations"] == {
            ANNOTATION_RUN_ID: RUN,
            ANNOTATION_MANIFEST_DIGEST: run.manifest.digest,
            ANNOTATION_ENV_ID: run.manifest.env_id,
            ANNOTATION_IMAGE: IMAGE,
            ANNOTATION_CREATED: run.manifest.created,
        }
        config = json.loads(fake.blobs[document["config"]["digest"]])
        assert config["schema"] == "envsnap.record/1"
        assert config["run_id"] == RUN and config["image"] == IMAGE

    def test_the_reference_names_the_stored_manifest_by_digest(
        self, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """repository:<run-id>@<digest of the bytes the registry holds under that tag>."""
        _, reference = pushed
        digest = fake.tags[("team/runs", RUN)]
        assert reference == f"{fake.host}/team/runs:{RUN}@{digest}"
        assert hashlib.sha256(fake.manifests[digest][0]).hexdigest() == digest[7:]

    def test_pushing_twice_gives_the_same_digest(
        self, tmp_path: Path, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """The record's bytes depend on the run alone, not on when it was pushed."""
        run, reference = pushed
        again = push_run(run, f"{fake.host}/team/runs", _options(tmp_path))
        assert again.reference == reference

    def test_a_run_whose_image_was_not_pushed_is_pushed_with_a_warning(
        self, tmp_path: Path, fake: FakeRegistry
    ) -> None:
        """No registry digest in image.toml: one sentence offering build --push."""
        run = _run(tmp_path / "origin", image="")
        done = push_run(run, f"{fake.host}/team/runs", _options(tmp_path))
        (warning,) = done.warnings
        assert f"envsnap build {RUN} --push REPOSITORY" in warning
        assert ANNOTATION_IMAGE not in _oci_manifest(fake)["annotations"]

    def test_a_repository_with_a_tag_is_refused(self, tmp_path: Path, fake: FakeRegistry) -> None:
        """The tag is the run id; a tag given to push is a mistake."""
        with pytest.raises(UsageError, match="names a tag or digest"):
            push_run(_run(tmp_path / "o"), f"{fake.host}/team/runs:v1", _options(tmp_path))


class TestPull:
    def test_a_pulled_record_is_byte_identical(
        self, tmp_path: Path, pushed: tuple[StoredRun, str]
    ) -> None:
        """Every file of the record arrives in the new store as it left the old one."""
        run, reference = pushed
        store = Store(tmp_path / "elsewhere")
        pulled = pull_record(reference.split("@")[0], store, _options(tmp_path))
        assert pulled.run.directory == store.runs_dir / RUN
        assert pulled.reference == reference and not pulled.already_stored
        assert sorted(p.name for p in pulled.run.directory.iterdir()) == sorted(
            p.name for p in run.directory.iterdir()
        )
        for path in run.directory.iterdir():
            assert (pulled.run.directory / path.name).read_bytes() == path.read_bytes()

    def test_by_digest_and_twice_is_one_run(
        self, tmp_path: Path, pushed: tuple[StoredRun, str]
    ) -> None:
        """Pulling by digest after by tag finds the run already stored."""
        _, reference = pushed
        store = Store(tmp_path / "elsewhere")
        pull_record(reference, store, _options(tmp_path))
        digest_only = reference.split(":" + RUN)[0] + "@" + reference.split("@")[1]
        again = pull_record(digest_only, store, _options(tmp_path))
        assert again.already_stored and store.run_ids() == [RUN]

    def test_a_different_run_under_the_same_id_is_refused(
        self, tmp_path: Path, pushed: tuple[StoredRun, str]
    ) -> None:
        """The store keeps its own run and names the reference, not a temporary file."""
        _, reference = pushed
        store = Store(tmp_path / "elsewhere")
        store.write_run(sample_manifest(name="another"))
        with pytest.raises(StoreError, match="different run under that id") as caught:
            pull_record(reference, store, _options(tmp_path))
        assert reference in str(caught.value) and "envsnap-pull" not in str(caught.value)
        assert store.load(RUN).manifest.name == "another"

    def test_any_command_takes_a_reference(
        self, tmp_path: Path, pushed: tuple[StoredRun, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """api.open_run (behind show, diff, lock, build, rerun) pulls a reference first."""
        from envsnap import api

        _, reference = pushed
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        run = api.open_run(reference, store=tmp_path / "elsewhere")
        assert run.run_id == RUN and run.directory.parent == tmp_path / "elsewhere" / "runs"


class TestTampering:
    """A record that does not match its digests is refused whole: nothing reaches the store."""

    def _refused(self, tmp_path: Path, reference: str, error: type[Exception], match: str) -> None:
        store = Store(tmp_path / "elsewhere")
        with pytest.raises(error, match=match):
            pull_record(reference, store, _options(tmp_path))
        assert store.run_ids() == []
        assert not (store.runs_dir / RUN).exists()

    def test_a_changed_layer(
        self, tmp_path: Path, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """One byte changed in a blob the registry holds."""
        _, reference = pushed
        layer = _oci_manifest(fake)["layers"][2]
        data = bytearray(fake.blobs[layer["digest"]])
        data[0] ^= 1
        fake.blobs[layer["digest"]] = bytes(data)
        self._refused(tmp_path, reference, RecordIntegrityError, "diff.patch .* does not match")

    def test_a_changed_manifest_asked_for_by_digest(
        self, tmp_path: Path, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """The OCI manifest served under a digest must hash to that digest."""
        _, reference = pushed
        digest = reference.split("@")[1]
        body, media_type = fake.manifests[digest]
        fake.manifests[digest] = (
            body.replace(b'"schemaVersion":2', b'"schemaVersion": 2'),
            media_type,
        )
        self._refused(tmp_path, reference, RecordIntegrityError, "manifest of .* does not match")

    def test_an_edited_envsnap_manifest_with_matching_blob_digests(
        self, tmp_path: Path, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """Layer and OCI digests made to fit an edited manifest.toml: its own digest fails."""
        _, _ = pushed
        document = _oci_manifest(fake)
        layer = document["layers"][0]
        edited = fake.blobs[layer["digest"]].replace(b"lr-sweep-3", b"lr-sweep-9")
        layer["digest"] = "sha256:" + hashlib.sha256(edited).hexdigest()
        fake.blobs[layer["digest"]] = edited
        digest = fake.put_manifest("team/runs", RUN, document)
        reference = f"{fake.host}/team/runs:{RUN}@{digest}"
        self._refused(tmp_path, reference, RecordIntegrityError, "modified after it was written")

    def test_a_tag_naming_another_run(
        self, tmp_path: Path, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """A run id tag that holds another run's record."""
        other = "20261122-163012-ffffff"
        fake.put_manifest("team/runs", other, _oci_manifest(fake))
        self._refused(tmp_path, f"{fake.host}/team/runs:{other}", RecordIntegrityError, "tagged")


class TestNotARecord:
    def test_a_container_image(self, tmp_path: Path, fake: FakeRegistry) -> None:
        """An image manifest is named as such."""
        fake.put_manifest(
            "team/runs",
            "img",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + "a" * 64,
                    "size": 2,
                },
                "layers": [],
            },
        )
        with pytest.raises(NotARecordError, match="is a container image, not an envsnap run"):
            pull_record(f"{fake.host}/team/runs:img", Store(tmp_path / "s"), _options(tmp_path))

    def test_another_artifact_and_an_index(self, tmp_path: Path, fake: FakeRegistry) -> None:
        """Another tool's artifact, and a multi-platform index, are refused by their type."""
        fake.put_manifest(
            "team/runs",
            "helm",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.cncf.helm.config.v1+json",
                    "digest": "sha256:" + "a" * 64,
                    "size": 2,
                },
                "layers": [],
            },
        )
        fake.put_manifest(
            "team/runs",
            "multi",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [],
            },
        )
        store = Store(tmp_path / "s")
        with pytest.raises(NotARecordError, match=r"another kind \(application/vnd\.cncf\.helm"):
            pull_record(f"{fake.host}/team/runs:helm", store, _options(tmp_path))
        with pytest.raises(NotARecordError, match="an image index"):
            pull_record(f"{fake.host}/team/runs:multi", store, _options(tmp_path))

    def test_a_missing_tag(self, tmp_path: Path, fake: FakeRegistry) -> None:
        """No such tag: one sentence with the registry's code."""
        with pytest.raises(RecordNotFoundError, match=r"has no .*:nothing \(MANIFEST_UNKNOWN\)"):
            pull_record(f"{fake.host}/team/runs:nothing", Store(tmp_path / "s"), _options(tmp_path))

    def test_a_reference_without_tag_or_digest(self, tmp_path: Path) -> None:
        """pull needs to know which record."""
        with pytest.raises(UsageError, match="names no tag or digest"):
            pull_record("127.0.0.1:9/team/runs", Store(tmp_path / "s"), _options(tmp_path))


class TestFaults:
    """A registry that is down, failing or not a registry: one sentence, at once."""

    def _pull_error(self, tmp_path: Path, host: str) -> str:
        started = time.monotonic()
        with pytest.raises(RegistryError) as caught:
            pull_record(f"{host}/team/runs:{RUN}", Store(tmp_path / "s"), _options(tmp_path))
        assert time.monotonic() - started < 10  # oras alone would retry for about two minutes
        assert Store(tmp_path / "s").run_ids() == []
        return str(caught.value)

    def test_nothing_listening(self, tmp_path: Path) -> None:
        """A closed port."""
        port = closed_port()
        said = self._pull_error(tmp_path, f"127.0.0.1:{port}")
        assert said.startswith(f"no registry answers at http://127.0.0.1:{port} (connection")

    def test_a_failing_registry(self, tmp_path: Path, fake: FakeRegistry) -> None:
        """5xx from /v2/ on."""
        fake.fail_all = 503
        said = self._pull_error(tmp_path, fake.host)
        assert "failed (503" in said and "try again later" in said

    def test_a_registry_failing_on_blobs(
        self, tmp_path: Path, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """5xx once the manifest was read."""
        fake.fail_blobs = 500
        said = self._pull_error(tmp_path, fake.host)
        assert "failed while fetching the record's config" in said and "500" in said

    def test_a_plain_server_silent_on_tls_is_reached_over_http(
        self, tmp_path: Path, fake: FakeRegistry, pushed: tuple[StoredRun, str]
    ) -> None:
        """Loopback: the HTTPS attempt times out quickly and plain HTTP is tried."""
        fake.silent_tls = True
        _, reference = pushed
        options = _options(tmp_path, timeout_s=1.0)
        started = time.monotonic()
        assert pull_record(reference, Store(tmp_path / "s"), options).run.run_id == RUN
        assert time.monotonic() - started < 5

    def test_a_web_page(self, tmp_path: Path, fake: FakeRegistry) -> None:
        """A web server that is not a registry."""
        fake.html = True
        said = self._pull_error(tmp_path, fake.host)
        assert "is not an OCI registry (its /v2/ answers with a web page)" in said

    def test_something_that_is_not_http(self, tmp_path: Path) -> None:
        """A server that answers with another protocol."""
        with serve_bytes(b"SSH-2.0-OpenSSH_9.2\r\n") as port:
            said = self._pull_error(tmp_path, f"127.0.0.1:{port}")
        assert "not HTTP" in said

    def test_a_failing_push(self, tmp_path: Path, fake: FakeRegistry) -> None:
        """Push fails the same way, with the CLI's exit code 2 and one line."""
        fake.fail_all = 502
        with pytest.raises(RegistryError, match="failed"):
            push_run(_run(tmp_path / "o"), f"{fake.host}/team/runs", _options(tmp_path))


class TestAuthentication:
    def test_basic_with_dockers_stored_password(self, tmp_path: Path) -> None:
        """auths in docker's config (a key written with a scheme) answer a Basic challenge."""
        with serve(FakeRegistry(auth="basic", users={"me": SECRET})) as fake:
            _docker_config(
                tmp_path, {"auths": {f"https://{fake.host}": {"auth": _auth("me", SECRET)}}}
            )
            reference = push_run(_run(tmp_path / "o"), f"{fake.host}/team/runs", _options(tmp_path))
            pulled = pull_record(reference.reference, Store(tmp_path / "s"), _options(tmp_path))
        assert pulled.run.run_id == RUN

    def test_bearer_tokens_through_a_credential_helper(self, tmp_path: Path) -> None:
        """credsStore's helper gives the password for a token; a pull token is renewed for push."""
        asked: list[tuple[str, str]] = []

        def helper(program: str, server: str) -> str | None:
            asked.append((program, server))
            return json.dumps({"ServerURL": server, "Username": "me", "Secret": SECRET})

        with serve(FakeRegistry(auth="bearer", users={"me": SECRET})) as fake:
            _docker_config(tmp_path, {"credsStore": "fake"})
            options = _options(tmp_path, credential_helper=helper)
            done = push_run(_run(tmp_path / "o"), f"{fake.host}/team/runs", options)
            pull_record(done.reference, Store(tmp_path / "s"), options)
            sent = [auth for _, _, auth in fake.requests]
        scopes = [path.partition("scope=")[2] for _, path, _ in fake.requests if "/token" in path]
        assert asked[0] == ("docker-credential-fake", fake.host)
        assert "repository%3Ateam%2Fruns%3Apull%2Cpush" in scopes  # renewed for push
        assert any(a.startswith("Bearer ") for a in sent)
        assert not any(SECRET in a for a in sent)  # the password goes to the token realm only

    def test_no_credentials_is_one_sentence_naming_docker_login(self, tmp_path: Path) -> None:
        """A registry that asks, and docker's config that has nothing."""
        with (
            serve(FakeRegistry(auth="bearer", users={"me": SECRET})) as fake,
            pytest.raises(RegistryAuthError) as caught,
        ):
            push_run(_run(tmp_path / "o"), f"{fake.host}/team/runs", _options(tmp_path))
        said = str(caught.value)
        assert "asks for credentials" in said and f"docker login {fake.host}" in said

    @pytest.mark.parametrize("auth", ["basic", "bearer"])
    def test_a_wrong_password_is_never_shown(self, tmp_path: Path, auth: str) -> None:
        """Refused credentials: one sentence, without the password or its encoding."""
        wrong = "wr0ng-" + SECRET
        with serve(FakeRegistry(auth=auth, users={"me": SECRET})) as fake:  # type: ignore[arg-type]
            _docker_config(tmp_path, {"auths": {fake.host: {"auth": _auth("me", wrong)}}})
            with pytest.raises(RegistryAuthError) as caught:
                pull_record(
                    f"{fake.host}/team/runs:{RUN}", Store(tmp_path / "s"), _options(tmp_path)
                )
        said = str(caught.value)
        assert "refused the credentials" in said
        assert wrong not in said and _auth("me", wrong) not in said


class TestTransport:
    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("localhost", True),
            ("localhost:5000", True),
            ("127.0.0.1:5000", True),
            ("127.1.2.3", True),
            ("[::1]:5000", True),
            ("registry.example", False),
            ("10.0.0.1:5000", False),
            ("localhost.example", False),
        ],
    )
    def test_loopback(self, host: str, expected: bool) -> None:
        """127.0.0.0/8, ::1 and localhost, with or without a port."""
        assert is_loopback(host) is expected

    def _tried(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference: str, **changes: Any
    ) -> list[tuple[str, object]]:
        """The URLs and verify settings connect tries before giving up."""
        import requests

        tried: list[tuple[str, object]] = []
        real = registry._session

        def session(options: RegistryOptions, host: str, verify: object, *, probe: bool) -> Any:
            made = real(options, host, verify, probe=probe)  # type: ignore[arg-type]

            def get(url: str, **kwargs: Any) -> Any:
                tried.append((url, made.verify))
                raise requests.exceptions.ConnectionError("Connection refused")

            made.get = get  # type: ignore[method-assign]
            return made

        monkeypatch.setattr(registry, "_session", session)
        with pytest.raises(RegistryError, match="connection refused"):
            pull_record(reference, Store(tmp_path / "s"), _options(tmp_path, **changes))
        return tried

    def test_plain_http_only_for_loopback_or_when_asked(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A remote registry gets verified HTTPS only; --insecure-registry adds HTTPS without
        verification, then HTTP."""
        remote = self._tried(monkeypatch, tmp_path, f"r.example:5000/team/runs:{RUN}")
        assert [url for url, _ in remote] == ["https://r.example:5000/v2/"]
        assert remote[0][1] is not False
        insecure = self._tried(
            monkeypatch, tmp_path, f"r.example:5000/team/runs:{RUN}", insecure=True
        )
        assert insecure == [
            ("https://r.example:5000/v2/", False),
            ("http://r.example:5000/v2/", False),
        ]
        local = self._tried(monkeypatch, tmp_path, f"localhost:5000/team/runs:{RUN}")
        assert [url for url, _ in local] == [
            "https://localhost:5000/v2/",
            "http://localhost:5000/v2/",
        ]

    def test_proxies_come_from_the_given_environment(self) -> None:
        """HTTPS_PROXY unless NO_PROXY names the host; never for loopback."""
        env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".internal"}
        assert registry._proxies("r.example", env) == {"https": "http://proxy:3128"}
        assert registry._proxies("r.internal:5000", env) == {}
        assert registry._proxies("127.0.0.1:5000", env) == {}


class TestCommandLine:
    def test_push_then_pull_print_the_reference_and_the_run_id(
        self,
        tmp_path: Path,
        fake: FakeRegistry,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """push prints repository:<run-id>@sha256:...; pull prints the run id. Outside the
        run's repository the record goes without its code, and push says so."""
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        monkeypatch.chdir(tmp_path)
        _run(tmp_path / "origin")
        main(["push", RUN, f"{fake.host}/team/runs", "--store", str(tmp_path / "origin")])
        out, err = capsys.readouterr()
        reference = out.strip()
        assert reference.startswith(f"{fake.host}/team/runs:{RUN}@sha256:")
        assert "warning: the record carries no code" in err
        main(["pull", reference, "--json", "--store", str(tmp_path / "b")])
        shown = json.loads(capsys.readouterr().out)
        assert shown["run_id"] == RUN and shown["reference"] == reference

    def test_a_registry_error_exits_2_with_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No traceback: one sentence on stderr, exit code 2."""
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        with pytest.raises(SystemExit) as exit_info:
            main(["pull", f"127.0.0.1:{closed_port()}/team/runs:{RUN}", "--store", str(tmp_path)])
        assert exit_info.value.code == EXIT_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("envsnap: error: no registry answers")
