"""envsnap push/pull against real registries: Debian's docker-registry on 127.0.0.1:5000 (brought
up by scripts/docker-env.sh), and a second one started here with htpasswd authentication, with
the wheel-installed command line. Every record pushed here is deleted again."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from envsnap.checkout import unpack_code
from envsnap.store import Store
from tests.integration.conftest import (
    GIT_ENV,
    WHEEL_PYTHON_VARIABLE,
    WHEEL_VARIABLE,
    Envsnap,
    example_project,
)
from tests.integration.docker_env import REGISTRY, docker_cli, registry_base
from tests.unit.fake_registry import FakeRegistry, closed_port, serve

pytestmark = pytest.mark.integration

STORAGE = Path("/var/lib/envsnap-test-registry/data/docker/registry/v2")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TRAIN = (
    "--seed", "1", "--data", "data/train.csv", "--metrics", "metrics.json", "--",
    sys.executable, "train.py", "--config", "config.json", "--seed", "1", "--out", "outputs",
)  # fmt: skip
# htpasswd for user envsnap, password PASSWORD (bcrypt, cost 4; made once with Python's crypt
# module: crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))).
USER = "envsnap"
PASSWORD = "envsnap-test-password"
HTPASSWD = f"{USER}:$2b$04$iOxmrDQi7L1Yedxx8nN4FeoAfDjRAmoZkY7a/0EhOGbAbcI5HacjK\n"


def _opener() -> urllib.request.OpenerDirector:
    # The registries are on loopback; a proxy from the environment must not be used.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, accept: str = OCI_MANIFEST, auth: str = "") -> tuple[bytes, dict[str, str]]:
    headers = {"Accept": accept, **({"Authorization": f"Basic {auth}"} if auth else {})}
    with _opener().open(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return response.read(), dict(response.headers)


def _delete(host: str, repository: str, digest: str, auth: str = "") -> None:
    headers = {"Authorization": f"Basic {auth}"} if auth else {}
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{digest}", method="DELETE", headers=headers
    )
    with contextlib.suppress(OSError):  # already gone
        _opener().open(request, timeout=10).close()


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclasses.dataclass
class Origin:
    """A project with captured runs, a repository in the local registry to push them to, and
    the digests pushed (deleted when the module ends)."""

    envsnap: Envsnap
    root: Path
    repository: str
    pushed: list[tuple[str, str, str]]  # host, repository, digest

    def capture(self) -> str:
        """A new run of the example (dirty tree, so it has a diff), locked, with an image
        record naming the test base image by its registry digest."""
        run_id = self.envsnap("capture", "--name", "travel", *TRAIN).stdout.splitlines()[0]
        self.envsnap("lock", run_id)
        store = Store(self.root / ".envsnap")
        run = store.load(run_id)
        image = f"{REGISTRY}/envsnap-test/python@{_base_digest()}"
        record = f'schema = "envsnap.image/1"\nenv_id = "{run.manifest.env_id}"\n'
        store.write_run_files(
            run.directory, {"image.toml": (record + f'registry_digest = "{image}"\n').encode()}
        )
        return run_id

    def push(self, run_id: str, *args: str, host: str = REGISTRY, **kwargs: object) -> str:
        done = self.envsnap("push", run_id, f"{host}/{self.repository}", *args, **kwargs)  # type: ignore[arg-type]
        reference = done.stdout.strip()
        self.pushed.append((host, self.repository, reference.rpartition("@")[2]))
        return reference


def _base_digest() -> str:
    """The test base image's digest in the local registry (pushed there once)."""
    reference = registry_base()
    repository, _, tag = reference.partition("/")[2].rpartition(":")
    accept = "application/vnd.docker.distribution.manifest.v2+json, " + OCI_MANIFEST
    _, headers = _get(f"http://{REGISTRY}/v2/{repository}/manifests/{tag}", accept)
    return headers["Docker-Content-Digest"]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    docker_cli()  # the local registry is part of the docker test environment
    root = example_project(tmp_path_factory.mktemp("registry") / "project")
    (root / "train.py").write_text((root / "train.py").read_text() + "\n# travelling\n")
    docker_config = tmp_path_factory.mktemp("docker-config")
    keep = (WHEEL_PYTHON_VARIABLE, WHEEL_VARIABLE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVSNAP_") or k in keep}
    env.update(GIT_ENV)
    env["DOCKER_CONFIG"] = str(docker_config)  # never the user's own credentials
    state = Origin(
        envsnap=Envsnap(cwd=root, env=env),
        root=root,
        repository=f"envsnap-tests/runs-{secrets.token_hex(4)}",
        pushed=[],
    )
    yield state
    for host, repository, digest in state.pushed:
        if digest.startswith("sha256:") and host == REGISTRY:
            _delete(host, repository, digest)


@pytest.fixture(scope="module")
def run_id(origin: Origin) -> str:
    return origin.capture()


class TestRoundTrip:
    def test_every_file_comes_back_byte_identical(
        self, origin: Origin, run_id: str, tmp_path: Path
    ) -> None:
        """push prints repository:<run-id>@<digest>; pull into a fresh store gives back every
        file of the record byte for byte, and every digest is the one the registry holds."""
        reference = origin.push(run_id)
        repository = f"{REGISTRY}/{origin.repository}"
        assert reference.startswith(f"{repository}:{run_id}@sha256:")
        done = origin.envsnap("pull", f"{repository}:{run_id}", "--store", str(tmp_path / "b"))
        assert done.stdout.strip() == run_id
        source = origin.root / ".envsnap" / "runs" / run_id
        pulled = tmp_path / "b" / "runs" / run_id
        names = sorted(p.name for p in source.iterdir())
        assert {
            "manifest.toml",
            "result.toml",
            "diff.patch",
            "lock.toml",
            "image.toml",
            "code.tar.gz",
        } <= set(names)
        assert sorted(p.name for p in pulled.iterdir()) == names
        for name in names:
            assert (pulled / name).read_bytes() == (source / name).read_bytes(), name
        body, headers = _get(f"http://{REGISTRY}/v2/{origin.repository}/manifests/{run_id}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        assert reference.endswith("@" + digest) and headers["Docker-Content-Digest"] == digest
        document = json.loads(body)
        for layer in document["layers"]:
            data = (source / layer["annotations"]["org.opencontainers.image.title"]).read_bytes()
            assert layer["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
        stored = Store(tmp_path / "b").load(run_id)
        unpack_code((pulled / "code.tar.gz").read_bytes(), stored.manifest.git, tmp_path / "code")
        assert b"# travelling" in (tmp_path / "code" / "train.py").read_bytes()  # the diff
        annotations = document["annotations"]
        assert annotations["dev.envsnap.manifest-digest"] == stored.manifest.digest
        assert annotations["dev.envsnap.image"].endswith("@" + _base_digest())

    def test_any_command_takes_the_reference_and_pulling_again_is_one_run(
        self, origin: Origin, run_id: str, tmp_path: Path
    ) -> None:
        """show and diff pull a reference into their store; pulling it again finds it there."""
        reference = origin.push(run_id)
        store = str(tmp_path / "b")
        shown = origin.envsnap("show", reference, "--store", store).stdout
        assert run_id in shown
        origin.envsnap("diff", run_id, reference, "--store", store)
        again = json.loads(origin.envsnap("pull", reference, "--json", "--store", store).stdout)
        assert again["already_stored"] is True and Store(tmp_path / "b").run_ids() == [run_id]

    def test_a_different_run_under_the_same_id_is_refused(
        self, origin: Origin, run_id: str, tmp_path: Path
    ) -> None:
        """The store keeps its own run; one sentence, exit 2."""
        reference = origin.push(run_id)
        mine = Store(origin.root / ".envsnap").load(run_id).manifest
        Store(tmp_path / "b").write_run(dataclasses.replace(mine, name="mine"))
        done = origin.envsnap("pull", reference, "--store", str(tmp_path / "b"), check=2)
        assert "different run under that id" in done.stderr and done.stderr.count("\n") == 1
        assert Store(tmp_path / "b").load(run_id).manifest.name == "mine"

    def test_a_run_whose_image_was_not_pushed_is_pushed_with_a_warning(
        self, origin: Origin, tmp_path: Path
    ) -> None:
        """No registry digest in image.toml: pushed, and one sentence offering build --push."""
        bare = origin.envsnap("capture", "--name", "bare").stdout.strip()
        done = origin.envsnap("push", bare, f"{REGISTRY}/{origin.repository}")
        origin.pushed.append((REGISTRY, origin.repository, done.stdout.strip().rpartition("@")[2]))
        assert f"envsnap build {bare} --push REPOSITORY" in done.stderr


class TestRefusals:
    def test_a_tampered_layer_is_refused_and_nothing_is_stored(
        self, origin: Origin, tmp_path: Path
    ) -> None:
        """One byte of a blob changed in the registry's storage: one sentence, exit 2."""
        run_id = origin.capture()  # its own manifest.toml blob, shared with no other test
        reference = origin.push(run_id)
        body, _ = _get(f"http://{REGISTRY}/v2/{origin.repository}/manifests/{run_id}")
        digest = json.loads(body)["layers"][0]["digest"].removeprefix("sha256:")
        blob = STORAGE / "blobs" / "sha256" / digest[:2] / digest / "data"
        original = blob.read_bytes()
        try:
            blob.write_bytes(original.replace(b"travel", b"TRAVEL", 1))
            done = origin.envsnap("pull", reference, "--store", str(tmp_path / "b"), check=2)
        finally:
            blob.write_bytes(original)
        assert done.stderr.count("\n") == 1
        assert "manifest.toml of" in done.stderr and "does not match its digest" in done.stderr
        assert not (tmp_path / "b" / "runs" / run_id).exists()
        assert Store(tmp_path / "b").run_ids() == []

    def test_a_missing_tag(self, origin: Origin, tmp_path: Path) -> None:
        """No record under that run id."""
        done = origin.envsnap(
            "pull", f"{REGISTRY}/{origin.repository}:20990101-000000-000000", check=2
        )
        assert "has no" in done.stderr and "MANIFEST_UNKNOWN" in done.stderr

    def test_an_image_is_not_a_record(self, origin: Origin) -> None:
        """A container image in the same registry is named as such."""
        done = origin.envsnap("pull", registry_base(), check=2)
        assert "is a container image, not an envsnap run record" in done.stderr

    def test_a_registry_that_is_down(self, origin: Origin, run_id: str) -> None:
        """Nothing listening: one sentence at once, exit 2, for push and pull."""
        host = f"127.0.0.1:{closed_port()}"
        started = time.monotonic()
        pushed = origin.envsnap("push", run_id, f"{host}/team/runs", check=2)
        pulled = origin.envsnap("pull", f"{host}/team/runs:{run_id}", check=2)
        assert time.monotonic() - started < 20
        for done in (pushed, pulled):
            assert done.stderr == (
                f"envsnap: error: no registry answers at http://{host} (connection refused); "
                "check the address and that the registry is running.\n"
            )

    @pytest.mark.parametrize(
        ("fault", "said"),
        [
            ({"html": True}, "is not an OCI registry (its /v2/ answers with a web page)"),
            ({"fail_all": 503}, "failed (503"),
        ],
    )
    def test_garbage_and_failures(
        self, origin: Origin, run_id: str, fault: dict[str, object], said: str
    ) -> None:
        """A web server that is not a registry, and a registry answering 5xx."""
        with serve(FakeRegistry(**fault)) as fake:  # type: ignore[arg-type]
            done = origin.envsnap("pull", f"{fake.host}/team/runs:{run_id}", check=2)
        assert said in done.stderr and done.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real docker-registry on a free loopback port, with htpasswd (Basic) auth."""
    docker_cli()
    program = shutil.which("docker-registry") or shutil.which("registry")
    assert program, "docker-registry is not installed (scripts/docker-env.sh installs it)"
    root = tmp_path_factory.mktemp("private-registry")
    (root / "htpasswd").write_text(HTPASSWD)
    host = f"127.0.0.1:{closed_port()}"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {host}\n"
        f"auth:\n  htpasswd:\n    realm: envsnap-test\n    path: {root / 'htpasswd'}\n"
    )
    log = (root / "log").open("wb")
    process = subprocess.Popen([program, "serve", str(root / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"http://{host}/v2/")
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                pass
            assert process.poll() is None, (root / "log").read_text()
            assert time.monotonic() < deadline, "the private registry did not start"
            time.sleep(0.2)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


class TestAuthentication:
    def _login(self, origin: Origin, tmp_path: Path, config: dict[str, object]) -> dict[str, str]:
        (tmp_path / "docker").mkdir(exist_ok=True)
        (tmp_path / "docker" / "config.json").write_text(json.dumps(config))
        return {"DOCKER_CONFIG": str(tmp_path / "docker")}

    def test_without_credentials_one_sentence_names_docker_login(
        self, origin: Origin, run_id: str, private_registry: str
    ) -> None:
        """The registry asks, docker's config has nothing: exit 2, docker login named."""
        done = origin.envsnap("push", run_id, f"{private_registry}/team/runs", check=2)
        assert "asks for credentials" in done.stderr
        assert f"docker login {private_registry}" in done.stderr

    def test_dockers_stored_password_pushes_and_pulls(
        self, origin: Origin, run_id: str, private_registry: str, tmp_path: Path
    ) -> None:
        """docker login's auths entry is used, and the password is written nowhere."""
        env = self._login(
            origin, tmp_path, {"auths": {private_registry: {"auth": _basic(USER, PASSWORD)}}}
        )
        reference = origin.push(run_id, host=private_registry, env=env)
        done = origin.envsnap("pull", reference, "--store", str(tmp_path / "b"), env=env)
        assert done.stdout.strip() == run_id
        for path in (tmp_path / "b").rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path
        body, _ = _get(
            f"http://{private_registry}/v2/{origin.repository}/manifests/{run_id}",
            auth=_basic(USER, PASSWORD),
        )
        assert PASSWORD.encode() not in body

    def test_a_credential_helper_is_run_as_docker_runs_it(
        self, origin: Origin, run_id: str, private_registry: str, tmp_path: Path
    ) -> None:
        """credsStore names docker-credential-<name>, found on PATH, asked with the server."""
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        helper = bin_dir / "docker-credential-envsnaptest"
        helper.write_text(
            "#!/bin/sh\n"
            f'[ "$1" = get ] && server=$(cat) && echo "$server" > {tmp_path / "asked"} && '
            f'echo \'{{"ServerURL":"\'"$server"\'","Username":"{USER}","Secret":"{PASSWORD}"}}\'\n'
        )
        helper.chmod(0o755)
        env = self._login(origin, tmp_path, {"credsStore": "envsnaptest"})
        env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        reference = origin.push(run_id, host=private_registry, env=env)
        assert reference.startswith(f"{private_registry}/{origin.repository}:{run_id}@sha256:")
        assert (tmp_path / "asked").read_text().strip() == private_registry

    def test_a_wrong_password_is_refused_and_never_shown(
        self, origin: Origin, run_id: str, private_registry: str, tmp_path: Path
    ) -> None:
        """Refused credentials: exit 2, one sentence without the password or its encoding."""
        wrong = "not-" + PASSWORD
        env = self._login(
            origin, tmp_path, {"auths": {private_registry: {"auth": _basic(USER, wrong)}}}
        )
        done = origin.envsnap(
            "pull", f"{private_registry}/{origin.repository}:{run_id}", env=env, check=2
        )
        assert "refused the credentials in docker's config" in done.stderr
        assert wrong not in done.stderr + done.stdout
        assert _basic(USER, wrong) not in done.stderr + done.stdout
