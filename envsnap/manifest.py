"""The manifest and result models, and their canonical TOML form.

Every section is a frozen dataclass made with ``@model`` (a ``Model`` subclass whose methods are
shared rather than generated). Serialisation is generic: fields in declaration order, fields equal
to their default left out, mappings sorted by key. A ``digest`` over that canonical form makes an
edit after writing detectable.

Over 600 lines on purpose: the schema (every section), its canonical writer and its checking
reader change together, and one file keeps a field from being added to one and not the others.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, dataclass_transform

from envsnap.errors import ManifestError

MANIFEST_SCHEMA = "envsnap.manifest/1"
RESULT_SCHEMA = "envsnap.result/1"

ParamScalar = str | int | float | bool
ParamValue = str | int | float | bool | tuple[str | int | float | bool, ...]
ParamSource = Literal["cli", "file", "api", "default"]
PackageSource = Literal["index", "vcs", "url", "local", "editable", "conda", "system", "unknown"]


class Model:
    """Construction, immutability, equality, hashing and repr shared by every model class.

    ``dataclass(frozen=True)`` would generate ``__init__``, ``__setattr__``, ``__delattr__``,
    ``__eq__``, ``__hash__`` and ``__repr__`` per class with ``exec``; for the dozens of model
    classes on capture's start-up path that was most of capture's own import time
    (benchmarks/bench_capture.py measures it). Shared, they cost about as much per instance.
    """

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]
    # Set by ``model``: each field's (name, default, default factory) in declaration order, for
    # serialising; and for constructing, the plain defaults and the (name, factory) pairs.
    _init_fields: ClassVar[tuple[tuple[str, Any, Any], ...]]
    _defaults: ClassVar[dict[str, Any]]
    _factories: ClassVar[tuple[tuple[str, Callable[[], Any]], ...]]

    def __init__(self, **values: Any) -> None:
        state = {**self._defaults, **values}
        for name, factory in self._factories:
            if name not in values:
                state[name] = factory()
        if state.keys() != self.__dataclass_fields__.keys():
            raise self._signature_error(values)
        self.__dict__.update(state)  # past the frozen __setattr__, as dataclass's own init goes

    def _signature_error(self, values: Mapping[str, Any]) -> TypeError:
        name = type(self).__name__
        fields = self.__dataclass_fields__
        unknown = [key for key in values if key not in fields]
        if unknown:
            return TypeError(f"{name}() got an unexpected keyword argument {unknown[0]!r}")
        given = {*values, *self._defaults, *dict(self._factories)}
        missing = [key for key in fields if key not in given]
        return TypeError(f"{name}() missing required keyword-only argument: {missing[0]!r}")

    # Hidden from type checkers: to them ``model`` already makes every field read-only, and a
    # declared __setattr__ would let them accept assignments to any attribute name.
    if not TYPE_CHECKING:

        def __setattr__(self, name: str, value: Any) -> None:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self, name: str) -> None:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        # The instance dict holds exactly the fields (see __init__): compared in C, in one step.
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((self.__class__, self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__dataclass_fields__)
        return f"{type(self).__name__}({fields})"


_ModelT = TypeVar("_ModelT", bound=Model)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
def model(cls: type[_ModelT]) -> type[_ModelT]:
    """Make a ``Model`` subclass a frozen, keyword-only dataclass (to type checkers and to
    ``dataclasses.fields``/``replace``) without generating any method for it."""
    made = dataclass(init=False, eq=False, repr=False, kw_only=True)(cls)
    fields = dataclasses.fields(made)
    if len(fields) != len(made.__dataclass_fields__):
        # Model's __init__, __eq__ and __repr__ treat every entry there as a field.
        raise TypeError(f"{cls.__name__}: a model has no ClassVar or InitVar pseudo-fields")
    missing = dataclasses.MISSING
    made._init_fields = tuple((f.name, f.default, f.default_factory) for f in fields)
    made._defaults = {f.name: f.default for f in fields if f.default is not missing}
    made._factories = tuple(
        (f.name, f.default_factory) for f in fields if f.default_factory is not missing
    )
    return made


@model
class Tool(Model):
    """The envsnap that wrote the manifest; kept apart from the experiment's packages."""

    name: str = "envsnap"
    version: str
    source: str = "index"


@model
class Command(Model):
    """The command the experiment runs, with secrets already redacted."""

    argv: tuple[str, ...] = ()
    cwd: str = "."


