"""A small OCI distribution registry in memory, served on 127.0.0.1 from a thread, for unit
tests of envsnap.registry: blobs, upload sessions, manifests by tag and digest, basic or bearer
(token) authentication with scopes, and faults on request."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

Auth = Literal["none", "basic", "bearer"]
_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>blobs|manifests)/(?P<ref>[^/]+)$")
_UPLOAD = re.compile(r"^/v2/(?P<name>.+?)/blobs/uploads/(?P<session>[^/]*)$")


@dataclass
class FakeRegistry:
    """The registry's state; tests read and alter it directly (a tampered blob, a fault)."""

    auth: Auth = "none"
    users: dict[str, str] = field(default_factory=dict)
    anonymous_pull: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # digest -> body, type
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    fail_all: int | None = None  # every request answers this status
    fail_blobs: int | None = None  # blob GETs answer this status
    html: bool = False  # every request answers an HTML page
    silent_tls: bool = False  # a TLS hello gets no answer at all (instead of a hang-up)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def put_manifest(self, name: str, tag: str, document: dict[str, object]) -> str:
        """Store a manifest (and nothing else) as a push would; returns its digest."""
        body = json.dumps(document).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[digest] = (body, str(document.get("mediaType", "")))
        self.tags[(name, tag)] = digest
        return digest


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        # A TLS handshake (envsnap's HTTPS attempt before plain HTTP on loopback): hang up at
        # once, as a Go registry does, instead of waiting for a request line.
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first == b"\x16" and self.server.state.silent_tls:
            self.connection.settimeout(5)
            with contextlib.suppress(OSError):
                while self.connection.recv(4096):  # until the client gives up
                    pass
        if first in (b"", b"\x16"):
            return
        super().handle()

    # --- plumbing ---

    @property
    def state(self) -> FakeRegistry:
        return self.server.state

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
        self._send(status, body, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # --- authentication ---

    def _authorized(self, name: str, action: str) -> bool:
        """Whether the request may ``action`` (pull/push) on ``name``; answers 401 if not."""
        state = self.state
        given = self.headers.get("Authorization", "")
        if state.auth == "none":
            return True
        if state.auth == "basic":
            if self._basic_user(given) is not None:
                return True
            self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": 'Basic realm="fake"'})
            return False
        if state.anonymous_pull and action == "pull":
            return True
        token = given.removeprefix("Bearer ") if given.startswith("Bearer ") else ""
        if f"repository:{name}:{action}" in state.tokens.get(token, set()):
            return True
        wanted = "pull" if action == "pull" else "pull,push"
        challenge = (
            f'Bearer realm="http://{state.host}/token",service="fake",'
            f'scope="repository:{name}:{wanted}"'
        )
        self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})
        return False

    def _basic_user(self, given: str) -> str | None:
        if not given.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(given[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.state.users.get(user) == password and password else None

    def _token(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        user = self._basic_user(self.headers.get("Authorization", ""))
        granted: set[str] = set()
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            for action in actions.split(","):
                if user is not None or (self.state.anonymous_pull and action == "pull"):
                    granted.add(f"{kind}:{name}:{action}")
        if user is None and not granted:
            self._error(401, "UNAUTHORIZED")
            return
        token = secrets.token_hex(8)
        self.state.tokens[token] = granted
        self._send(200, json.dumps({"token": token}).encode())

    # --- the API ---

    def _dispatch(self) -> None:
        state = self.state
        path = urlsplit(self.path).path
        state.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
        if state.html:
            self._send(200, b"<html><body>Sign in</body></html>", content_type="text/html")
            return
        if state.fail_all is not None:
            self._error(state.fail_all, "UNAVAILABLE")
            return
        if path == "/token":
            self._token()
            return
        if path == "/v2/":
            self._ping()
            return
        upload = _UPLOAD.match(path)
        if upload:
            if self._authorized(upload["name"], "push"):
                self._upload(upload["name"], upload["session"])
            return
        match = _PATH.match(path)
        if not match:
            self._error(404, "NOT_FOUND")
            return
        name, kind, ref = match["name"], match["kind"], match["ref"]
        action = "pull" if self.command in ("GET", "HEAD") else "push"
        if not self._authorized(name, action):
            return
        if kind == "blobs":
            self._blob(ref)
        elif self.command == "PUT":
            self._put_manifest(name, ref)
        else:
            self._get_manifest(name, ref)

    def _ping(self) -> None:
        given = self.headers.get("Authorization", "")
        if self.state.auth == "none" or self._basic_user(given) is not None:
            self._send(200, b"{}")
        elif self.state.auth == "basic":
            self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": 'Basic realm="fake"'})
        elif given.removeprefix("Bearer ") in self.state.tokens:
            self._send(200, b"{}")
        else:
            challenge = f'Bearer realm="http://{self.state.host}/token",service="fake"'
            self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})

    def _upload(self, name: str, session: str) -> None:
        if self.command == "POST":
            self._send(
                202, headers={"Location": f"/v2/{name}/blobs/uploads/{secrets.token_hex(6)}"}
            )
            return
        data = self._body()
        digest = parse_qs(urlsplit(self.path).query).get("digest", [""])[0]
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            self._error(400, "DIGEST_INVALID")
            return
        self.state.blobs[digest] = data
        self._send(201, headers={"Docker-Content-Digest": digest})

    def _blob(self, digest: str) -> None:
        if self.command == "GET" and self.state.fail_blobs is not None:
            self._error(self.state.fail_blobs, "UNAVAILABLE")
            return
        data = self.state.blobs.get(digest)
        if data is None:
            self._error(404, "BLOB_UNKNOWN")
            return
        self._send(200, data, content_type="application/octet-stream")

    def _put_manifest(self, name: str, ref: str) -> None:
        body = self._body()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.state.manifests[digest] = (body, self.headers.get("Content-Type", ""))
        if not ref.startswith("sha256:"):
            self.state.tags[(name, ref)] = digest
        self._send(201, headers={"Docker-Content-Digest": digest})

    def _get_manifest(self, name: str, ref: str) -> None:
        digest = ref if ref.startswith("sha256:") else self.state.tags.get((name, ref), "")
        found = self.state.manifests.get(digest)
        if found is None:
            self._error(404, "MANIFEST_UNKNOWN")
            return
        body, media_type = found
        self._send(200, body, {"Docker-Content-Digest": digest}, content_type=media_type)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeRegistry


@contextmanager
def serve(state: FakeRegistry | None = None) -> Iterator[FakeRegistry]:
    """Serve ``state`` (a fresh registry by default) on a free loopback port."""
    state = state or FakeRegistry()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_bytes(answer: bytes) -> Iterator[int]:
    """A server on a free loopback port that answers every connection with ``answer`` and hangs
    up (not HTTP at all); yields the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
