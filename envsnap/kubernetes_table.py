"""What a team commits for a Kubernetes target (a ``[tool.envsnap.targets.<name>]`` table with
``engine = "kubernetes"``): the model, its reading from the table's kebab-case keys, and the
check of every value that flows into a Job. Small on purpose: config.py reads it at start-up."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from envsnap.errors import UsageError

# The keys of a kubernetes target's table besides ``engine`` (config.py checks the rest).
TABLE_KEYS = frozenset(
    {
        "context",
        "data",
        "env-secret",
        "image-pull-secret",
        "namespace",
        "node-selector",
        "read-only-root",
        "registry-secret",
        "results",
        "service-account",
        "volumes",
    }
)
DEFAULT_NAMESPACE = "default"
RESERVED_VOLUMES = frozenset({"envsnap", "code", "tmp", "docker-config"})
_STRING_KEYS = (
    "context",
    "env-secret",
    "image-pull-secret",
    "namespace",
    "registry-secret",
    "results",
    "service-account",
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class VolumeSource:
    """Where a named data volume comes from: a PersistentVolumeClaim, or a path on the node."""

    claim: str = ""
    host_path: str = ""


@dataclass(frozen=True, kw_only=True)
class DataVolume:
    """Where one recorded data path is found: a named volume, and a path inside it."""

    volume: str
    sub_path: str = ""


@dataclass(frozen=True, kw_only=True)
class KubernetesConfig:
    """A kubernetes target: what a team commits once for its cluster, with what ``--on
    NAME:CONTEXT`` and ``--namespace`` override."""

    namespace: str = DEFAULT_NAMESPACE
    context: str = ""  # the kubeconfig context; "" is the current one
    image_pull_secret: str = ""
    registry_secret: str = ""  # dockerconfigjson secret for pulling and pushing records
    env_secret: str = ""  # secret whose keys become variables (values redacted at capture)
    service_account: str = ""
    # The repository the Job pushes the new run's record to; also where a run given by id is
    # looked for (REPOSITORY:<run-id>, as envsnap push tags it). "": the original record's.
    results: str = ""
    volumes: Mapping[str, VolumeSource] = field(default_factory=dict)
    data: Mapping[str, DataVolume] = field(default_factory=dict)  # recorded path -> volume
    node_selector: Mapping[str, str] = field(default_factory=dict)
    read_only_root: bool = True


def parse_table(table: Mapping[str, Any], where: str) -> KubernetesConfig:
    """A kubernetes target's table (its keys already known to be ``TABLE_KEYS``), read and
    checked whole; a UsageError naming ``where`` (the table) and the key otherwise."""
    texts: dict[str, str] = {}
    for key in _STRING_KEYS:
        value = table.get(key, "")
        if not isinstance(value, str):
            raise _error(where, f"{key} is not a string", f'write {key} = "..."')
        texts[key] = value
    volumes: dict[str, VolumeSource] = {}
    for name, spec in _subtable(table, "volumes", where).items():
        if (
            not isinstance(spec, Mapping)
            or len(spec) != 1
            or not set(spec) <= {"claim", "host-path"}
            or not all(isinstance(v, str) for v in spec.values())
        ):
            raise _error(
                where,
                f'volumes.{name} is not one of {{ claim = "..." }} or {{ host-path = "..." }}',
                f'write volumes = {{ {name} = {{ claim = "datasets" }} }}',
            )
        volumes[str(name)] = VolumeSource(
            claim=spec.get("claim", ""), host_path=spec.get("host-path", "")
        )
    data: dict[str, DataVolume] = {}
    for path, spec in _subtable(table, "data", where).items():
        if (
            not isinstance(spec, Mapping)
            or not set(spec) <= {"volume", "sub-path"}
            or not isinstance(spec.get("volume"), str)
            or not isinstance(spec.get("sub-path", ""), str)
        ):
            raise _error(
                where,
                f'data.{path!r} is not {{ volume = "NAME", sub-path = "PATH" }}',
                "map each recorded data path to a volume of volumes and, optionally, a path "
                "inside it",
            )
        data[str(path)] = DataVolume(volume=spec["volume"], sub_path=spec.get("sub-path", ""))
    selector = _subtable(table, "node-selector", where)
    if not all(isinstance(v, str) for v in selector.values()):
        raise _error(where, "node-selector has a value that is not a string", "quote it")
    read_only = table.get("read-only-root", True)
    if not isinstance(read_only, bool):
        raise _error(where, "read-only-root is not true or false", "write read-only-root = true")
    config = KubernetesConfig(
        namespace=texts["namespace"] or DEFAULT_NAMESPACE,
        context=texts["context"],
        image_pull_secret=texts["image-pull-secret"],
        registry_secret=texts["registry-secret"],
        env_secret=texts["env-secret"],
        service_account=texts["service-account"],
        results=texts["results"],
        volumes=dict(sorted(volumes.items())),
        data=dict(sorted(data.items())),
        node_selector={str(k): v for k, v in sorted(selector.items())},
        read_only_root=read_only,
    )
    check_config(config, where)
    return config


def check_config(config: KubernetesConfig, where: str = "the Kubernetes target") -> None:
    """Every value of the configuration that flows into a Job, checked for what Kubernetes
    accepts there; a UsageError naming ``where`` and the key otherwise."""
    check_namespace(config.namespace, f"{where}: namespace")
    check_context(config.context, f"{where}: context")
    secrets = {
        "image-pull-secret": config.image_pull_secret,
        "registry-secret": config.registry_secret,
        "env-secret": config.env_secret,
        "service-account": config.service_account,
    }
    for key, value in secrets.items():
        if value and not _DNS_SUBDOMAIN.fullmatch(value):
            raise _error(
                where,
                f"{key} {value!r} is not a Kubernetes name",
                "use lowercase letters, digits, '-' and '.'",
            )
    if config.results:
        check_results(config.results, f"{where}: results")
    for name, source in config.volumes.items():
        if not _DNS_LABEL.fullmatch(name):
            raise _error(
                where,
                f"the volume name {name!r} is not a Kubernetes name",
                "use at most 63 lowercase letters, digits and '-'",
            )
        if name in RESERVED_VOLUMES:
            raise _error(
                where,
                f"names a volume {name!r}, which envsnap's Job uses itself",
                f"call it something else than {', '.join(sorted(RESERVED_VOLUMES))}",
            )
        if bool(source.claim) == bool(source.host_path):
            raise _error(where, f"volumes.{name} needs one of claim or host-path", "give one")
        if source.claim and not _DNS_SUBDOMAIN.fullmatch(source.claim):
            raise _error(
                where,
                f"volumes.{name}.claim {source.claim!r} is not a Kubernetes name",
                "use lowercase letters, digits, '-' and '.'",
            )
        if source.host_path:
            _safe_path(source.host_path, f"volumes.{name}.host-path", where, absolute=True)
    for path, mapped in config.data.items():
        if mapped.volume not in config.volumes:
            raise _error(
                where,
                f"data.{path!r} names the volume {mapped.volume!r}, which volumes does not define",
                f'add volumes = {{ {mapped.volume} = {{ claim = "..." }} }}',
            )
        if mapped.sub_path:
            _safe_path(mapped.sub_path, f"data.{path!r}.sub-path", where, absolute=False)
    for key, value in config.node_selector.items():
        prefix, slash, name = key.rpartition("/")
        if (slash and not _DNS_SUBDOMAIN.fullmatch(prefix)) or not _LABEL_NAME.fullmatch(name):
            raise _error(
                where, f"node-selector key {key!r} is not a label key", "see kubectl label"
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise _error(
                where,
                f"node-selector value {value!r} is not a label value",
                "63 letters, digits, '-', '_' or '.' at most",
            )


def check_namespace(namespace: str, what: str) -> None:
    """A namespace is a DNS label; ``what`` names where it came from (a table, --namespace)."""
    if not _DNS_LABEL.fullmatch(namespace):
        raise UsageError(
            f"{what} {namespace!r} is not a Kubernetes namespace",
            hint="use at most 63 lowercase letters, digits and '-' (kubectl get namespaces)",
        )


def check_context(context: str, what: str) -> None:
    """A kubeconfig context name: anything printable, as kubectl takes it."""
    if context and (len(context) > 253 or CONTROL.search(context)):
        raise UsageError(
            f"{what} {context!r} is not a context name", hint="see kubectl config get-contexts"
        )


def check_results(repository: str, what: str) -> str:
    """The repository a new run's record goes to: REGISTRY/PATH, no tag or digest."""
    from envsnap.imageref import parse_reference

    reference = parse_reference(repository, what)
    if reference.tag or reference.digest or "/" not in repository:
        raise UsageError(
            f"{what} {repository!r} is not a repository",
            hint="give REGISTRY/PATH without a tag or digest, e.g. registry.example/team/runs",
        )
    return reference.repository


def _error(where: str, what: str, hint: str) -> UsageError:
    return UsageError(f"{where}: {what}", hint=hint)


def _subtable(table: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise _error(where, f"{key} is not a table", f"write {key} = {{ ... }}")
    return value


def _safe_path(value: str, what: str, where: str, *, absolute: bool) -> None:
    path = PurePosixPath(value)
    if (
        not value
        or CONTROL.search(value)
        or ":" in value
        or ".." in path.parts
        or path.is_absolute() != absolute
    ):
        kind = "an absolute path" if absolute else "a relative path inside the volume"
        raise _error(
            where, f"{what} {value!r} is not {kind}", "without '..', ':' or control characters"
        )