@model
class Param(Model):
    """One parameter: a dotted key, its typed value and where it came from."""

    key: str
    value: ParamValue
    source: ParamSource


@model
class Outputs(Model):
    """What the run promises to produce: output globs and a metrics file."""

    globs: tuple[str, ...] = ()
    metrics: str = ""


@model
class Host(Model):
    """The operating system and hardware of the machine capture ran on."""

    os_id: str = ""
    os_version: str = ""
    os_codename: str = ""
    os_name: str = ""
    kernel: str = ""
    arch: str = ""
    libc: str = ""
    cpu_model: str = ""
    cpu_count: int = 0
    memory_bytes: int = 0
    hostname: str = ""


@model
class Container(Model):
    """Whether capture ran inside a container, which runtime, and the image when knowable."""

    inside: bool = False
    runtime: str = ""
    image: str = ""
    image_digest: str = ""
    detected_by: str = ""


@model
class GpuDevice(Model):
    """One NVIDIA device as NVML reports it."""

    index: int
    name: str
    uuid: str = ""
    memory_bytes: int = 0
    compute_capability: str = ""


@model
class Gpu(Model):
    """NVIDIA driver and devices; ``reason`` says why nothing was found."""

    available: bool = False
    reason: str = ""
    driver_version: str = ""
    cuda_driver_version: str = ""
    devices: tuple[GpuDevice, ...] = ()


@model
class Cuda(Model):
    """The CUDA runtime, cuDNN and NCCL the frameworks would load, and where each was read."""

    runtime_version: str = ""
    runtime_source: str = ""
    cudnn_version: str = ""
    cudnn_source: str = ""
    nccl_version: str = ""
    nccl_source: str = ""
    frameworks: Mapping[str, str] = field(default_factory=dict)


@model
class Package(Model):
    """One installed distribution and where it came from, enough to install it again."""

    name: str
    version: str
    source: PackageSource = "index"
    index_url: str = ""
    url: str = ""
    vcs: str = ""
    commit: str = ""
    requested_revision: str = ""
    subdirectory: str = ""
    archive_hash: str = ""
    path: str = ""
    installer: str = ""
    wheel_tag: str = ""
    reinstallable: bool = True
    reason: str = ""


@model
class Python(Model):
    """The interpreter the experiment runs in and every distribution installed in it."""

    implementation: str = ""
    version: str = ""
    executable: str = ""
    prefix: str = ""
    env_kind: str = ""
    index_url: str = ""
    extra_index_urls: tuple[str, ...] = ()
    packages: tuple[Package, ...] = ()


@model
class CondaPackage(Model):
    """One package of a conda environment, read from its conda-meta record."""

    name: str
    version: str
    build: str = ""
    channel: str = ""
    subdir: str = ""
    url: str = ""
    md5: str = ""
    sha256: str = ""


@model
class Conda(Model):
    """The conda environment the interpreter lives in, when it lives in one."""

    present: bool = False
    prefix: str = ""
    name: str = ""
    packages: tuple[CondaPackage, ...] = ()


@model
class Git(Model):
    """Git state of the project: commit, branch, remote and what differs from HEAD."""

    present: bool = False
    reason: str = ""
    commit: str = ""
    branch: str = ""
    remote_url: str = ""
    dirty: bool = False
    diff_sha256: str = ""
    diff_bytes: int = 0
    diff_truncated: bool = False
    untracked: tuple[str, ...] = ()
    untracked_omitted: int = 0
    # Declared data paths (repository-relative): fingerprinted as data, left out of the diff,
    # of dirty and of the untracked list.
    excluded: tuple[str, ...] = ()
    # Submodules with uncommitted changes or untracked files, which the diff cannot carry.
    submodules_dirty: tuple[str, ...] = ()


@model
class DataItem(Model):
    """A fingerprint of one data file (sha256) or directory (tree hash)."""

    path: str
    kind: Literal["file", "dir"]
    sha256: str
    bytes: int = 0
    files: int = 1


@model
class Redaction(Model):
    """Something left out of the manifest, named with the reason, never with its value."""

    where: str
    name: str
    reason: str


