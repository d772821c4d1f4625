"""The index client against the real PyPI and against a real HTTP server on the loopback: hashes
agree with what pip itself downloads, a warm cache asks nothing, failures read as one sentence."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envsnap.locking.index import SimpleIndexClient
from envsnap.locking.model import IndexFile, IndexQuery, IndexUnreachableError, LockError
from envsnap.locking.plan import lock_packages
from envsnap.manifest import Manifest, Package, Python
from tests.conftest import sample_manifest

pytestmark = pytest.mark.integration

PYPI = "https://pypi.org/simple"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PINS = {"six": "1.16.0", "iniconfig": "2.0.0", "packaging": "24.1"}


def pip_hashes(destination: Path, *extra: str) -> set[str]:
    """sha256 of what real pip downloads from PyPI for the pins, computed by ``pip hash``.
    ``--isolated`` keeps the host's local indexes out: only PyPI is asked."""
    destination.mkdir()
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--isolated", "--quiet"),
            *("--cert", CA_BUNDLE, "--index-url", PYPI, "--no-deps"),
            *("--dest", str(destination), *extra),
            *(f"{name}=={version}" for name, version in PINS.items()),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    hashes = set()
    for path in sorted(destination.iterdir()):
        out = subprocess.run(
            [sys.executable, "-m", "pip", "hash", "--algorithm", "sha256", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        hashes.add(out.strip().splitlines()[-1].split("--hash=sha256:", 1)[1])
    return hashes


def pins_manifest() -> Manifest:
    packages = tuple(Package(name=name, version=version) for name, version in PINS.items())
    return sample_manifest(python=Python(version="3.11.7", packages=packages))


class TestRealPypi:
    """Hashes from PyPI's Simple JSON API are the hashes of the files pip installs."""

    def test_hashes_equal_those_of_the_files_pip_downloads(self, tmp_path: Path) -> None:
        """The wheel and the sdist of each pin, hashed by pip, are exactly the locked hashes."""
        client = SimpleIndexClient(cache_dir=tmp_path / "cache")
        result = lock_packages(pins_manifest(), client)
        assert result.unlockable == ()
        assert result.locked_index == len(PINS)
        locked = {
            line.strip().removeprefix("--hash=sha256:").rstrip(" \\")
            for line in result.requirements.splitlines()
            if line.strip().startswith("--hash=")
        }
        wheels = pip_hashes(tmp_path / "wheels", "--only-binary", ":all:")
        sdists = pip_hashes(tmp_path / "sdists", "--no-binary", ":all:")
        assert len(wheels) == len(sdists) == len(PINS)
        assert locked == wheels | sdists

    def test_a_warm_cache_asks_no_index(self, tmp_path: Path) -> None:
        """The second lock from the same cache makes no request at all."""
        cold = SimpleIndexClient(cache_dir=tmp_path)
        first = lock_packages(pins_manifest(), cold)
        assert cold.fetches == len(PINS)

        class Offline(SimpleIndexClient):
            def _get(
                self, url: str, index_url: str, project: str
            ) -> tuple[int, dict[str, str], bytes]:
                raise AssertionError(f"a warm lock went to the network for {url}")

        warm = Offline(cache_dir=tmp_path)
        assert lock_packages(pins_manifest(), warm) == first
        assert warm.fetches == 0

    def test_a_version_pypi_does_not_have_is_unlockable(self, tmp_path: Path) -> None:
        """six 0.0.1 was never released: named with the index, not an error."""
        manifest = sample_manifest(python=Python(packages=(Package(name="six", version="0.0.1"),)))
        result = lock_packages(manifest, SimpleIndexClient(cache_dir=tmp_path))
        assert [(n.name, n.reason) for n in result.unlockable] == [
            ("six", f"version 0.0.1 is not on {PYPI}")
        ]


class Handler(http.server.BaseHTTPRequestHandler):
    """A tiny index: /simple/<project>/ answers by project name."""

    def do_GET(self) -> None:
        project = self.path.strip("/").split("/")[-1]
        if project == "moved":
            self._send(301, b"", {"Location": "/simple/html-only/"})
        elif project == "html-only":
            body = (
                f'<a href="/f/moved-1.0.tar.gz#sha256={"a" * 64}">moved-1.0.tar.gz</a>\n'
                f'<a href="/f/demo-1.0.tar.gz#sha256={"c" * 64}">demo-1.0.tar.gz</a>'
            ).encode()
            self._send(200, body, {"Content-Type": "text/html"})
        elif project == "demo":
            body = json.dumps(
                {"files": [{"filename": "demo-1.0.tar.gz", "hashes": {"sha256": "b" * 64}}]}
            ).encode()
            self._send(200, body, {"Content-Type": "application/vnd.pypi.simple.v1+json"})
        elif project == "broken":
            self._send(500, b"boom", {})
        else:
            self._send(404, b"not found", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def local_index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


class TestLocalIndex:
    """Redirects, HTML pages and every kind of failure, against a real server."""

    def test_json_html_redirect_and_missing_projects(self, local_index: str) -> None:
        """JSON and HTML pages both parse; a redirect is followed; only the asked project's files
        of the asked version count (another project's on the page do not); 404 means no such
        project."""
        client = SimpleIndexClient(proxies={})
        queries = [IndexQuery(local_index, p, "1.0") for p in ("demo", "moved", "nothing")]
        pages = client.files(queries)
        assert pages[queries[0]] == (IndexFile(filename="demo-1.0.tar.gz", sha256="b" * 64),)
        assert pages[queries[1]] == (IndexFile(filename="moved-1.0.tar.gz", sha256="a" * 64),)
        assert pages[queries[2]] is None

    def test_a_server_error_names_the_package_and_index(self, local_index: str) -> None:
        """HTTP 500 twice becomes one sentence with what to do."""
        client = SimpleIndexClient(proxies={})
        with pytest.raises(IndexUnreachableError) as info:
            client.files([IndexQuery(local_index, "broken", "1.0")])
        message = str(info.value)
        assert local_index in message and "broken" in message and "HTTP 500" in message

    def test_an_unreachable_index_is_one_sentence(self) -> None:
        """Nothing listening: the error says which index and package, and what to do."""
        with FreePort() as port:
            index = f"http://127.0.0.1:{port}/simple"
        client = SimpleIndexClient(proxies={}, timeout=5)
        with pytest.raises(IndexUnreachableError, match=r"could not be reached .*six"):
            client.files([IndexQuery(index, "six", "1.0")])

    def test_a_tls_failure_is_a_lock_error(self, local_index: str) -> None:
        """Speaking TLS to a plain HTTP server fails as a LockError, not an ssl traceback."""
        client = SimpleIndexClient(proxies={}, timeout=5)
        index = local_index.replace("http://", "https://")
        with pytest.raises(LockError, match="TLS"):
            client.files([IndexQuery(index, "demo", "1.0")])


class FreePort:
    """A port nothing listens on once the context ends."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
