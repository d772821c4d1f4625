"""The package index client: the only module that talks to package indexes (PEP 691 JSON,
PEP 503 HTML), over keep-alive connections with an on-disk cache of the versions asked.

About 850 lines: the client, its cache and the page parsers (a whole-page one per format and
a quick one for the versions asked) share the fault handling that turns every way an index can
misbehave into one sentence, which splitting would scatter. The parsers are the first thing to
move into a module of their own if it grows further.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from envsnap.capturing.redact import strip_url_credentials
from envsnap.distnames import (
    SDIST_SUFFIXES,
    VersionKey,
    file_version,
    normalize_name,
    version_key,
)
from envsnap.locking.model import IndexFile, IndexQuery, IndexUnreachableError, LockError

_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
)
_MAX_REDIRECTS = 5
_MAX_BODY_BYTES = 256 * 1024 * 1024
_CACHE_SCHEMA = "envsnap.index-cache/2"


# --- the index client --------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """An index URL as an error message may show it: no user-info, no query string (either may
    carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return strip_url_credentials(url).split("?", 1)[0].split("#", 1)[0]
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Resolution:
    """One host's addresses, looked up by the first worker that needs them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = False
        self.addresses: list[tuple[Any, ...]] = []
        self.error: tuple[int, str] | None = None


class SimpleIndexClient:
    """Reads project pages of PEP 691 (JSON) or PEP 503 (HTML) indexes over keep-alive
    connections, several projects at once, and answers with the files of the versions asked.

    The optional on-disk cache keeps, per index and project, the files of each version asked
    before, so a warm lock asks no index and reads a few lines per package; a version not in
    the cache is fetched. Each host name is resolved once per batch, however many workers
    connect to it.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        timeout: float = 30.0,
        max_workers: int = 16,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Mapping[str, str] | None = None,
        getaddrinfo: Callable[..., Sequence[tuple[Any, ...]]] = socket.getaddrinfo,
    ) -> None:
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.max_workers = max_workers
        # One context for every connection: building one loads the CA bundle, which is what
        # makes urllib (a context per request) slow here. Built at the first connection, so a
        # lock answered from the cache never loads it.
        self._ssl = ssl_context
        if proxies is None:
            import urllib.request

            proxies = urllib.request.getproxies()
        self._proxies = dict(proxies)
        self._getaddrinfo = getaddrinfo
        self._resolved: dict[tuple[str, int], _Resolution] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []
        self.fetches = 0  # requests made to an index, for tests and benchmarks
        self.lookups = 0  # host names resolved, for tests

    def files(
        self, queries: Sequence[IndexQuery]
    ) -> dict[IndexQuery, tuple[IndexFile, ...] | None]:
        """The files of each query's version (PEP 440 equal) on its index, in the page's
        order; None where the index has no such project."""
        by_page: dict[tuple[str, str], list[str]] = {}
        for query in queries:
            wanted = by_page.setdefault((query.index_url.rstrip("/"), query.project), [])
            if query.version not in wanted:
                wanted.append(query.version)
        caches = {index_url: self._read_cache(index_url) for index_url in {i for i, _ in by_page}}
        pages: dict[tuple[str, str], tuple[IndexFile, ...] | None] = {}
        missing: list[tuple[str, str, tuple[str, ...]]] = []
        for (index_url, project), versions in by_page.items():
            cached = _cached_files(caches[index_url], project, versions)
            if cached is not None:
                pages[(index_url, project)] = cached
            else:
                missing.append((index_url, project, tuple(versions)))
        if missing:
            fetched = self._fetch_all(missing)
            pages.update(fetched)
            self._write_cache(missing, fetched)
        answers: dict[IndexQuery, tuple[IndexFile, ...] | None] = {}
        for query in queries:
            files = pages[(query.index_url.rstrip("/"), query.project)]
            # A page read for several versions answers each query with its own files.
            answers[query] = (
                files
                if files is None
                else tuple(matching_files(files, query.project, query.version))
            )
        return answers

    def _fetch_all(
        self, keys: Sequence[tuple[str, str, tuple[str, ...]]]
    ) -> dict[tuple[str, str], tuple[IndexFile, ...] | None]:
        """Fetch every page; the first failure, in the order asked, is raised once the requests
        already running have ended, and the queued ones are dropped, never read."""
        workers = max(1, min(self.max_workers, len(keys)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="envsnap-index")
        try:
            futures = [(key[:2], pool.submit(self._fetch_one, *key)) for key in keys]
            results: dict[tuple[str, str], tuple[IndexFile, ...] | None] = {}
            for key, future in futures:
                results[key] = future.result()
            return results
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._close_connections()
            with self._lock:
                self._resolved.clear()

    def _fetch_one(
        self, index_url: str, project: str, versions: tuple[str, ...]
    ) -> tuple[IndexFile, ...] | None:
        try:
            return self.fetch(index_url, project, versions)
        except LockError:
            raise
        except Exception as exc:  # whatever a worker meets must reach the user as a sentence
            raise IndexUnreachableError(
                f"asking {shown_url(index_url)} for {project} failed unexpectedly "
                f"({type(exc).__name__})",
                hint="run envsnap lock again with --debug and report the traceback",
            ) from exc

    def fetch(
        self, index_url: str, project: str, versions: Sequence[str] = ()
    ) -> tuple[IndexFile, ...] | None:
        """One project page from one index: the files of ``versions`` (PEP 440 equal), or of
        every version when none is given; None when the index has no such project."""
        with self._lock:
            self.fetches += 1
        shown = shown_url(index_url)
        url = f"{index_url.rstrip('/')}/{project}/"
        seen = {url}
        for _hop in range(_MAX_REDIRECTS + 1):
            status, headers, body = self._get(url, index_url, project)
            if status in (301, 302, 303, 307, 308) and headers.get("location"):
                try:
                    url = urljoin(url, headers["location"])
                except ValueError:
                    raise IndexUnreachableError(
                        f"{shown} redirected the request for {project} to a malformed URL",
                        hint="check that the index URL is right",
                    ) from None
                if url in seen:
                    raise IndexUnreachableError(
                        f"{shown} redirected the request for {project} in a loop",
                        hint="check that the index URL is right, or ask its administrator",
                    )
                seen.add(url)
                continue
            if status in (404, 410):
                return None
            if status in (401, 403):
                raise LockError(
                    f"{shown} refused to list {project} (HTTP {status})",
                    hint="envsnap locks only from indexes readable without credentials",
                )
            if status == 407:
                raise IndexUnreachableError(
                    f"the proxy between here and {shown} asked for credentials when asked for "
                    f"{project} (HTTP 407)",
                    hint="put the proxy's credentials in HTTP_PROXY/HTTPS_PROXY, or lock where "
                    "the index is reachable directly",
                )
            if status != 200:
                raise IndexUnreachableError(
                    f"{shown} answered HTTP {status} when asked for {project}",
                    hint="try again later, or check that the index URL is right",
                )
            content_type = headers.get("content-type", "")
            return _parse_page(body, content_type, url, index_url, project, versions)
        raise IndexUnreachableError(
            f"{shown} redirected the request for {project} more than {_MAX_REDIRECTS} times",
            hint="check that the index URL is right",
        )

    def _get(self, url: str, index_url: str, project: str) -> tuple[int, dict[str, str], bytes]:
        shown = shown_url(index_url)
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port, parts = None, None, urlsplit("")
        if parts.scheme not in ("https", "http") or not host:
            raise LockError(
                f"{shown} led to {shown_url(url)!r} when asked for {project}, which is not an "
                "http(s) URL",
                hint="lock from an http(s) index",
            )
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        headers = {"Accept": _ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "envsnap-lock"}
        last: BaseException | None = None
        for attempt in range(2):  # a kept-alive connection the server closed gets one retry
            conn = self._connection(parts.scheme, host, port)
            try:
                target = path if not getattr(conn, "_envsnap_http_proxy", False) else url
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                body = response.read(_MAX_BODY_BYTES + 1)
                status = response.status
                got = {k.lower(): v for k, v in response.getheaders()}
            except ssl.SSLCertVerificationError as exc:
                self._drop_connection(parts.scheme, host, port)
                raise IndexUnreachableError(
                    f"the TLS certificate of {shown} could not be verified while asking "
                    f"for {project} ({exc.verify_message or exc.reason})",
                    hint="if a proxy intercepts TLS, point SSL_CERT_FILE at its CA bundle",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection(parts.scheme, host, port)
                last = exc
                if attempt == 0 and not isinstance(exc, socket.gaierror | TimeoutError):
                    continue
                break
            except ValueError:  # a redirect to a path http.client will not send (not ASCII)
                self._drop_connection(parts.scheme, host, port)
                raise IndexUnreachableError(
                    f"{shown} led to a URL that cannot be requested when asked for {project}",
                    hint="check that the index URL is right",
                ) from None
            if status >= 500 and attempt == 0:
                continue
            if len(body) > _MAX_BODY_BYTES:
                raise LockError(
                    f"{shown} sent more than {_MAX_BODY_BYTES} bytes for {project}",
                    hint="check that the index URL is right",
                )
            if got.get("content-encoding", "").lower() == "gzip":
                body = _gunzip(body, shown, project)
            return status, got, body
        raise IndexUnreachableError(
            f"{shown} could not be reached while asking for {project} "
            f"({_describe(last, self.timeout)})",
            hint="check the network and the index URL, then run envsnap lock again",
        )

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str, int | None], http.client.HTTPConnection] | None
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        key = (scheme, host, port)
        conn = pool.get(key)
        if conn is None:
            conn = self._new_connection(scheme, host, port)
            # http.client's own hook for opening the socket: through the shared host lookups.
            conn._create_connection = self._open_socket  # type: ignore[attr-defined]
            pool[key] = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _new_connection(
        self, scheme: str, host: str, port: int | None
    ) -> http.client.HTTPConnection:
        import urllib.request

        proxy = self._proxies.get(scheme, "")
        if proxy and not urllib.request.proxy_bypass(host):
            proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            proxy_host = proxy_parts.hostname or ""
            proxy_port = proxy_parts.port or 8080
            if scheme == "https":
                tunnelled = http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=self.timeout, context=self._tls()
                )
                tunnelled.set_tunnel(host, port or 443)
                return tunnelled
            plain = http.client.HTTPConnection(proxy_host, proxy_port, timeout=self.timeout)
            plain._envsnap_http_proxy = True  # type: ignore[attr-defined]
            return plain
        if scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self._tls()
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return self._ssl

    def _open_socket(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """``socket.create_connection``, but with the host's addresses looked up once for all
        workers: sixteen threads resolving one name at the same moment stalled a slow resolver
        for seconds."""
        last: OSError | None = None
        for family, kind, proto, _name, sockaddr in self._addresses(*address):
            sock = socket.socket(family, kind, proto)
            try:
                if isinstance(timeout, int | float):
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
        raise last or OSError(f"{address[0]} has no address to connect to")

    def _addresses(self, host: str, port: int) -> list[tuple[Any, ...]]:
        with self._lock:
            entry = self._resolved.get((host, port))
            if entry is None:
                entry = self._resolved[(host, port)] = _Resolution()
        with entry.lock:  # the other workers wait here for the first one's answer
            if not entry.done:
                with self._lock:
                    self.lookups += 1
                try:
                    entry.addresses = list(self._getaddrinfo(host, port, type=socket.SOCK_STREAM))
                except socket.gaierror as exc:
                    entry.error = (exc.errno or socket.EAI_NONAME, exc.strerror or "")
                except (OSError, UnicodeError, ValueError):
                    entry.error = (socket.EAI_NONAME, "the host name is not valid")
                entry.done = True
        if entry.error is not None:
            raise socket.gaierror(*entry.error)  # a fresh one per thread: tracebacks differ
        return entry.addresses

    def _drop_connection(self, scheme: str, host: str, port: int | None) -> None:
        pool = getattr(self._local, "pool", {})
        conn = pool.pop((scheme, host, port), None)
        if conn is not None:
            conn.close()

    def _close_connections(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # --- cache ----------------------------------------------------------------------------

    def _read_cache(self, index_url: str) -> dict[str, Any]:
        """The index's cache: project -> version -> rows of (file name, sha256, yanked); rows
        are checked when used. Empty when absent or damaged (then the index is asked)."""
        if self.cache_dir is None:
            return {}
        try:
            path = self.cache_dir / _cache_name(index_url)
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema") == _CACHE_SCHEMA and data.get("index_url") == index_url:
                projects = data["projects"]
                if isinstance(projects, dict):
                    return projects
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass
        return {}

    def _write_cache(
        self,
        fetched: Sequence[tuple[str, str, tuple[str, ...]]],
        pages: Mapping[tuple[str, str], tuple[IndexFile, ...] | None],
    ) -> None:
        """Add the versions just fetched to each index's cache file, written once per lock;
        a version the page did not list is left out, so it is asked again next time."""
        if self.cache_dir is None:
            return
        by_index: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for index_url, project, versions in fetched:
            by_index.setdefault(index_url, []).append((project, versions))
        for index_url, asked in by_index.items():
            path = self.cache_dir / _cache_name(index_url)
            projects = self._read_cache(index_url)  # again: another lock may have added some
            for project, versions in asked:
                files = pages.get((index_url, project))
                entry = projects.get(project)
                entry = dict(entry) if isinstance(entry, dict) else {}
                for version in versions:
                    found = matching_files(files or (), project, version)
                    if found:
                        entry[version] = [[f.filename, f.sha256, f.yanked] for f in found]
                if entry:
                    projects[project] = entry
            data = {"schema": _CACHE_SCHEMA, "index_url": index_url, "projects": projects}
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
                tmp.replace(path)
            except OSError:
                tmp.unlink(missing_ok=True)  # a cache that cannot be written only costs time


def _cache_name(index_url: str) -> str:
    return hashlib.sha256(index_url.rstrip("/").encode()).hexdigest()[:16] + ".json"


def _cached_files(
    projects: Mapping[str, Any], project: str, versions: Sequence[str]
) -> tuple[IndexFile, ...] | None:
    """The cached files of every version asked; None when one is not cached or is damaged."""
    entry = projects.get(project)
    if not isinstance(entry, dict):
        return None
    files: list[IndexFile] = []
    for version in versions:
        wanted = version_key(version)
        rows = entry.get(version)
        if rows is None and wanted is not None:
            rows = next((r for v, r in entry.items() if version_key(v) == wanted), None)
        if not isinstance(rows, list):
            return None
        try:
            found = [IndexFile._make(row) for row in rows]
        except TypeError:
            return None
        if not all(
            type(f.filename) is str and type(f.sha256) is str and type(f.yanked) is bool
            for f in found
        ):
            return None
        files.extend(found)
    return tuple(files)


def matching_files(files: Iterable[IndexFile], project: str, version: str) -> list[IndexFile]:
    """The files of exactly ``version`` of ``project`` (normalised; PEP 440 equal versions
    match), in the order given."""
    wanted = version_key(version)
    verdicts: dict[str, bool] = {}
    matched: list[IndexFile] = []
    for item in files:
        found = file_version(item.filename, project)
        if found is None:
            continue
        verdict = verdicts.get(found)
        if verdict is None:
            verdict = found == version or (wanted is not None and version_key(found) == wanted)
            verdicts[found] = verdict
        if verdict:
            matched.append(item)
    return matched


def _describe(exc: BaseException | None, timeout: float) -> str:
    """What went wrong with a request, in a few words."""
    if isinstance(exc, socket.gaierror):
        return "the host name did not resolve"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return "the answer was cut short"
    if isinstance(exc, http.client.HTTPException):
        return "the answer was not valid HTTP"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    if isinstance(exc, OSError) and str(exc).startswith("Tunnel connection failed"):
        # http.client's message carries the proxy's status line: keep only printable ASCII.
        said = re.sub(r"[^\x20-\x7e]", "", str(exc).partition(":")[2]).strip()[:80]
        return f"the proxy refused to connect to the index: {said}"
    return type(exc).__name__ if exc is not None else "unknown error"


def _gunzip(body: bytes, shown: str, project: str) -> bytes:
    """A gzip body decompressed, refusing one that expands past the page size limit."""
    out = bytearray()
    data = body
    try:
        while data:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += inflater.decompress(data, _MAX_BODY_BYTES + 1 - len(out))
            if len(out) > _MAX_BODY_BYTES:
                raise LockError(
                    f"{shown} sent more than {_MAX_BODY_BYTES} bytes for {project}",
                    hint="check that the index URL is right",
                )
            if not inflater.eof:
                raise zlib.error("truncated")
            data = inflater.unused_data
    except zlib.error:
        raise IndexUnreachableError(
            f"{shown} sent a corrupt compressed page for {project}",
            hint="try again; if it persists, check that the index URL is right",
        ) from None
    return bytes(out)


class _NotAnIndexPageError(Exception):
    """Why a page is not a simple-API page, for the one sentence the user reads."""


# What a simple-API page links to: the kinds of file an index serves for a project.
_DIST_SUFFIXES = (".whl", ".egg", ".exe", ".msi", ".rpm", ".dmg", ".deb", *SDIST_SUFFIXES)


def _parse_page(
    body: bytes,
    content_type: str,
    url: str,
    index_url: str,
    project: str,
    versions: Sequence[str] = (),
) -> tuple[IndexFile, ...]:
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    shown = shown_url(index_url)
    try:
        if kind.endswith("json"):
            quick = _json_files_of_versions(body, project, versions) if versions else None
            if quick is not None:
                return quick
            files = _parse_json_page(body)
        elif kind in ("text/html", "application/vnd.pypi.simple.v1+html", ""):
            files = _parse_html_page(_page_text(body, params), url)
        else:
            shown_kind = re.sub(r"[^\x21-\x7e]", "", kind)[:60] or "no content type"
            raise IndexUnreachableError(
                f"{shown} answered with {shown_kind!r} for {project}, not a package index page",
                hint="check that the index URL points at a PEP 503 or PEP 691 simple index",
            )
    except _NotAnIndexPageError as exc:
        raise IndexUnreachableError(
            f"{shown} sent a page for {project} that is not a package index page ({exc})",
            hint="check that the index URL points at a PEP 503 or PEP 691 simple index, and "
            "that no proxy answers in its place",
        ) from None
    if not versions:
        return files
    keep = {f for version in versions for f in matching_files(files, project, version)}
    return tuple(f for f in files if f in keep)


# A JSON page lists every file of every release (PyPI's pages for a typical ML stack come to
# 60 MB), while a lock needs the files of one version: parsing a page whole took longer than
# fetching it. So the names of the files of the versions asked are found by a pattern over the
# page's bytes (not even decoded: that alone cost a third of the time), and only the objects
# around them are parsed. Where that reading cannot vouch for its answer (escapes in file
# names, no file of the versions asked, anything unexpected), the page is parsed whole, as
# before, and every fault still reads as one sentence.
_JSON_OPEN = re.compile(rb"\s*\{")
_JSON_FILES = re.compile(rb'"files"\s*:\s*\[')
_JSON_META = re.compile(rb'"meta"\s*:\s*(?=\{)')
_JSON_ESCAPED_NAME = re.compile(rb'"filename"\s*:\s*"[^"]*\\')
_JSON_DECODER = json.JSONDecoder()
_JSON_OBJECT_BYTES = (4096, 1024 * 1024)  # a file's object is under 1 KiB on PyPI


@functools.lru_cache(maxsize=1024)
def _names_of_versions(project: str, keys: tuple[VersionKey, ...]) -> re.Pattern[bytes]:
    """A pattern for the names of ``project``'s files (any spelling of the name that normalises
    to it) whose version starts with the release of one of ``keys``, in any spelling PEP 440
    calls equal (a 'v', an epoch, leading zeros, trailing '.0's). It matches more than it
    should (another pre-release, a local label), never less: ``file_version`` and
    ``version_key`` then decide."""
    name = r"[-_.]+".join(re.escape(part) for part in project.split("-"))
    releases = "|".join(
        r"\.".join(f"0*{number}" for number in cast("tuple[int, ...]", key[1])) for key in keys
    )
    pattern = (
        rf'"filename"\s*:\s*"((?i:{name})-[vV]?(?:[0-9]+!)?(?:{releases})(?:\.0+)*'
        r'(?!\.?[0-9])[^"\\]*)"'
    )
    return re.compile(pattern.encode("ascii"))


def _json_files_of_versions(
    body: bytes, project: str, versions: Sequence[str]
) -> tuple[IndexFile, ...] | None:
    """The files of ``versions`` on a PEP 691 page, in the page's order, read without parsing
    the whole page; None where the page must be parsed whole to answer."""
    if not project.isascii() or project != normalize_name(project):
        return None
    wanted: list[tuple[str, VersionKey]] = []
    for version in versions:
        key = version_key(version)
        if key is None:
            return None
        wanted.append((version, key))
    # Without an escape in any file name (and no \u escape that could spell a key), a file's
    # name is exactly the bytes between its quotes.
    if b"\\" in body and (b"\\u" in body or _JSON_ESCAPED_NAME.search(body)):
        return None
    if _JSON_OPEN.match(body) is None or _JSON_FILES.search(body) is None:
        return None
    files: list[IndexFile] = []
    for match in _names_of_versions(project, tuple(key for _, key in wanted)).finditer(body):
        try:
            name = match[1].decode("utf-8")
        except UnicodeDecodeError:
            return None
        found = file_version(name, project)
        if found is None or not any(
            found == version or version_key(found) == key for version, key in wanted
        ):
            continue
        item = _json_object_around(body, match.start())
        if item is None or item.get("filename") != name:
            return None
        hashes = item.get("hashes") or {}
        if not isinstance(hashes, dict):
            return None
        sha256 = hashes.get("sha256", "")
        files.append(
            IndexFile(
                filename=name,
                sha256=sha256.lower() if isinstance(sha256, str) else "",
                yanked=bool(item.get("yanked", False)),
            )
        )
    if not files or not _json_api_version_1(body):
        return None
    return tuple(files)


def _json_object_around(body: bytes, position: int) -> dict[str, Any] | None:
    """The JSON object, an element of a list, that holds the key at ``position``."""
    start = position
    for _attempt in range(16):  # objects nested before the key (core-metadata's) are passed
        start = body.rfind(b"{", 0, start)
        if start < 0:
            return None
        if body[max(0, start - 256) : start].rstrip()[-1:] not in (b"[", b","):
            continue  # a value inside an object, not a list's element
        for size in _JSON_OBJECT_BYTES:
            found = _json_value_at(body, start, size)
            if found is not None:
                break
        else:
            continue
        item, end = found
        if start + end > position:
            return item if isinstance(item, dict) else None
    return None


def _json_value_at(body: bytes, start: int, size: int) -> tuple[Any, int] | None:
    """The JSON value starting at ``start`` and the bytes it spans, read from at most ``size``
    bytes; None where it is longer, malformed or not valid UTF-8."""
    text = body[start : start + size].decode("utf-8", errors="replace")  # may cut a character
    try:
        value, end = _JSON_DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    spanned = text[:end]
    if "\ufffd" in spanned:
        return None  # not valid UTF-8 (or a replacement character): the whole page decides
    return value, len(spanned.encode("utf-8"))


def _json_api_version_1(body: bytes) -> bool:
    """Whether the page's ``meta`` (PyPI writes it after the files) declares API 1.x."""
    at = body.rfind(b'"meta"')
    if at < 0:
        return True  # no meta: version 1.0
    match = _JSON_META.match(body, at)
    if match is None:
        return False
    found = _json_value_at(body, match.end(), _JSON_OBJECT_BYTES[-1])
    meta = found[0] if found is not None else None
    version = meta.get("api-version", "1.0") if isinstance(meta, dict) else None
    return isinstance(version, str) and version.split(".", 1)[0] == "1"


def _parse_json_page(body: bytes) -> tuple[IndexFile, ...]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _NotAnIndexPageError("it is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise _NotAnIndexPageError("its JSON has no list of files")
    meta = data.get("meta", {})
    version = meta.get("api-version", "1.0") if isinstance(meta, dict) else None
    if not isinstance(version, str) or version.split(".", 1)[0] != "1":
        raise _NotAnIndexPageError("it declares a simple API version other than 1.x")
    files: list[IndexFile] = []
    for item in data["files"]:
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            raise _NotAnIndexPageError("a file in its JSON has no file name")
        hashes = item.get("hashes") or {}
        if not isinstance(hashes, dict):
            raise _NotAnIndexPageError("a file in its JSON has malformed hashes")
        sha256 = hashes.get("sha256", "")
        files.append(
            IndexFile(
                filename=item["filename"],
                sha256=sha256.lower() if isinstance(sha256, str) else "",
                yanked=bool(item.get("yanked", False)),
            )
        )
    return tuple(files)


def _page_text(body: bytes, content_type_params: str) -> str:
    """The page as text: an HTML5 page is UTF-8 unless its content type names a charset."""
    charset = "utf-8"
    for param in content_type_params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip("\"'")
    if b"\0" in body:
        raise _NotAnIndexPageError("it is binary data, not HTML")
    try:
        return body.decode(charset)
    except LookupError:
        return body.decode("utf-8", errors="replace")
    except UnicodeDecodeError:
        raise _NotAnIndexPageError(f"it is not text in its encoding ({charset[:20]})") from None


class _AnchorParser(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.files: list[IndexFile] = []
        self.tags = 0
        self.anchors = 0
        self.forms = 0  # <form> or a password field: a sign-in page, never an index
        self._href: str | None = None
        self._yanked = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1
        if tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base_url = _join_url(self.base_url, href)
        elif tag == "a":
            self.anchors += 1
            values = dict(attrs)
            self._href = values.get("href") or ""
            self._yanked = "data-yanked" in values
            self._text = []
        elif tag == "form" or (
            tag == "input" and (dict(attrs).get("type") or "").lower() == "password"
        ):
            self.forms += 1

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != "a" or self._href is None:
            return
        href, self._href = self._href, None
        link, _, fragment = _join_url(self.base_url, href).partition("#")
        name = "".join(self._text).strip() or unquote(link.rsplit("/", 1)[-1])
        algorithm, _, digest = fragment.partition("=")
        self.files.append(
            IndexFile(
                filename=name,
                sha256=digest.lower() if algorithm == "sha256" else "",
                yanked=self._yanked,
            )
        )


def _join_url(base: str, href: str) -> str:
    try:
        return urljoin(base, href)
    except ValueError:  # a malformed link (an unclosed IPv6 bracket): keep it as written
        return href


def _parse_html_page(text: str, url: str) -> tuple[IndexFile, ...]:
    parser = _AnchorParser(url)
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError, RecursionError):  # html.parser's own give-ups
        raise _NotAnIndexPageError("the HTML parser cannot read it") from None
    files = tuple(parser.files)
    if any(f.filename.lower().endswith(_DIST_SUFFIXES) for f in files):
        return files
    if parser.forms:
        raise _NotAnIndexPageError("it is a sign-in page; a proxy or the index wants credentials")
    if parser.anchors:
        raise _NotAnIndexPageError("none of its links is a package file")
    if not parser.tags:
        raise _NotAnIndexPageError("it is not HTML")
    return files  # an HTML page without links: a project with no files