@model
class Manifest(Model):
    """Everything about one run that can change its result."""

    schema: str = MANIFEST_SCHEMA
    run_id: str
    env_id: str = ""
    created: str
    name: str = ""
    notes: str = ""
    rerun_of: str = ""
    digest: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    tool: Tool
    command: Command = Command()
    params: tuple[Param, ...] = ()
    seeds: Mapping[str, int] = field(default_factory=dict)
    determinism: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    outputs: Outputs = Outputs()
    host: Host = Host()
    container: Container = Container()
    gpu: Gpu = Gpu()
    cuda: Cuda = Cuda()
    python: Python = Python()
    conda: Conda = Conda()
    git: Git = Git()
    data: tuple[DataItem, ...] = ()
    redacted: tuple[Redaction, ...] = ()


@model
class OutputFile(Model):
    """One file matched by an output glob after the command ran."""

    path: str
    sha256: str
    bytes: int = 0


@model
class Result(Model):
    """What a recorded command did: exit code, timing, output hashes and metrics."""

    schema: str = RESULT_SCHEMA
    run_id: str
    exit_code: int
    started: str
    ended: str
    duration_s: float = 0.0
    interrupted: bool = False
    error: str = ""
    metrics_error: str = ""
    # Files matching --output or --metrics that the command did not write (they predate it):
    # left out of outputs and metrics.
    stale: tuple[str, ...] = ()
    outputs: tuple[OutputFile, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)


def compute_env_id(manifest: Manifest) -> str:
    """Hash the sections that decide the image, so equal environments share one built image."""
    return _env_id(to_data(manifest))


def _env_id(data: Mapping[str, Any]) -> str:
    host = data.get("host", {})
    python = dict(data.get("python", {}))
    # Paths differ between machines without changing what must be installed.
    python.pop("executable", None)
    python.pop("prefix", None)
    python["packages"] = [
        {k: v for k, v in package.items() if k != "path"} for package in python.get("packages", [])
    ]
    basis = {
        "os": [host.get("os_id", ""), host.get("os_version", ""), host.get("arch", "")],
        "python": python,
        "conda": data.get("conda", {}).get("packages", []),
        "cuda": data.get("cuda", {}),
        "base": data.get("container", {}).get("image_digest", ""),
    }
    return "sha256:" + _canonical_hash(basis)


def seal(manifest: Manifest) -> Manifest:
    """The manifest with its env_id and digest filled in."""
    return seal_text(manifest)[0]


def seal_text(manifest: Manifest) -> tuple[Manifest, str]:
    """Fill in env_id and digest and render the canonical TOML, converting the model once:
    the last step before writing."""
    data = to_data(dataclasses.replace(manifest, env_id="", digest=""))
    env_id = _env_id(data)
    data["env_id"] = env_id
    digest = "sha256:" + _canonical_hash(data)
    data["digest"] = digest
    ordered = {f.name: data[f.name] for f in dataclasses.fields(Manifest) if f.name in data}
    return dataclasses.replace(manifest, env_id=env_id, digest=digest), _dumps(ordered)


def verify_digest(manifest: Manifest, origin: str) -> None:
    """Refuse a manifest whose content no longer matches the digest written with it."""
    expected = "sha256:" + _canonical_hash(to_data(dataclasses.replace(manifest, digest="")))
    if manifest.digest != expected:
        raise ManifestError(
            f"{origin} was modified after it was written (its digest does not match its content)",
            hint="restore the original file or capture a new run",
        )


