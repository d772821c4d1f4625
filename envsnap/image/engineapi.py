"""The docker engine's HTTP API over its local Unix socket: the quick questions (version, image
inspect) and a rerun container's lifecycle, where each docker CLI process costs 30-70 ms.

Only engine.py uses it, and only for an engine the CLI would also reach through that socket
(``local_socket``); builds, pushes and pulls stay on the CLI (BuildKit secrets and registry
logins are the CLI's). The standard library's http.client speaks it: the docker SDK would add a
dependency whose import alone (about 0.13 s) is more than the calls it saves.
"""

from __future__ import annotations

import json
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

LineSink = Callable[[str], None]
DEFAULT_SOCKET = "/var/run/docker.sock"
_QUICK_TIMEOUT_S = 120.0
_STREAMS = (1, 2)  # stdout, stderr frames of a non-TTY attach


class ApiError(Exception):
    """The engine answered with an error status; ``message`` is its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def local_socket(env: Mapping[str, str], docker_config: Path | None) -> Path | None:
    """The Unix socket of the engine the docker CLI would reach with ``env``, when that is a
    socket on this machine: no DOCKER_HOST (or a ``unix://`` one), no docker context other than
    the default (DOCKER_CONTEXT, or the config file's ``currentContext``). None otherwise (then
    every call goes through the CLI, which knows contexts, ssh and TLS)."""
    host = env.get("DOCKER_HOST", "").strip()
    if host and not host.startswith("unix://"):
        return None
    if env.get("DOCKER_CONTEXT", "default").strip() not in ("", "default"):
        return None
    if not host and docker_config is not None:
        try:
            current = json.loads(docker_config.read_text(encoding="utf-8")).get("currentContext")
        except FileNotFoundError:
            current = None
        except (OSError, ValueError, AttributeError):
            return None  # unreadable: leave it to the CLI, which reports it
        if current not in (None, "", "default"):
            return None
    path = Path(host.removeprefix("unix://") if host else DEFAULT_SOCKET)
    try:
        return path if stat.S_ISSOCK(path.stat().st_mode) else None
    except OSError:
        return None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def message(self) -> str:
        try:
            data = self.json()
        except ValueError:
            return self.body.decode("utf-8", errors="replace").strip()
        if isinstance(data, dict) and "message" in data:
            return str(data["message"])
        return self.body.decode("utf-8", errors="replace").strip()


class EngineApi:
    """Requests to one engine socket; each request on a connection of its own (the engine's
    calls here are few, and a fresh connection costs well under a millisecond)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        return sock

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        json_body: Any = None,
        content_type: str = "",
        timeout: float | None = _QUICK_TIMEOUT_S,
    ) -> Response:
        """One request; the whole response (``OSError`` when the socket fails).

        HTTP/1.0, so the engine ends each response by closing the connection (no chunked
        bodies to decode): what http.client would do for these calls, without its import."""
        headers = ["Host: docker"]
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers.append(f"Content-Type: {content_type}")
        headers.append(f"Content-Length: {len(body or b'')}")
        target = path + (f"?{urlencode(query)}" if query else "")
        head = f"{method} {target} HTTP/1.0\r\n" + "\r\n".join(headers) + "\r\n\r\n"
        with self._connect(timeout) as sock:
            sock.sendall(head.encode("latin-1") + (body or b""))
            chunks = []
            while chunk := sock.recv(262144):
                chunks.append(chunk)
        return _parse_response(b"".join(chunks))

    def checked(self, method: str, path: str, **kwargs: Any) -> Response:
        """``request``, with an ApiError for any status of 400 and above."""
        response = self.request(method, path, **kwargs)
        if response.status >= 400:
            raise ApiError(response.status, response.message)
        return response

    def attach(self, container: str) -> Attached:
        """The container's output streams (stdout and stderr), attached before it starts."""
        sock = self._connect(_QUICK_TIMEOUT_S)
        try:
            query = urlencode({"stream": "1", "stdout": "1", "stderr": "1"})
            sock.sendall(
                f"POST /containers/{quote(container, safe='')}/attach?{query} HTTP/1.1\r\n"
                "Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ApiError(0, "the engine closed the attach connection")
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
            if status not in (101, 200):
                raise ApiError(status, f"attach refused ({status_line})")
        except BaseException:
            sock.close()
            raise
        return Attached(sock, rest)


class Attached:
    """A hijacked attach connection: multiplexed frames (an 8-byte header: stream, 0, 0, 0 and
    the payload's length) until the container's output closes."""

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        self._sock = sock
        self._buffer = pending

    def pump(self, on_line: LineSink, *, deadline: float | None) -> bool:
        """Feed output lines to ``on_line`` (each stream split into lines on its own) until the
        output closes (True) or the monotonic ``deadline`` passes (False)."""
        partial: dict[int, bytes] = {}
        for stream, payload in self._frames(deadline):
            if stream is None:
                for rest in partial.values():
                    if rest:
                        on_line(_decode(rest))
                return payload == b"eof"
            data = partial.get(stream, b"") + payload
            *lines, partial[stream] = data.split(b"\n")
            for line in lines:
                on_line(_decode(line))
        return True  # not reached: _frames ends with a (None, ...) marker

    def _frames(self, deadline: float | None) -> Iterator[tuple[int | None, bytes]]:
        while True:
            while len(self._buffer) >= 8:
                stream, size = self._buffer[0], struct.unpack(">I", self._buffer[4:8])[0]
                if len(self._buffer) < 8 + size:
                    break
                payload, self._buffer = self._buffer[8 : 8 + size], self._buffer[8 + size :]
                if stream in _STREAMS:
                    yield stream, payload
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    yield None, b"deadline"
                    return
                self._sock.settimeout(left)
            else:
                self._sock.settimeout(None)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue  # the deadline check above ends it
            if not chunk:
                yield None, b"eof"
                return
            self._buffer += chunk

    def close(self) -> None:
        self._sock.close()


def _parse_response(raw: bytes) -> Response:
    head, separator, body = raw.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split()
    if not separator or len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"the engine's answer is not HTTP ({head[:80]!r})")
    return Response(int(parts[1]), body)


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r").decode("utf-8", errors="replace")
