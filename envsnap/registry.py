"""Run records in OCI registries: the one module that talks to a registry (through the oras SDK).

A run's record (manifest.toml, result.toml, diff.patch, lock files, image.toml, code.tar.gz)
goes up as one OCI artifact, one layer per file, tagged with the run id; it comes back verified
digest by digest and is imported into the store whole, or not at all.

About 900 lines: the record's format, its verified pull, and the client whose fault handling turns
every way a registry can misbehave into one sentence belong together; docker's credentials are
read by dockerconfig.py.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from envsnap.dockerconfig import HUB_API_HOST, CredentialHelper, Credentials, registry_credentials
from envsnap.errors import EnvsnapError, ManifestError, StoreError, UsageError
from envsnap.imageref import ImageReference, is_reference, parse_reference
from envsnap.manifest import loads_manifest
from envsnap.store import MANIFEST_FILE, RECORD_FILES, RUN_ID, Store, StoredRun, load_run_dir

if TYPE_CHECKING:
    import requests

# --- the record's format -------------------------------------------------------------------------

RECORD_SCHEMA = "envsnap.record/1"
# The artifact's type: the config blob's media type, and the manifest's artifactType.
RECORD_MEDIA_TYPE = "application/vnd.envsnap.run.v1+json"
FILE_MEDIA_TYPES: Mapping[str, str] = {
    "manifest.toml": "application/vnd.envsnap.manifest.v1+toml",
    "result.toml": "application/vnd.envsnap.result.v1+toml",
    "diff.patch": "application/vnd.envsnap.diff.v1+patch",
    "requirements.lock.txt": "application/vnd.envsnap.requirements-lock.v1+txt",
    "requirements.vcs.txt": "application/vnd.envsnap.requirements-vcs.v1+txt",
    "conda-explicit.txt": "application/vnd.envsnap.conda-explicit.v1+txt",
    "conda-lock.yml": "application/vnd.envsnap.conda-lock.v1+yaml",
    "lock.toml": "application/vnd.envsnap.lock.v1+toml",
    "image.toml": "application/vnd.envsnap.image.v1+toml",
    "code.tar.gz": "application/vnd.envsnap.code.v1.tar+gzip",
}
ANNOTATION_RUN_ID = "dev.envsnap.run-id"
ANNOTATION_MANIFEST_DIGEST = "dev.envsnap.manifest-digest"
ANNOTATION_ENV_ID = "dev.envsnap.env-id"
ANNOTATION_IMAGE = "dev.envsnap.image"
ANNOTATION_RERUN_OF = "dev.envsnap.rerun-of"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_TITLE = "org.opencontainers.image.title"  # a layer's file name, as the oras CLI reads it

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_ACCEPT = ", ".join((OCI_MANIFEST, _OCI_INDEX, _DOCKER_MANIFEST, _DOCKER_LIST))
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
_MAX_MANIFEST = 4 * 1024 * 1024
_MAX_CONFIG = 1024 * 1024
_MAX_LAYER = 256 * 1024 * 1024
_DOCKER_HUB = ("", "docker.io", "index.docker.io", HUB_API_HOST)


# --- errors --------------------------------------------------------------------------------------


class RegistryError(EnvsnapError):
    """A registry could not be reached, or answered in a way envsnap cannot use."""


class RegistryAuthError(RegistryError):
    """The registry wants credentials that docker's configuration does not hold, or refused them."""


class RecordNotFoundError(RegistryError):
    """No record under that tag or digest."""


class NotARecordError(RegistryError):
    """The artifact is something else than an envsnap run record (an image, another artifact)."""


class RecordIntegrityError(RegistryError):
    """A blob or manifest does not match its digest, or the record contradicts itself."""


# --- what callers pass and get -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RegistryOptions:
    """How to reach registries: the environment (DOCKER_CONFIG, HOME, PATH, proxies, CA bundle)
    comes in here, never from os.environ."""

    env: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = False  # --insecure-registry: HTTPS without verification, then plain HTTP
    timeout_s: float = 30.0
    credential_helper: CredentialHelper | None = None  # default: docker-credential-<name> get


