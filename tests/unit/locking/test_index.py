"""The index client against every way a package index can fail, served for real by a tiny HTTP
server on the loopback: each failure is one sentence naming the index (without credentials) and
the package, exit code 2, and no lock file is written."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.server
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from envsnap import cli
from envsnap.errors import EXIT_ERROR
from envsnap.locking.files import lock_run, write_lock_files
from envsnap.locking.index import SimpleIndexClient, _parse_page, matching_files, shown_url
from envsnap.locking.model import REQUIREMENTS_FILE, IndexFile, IndexQuery, LockError
from envsnap.locking.plan import lock_packages
from envsnap.manifest import Manifest, Package, Python
from envsnap.store import Store, StoredRun
from tests.conftest import sample_manifest
from tests.unit.locking.test_plan import GOLDEN, FakeIndex, mixed_manifest

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]

PROJECTS = ("numpy", "scipy", "six")
SECRETS = ("hunter2", "s3cr3t-token")
DIGEST = "a" * 64


class IndexHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's ``answer``; counts the paths asked."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real indexes answer
    disable_nagle_algorithm = True  # headers and body go out at once, as from a real server

    def do_GET(self) -> None:
        server: FaultServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.paths.append(self.path)
        server.answer(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class FaultServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # sixteen workers connect at once; the default 5 drops SYNs

    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), IndexHandler)
        self.answer = answer
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], FaultServer]]:
    """Start servers answering as told; each is shut down after the test."""
    servers: list[FaultServer] = []

    def start(answer: Answer) -> FaultServer:
        server = FaultServer(answer)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def send(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    content_type: str | None = None,
    **headers: str,
) -> None:
    handler.send_response(status)
    if content_type is not None:
        handler.send_header("Content-Type", content_type)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def page(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A valid PEP 691 page for whichever project was asked."""
    project = handler.path.rstrip("/").rsplit("/", 1)[-1]
    files = [{"filename": f"{project}-1.0.tar.gz", "hashes": {"sha256": DIGEST}}]
    body = json.dumps({"meta": {"api-version": "1.1"}, "files": files}).encode()
    send(handler, 200, body, "application/vnd.pypi.simple.v1+json")


def status(code: int) -> Answer:
    return lambda h: send(h, code, b"<html>error</html>", "text/html")


def ok(body: bytes, content_type: str | None) -> Answer:
    return lambda h: send(h, 200, body, content_type)


def redirect(location: Callable[[str], str]) -> Answer:
    return lambda h: send(h, 302, Location=location(h.path))


def chain(path: str) -> str:
    """Every answer sends the client one hop further."""
    match = re.search(r"/hop/(\d+)/$", path)
    return f"/hop/{int(match[1]) + 1 if match else 0}/"


def ping_pong(path: str) -> str:
    return "/b/" if path == "/a/" else "/a/"


LOGIN_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
    b'<form method="post" action="/login"><input name="user">'
    b'<input type="password" name="password"><button>Sign in</button></form>'
    b'<a href="/forgot">Forgot your password?</a></body></html>'
)