def _canonical_hash(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _sha256_hex(text.encode("utf-8"))


def _sha256_hex(data: bytes) -> str:
    """SHA-256 of a manifest's few kilobytes by Python's built-in implementation: ``hashlib``
    loads OpenSSL's libcrypto on import, about 3 ms of every capture, and OpenSSL's speed does
    not matter at this size. Same digest either way."""
    import importlib

    for name in ("_sha2", "_sha256"):  # Python 3.12 on, then 3.11
        try:
            sha256 = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        return str(sha256(data).hexdigest())
    import hashlib  # an interpreter built without its own SHA-2

    return hashlib.sha256(data).hexdigest()


# --- canonical TOML ---------------------------------------------------------------------------


def dumps_manifest(manifest: Manifest) -> str:
    """The canonical TOML text of a manifest."""
    return _dumps(to_data(manifest))


def dumps_result(result: Result) -> str:
    """The canonical TOML text of a result."""
    return _dumps(to_data(result))


def _dumps(data: Mapping[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data, multiline_strings=False)


def loads_manifest(text: str, origin: str) -> Manifest:
    """Parse, validate and verify a manifest; every defect becomes a ManifestError naming origin."""
    data = _parse(text, origin)
    schema = data.get("schema")
    if schema != MANIFEST_SCHEMA:
        raise ManifestError(
            f"{origin} has schema {schema!r}, which this envsnap does not read",
            hint=f"expected {MANIFEST_SCHEMA!r}; upgrade envsnap or capture the run again",
        )
    manifest = from_data(Manifest, data, origin)
    verify_digest(manifest, origin)
    return manifest


def loads_result(text: str, origin: str) -> Result:
    """Parse and validate a result file."""
    data = _parse(text, origin)
    if data.get("schema") != RESULT_SCHEMA:
        raise ManifestError(
            f"{origin} has schema {data.get('schema')!r}, which this envsnap does not read",
            hint=f"expected {RESULT_SCHEMA!r}",
        )
    return from_data(Result, data, origin)


def read_manifest(path: Path) -> Manifest:
    """Read a manifest file from disk."""
    return loads_manifest(_read_text(path), str(path))


def read_result(path: Path) -> Result:
    """Read a result file from disk."""
    return loads_result(_read_text(path), str(path))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} cannot be read ({exc})", hint="check the file") from None


def _parse(text: str, origin: str) -> dict[str, Any]:
    from envsnap import canonicaltoml

    data = canonicaltoml.loads(text)  # what envsnap wrote, read 5x faster than tomllib can
    if data is not None:
        return data
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(
            f"{origin} is not valid TOML ({exc}); it may be truncated or hand-edited",
            hint="restore it from the store or capture a new run",
        ) from None


# --- generic dataclass <-> plain data ---------------------------------------------------------


def to_data(obj: Any, *, keep_defaults: bool = False) -> Any:
    """Plain TOML-ready data of a model: fields in order, mappings sorted by key, and fields at
    their default value left out unless ``keep_defaults`` (comparisons need every field)."""
    if isinstance(obj, str | int | float):  # most values: the cheapest test first
        return obj
    if isinstance(obj, Model):
        out: dict[str, Any] = {}
        values = obj.__dict__
        for name, default, factory in obj._init_fields:
            value = values[name]
            if not keep_defaults and name != "schema" and _is_default(value, default, factory):
                continue
            # Scalars, most values, are taken as they are without another call.
            out[name] = (
                value
                if value.__class__ in _SCALAR_TYPES
                else to_data(value, keep_defaults=keep_defaults)
            )
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_data(obj[k], keep_defaults=keep_defaults) for k in sorted(obj)}
    if isinstance(obj, tuple | list):
        return [to_data(v, keep_defaults=keep_defaults) for v in obj]
    return obj


_SCALAR_TYPES = frozenset({str, int, float, bool})


def _is_default(value: Any, default: Any, factory: Any) -> bool:
    if default is not dataclasses.MISSING:
        return bool(value == default)
    if factory is not dataclasses.MISSING:
        return bool(value == factory())
    return False


T = TypeVar("T")


def from_data(cls: type[T], data: Any, origin: str, where: str = "") -> T:
    """Build a dataclass from plain data, checking types; unknown or missing keys are errors."""
    if not isinstance(data, Mapping):
        raise _shape_error(origin, where or "top level", "a table")
    names, fields = _model_fields(typing.cast(type, cls))
    if not names.issuperset(data):
        unknown = sorted(set(data) - names)
        raise ManifestError(
            f"{origin} has unknown key {_join(where, unknown[0])!r}; it was hand-edited or "
            "written by a newer envsnap",
            hint="restore the original file or upgrade envsnap",
        )
    kwargs: dict[str, Any] = {}
    for name, convert, required in fields:
        if name in data:
            kwargs[name] = convert(data[name], origin, f"{where}.{name}" if where else name)
        elif required:
            raise ManifestError(
                f"{origin} lacks the required key {_join(where, name)!r}; the file is truncated "
                "or was edited",
                hint="restore it from the store or capture a new run",
            )
    return cls(**kwargs)


# Checks are compiled once per model class and field type. Resolving type hints for every row,
# as this reader once did, made a manifest with 200,000 params read 12x slower than its TOML
# parsed; values of the common exact types also skip the union's trial and error.
_Convert = Callable[[Any, str, str], Any]
_FieldSpec = tuple[str, _Convert, bool]  # name, check, required