@dataclass(frozen=True, kw_only=True)
class PushedRecord:
    """What ``envsnap push`` did: the reference by digest, and what went up."""

    run_id: str
    reference: str  # repository:<run-id>@sha256:...
    digest: str
    files: tuple[str, ...]
    bytes: int  # config, layers and OCI manifest
    image: str = ""  # the image's registry digest, when it was pushed
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "reference": self.reference,
            "digest": self.digest,
            "files": list(self.files),
            "bytes": self.bytes,
            "image": self.image,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, kw_only=True)
class PulledRecord:
    """What ``envsnap pull`` did: the run now in the store, and where it came from."""

    run: StoredRun
    reference: str  # repository[:tag]@sha256:...
    digest: str
    files: tuple[str, ...]
    bytes: int
    already_stored: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "manifest": str(self.run.manifest_path),
            "reference": self.reference,
            "digest": self.digest,
            "files": list(self.files),
            "bytes": self.bytes,
            "already_stored": self.already_stored,
        }


def record_reference(text: str) -> ImageReference | None:
    """``text`` as a registry reference to a record when it reads as one: a repository with a
    ``/`` and a tag or digest. A run id, a prefix, ``latest`` or a manifest path never does."""
    if "/" not in text or text.startswith((".", "/", "~")) or text.endswith(".toml"):
        return None
    if not is_reference(text):
        return None
    reference = parse_reference(text)
    return reference if reference.tag or reference.digest else None


# --- push ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    media_type: str
    data: bytes = field(repr=False)
    title: str = ""

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
        }
        if self.title:
            described["annotations"] = {ANNOTATION_TITLE: self.title}
        return described


def push_run(run: StoredRun, repository: str, options: RegistryOptions) -> PushedRecord:
    """Push the run's record to ``repository`` as an OCI artifact tagged with the run id."""
    import tempfile

    target = parse_reference(repository, "the repository")
    if target.tag or target.digest:
        raise UsageError(
            f"{repository!r} names a tag or digest, but a record is tagged with its run id",
            hint="give the repository only, e.g. registry.example/team/runs",
        )
    config, layers, annotations, warnings = _record_blobs(run)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": RECORD_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
        "annotations": annotations,
    }
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    client = _Client.connect(target, options)
    with tempfile.TemporaryDirectory(prefix="envsnap-push-") as tmp:
        for blob in (config, *layers):
            client.upload_blob(blob, Path(tmp))
    client.put_manifest(run.run_id, body, digest)
    return PushedRecord(
        run_id=run.run_id,
        reference=f"{target.repository}:{run.run_id}@{digest}",
        digest=digest,
        files=tuple(layer.title for layer in layers),
        bytes=len(body) + sum(len(b.data) for b in (config, *layers)),
        image=annotations.get(ANNOTATION_IMAGE, ""),
        warnings=warnings,
    )