def login(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A proxy that sends every request to its sign-in page."""
    if handler.path == "/login":
        send(handler, 200, LOGIN_PAGE, "text/html; charset=utf-8")
    else:
        send(handler, 302, Location="/login")


def gzip_answer(body: bytes) -> Answer:
    return lambda h: send(h, 200, body, "text/html", Content_Encoding="gzip")


def hang_up(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Read the request, answer nothing, close."""
    handler.close_connection = True


def not_http(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
    handler.close_connection = True


GARBAGE = bytes(range(256)) * 8
HALF_A_GZIP = gzip.compress(GARBAGE)[:200]

# Each fault, what the server does, and what the sentence must say.
FAULTS: list[tuple[str, Answer, str]] = [
    # every project answered with an error status
    ("http-400", status(400), r"answered HTTP 400 when asked for numpy"),
    ("http-401", status(401), r"refused to list numpy \(HTTP 401\)"),
    ("http-403", status(403), r"refused to list numpy \(HTTP 403\)"),
    ("http-405", status(405), r"answered HTTP 405 when asked for numpy"),
    ("http-407", status(407), r"proxy between here and .* asked for credentials .*numpy"),
    ("http-429", status(429), r"answered HTTP 429 when asked for numpy"),
    ("http-500", status(500), r"answered HTTP 500 when asked for numpy"),
    ("http-502", status(502), r"answered HTTP 502 when asked for numpy"),
    ("http-503", status(503), r"answered HTTP 503 when asked for numpy"),
    # a 200 page that is not a simple-API page
    (
        "html-not-an-index",
        ok(b"<html><body><h1>Welcome</h1><a href='/about'>About us</a></body></html>", "text/html"),
        r"page for numpy that is not a package index page \(none of its links is a package file",
    ),
    ("proxy-login-page", login, r"not a package index page \(it is a sign-in page"),
    ("html-parser-raises", ok(b"<html><![bogus[ x ]]>", "text/html"), r"HTML parser cannot"),
    ("html-empty-body", ok(b"", "text/html"), r"not a package index page \(it is not HTML\)"),
    ("html-not-utf8", ok(b"<html>\xff\xfe</html>", "text/html"), r"not text in its encoding"),
    ("garbage-as-html", ok(GARBAGE, "text/html"), r"it is binary data, not HTML"),
    ("garbage-untyped", ok(GARBAGE, None), r"it is binary data, not HTML"),
    ("garbage-as-json", ok(GARBAGE, "application/json"), r"it is not valid JSON"),
    ("json-error-body", ok(b'{"message": "ok"}', "application/json"), r"has no list of files"),
    ("json-a-list", ok(b"[1, 2]", "application/json"), r"has no list of files"),
    ("json-names-no-file", ok(b'{"files": ["x.whl"]}', "application/json"), r"no file name"),
    (
        "json-bad-hashes",
        ok(
            b'{"files": [{"filename": "numpy-1.0.whl", "hashes": "sha256=00"}]}', "application/json"
        ),
        r"malformed hashes",
    ),
    (
        "json-api-v2",
        ok(b'{"meta": {"api-version": "2.0"}, "files": []}', "application/json"),
        r"simple API version other than 1\.x",
    ),
    ("json-nested-deeply", ok(b"[" * 200_000, "application/json"), r"it is not valid JSON"),
    ("plain-text", ok(b"hello", "text/plain"), r"answered with 'text/plain' for numpy"),
    ("an-image", ok(b"\x89PNG\r\n\x1a\n", "image/png"), r"answered with 'image/png' for numpy"),
    ("gzip-corrupt", gzip_answer(b"not gzip at all"), r"corrupt compressed page for numpy"),
    (
        "gzip-truncated",
        gzip_answer(HALF_A_GZIP),
        r"corrupt compressed page for numpy",
    ),
    # redirects
    ("redirect-to-itself", redirect(lambda path: path), r"redirected the request .* in a loop"),
    ("redirect-ping-pong", redirect(ping_pong), r"redirected the request for numpy in a loop"),
    ("redirect-chain", redirect(chain), r"redirected the request for numpy more than 5 times"),
    ("redirect-to-ftp", redirect(lambda _: "ftp://127.0.0.1/x"), r"which is not an http\(s\)"),
    ("redirect-malformed", redirect(lambda _: "http://[::1/x"), r"to a malformed URL"),
    ("redirect-not-ascii", redirect(lambda _: "/caf\xe9/"), r"led to a URL that cannot be"),
    # the connection itself
    ("hang-up", hang_up, r"could not be reached .*closed the connection without answering"),
    ("not-http", not_http, r"could not be reached .*\(the answer was not valid HTTP\)"),
]


def index_with_secrets(port: int) -> str:
    """An index URL carrying a password and a token, which no message may repeat."""
    return f"http://user:{SECRETS[0]}@127.0.0.1:{port}/simple?token={SECRETS[1]}"


def queries(index: str, projects: tuple[str, ...] = PROJECTS) -> list[IndexQuery]:
    return [IndexQuery(index, project, "1.0") for project in projects]


def assert_one_sentence(error: LockError, *, index: str, project: str = "numpy") -> str:
    """The error is one sentence with exit code 2, naming the index (credentials stripped) and
    the package."""
    text = str(error)
    assert error.exit_code == EXIT_ERROR == 2
    assert "\n" not in text and text.endswith("."), text
    assert re.search(r"\.\s", text[:-1]) is None, f"more than one sentence: {text}"
    assert shown_url(index) in text, text
    assert project in text, text
    for secret in (*SECRETS, "user:"):
        assert secret not in text, text
    return text


class TestEveryFaultIsOneSentence:
    """Whatever the index does wrong, the client raises one LockError sentence."""

    @pytest.mark.parametrize(
        ("answer", "expected"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
    )
    def test_fault(
        self, serve: Callable[[Answer], FaultServer], answer: Answer, expected: str
    ) -> None:
        """The fault is named, with the index and the first package asked."""
        server = serve(answer)
        index = index_with_secrets(server.port)
        client = SimpleIndexClient(proxies={}, timeout=5)
        with pytest.raises(LockError) as info:
            client.files(queries(index))
        text = assert_one_sentence(info.value, index=index)
        assert re.search(expected, text), text

    def test_a_body_that_inflates_past_the_limit_is_refused(
        self, serve: Callable[[Answer], FaultServer], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A gzip bomb is stopped at the page size limit, not inflated whole."""
        monkeypatch.setattr("envsnap.locking.index._MAX_BODY_BYTES", 1024 * 1024)
        server = serve(gzip_answer(gzip.compress(b"\0" * (4 * 1024 * 1024))))
        index = index_with_secrets(server.port)
        with pytest.raises(LockError) as info:
            SimpleIndexClient(proxies={}).files(queries(index))
        assert "sent more than 1048576 bytes for numpy" in assert_one_sentence(
            info.value, index=index
        )


class NoRoute(SimpleIndexClient):
    """A client whose every connection fails as the operating system would fail it."""

    def __init__(self, error: OSError, **kwargs: Any) -> None:
        super().__init__(proxies={}, **kwargs)
        self.error = error

    def _open_socket(self, *args: Any, **kwargs: Any) -> socket.socket:
        raise self.error


def no_such_host(*args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def no_dns(*args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


def failing_with(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class TestTheNetwork:
    """Refused, unreachable, unresolvable, offline and silent indexes."""

    def test_connection_refused(self) -> None:
        """Nothing listens on the port: refused, said in words."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        index = index_with_secrets(port)
        with pytest.raises(LockError) as info:
            SimpleIndexClient(proxies={}).files(queries(index))
        assert "could not be reached while asking for numpy (connection refused)" in (
            assert_one_sentence(info.value, index=index)
        )

    def test_timeout(self) -> None:
        """A server that accepts and never answers is given up on after the timeout."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)  # the kernel completes connections nobody accepts
            index = index_with_secrets(sock.getsockname()[1])
            started = time.monotonic()
            with pytest.raises(LockError) as info:
                SimpleIndexClient(proxies={}, timeout=0.3).files(queries(index))
        assert time.monotonic() - started < 10
        assert "(no answer within 0.3 s)" in assert_one_sentence(info.value, index=index)

    def test_tls_to_a_plain_http_server(self, serve: Callable[[Answer], FaultServer]) -> None:
        """Speaking TLS to a server that does not is a TLS failure, in one sentence."""
        server = serve(page)
        index = index_with_secrets(server.port).replace("http://", "https://")
        with pytest.raises(LockError) as info:
            SimpleIndexClient(proxies={}, timeout=5).files(queries(index))
        assert "TLS failed" in assert_one_sentence(info.value, index=index)

    @pytest.mark.parametrize(
        ("client", "expected"),
        [
            (SimpleIndexClient(proxies={}, getaddrinfo=no_such_host), "did not resolve"),
            (SimpleIndexClient(proxies={}, getaddrinfo=no_dns), "did not resolve"),
            (NoRoute(failing_with(errno.ENETUNREACH)), "(network is unreachable)"),
            (NoRoute(failing_with(errno.EHOSTUNREACH)), "(no route to host)"),
            (NoRoute(failing_with(errno.ECONNRESET)), "(connection reset by peer)"),
        ],
        ids=["unknown-host", "no-dns", "no-network", "host-unreachable", "reset"],
    )
    def test_unreachable(self, client: SimpleIndexClient, expected: str) -> None:
        """Each way of not getting through is named, with the index and the package."""
        index = "https://user:hunter2@index.example.test/simple?token=s3cr3t-token"
        with pytest.raises(LockError) as info:
            client.files(queries(index))
        assert expected in assert_one_sentence(info.value, index=index)

    def test_a_host_is_resolved_once_for_all_workers(
        self, serve: Callable[[Answer], FaultServer]
    ) -> None:
        """Forty projects on sixteen workers ask a slow resolver once, not sixteen times."""
        server = serve(page)
        calls: list[str] = []

        def slow_resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
            calls.append(host)
            time.sleep(0.05)
            return socket.getaddrinfo("127.0.0.1", port, *args, **kwargs)

        client = SimpleIndexClient(proxies={}, getaddrinfo=slow_resolver)
        projects = tuple(f"p{i}" for i in range(40))
        pages = client.files(queries(f"http://index.example.test:{server.port}/simple", projects))
        assert calls == ["index.example.test"]
        assert client.lookups == 1
        assert all(
            files == (IndexFile(f"{q.project}-1.0.tar.gz", DIGEST),) for q, files in pages.items()
        )

    def test_an_unresolvable_host_is_asked_once(self) -> None:
        """A name that does not resolve fails every worker from one lookup."""
        calls: list[str] = []

        def failing(host: str, *args: Any, **kwargs: Any) -> list[Any]:
            calls.append(host)
            return no_such_host()

        client = SimpleIndexClient(proxies={}, getaddrinfo=failing)
        with pytest.raises(LockError, match="did not resolve"):
            client.files(
                queries("https://index.example.test/simple", tuple(f"p{i}" for i in range(40)))
            )
        assert calls == ["index.example.test"]


class TestManyPackages:
    """With more packages than workers, the first failure is what the user reads."""

    def test_every_package_failing_is_one_lock_error_not_a_cancelled_future(
        self, serve: Callable[[Answer], FaultServer]
    ) -> None:
        """Forty failing projects on two workers: the first project's sentence, nothing else."""
        server = serve(status(500))
        index = f"http://127.0.0.1:{server.port}/simple"
        projects = tuple(f"p{i:02d}" for i in range(40))
        with pytest.raises(LockError) as info:
            SimpleIndexClient(proxies={}, max_workers=2).files(queries(index, projects))
        assert_one_sentence(info.value, index=index, project="p00")

    def test_queued_requests_are_dropped_after_a_failure(
        self, serve: Callable[[Answer], FaultServer]
    ) -> None:
        """Once a project fails, the projects still queued are never asked."""

        def slow_failure(handler: http.server.BaseHTTPRequestHandler) -> None:
            time.sleep(0.02)
            send(handler, 500)

        server = serve(slow_failure)
        index = f"http://127.0.0.1:{server.port}/simple"
        projects = tuple(f"p{i:02d}" for i in range(40))
        with pytest.raises(LockError):
            SimpleIndexClient(proxies={}, max_workers=2).files(queries(index, projects))
        asked = {path.rstrip("/").rsplit("/", 1)[-1] for path in server.paths}
        assert 1 <= len(asked) < len(projects)

    def test_some_good_pages_and_one_failure_still_fail(
        self, serve: Callable[[Answer], FaultServer]
    ) -> None:
        """Good pages before a failing one do not hide it."""

        def one_bad(handler: http.server.BaseHTTPRequestHandler) -> None:
            if handler.path.endswith("/p17/"):
                send(handler, 503)
            else:
                page(handler)

        server = serve(one_bad)
        index = f"http://127.0.0.1:{server.port}/simple"
        projects = tuple(f"p{i:02d}" for i in range(40))
        with pytest.raises(LockError) as info:
            SimpleIndexClient(proxies={}, max_workers=4).files(queries(index, projects))
        assert "answered HTTP 503 when asked for p17" in str(info.value)

    def test_an_unexpected_failure_in_a_worker_is_still_a_sentence(self) -> None:
        """A bug's exception in a worker reaches the user as a LockError, its cause kept."""

        class Broken(SimpleIndexClient):
            def fetch(
                self, index_url: str, project: str, versions: Sequence[str] = ()
            ) -> tuple[IndexFile, ...] | None:
                raise RecursionError("maximum recursion depth exceeded")

        index = "https://pypi.example.test/simple"
        with pytest.raises(LockError) as info:
            Broken(proxies={}).files(queries(index))
        text = assert_one_sentence(info.value, index=index)
        assert "failed unexpectedly (RecursionError)" in text
        assert isinstance(info.value.__cause__, RecursionError)


def index_manifest(index: str) -> Manifest:
    packages = tuple(Package(name=name, version="1.0") for name in PROJECTS)
    return sample_manifest(python=Python(version="3.11.7", index_url=index, packages=packages))


class TestNothingHalfWritten:
    """A failed lock leaves the run directory as it was."""

    def test_a_failing_index_writes_no_lock_file(
        self, serve: Callable[[Answer], FaultServer], tmp_path: Path
    ) -> None:
        """lock_run raises before anything is written."""
        server = serve(status(500))
        manifest = index_manifest(f"http://127.0.0.1:{server.port}/simple")
        run = StoredRun(run_id=manifest.run_id, directory=tmp_path, manifest=manifest, result=None)
        with pytest.raises(LockError):
            lock_run(run, Store(tmp_path), source=SimpleIndexClient(proxies={}))
        assert list(tmp_path.iterdir()) == []

    def test_a_write_failing_midway_leaves_the_previous_lock(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The disk filling up on the third of five files keeps the old file as it was and
        leaves neither a new file nor a temporary one."""
        result = lock_packages(mixed_manifest(), FakeIndex())
        assert len(result.file_texts()) == 4
        (tmp_path / REQUIREMENTS_FILE).write_text("old\n")
        real_fsync = os.fsync
        calls: list[int] = []

        def disk_full_on_the_third(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", disk_full_on_the_third)
        with pytest.raises(LockError, match="No space left on device"):
            write_lock_files(Store(tmp_path), tmp_path, result)
        assert sorted(p.name for p in tmp_path.iterdir()) == [REQUIREMENTS_FILE]
        assert (tmp_path / REQUIREMENTS_FILE).read_text() == "old\n"


class TestCommandLine:
    """`envsnap lock` against a failing index: one line on stderr, exit 2, no traceback."""

    @pytest.mark.parametrize(
        "answer",
        [status(500), status(404), login, redirect(lambda path: path), ok(GARBAGE, "text/html")],
        ids=[
            "http-500",
            "http-404-for-every-project",
            "proxy-login-page",
            "redirect-loop",
            "garbage",
        ],
    )
    def test_envsnap_lock_prints_one_line_and_exits_2(
        self,
        serve: Callable[[Answer], FaultServer],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        answer: Answer,
    ) -> None:
        """The error line names the index and the package; nothing is written."""
        for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ENVSNAP_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.chdir(tmp_path)
        server = serve(answer)
        index = f"http://127.0.0.1:{server.port}/simple"
        store = Store(tmp_path / "store")
        sealed, run_dir = store.write_run(index_manifest(index))
        before = sorted(p.name for p in run_dir.iterdir())
        with pytest.raises(SystemExit) as info:
            cli.main(["lock", sealed.run_id, "--store", str(store.root)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("envsnap: error: "), err
        assert "Traceback" not in err
        assert f"{index} " in err and "numpy" in err
        assert sorted(p.name for p in run_dir.iterdir()) == before


class TestShownUrl:
    """Index URLs in messages carry neither user-info nor a query string."""

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("https://pypi.org/simple", "https://pypi.org/simple"),
            ("https://u:p@host.example:8443/simple/", "https://host.example:8443/simple/"),
            ("https://token@host.example/simple?key=abc#frag", "https://host.example/simple"),
            ("http://[::1]:8080/simple", "http://[::1]:8080/simple"),
            ("http://u:p@[::1/simple?x=1", "http://[::1/simple"),
        ],
    )
    def test_shown(self, url: str, shown: str) -> None:
        """Credentials and the query go; scheme, host, port and path stay."""
        assert shown_url(url) == shown


# --- reading only the versions asked -------------------------------------------------------------

# File names of one project in every spelling a page may use, with the versions a lock may ask;
# the quick reading of a page must find exactly the files a whole-page reading finds.
TRICKY_NAMES = (
    "foo_bar-2.0-py3-none-any.whl",
    "foo_bar-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl",
    "Foo.Bar-2.0.tar.gz",
    "foo-bar-v2.0.zip",
    "FOO_BAR-02.00-py2.py3-none-any.whl",
    "foo_bar-0!2.0-py3-none-any.whl",
    "foo_bar-1!2.0-py3-none-any.whl",
    "foo_bar-2.0.1-py3-none-any.whl",
    "foo_bar-2.0rc1-py3-none-any.whl",
    "foo_bar-2.0-1-py3-none-any.whl",
    "foo_bar-12.0-py3-none-any.whl",
    "foo_bar-2.0+cpu-py3-none-any.whl",
    "foo_bar-2.0+CPU-cp39-cp39-win_amd64.whl",
    "foo_bar_baz-2.0-py3-none-any.whl",
    "foo-bar-baz-2.0.tar.gz",
    "foo_bar-2.0.post1.tar.gz",
    "foo_bar-2.0.tar.gz.asc",
)
TRICKY_VERSIONS = ("2.0", "2.0.0", "2.0.1", "2.0rc1", "2.0.post1", "2.0+cpu", "1!2.0", "3.0")


def file_object(name: str) -> dict[str, Any]:
    """A PEP 691 file as PyPI writes it, core-metadata (a nested object) before the name."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {
        "core-metadata": {"sha256": digest[::-1]},
        "filename": name,
        "hashes": {"sha256": digest.upper() if "rc" in name else digest},
        "requires-python": ">=3.8, !=3.9.*",
        "url": f"https://files.example.test/{name}",
        "yanked": "broken {build}" if name.endswith(".zip") else False,
    }


def pep691(names: Sequence[str], style: str) -> bytes:
    """A project page in one of the layouts indexes write: PyPI's (sorted keys, spaced),
    compact, indented, or the meta and files swapped with keys in another order."""
    files = [file_object(name) for name in names]
    page: dict[str, Any] = {"meta": {"api-version": "1.1"}, "name": "foo-bar", "files": files}
    if style == "pypi":
        return json.dumps(page, sort_keys=True).encode()
    if style == "compact":
        return json.dumps(page, separators=(",", ":")).encode()
    if style == "indented":
        return json.dumps(page, indent=2, sort_keys=True).encode()
    reordered = {"files": [dict(reversed(f.items())) for f in files], "meta": page["meta"]}
    return json.dumps(reordered).encode()


def whole_page_reading(body: bytes, project: str, version: str) -> tuple[IndexFile, ...]:
    """What a lock took from a page before: every file parsed, then the version's kept."""
    everything = _parse_page(body, "application/vnd.pypi.simple.v1+json", "u", "i", project)
    return tuple(matching_files(everything, project, version))


class TestReadingOnlyTheVersionsAsked:
    """A page read for some versions gives exactly the files a whole-page reading gives."""

    @pytest.mark.parametrize("style", ["pypi", "compact", "indented", "reordered"])
    @pytest.mark.parametrize("version", TRICKY_VERSIONS)
    def test_every_spelling_of_the_version_is_found(self, style: str, version: str) -> None:
        """Equal versions however spelled; never another version, project or kind of file."""
        body = pep691(TRICKY_NAMES, style)
        quick = _parse_page(body, "application/json", "u", "i", "foo-bar", (version,))
        assert quick == whole_page_reading(body, "foo-bar", version)

    def test_the_spellings_are_really_there(self) -> None:
        """The page above holds seven files of 2.0 in six spellings (one with a build tag) and
        one of 1!2.0, so the tests above mean something."""
        body = pep691(TRICKY_NAMES, "pypi")
        assert len(whole_page_reading(body, "foo-bar", "2.0")) == 7
        assert len(whole_page_reading(body, "foo-bar", "1!2.0")) == 1

    def test_several_versions_at_once(self) -> None:
        """Two versions asked of one page give the files of both, in the page's order."""
        body = pep691(TRICKY_NAMES, "pypi")
        both = _parse_page(body, "application/json", "u", "i", "foo-bar", ("2.0.1", "2.0"))
        wanted = set(whole_page_reading(body, "foo-bar", "2.0")) | set(
            whole_page_reading(body, "foo-bar", "2.0.1")
        )
        everything = _parse_page(body, "application/json", "u", "i", "foo-bar")
        assert both == tuple(f for f in everything if f in wanted)

    @pytest.mark.parametrize(
        "name",
        ["foo_bar-2.0-py3-none-any\u00e9.whl", "foo_bar-2.0-py3-none-any\\.whl"],
        ids=["unicode-escape", "backslash"],
    )
    def test_escaped_file_names_read_the_whole_page(self, name: str) -> None:
        """A name with an escape in the JSON text is found as a whole-page reading finds it."""
        body = pep691((*TRICKY_NAMES, name), "pypi")  # json.dumps escapes both
        assert b"\\" in body
        quick = _parse_page(body, "application/json", "u", "i", "foo-bar", ("2.0",))
        assert quick == whole_page_reading(body, "foo-bar", "2.0")
        assert any(f.filename == name for f in quick)

    def test_a_malformed_file_of_the_version_is_the_same_sentence(self) -> None:
        """Hashes that are not an object fail as before, naming the index and project."""
        body = b'{"files": [{"filename": "numpy-1.0.tar.gz", "hashes": "sha256=00"}]}'
        with pytest.raises(LockError, match="a file in its JSON has malformed hashes"):
            _parse_page(body, "application/json", "u", "https://i.example.test", "numpy", ("1.0",))

    def test_an_api_version_2_page_is_refused_even_with_the_version(self) -> None:
        """The version's files are not taken from a page of an API this client cannot read."""
        body = pep691(TRICKY_NAMES, "pypi").replace(b'"1.1"', b'"2.0"')
        with pytest.raises(LockError, match=r"simple API version other than 1\.x"):
            _parse_page(body, "application/json", "u", "i", "foo-bar", ("2.0",))


# --- a whole lock from served indexes ------------------------------------------------------------

HOSTS = ("a.example.test", "b.example.test")


def served_pages() -> dict[tuple[str, str], tuple[bytes, tuple[IndexFile, ...]]]:
    """Sixty projects on two indexes, each page in one of the layouts, with its files."""
    pages: dict[tuple[str, str], tuple[bytes, tuple[IndexFile, ...]]] = {}
    styles = ("pypi", "compact", "indented", "reordered")
    for i in range(60):
        project = f"foo-bar{i:02d}" if i % 3 else f"foo-bar-{i:02d}"  # a name ending in digits
        index = f"http://{HOSTS[i % 2]}/simple"
        names = [n.replace("foo_bar", project.replace("-", "_")) for n in TRICKY_NAMES]
        names = [n.replace("Foo.Bar", project.title().replace("-", ".")) for n in names]
        names = [n.replace("foo-bar", project) for n in names]
        body = pep691(names, styles[i % len(styles)])
        everything = _parse_page(body, "application/json", "u", index, project)
        pages[(index, project)] = (body, everything)
    return pages


def served_manifest(pages: Mapping[tuple[str, str], object]) -> Manifest:
    packages = tuple(
        Package(name=project, version=TRICKY_VERSIONS[i % 7], index_url=index)
        for i, (index, project) in enumerate(sorted(pages))
    )
    return sample_manifest(
        python=Python(version="3.11.7", index_url=f"http://{HOSTS[0]}/simple", packages=packages)
    )


class CountingServer(FaultServer):
    """Counts the connections it accepts, to show they are kept alive and reused."""

    connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.lock:
            self.connections += 1
        return True


class TestALockFromServedIndexes:
    """A lock of many packages from two indexes over HTTP: the same bytes as a whole-page
    reading (and as before, in the golden file), each host resolved once, connections reused."""

    def test_same_bytes_cold_and_warm_one_lookup_per_host(self, tmp_path: Path) -> None:
        """Cold, then warm from the cache with the indexes failing: both equal the reference."""
        pages = served_pages()
        manifest = served_manifest(pages)

        def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
            host = handler.headers["Host"]
            project = handler.path.rstrip("/").rsplit("/", 1)[-1]
            body, _files = pages[(f"http://{host}/simple", project)]
            send(handler, 200, body, "application/vnd.pypi.simple.v1+json")

        servers = {}
        for host in HOSTS:
            server = CountingServer(answer)
            threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
            servers[host] = server
        lookups: list[str] = []

        def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
            lookups.append(host)
            time.sleep(0.02)  # slow, as the reported resolver was
            return socket.getaddrinfo("127.0.0.1", servers[host].port, *args, **kwargs)

        try:
            cold = lock_packages(
                manifest, SimpleIndexClient(tmp_path, proxies={}, getaddrinfo=resolver)
            )
            assert sorted(lookups) == sorted(HOSTS)
            for server in servers.values():
                assert len(server.paths) == 30
                assert server.connections <= 16 < len(server.paths) * 2
                server.answer = status(500)
            warm = lock_packages(
                manifest, SimpleIndexClient(tmp_path, proxies={}, getaddrinfo=resolver)
            )
            assert all(len(server.paths) == 30 for server in servers.values())
        finally:
            for server in servers.values():
                server.shutdown()
                server.server_close()

        whole = FakeIndex({key: files for key, (_body, files) in pages.items()})
        assert cold == warm == lock_packages(manifest, whole)
        assert cold.locked_index == 60 - len(cold.unlockable) > 40
        golden = GOLDEN / "served-indexes.requirements.lock.txt"
        if os.environ.get("ENVSNAP_UPDATE_GOLDEN") == "1":
            golden.write_text(cold.requirements)
        assert cold.requirements == golden.read_text()