@functools.cache
def _model_fields(cls: Any) -> tuple[frozenset[str], tuple[_FieldSpec, ...]]:
    hints = typing.get_type_hints(cls)
    missing = dataclasses.MISSING
    specs = tuple(
        (
            f.name,
            _converter(hints[f.name]),
            f.default is missing and f.default_factory is missing,
        )
        for f in dataclasses.fields(cls)
    )
    return frozenset(name for name, _, _ in specs), specs


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (_is_bool, "true or false"),
    int: (_is_int, "an integer"),
    float: (_is_number, "a number"),
    str: (_is_str, "a string"),
}
# The exact Python types each scalar field type takes unchanged (a float field keeps an int).
_KEPT: dict[Any, frozenset[type]] = {
    bool: frozenset({bool}),
    int: frozenset({int}),
    float: frozenset({int, float}),
    str: frozenset({str}),
}


def _kept_types(tp: Any) -> frozenset[type]:
    """Exact types a value may have to be taken as ``tp`` without any conversion."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return frozenset().union(*(_kept_types(member) for member in typing.get_args(tp)))
    return _KEPT.get(tp, frozenset())


@functools.cache
def _converter(tp: Any) -> _Convert:
    """The check of plain data read as type ``tp``, returning the typed value."""
    if dataclasses.is_dataclass(tp):

        def convert_model(value: Any, origin: str, where: str) -> Any:
            return from_data(tp, value, origin, where)  # type: ignore[arg-type]

        return convert_model
    origin_tp = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin_tp is Literal:
        expected = " or ".join(repr(a) for a in args)

        def convert_literal(value: Any, origin: str, where: str) -> Any:
            if value not in args:
                raise _shape_error(origin, where, expected)
            return value

        return convert_literal
    if origin_tp in (typing.Union, types.UnionType):
        members = tuple(_converter(member) for member in args)
        kept = _kept_types(tp)

        def convert_union(value: Any, origin: str, where: str) -> Any:
            if type(value) in kept:
                return value
            for member in members:
                try:
                    return member(value, origin, where)
                except ManifestError:
                    continue
            raise _shape_error(origin, where, str(tp))

        return convert_union
    if origin_tp is tuple:
        item = _converter(args[0])
        kept_items = _kept_types(args[0])

        def convert_tuple(value: Any, origin: str, where: str) -> Any:
            if not isinstance(value, list):
                raise _shape_error(origin, where, "an array")
            if kept_items and all(type(v) in kept_items for v in value):
                return tuple(value)
            return tuple(item(v, origin, f"{where}[{i}]") for i, v in enumerate(value))

        return convert_tuple
    if origin_tp in (Mapping, dict):
        item = _converter(args[1])

        def convert_mapping(value: Any, origin: str, where: str) -> Any:
            if not isinstance(value, Mapping):
                raise _shape_error(origin, where, "a table")
            return {str(k): item(v, origin, f"{where}.{k}") for k, v in value.items()}

        return convert_mapping
    if tp in _SCALARS:
        check, expected = _SCALARS[tp]

        def convert_scalar(value: Any, origin: str, where: str) -> Any:
            if not check(value):
                raise _shape_error(origin, where, expected)
            return value

        return convert_scalar

    def unsupported(value: Any, origin: str, where: str) -> Any:
        raise TypeError(f"unsupported field type {tp!r} at {where}")  # a model bug, not input

    return unsupported


def _shape_error(origin: str, where: str, expected: str) -> ManifestError:
    return ManifestError(
        f"{origin} has a malformed value at {where!r} (expected {expected})",
        hint="restore the original file or capture a new run",
    )


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def capture_warnings(manifest: Manifest) -> tuple[str, ...]:
    """Sentences about what a manifest records only in part: a diff cut at its size bound or
    not read, and submodules whose uncommitted changes no patch can carry."""
    git = manifest.git
    found: list[str] = []
    if git.diff_truncated:
        found.append(
            f"the uncommitted diff is larger than git-max-diff-bytes and was cut at "
            f"{git.diff_bytes} bytes, so envsnap rerun cannot restore this run's code; commit "
            "the changes or raise git-max-diff-bytes in [tool.envsnap]"
        )
    elif git.present and git.dirty and git.reason:
        found.append(f"the uncommitted diff was not recorded in full ({git.reason})")
    if git.submodules_dirty:
        found.append(
            f"uncommitted changes inside submodule(s) {', '.join(git.submodules_dirty)} are not "
            "recorded (only the submodule commit is); commit them inside the submodule"
        )
    return tuple(found)