def _record_blobs(run: StoredRun) -> tuple[_Blob, list[_Blob], dict[str, str], tuple[str, ...]]:
    """The config, the layers (files read once, the manifest verified again) and annotations."""
    files: dict[str, bytes] = {}
    for name in RECORD_FILES:
        try:
            files[name] = (run.directory / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise RegistryError(
                f"{run.directory / name} cannot be read ({exc.strerror or exc})",
                hint="check the store's permissions",
            ) from None
    if MANIFEST_FILE not in files:
        raise ManifestError(f"{run.manifest_path} does not exist", hint="see 'envsnap list'")
    manifest = loads_manifest(
        _text(files[MANIFEST_FILE], run.manifest_path), str(run.manifest_path)
    )
    image = _pushed_image(files.get("image.toml", b""), manifest.env_id)
    warnings: tuple[str, ...] = ()
    if not image:
        warnings = (
            f"run {manifest.run_id}'s image was not pushed to a registry, so another host "
            f"cannot pull it; push it with envsnap build {manifest.run_id} --push REPOSITORY "
            "and push the record again",
        )
    annotations = {
        ANNOTATION_RUN_ID: manifest.run_id,
        ANNOTATION_MANIFEST_DIGEST: manifest.digest,
        ANNOTATION_ENV_ID: manifest.env_id,
        ANNOTATION_CREATED: manifest.created,
    }
    if image:
        annotations[ANNOTATION_IMAGE] = image
    if manifest.rerun_of:
        annotations[ANNOTATION_RERUN_OF] = manifest.rerun_of
    from envsnap.version import __version__

    config_data = {
        "schema": RECORD_SCHEMA,
        "run_id": manifest.run_id,
        "manifest_digest": manifest.digest,
        "env_id": manifest.env_id,
        "image": image,
        "envsnap": __version__,
    }
    config = _Blob(
        RECORD_MEDIA_TYPE,
        json.dumps(config_data, sort_keys=True, separators=(",", ":")).encode("utf-8"),
    )
    layers = [_Blob(FILE_MEDIA_TYPES[name], data, name) for name, data in files.items()]
    return config, layers, annotations, warnings


def _pushed_image(image_toml: bytes, env_id: str) -> str:
    """The registry digest image.toml records for this environment; empty when none."""
    try:
        data = tomllib.loads(image_toml.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    digest = data.get("registry_digest")
    if data.get("env_id") != env_id or not isinstance(digest, str) or "@sha256:" not in digest:
        return ""
    return digest


def _text(data: bytes, origin: object) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{origin} is not UTF-8 text", hint="restore it") from None


# --- pull ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """An OCI manifest read as an envsnap record: descriptors checked, nothing fetched yet."""

    config: Mapping[str, Any]
    layers: Mapping[str, Mapping[str, Any]]  # by file name, in RECORD_FILES order
    annotations: Mapping[str, str]


def pull_run(reference: str, store: Store, options: RegistryOptions) -> StoredRun:
    """Fetch the record ``reference`` names, verify it and import it into ``store``."""
    return pull_record(reference, store, options).run


def pull_record(reference: str, store: Store, options: RegistryOptions) -> PulledRecord:
    """Fetch by tag or digest; verify the OCI manifest's digest, every blob's digest and the
    envsnap manifest's own digest; then import the run into the store in one step."""
    import tempfile

    ref = parse_reference(reference, "the record reference")
    if not (ref.tag or ref.digest):
        raise UsageError(
            f"{reference!r} names no tag or digest",
            hint=f"name the run: {ref.repository}:<run-id> (envsnap push prints the reference)",
        )
    client = _Client.connect(ref, options)
    body, digest = client.get_manifest(ref)
    layout = _read_layout(body, reference)
    config_data = client.get_blob(layout.config, "the record's config")
    run_id = _check_config(config_data, layout, reference)
    if RUN_ID.match(ref.tag) and ref.tag != run_id:
        raise RecordIntegrityError(
            f"{reference} is tagged {ref.tag} but holds the record of run {run_id}",
            hint="pull it by digest if that is the run you want",
        )
    files = {name: client.get_blob(descriptor, name) for name, descriptor in layout.layers.items()}
    already = run_id in store.run_ids()
    with tempfile.TemporaryDirectory(prefix="envsnap-pull-") as tmp:
        run_dir = Path(tmp) / run_id
        run_dir.mkdir()
        for name, data in files.items():
            (run_dir / name).write_bytes(data)
        _check_files(run_dir, layout, reference)
        try:
            stored = store.import_manifest(run_dir / MANIFEST_FILE)
        except StoreError as exc:  # say which record, not which temporary file
            message = exc.message.replace(str(run_dir / MANIFEST_FILE), reference)
            raise type(exc)(message, hint=exc.hint) from None
    pinned = ref.with_digest(digest)
    shown = f"{ref.repository}:{ref.tag}@{digest}" if ref.tag else str(pinned)
    return PulledRecord(
        run=stored,
        reference=shown,
        digest=digest,
        files=tuple(files),
        bytes=len(body) + len(config_data) + sum(len(d) for d in files.values()),
        already_stored=already,
    )


def _read_layout(body: bytes, reference: str) -> _Layout:
    """The OCI manifest as a record's layout, or one sentence on why it is not one."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("schemaVersion") != 2:
        raise RegistryError(
            f"the registry answered {reference} with something that is not an OCI manifest",
            hint="check that the address is an OCI registry and the reference is right",
        )
    media_type = data.get("mediaType", OCI_MANIFEST)
    if media_type in (_OCI_INDEX, _DOCKER_LIST):
        _not_a_record(reference, "an image index (a multi-platform image)")
    config = data.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if (
        not isinstance(config, dict)
        or media_type != OCI_MANIFEST
        or config_type != RECORD_MEDIA_TYPE
    ):
        shown = (
            config_type if isinstance(config_type, str) and _MEDIA_TYPE.match(config_type) else ""
        )
        what = (
            "a container image" if "image.config" in shown or media_type == _DOCKER_MANIFEST else ""
        )
        _not_a_record(
            reference, what or f"an artifact of another kind ({shown or 'no config type'})"
        )
    _check_descriptor(config, reference, "its config", _MAX_CONFIG)
    annotations = data.get("annotations")
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise RecordIntegrityError(f"{reference} has no envsnap annotations", hint=_REPUSH)
    layers: dict[str, Mapping[str, Any]] = {}
    raw_layers = data.get("layers")
    for layer in raw_layers if isinstance(raw_layers, list) else [None]:
        titles = layer.get("annotations") if isinstance(layer, dict) else None
        title = titles.get(ANNOTATION_TITLE) if isinstance(titles, dict) else None
        if (
            not isinstance(layer, dict)
            or not isinstance(title, str)
            or title not in FILE_MEDIA_TYPES
            or layer.get("mediaType") != FILE_MEDIA_TYPES[title]
            or title in layers
        ):
            raise NotARecordError(
                f"{reference} holds a layer that is not a file of an envsnap record",
                hint="pull records that envsnap push wrote; a newer envsnap may read this one",
            )
        _check_descriptor(layer, reference, title, _MAX_LAYER)
        layers[title] = layer
    if MANIFEST_FILE not in layers:
        raise NotARecordError(f"{reference} holds no manifest.toml", hint=_REPUSH)
    ordered = {name: layers[name] for name in RECORD_FILES if name in layers}
    return _Layout(config=config, layers=ordered, annotations=annotations)


_REPUSH = "push the run again with envsnap push"


def _not_a_record(reference: str, what: str) -> NoReturn:
    raise NotARecordError(
        f"{reference} is {what}, not an envsnap run record",
        hint="name a record that envsnap push wrote (REPOSITORY:<run-id>)",
    )


def _check_descriptor(descriptor: Mapping[str, Any], reference: str, what: str, limit: int) -> None:
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise RecordIntegrityError(
            f"{reference} describes {what} without a sha256 digest", hint=_REPUSH
        )
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= limit:
        raise RecordIntegrityError(
            f"{reference} describes {what} with a size envsnap does not accept ({size!r})",
            hint=_REPUSH,
        )


def _check_config(data: bytes, layout: _Layout, reference: str) -> str:
    """The record's run id, once its config agrees with the manifest's annotations."""
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        config = None
    if not isinstance(config, dict):
        config = None
    schema = config.get("schema") if config is not None else None
    if isinstance(schema, str) and schema.startswith("envsnap.record/") and schema != RECORD_SCHEMA:
        raise NotARecordError(
            f"{reference} is a record of schema {schema!r}, which this envsnap does not read",
            hint="upgrade envsnap",
        )
    run_id = layout.annotations.get(ANNOTATION_RUN_ID, "")
    if (
        config is None
        or schema != RECORD_SCHEMA
        or not RUN_ID.match(run_id)
        or config.get("run_id") != run_id
        or config.get("manifest_digest") != layout.annotations.get(ANNOTATION_MANIFEST_DIGEST)
    ):
        raise RecordIntegrityError(
            f"{reference}'s config and annotations do not describe one run", hint=_REPUSH
        )
    return run_id


def _check_files(run_dir: Path, layout: _Layout, reference: str) -> None:
    """The pulled files as the store will read them: the manifest verified against its own
    digest and the annotations, the result of the same run, the other TOML files readable."""
    try:
        run = load_run_dir(run_dir)
        for name in ("lock.toml", "image.toml"):
            if (run_dir / name).is_file():
                tomllib.loads((run_dir / name).read_text(encoding="utf-8"))
    except (ManifestError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        detail = exc.message if isinstance(exc, ManifestError) else f"{exc}"
        raise RecordIntegrityError(
            f"the record {reference} is damaged: {detail.replace(str(run_dir.parent) + '/', '')}",
            hint="nothing was imported; push the run again from the machine that holds it",
        ) from None
    if run.run_id != layout.annotations.get(
        ANNOTATION_RUN_ID
    ) or run.manifest.digest != layout.annotations.get(ANNOTATION_MANIFEST_DIGEST):
        raise RecordIntegrityError(
            f"{reference}'s manifest.toml is not the manifest its annotations name",
            hint="nothing was imported; push the run again from the machine that holds it",
        )


# --- the client ----------------------------------------------------------------------------------


def _api_location(ref: ImageReference) -> tuple[str, str]:
    """The host the registry API answers on and the repository path there."""
    if ref.domain in _DOCKER_HUB:
        return HUB_API_HOST, ref.path if "/" in ref.path else f"library/{ref.path}"
    return ref.domain, ref.path


def _hostname(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` without the port."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (maybe with a port) is this machine: 127.0.0.0/8, ::1 or localhost."""
    name = _hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Client:
    """One repository on one registry, over the scheme its /v2/ answered, with docker's
    credentials for its host. Every failure leaves here as one RegistryError sentence."""

    def __init__(
        self,
        ref: ImageReference,
        where: str,
        registry: Any,
        container: Any,
        credentials: Credentials | None,
        why_none: str,
        options: RegistryOptions,
    ) -> None:
        self.ref = ref
        self.options = options
        self.where = where  # scheme://host
        self.host = where.split("://", 1)[1]
        self.registry = registry
        self.container = container
        self.credentials = credentials
        self.why_none = why_none

    @classmethod
    def connect(cls, ref: ImageReference, options: RegistryOptions) -> _Client:
        """Find the scheme the registry answers on (HTTPS; for loopback or --insecure-registry
        HTTPS without verification, then plain HTTP) and set up docker's credentials."""
        import requests

        host, path = _api_location(ref)
        credentials, why_none = registry_credentials(host, options.env, options.credential_helper)
        relaxed = options.insecure or is_loopback(host)
        attempts: list[tuple[str, bool | str]] = (
            [("https", False), ("http", False)] if relaxed else [("https", _ca_bundle(options.env))]
        )
        for number, (scheme, verify) in enumerate(attempts, start=1):
            where = f"{scheme}://{host}"
            probe = _session(options, host, verify, probe=number < len(attempts))
            try:
                ping = probe.get(f"{where}/v2/", allow_redirects=False)
                break
            except (
                requests.exceptions.SSLError,
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,  # a plain server may never answer a TLS hello
            ) as exc:
                if number == len(attempts):
                    raise _transport_error(exc, where, options) from None
            except requests.exceptions.RequestException as exc:
                raise _transport_error(exc, where, options) from None
        _check_ping(ping, where)
        challenge = ping.headers.get("Www-Authenticate", "").lower()
        if ping.status_code == 401 and challenge.startswith("basic") and credentials is None:
            _auth_error(host, ref, ping, None, why_none)
        session = _session(options, host, verify, probe=False)
        registry = _registry_class()(hostname=host, insecure=scheme == "http", tls_verify=verify)
        registry.session = registry.auth.session = session
        if credentials is not None and challenge.startswith("basic"):
            session.auth = (credentials.username, credentials.secret)
        elif credentials is not None:
            registry.auth.set_basic_auth(credentials.username, credentials.secret)
        return cls(ref, where, registry, _container(host, path), credentials, why_none, options)

    # --- every call to oras goes through here ---

    def _call(self, doing: str, send: Callable[[], requests.Response]) -> requests.Response:
        """``send``'s response; a failure below HTTP, or oras giving up on a refusal, becomes
        one sentence."""
        import requests

        self.registry.session.last_response = None
        try:
            return send()
        except (requests.exceptions.RequestException, ValueError) as exc:
            last = self.registry.session.last_response
            if last is not None and (last.status_code in (401, 403) or last.status_code >= 500):
                self._fail(doing, last)
            if isinstance(exc, requests.exceptions.RequestException):
                raise _transport_error(exc, self.where, self.options) from None
            self._fail(doing, last)

    def _fail(self, doing: str, response: requests.Response | None) -> NoReturn:
        if response is not None and response.status_code in (401, 403):
            _auth_error(self.host, self.ref, response, self.credentials, self.why_none)
        if response is not None and response.status_code >= 500:
            raise RegistryError(
                f"the registry {self.host} failed while {doing} "
                f"({response.status_code} {_reason(response)}{_error_code(response)})",
                hint="try again later; if it persists, see the registry's logs",
            )
        status = f" ({response.status_code}{_error_code(response)})" if response is not None else ""
        raise RegistryError(
            f"the registry {self.host} answered in a way envsnap cannot use while {doing}{status}",
            hint="check that the address is an OCI registry and the reference is right",
        )

    def _url(self, kind: str, name: str) -> str:
        return f"{self.where}/v2/{self.container.api_prefix}/{kind}/{name}"

    # --- push ---

    def upload_blob(self, blob: _Blob, tmp: Path) -> None:
        """Upload a blob unless the registry has it (oras: HEAD, then POST and PUT)."""
        doing = f"uploading {blob.title or 'the record config'}"
        path = tmp / blob.digest.removeprefix("sha256:")
        path.write_bytes(blob.data)
        response = self._call(
            doing, lambda: self.registry.upload_blob(str(path), self.container, blob.descriptor())
        )
        if response.status_code not in (200, 201, 202):
            self._fail(doing, response)

    def put_manifest(self, tag: str, body: bytes, digest: str) -> None:
        """Store the OCI manifest under ``tag``, byte for byte as its digest was computed."""
        doing = "storing the record's manifest"
        headers = {"Content-Type": OCI_MANIFEST}
        response = self._call(
            doing,
            lambda: self.registry.do_request(
                self._url("manifests", tag), "PUT", data=body, headers=headers
            ),
        )
        if response.status_code not in (200, 201, 202):
            self._fail(doing, response)
        stored = response.headers.get("Docker-Content-Digest", digest)
        if stored != digest:
            raise RecordIntegrityError(
                f"the registry {self.host} stored the record under {stored}, not under its "
                f"digest {digest}",
                hint="the registry rewrote the manifest; use another registry",
            )

    # --- pull ---

    def get_manifest(self, ref: ImageReference) -> tuple[bytes, str]:
        """The OCI manifest's bytes and digest, checked against the digest asked for or, for a
        tag, the one the registry names."""
        doing = f"fetching {ref}"
        headers = {"Accept": _ACCEPT}
        url = self._url("manifests", ref.digest or ref.tag)
        response = self._call(
            doing, lambda: self.registry.do_request(url, "GET", headers=headers, stream=True)
        )
        if response.status_code == 404:
            raise RecordNotFoundError(
                f"the registry {self.host} has no {ref}{_error_code(response, ' (', ')')}",
                hint="check the repository and the run id; envsnap push prints the reference",
            )
        if response.status_code != 200:
            self._fail(doing, response)
        body = _read_body(response, _MAX_MANIFEST, self.where, self.options)
        if len(body) > _MAX_MANIFEST:
            raise RegistryError(
                f"the registry {self.host} answered {ref} with more than {_MAX_MANIFEST} bytes, "
                "which is no record's manifest",
                hint="check the reference",
            )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = ref.digest or response.headers.get("Docker-Content-Digest", digest)
        if digest != expected:
            raise RecordIntegrityError(
                f"the manifest of {ref} does not match its digest {expected} (the registry's "
                "copy was altered or damaged); nothing was imported",
                hint="push the run again from the machine that holds it",
            )
        return body, digest

    def get_blob(self, descriptor: Mapping[str, Any], what: str) -> bytes:
        """A blob's bytes, verified against the size and digest its descriptor gives."""
        doing = f"fetching {what} of {self.ref}"
        digest, size = str(descriptor["digest"]), int(descriptor["size"])
        response = self._call(
            doing, lambda: self.registry.get_blob(self.container, digest, stream=True)
        )
        if response.status_code == 404:
            raise RecordIntegrityError(
                f"the registry {self.host} has lost {what} of {self.ref}",
                hint="push the run again from the machine that holds it",
            )
        if response.status_code != 200:
            self._fail(doing, response)
        data = _read_body(response, size, self.where, self.options)
        if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RecordIntegrityError(
                f"{what} of {self.ref} does not match its digest {digest} (the registry's copy "
                "was altered or damaged); nothing was imported",
                hint="push the run again from the machine that holds it",
            )
        return data


def _container(host: str, path: str) -> Any:
    """oras's name for the repository, set from the distribution grammar's parse (oras's own
    pattern would take a dotted first path component for a registry host)."""
    import oras.container

    container = oras.container.Container(f"{host}/{path}:latest")
    namespace, _, repository = path.rpartition("/")
    container.registry, container.namespace, container.repository = (
        host,
        namespace or None,
        repository,
    )
    return container


@functools.cache
def _registry_class() -> Any:
    """oras's Registry without its retries (five, over about two minutes, for every failure:
    a registry that is down must be one sentence at once), and asking for a new token when a
    token for another scope (pull, then push) is refused."""
    import logging

    import oras.provider

    # oras reports through logging; with no handler Python would print its errors to stderr.
    logging.getLogger("oras").addHandler(logging.NullHandler())
    decorated = oras.provider.Registry.do_request
    plain = getattr(decorated, "__wrapped__", decorated)

    class Registry(oras.provider.Registry):  # type: ignore[misc]
        def do_request(self, url: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
            headers = dict(kwargs.pop("headers", None) or {})
            response = plain(self, url, method, *args, headers=dict(headers), **kwargs)
            if response.status_code == 401 and getattr(self.auth, "token", None):
                self.auth.token = None
                response = plain(self, url, method, *args, headers=dict(headers), **kwargs)
            return response

    return Registry


def _session(
    options: RegistryOptions, host: str, verify: bool | str, *, probe: bool
) -> requests.Session:
    """A session with a timeout on every request, the proxies the caller's environment names
    (none for loopback), no cookies, nothing read from the process environment or netrc, and
    its last response kept for the error sentence."""
    from http.cookiejar import DefaultCookiePolicy

    import requests

    # An HTTPS probe before plain HTTP gets less time: a plain server may never answer it.
    read = min(options.timeout_s, 5.0) if probe else options.timeout_s
    timeout = (min(options.timeout_s, 10.0), read)

    class Session(requests.Session):
        last_response: requests.Response | None = None

        def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            response = super().request(method, url, *args, **kwargs)
            self.last_response = response
            return response

    session = Session()
    session.trust_env = False
    session.verify = verify
    session.proxies = _proxies(host, options.env)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.headers["User-Agent"] = "envsnap"
    return session


def _proxies(host: str, env: Mapping[str, str]) -> dict[str, str]:
    """The proxies docker would use for ``host``: HTTPS_PROXY/HTTP_PROXY unless NO_PROXY
    names it; never for loopback."""
    if is_loopback(host):
        return {}
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    import urllib.request

    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if no_proxy and bypass(_hostname(host), {"no": no_proxy}):
        return {}
    found = {}
    for scheme in ("http", "https"):
        value = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
        if value:
            found[scheme] = value
    return found


def _ca_bundle(env: Mapping[str, str]) -> bool | str:
    """The CA bundle to trust: SSL_CERT_FILE or REQUESTS_CA_BUNDLE when set, else the system's
    (as docker does), else requests' own."""
    import ssl

    for candidate in (
        env.get("SSL_CERT_FILE"),
        env.get("REQUESTS_CA_BUNDLE"),
        ssl.get_default_verify_paths().openssl_cafile,
    ):
        if candidate and os.path.isfile(candidate):
            return candidate
    return True


def _check_ping(response: requests.Response, where: str) -> None:
    """/v2/ answers 200, or 401 with a challenge, on an OCI registry; anything else is one
    sentence."""
    html = "html" in response.headers.get("Content-Type", "").lower()
    challenged = response.status_code == 401 and "Www-Authenticate" in response.headers
    if (response.status_code == 200 or challenged) and not html:
        return
    if response.status_code >= 500:
        raise RegistryError(
            f"the registry at {where} failed ({response.status_code} {_reason(response)})",
            hint="try again later; if it persists, see the registry's logs",
        )
    said = "a web page" if html else f"status {response.status_code}"
    raise RegistryError(
        f"{where} is not an OCI registry (its /v2/ answers with {said})",
        hint="check the address; an OCI registry's /v2/ answers 200 or 401",
    )


def _auth_error(
    host: str,
    ref: ImageReference,
    response: requests.Response,
    credentials: Credentials | None,
    why_none: str,
) -> NoReturn:
    if credentials is not None:
        refused = "refused the credentials in docker's config"
        hint = f"run docker login {host} again"
    else:
        refused = "asks for credentials"  # and docker's config has none
        hint = f"log in with docker login {host} (envsnap uses docker's credentials" + (
            f"; {why_none})" if why_none else ")"
        )
    raise RegistryAuthError(
        f"the registry {host} {refused} for {ref.repository} "
        f"({response.status_code}{_error_code(response)})",
        hint=hint,
    )


def _transport_error(exc: Exception, where: str, options: RegistryOptions) -> RegistryError:
    """A failure below HTTP as one sentence; the exception's own text (which may hold a URL
    with a query) is read, never shown."""
    import requests

    text = repr(exc).lower()
    if isinstance(exc, requests.exceptions.SSLError):
        return RegistryError(
            f"TLS with {where} failed (its certificate is not trusted here, or it does not "
            "speak TLS)",
            hint="point SSL_CERT_FILE at the registry's CA, or pass --insecure-registry for a "
            "registry you trust that serves plain HTTP or a self-signed certificate",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return RegistryError(
            f"{where} did not answer within {options.timeout_s:g} seconds",
            hint="check the address and that it is up",
        )
    if "refused" in text:
        reason = "connection refused"
    elif "resolution" in text or "not known" in text or "nodename" in text:
        reason = "the name does not resolve"
    elif "badstatusline" in text or "remotedisconnected" in text or "aborted" in text:
        reason = "it answers with something that is not HTTP, or hangs up"
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
        reason = "its answer broke off"
    else:
        reason = type(exc).__name__
    return RegistryError(
        f"no registry answers at {where} ({reason})",
        hint="check the address and that the registry is running",
    )


def _read_body(
    response: requests.Response, limit: int, where: str, options: RegistryOptions
) -> bytes:
    """The body, read up to one byte past ``limit`` (so an overlong one is seen, not stored)."""
    import requests

    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    except requests.exceptions.RequestException as exc:
        raise _transport_error(exc, where, options) from None
    finally:
        response.close()
    return b"".join(chunks)[: limit + 1]


def _reason(response: requests.Response) -> str:
    reason = response.reason if isinstance(response.reason, str) else ""
    return "".join(c for c in reason if c.isprintable())[:60] or "error"


def _error_code(response: requests.Response, before: str = ", ", after: str = "") -> str:
    """The registry's own error code (``MANIFEST_UNKNOWN``, ``DENIED``), when it gave one."""
    if "json" not in response.headers.get("Content-Type", ""):
        return ""
    try:
        errors = json.loads(response.content[:65536]).get("errors")
        code = errors[0]["code"] if isinstance(errors, list) and errors else ""
    except (ValueError, AttributeError, KeyError, TypeError, IndexError):
        return ""
    if not isinstance(code, str) or not re.fullmatch(r"[A-Z_]{1,40}", code):
        return ""
    return f"{before}{code}{after}"
