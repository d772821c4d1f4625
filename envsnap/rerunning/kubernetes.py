"""The Kubernetes rerun target: a recorded run as a ``batch/v1`` Job, and the Job waited on.

Nothing of this machine reaches the cluster but the Job itself; the run record and the new
run's record travel through the registry (``envsnap push``/``pull``), the image is pulled by the
digest the record's ``image.toml`` names. The pod, in order:

1. init container ``pull-record`` (the environment image, so the image's own envsnap):
   ``envsnap pull RECORD --store /envsnap/original`` into the emptyDir ``envsnap``; every digest
   is verified as ``envsnap pull`` does anywhere;
2. init container ``unpack-code``: ``tar -xzf .../code.tar.gz -C /envsnap/code``: the record's
   code archive (the recorded commit with its diff, as a git checkout) into the emptyDir ``code``;
3. container ``replay``, with ``code`` mounted at ``/work`` (where ``docker cp`` puts it on
   docker) and the recorded working directory as its working directory: ``envsnap _replay`` of
   the pulled manifest into the empty store ``/envsnap/store``, then ``envsnap push latest
   RESULTS`` of that store's one run, whose printed reference goes to the termination message;
   the container exits with the replayed command's exit code. Pushing needs one step after
   another in one container, so this is ``sh -c`` with a constant script: every value reaches it
   as a positional parameter (``"$1"``), never spliced into the script's text.

:meth:`KubernetesTarget.wait` reads the Job's terminal condition, the exit code and the
termination message, so the caller pulls the new run (``JobResult.record``) and compares it.

What the Job refuses to be: root (``runAsNonRoot``, uid 10001, the image's own user), able to
gain privileges or keep a capability, or writing its image's filesystem (``/tmp``, the store and
the code are emptyDirs); no service-account token is mounted. Data is never copied in: every
recorded data path must be mapped to a volume in the target's configuration (a PVC or a host
path, a ``subPath`` in it), mounted read-only at the place the command saw it; it must be
readable by uid 10001, since the Job sets no ``fsGroup`` (the kubelet would change the group of
every file of the data). Values flow into the Job only after validation, and ``$`` is doubled
wherever Kubernetes would expand ``$(NAME)`` (args and env values). Credentials for the
registry come from a secret of type ``kubernetes.io/dockerconfigjson`` mounted as
``$DOCKER_CONFIG/config.json`` (credential helpers do not exist in the pod); values redacted at
capture come from a secret through ``envFrom``, never as plain values in the Job.

A Job stopped by its deadline (``activeDeadlineSeconds``) pushes no record: the result says
``DeadlineExceeded`` and there is nothing to compare. Unlike a docker rerun the pod has the
cluster's network (a NetworkPolicy is the cluster's to set). Not run against a real cluster yet:
the Job is checked against the official client's ``batch/v1`` models and golden files, and
submission and watching against a fake of the client.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, Protocol

from envsnap.capturing.redact import is_secret_name
from envsnap.errors import EnvsnapError, UsageError
from envsnap.image.plan import CODE_DIR
from envsnap.image.reference import parse_reference
from envsnap.rerunning.rerun import (
    ENGINE_VARIABLE,
    IMAGE_UID,
    check_rerunnable,
    container_environment,
)
from envsnap.store import CODE_ARCHIVE

if TYPE_CHECKING:
    from envsnap.manifest import Manifest
    from envsnap.store import StoredRun

API_VERSION = "batch/v1"
MANAGED_BY = "envsnap"
LABEL_RERUN_OF = "envsnap.dev/rerun-of"
LABEL_ENV_ID = "envsnap.dev/env-id"
ANNOTATION_ENV_ID = "envsnap.dev/env-id"
ANNOTATION_RECORD = "envsnap.dev/record"
ANNOTATION_RESULTS = "envsnap.dev/results"
# Label values hold 63 characters and no ':': the env id's first hex digits (as image tags have
# them); the whole env id is an annotation.
ENV_ID_LABEL_LENGTH = 20

POD_ROOT = "/envsnap"
POD_ORIGINAL_STORE = f"{POD_ROOT}/original"
POD_STORE = f"{POD_ROOT}/store"
POD_CODE_STAGING = f"{POD_ROOT}/code"
POD_DOCKER_CONFIG = f"{POD_ROOT}/docker"
POD_TMP = "/tmp"  # noqa: S108  (the pod's own emptyDir, not this host's)
TERMINATION_LOG = "/dev/termination-log"
MAIN_CONTAINER = "replay"
MAX_GPUS = 64
API_TIMEOUT_S = 30  # one call to the API server; a watch gets its own length on top
_GONE = 410  # a watch's resource version has expired

# Replay, then push whatever was recorded, exit with the replay's status. Constant: the values
# come in as $1 (original manifest), $2 (store), $3 (results repository).
REPLAY_SCRIPT = (
    'envsnap _replay "$1" --store "$2"; status=$?; '
    f'envsnap push latest "$3" --store "$2" > {TERMINATION_LOG}; '
    'exit "$status"'
)

# The checkout belongs to the pod's user, but the emptyDir it lies in (CODE_DIR itself) is
# root's, and git refuses such a repository ("dubious ownership"): the capture inside would
# record no commit. This trusts exactly CODE_DIR, in git's command-line scope (git >= 2.31).
_TRUST_CHECKOUT = {
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "safe.directory",
    "GIT_CONFIG_VALUE_0": CODE_DIR,
}
_RESERVED_VOLUMES = frozenset({"envsnap", "code", "tmp", "docker-config"})
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class KubernetesError(EnvsnapError):
    """The cluster refused or could not be asked: no configuration, a forbidden namespace, an
    invalid Job."""


class KubernetesExtraMissingError(UsageError):
    """The Kubernetes target was asked for, but the kubernetes package is not installed."""


# --- the target's configuration ----------------------------------------------------------------


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
    """``[tool.envsnap.targets.kubernetes]``: what a team commits once for its cluster."""

    namespace: str = "default"
    context: str = ""  # the kubeconfig context; "" is the current one
    image_pull_secret: str = ""
    registry_secret: str = ""  # dockerconfigjson secret for pulling and pushing records
    env_secret: str = ""  # secret whose keys become variables (values redacted at capture)
    service_account: str = ""
    volumes: Mapping[str, VolumeSource] = field(default_factory=dict)
    data: Mapping[str, DataVolume] = field(default_factory=dict)  # recorded path -> volume
    node_selector: Mapping[str, str] = field(default_factory=dict)
    read_only_root: bool = True


def parse_config(table: Mapping[str, Any]) -> KubernetesConfig:
    """The target's table from pyproject.toml, checked; a UsageError naming the key otherwise."""
    known = {
        "namespace",
        "context",
        "image_pull_secret",
        "registry_secret",
        "env_secret",
        "service_account",
        "volumes",
        "data",
        "node_selector",
        "read_only_root",
    }
    unknown = sorted(set(table) - known)
    if unknown:
        raise _config_error(
            f"has unknown keys {', '.join(unknown)}", f"use {', '.join(sorted(known))}"
        )
    strings = {
        k: table[k]
        for k in known - {"volumes", "data", "node_selector", "read_only_root"}
        if k in table
    }
    for key, value in strings.items():
        if not isinstance(value, str):
            raise _config_error(f"{key} is not a string", f'write {key} = "..."')
    volumes: dict[str, VolumeSource] = {}
    for name, spec in _table(table, "volumes").items():
        spec = _table({name: spec}, name, where=f"volumes.{name}")
        extra = sorted(set(spec) - {"claim", "host_path"})
        if extra or len(spec) != 1 or not all(isinstance(v, str) for v in spec.values()):
            raise _config_error(
                f'volumes.{name} is not one of claim = "..." or host_path = "..."',
                f'write volumes.{name} = {{ claim = "datasets" }}',
            )
        volumes[name] = VolumeSource(**spec)
    data: dict[str, DataVolume] = {}
    for path, spec in _table(table, "data").items():
        spec = _table({path: spec}, path, where=f"data.{path!r}")
        extra = sorted(set(spec) - {"volume", "sub_path"})
        if (
            extra
            or not isinstance(spec.get("volume"), str)
            or not isinstance(spec.get("sub_path", ""), str)
        ):
            raise _config_error(
                f'data.{path!r} is not {{ volume = "NAME", sub_path = "PATH" }}',
                "name a volume from volumes and, optionally, a path inside it",
            )
        data[path] = DataVolume(volume=spec["volume"], sub_path=spec.get("sub_path", ""))
    selector = _table(table, "node_selector")
    if not all(isinstance(v, str) for v in selector.values()):
        raise _config_error("node_selector values are not all strings", "quote them")
    read_only = table.get("read_only_root", True)
    if not isinstance(read_only, bool):
        raise _config_error("read_only_root is not true or false", "write read_only_root = true")
    config = KubernetesConfig(
        **strings,
        volumes=volumes,
        data=data,
        node_selector=dict(selector),
        read_only_root=read_only,
    )
    check_config(config)
    return config


def check_config(config: KubernetesConfig) -> None:
    """Every value of the configuration that flows into a Job, checked for what Kubernetes
    accepts there; a UsageError naming the key otherwise."""
    _dns_label(config.namespace, "namespace")
    if config.context and (len(config.context) > 253 or _CONTROL.search(config.context)):
        raise _config_error(
            f"context {config.context!r} is not a context name", "see kubectl config get-contexts"
        )
    for key in ("image_pull_secret", "registry_secret", "env_secret", "service_account"):
        value = getattr(config, key)
        if value:
            _dns_subdomain(value, key)
    for name, source in config.volumes.items():
        _dns_label(name, f"the volume name {name!r}")
        if name in _RESERVED_VOLUMES:
            raise _config_error(
                f"names a volume {name!r}, which envsnap's Job uses itself",
                f"call it something else than {', '.join(sorted(_RESERVED_VOLUMES))}",
            )
        if bool(source.claim) == bool(source.host_path):
            raise _config_error(f"volumes.{name} needs one of claim or host_path", "give one")
        if source.claim:
            _dns_subdomain(source.claim, f"volumes.{name}.claim")
        else:
            _safe_path(source.host_path, f"volumes.{name}.host_path", absolute=True)
    for path, mapped in config.data.items():
        if mapped.volume not in config.volumes:
            raise _config_error(
                f"data.{path!r} names the volume {mapped.volume!r}, which volumes does not define",
                f'add volumes.{mapped.volume} = {{ claim = "..." }}',
            )
        if mapped.sub_path:
            _safe_path(mapped.sub_path, f"data.{path!r}.sub_path", absolute=False)
    for key, value in config.node_selector.items():
        prefix, slash, name = key.rpartition("/")
        if (slash and not _DNS_SUBDOMAIN.fullmatch(prefix)) or not _LABEL_NAME.fullmatch(name):
            raise _config_error(
                f"node_selector key {key!r} is not a label key", "see kubectl label"
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise _config_error(
                f"node_selector value {value!r} is not a label value",
                "63 letters, digits, '-', '_' or '.' at most",
            )


# --- the Job -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    """What one rerun on Kubernetes needs besides the target's configuration."""

    record: str  # the run's record in a registry: REPOSITORY:<run-id>[@sha256:...]
    image: str  # the environment image by digest (image.toml's registry_digest)
    results: str = ""  # the repository the new run's record is pushed to; default the record's
    gpus: int = 0
    timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # --env, plain (non-secret) values


def recorded_image(stored: StoredRun) -> str:
    """The image a run's record names by digest (image.toml's ``registry_digest``); a cluster
    can only pull an image that was pushed."""
    from envsnap.image.build import IMAGE_FILE

    manifest = stored.manifest
    try:
        data = tomllib.loads((stored.directory / IMAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        data = {}
    digest = data.get("registry_digest")
    if data.get("env_id") != manifest.env_id or not isinstance(digest, str) or not digest:
        raise UsageError(
            f"run {manifest.run_id} records no image pushed to a registry, and a cluster can "
            "only pull one by its digest",
            hint=f"run envsnap build {manifest.run_id} --push REPOSITORY, then envsnap push it",
        )
    return digest


def check_record_code(stored: StoredRun) -> None:
    """Refuse a run whose record carries no code archive: the pod has no clone to check out."""
    if not (stored.directory / CODE_ARCHIVE).is_file():
        raise UsageError(
            f"the record of run {stored.manifest.run_id} carries no code, and a Kubernetes "
            "rerun takes the code from the record",
            hint="push the run again from the repository it was captured in (envsnap push)",
        )


def gpu_count(manifest: Manifest, asked: str = "") -> int:
    """The ``nvidia.com/gpu`` limit: ``asked`` (a count or ``none``), else as many as the original
    run used. A node's devices are the scheduler's to find, so no ``all`` or ``device=``."""
    if not asked:
        return len(manifest.gpu.devices)
    if asked == "none":
        return 0
    if not asked.isdigit() or int(asked) > MAX_GPUS:
        raise UsageError(
            f"--gpus {asked!r} is not a GPU count for Kubernetes",
            hint=f"give a count from 0 to {MAX_GPUS}, or none",
        )
    return int(asked)


def render_job(manifest: Manifest, request: JobRequest, config: KubernetesConfig) -> dict[str, Any]:
    """The ``batch/v1`` Job that reruns ``manifest`` from its record (see the module docstring).

    Deterministic: the same inputs give the same dict; a UsageError for any value Kubernetes or
    the pod would take otherwise than meant."""
    check_rerunnable(manifest)
    check_config(config)
    run_id = manifest.run_id
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"run id {run_id!r} is not one envsnap writes", hint="capture it again")
    record = _record(request.record)
    if _RUN_ID.fullmatch(record.tag) and record.tag != run_id:
        raise UsageError(
            f"the record {request.record!r} is tagged with run {record.tag}, not {run_id}",
            hint="give the reference envsnap push printed for this run",
        )
    results = _results(request.results or record.repository)
    image = parse_reference(request.image, "the recorded image")
    if not image.digest:
        raise UsageError(
            f"the image {request.image!r} is not named by its digest",
            hint="push it with envsnap build RUN --push REPOSITORY, which records the digest",
        )
    gpus = _gpus(request.gpus)
    deadline = _deadline(request.timeout_s)
    env_id = manifest.env_id
    env_hex = env_id.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", env_hex):
        raise UsageError(f"run {run_id} has no valid env id", hint="capture it again")

    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "envsnap-rerun",
        LABEL_ENV_ID: env_hex[:ENV_ID_LABEL_LENGTH],
        LABEL_RERUN_OF: run_id,
    }
    annotations = {
        ANNOTATION_ENV_ID: env_id,
        ANNOTATION_RECORD: str(record),
        ANNOTATION_RESULTS: results,
    }
    workdir = str(PurePosixPath(CODE_DIR) / manifest.command.cwd)
    if _CONTROL.search(workdir):
        raise UsageError(
            f"run {run_id} records a working directory with control characters",
            hint="capture it from a plain directory",
        )
    original = f"{POD_ORIGINAL_STORE}/runs/{run_id}/manifest.toml"
    registry_env = {"HOME": POD_TMP}
    registry_mounts = [_mount("envsnap", POD_ROOT)]
    if config.registry_secret:
        registry_env["DOCKER_CONFIG"] = POD_DOCKER_CONFIG
        registry_mounts.append(_mount("docker-config", POD_DOCKER_CONFIG, read_only=True))

    data_mounts, data_volumes = _data(manifest, config, workdir)
    environment = _environment(manifest, request.env, config)
    environment.update(registry_env)
    environment.update(_TRUST_CHECKOUT)
    main: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "image": str(image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", REPLAY_SCRIPT, "envsnap-replay"],
        "args": [_inert(original), _inert(POD_STORE), _inert(results)],
        "workingDir": workdir,
        "env": _env_list(environment),
        "securityContext": _container_security(config),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "volumeMounts": sorted(
            [
                *registry_mounts,
                _mount("code", CODE_DIR),
                _mount("tmp", POD_TMP),
                *data_mounts,
            ],
            key=lambda m: str(m["mountPath"]),
        ),
    }
    if config.env_secret:
        main["envFrom"] = [{"secretRef": {"name": config.env_secret}}]
    if gpus:
        main["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    pull_mounts = sorted(
        [*registry_mounts, _mount("tmp", POD_TMP)], key=lambda m: str(m["mountPath"])
    )
    # Unpacking needs no registry: no credentials, no variables.
    unpack_mounts = [
        _mount("envsnap", POD_ROOT),
        _mount("code", POD_CODE_STAGING),
        _mount("tmp", POD_TMP),
    ]
    pull: dict[str, Any] = {
        "name": "pull-record",
        "image": str(image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["envsnap", "pull"],
        "args": [_inert(str(record)), "--store", POD_ORIGINAL_STORE],
        "env": _env_list(registry_env),
        "securityContext": _container_security(config),
        "volumeMounts": pull_mounts,
    }
    unpack: dict[str, Any] = {
        "name": "unpack-code",
        "image": str(image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["tar"],
        "args": [
            "-xzf",
            f"{POD_ORIGINAL_STORE}/runs/{run_id}/{CODE_ARCHIVE}",
            "-C",
            POD_CODE_STAGING,
            "--no-same-owner",
        ],
        "securityContext": _container_security(config),
        "volumeMounts": unpack_mounts,
    }
    volumes: list[dict[str, Any]] = [
        {"name": "code", "emptyDir": {}},
        {"name": "envsnap", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        *data_volumes,
    ]
    if config.registry_secret:
        volumes.append(
            {
                "name": "docker-config",
                "secret": {
                    "secretName": config.registry_secret,
                    # Readable by the pod's user without fsGroup (see the pod's securityContext).
                    "defaultMode": 0o444,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [main],
        "enableServiceLinks": False,
        "initContainers": [pull, unpack],
        "restartPolicy": "Never",
        # No fsGroup: the kubelet would change the group of every file of a data volume (slow
        # for a dataset, and a change to data the rerun promises only to read).
        "securityContext": {
            "runAsGroup": IMAGE_UID,
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": sorted(volumes, key=lambda v: str(v["name"])),
    }
    if config.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": config.image_pull_secret}]
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if config.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(config.node_selector.items()))
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"annotations": dict(annotations), "labels": dict(labels)},
            "spec": pod_spec,
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    job = {
        "apiVersion": API_VERSION,
        "kind": "Job",
        "metadata": {
            "annotations": annotations,
            "generateName": f"envsnap-rerun-{run_id}-",
            "labels": labels,
            "namespace": config.namespace,
        },
        "spec": spec,
    }
    # Nothing shared between containers: a caller may change one alone, and YAML has no anchors.
    fresh: dict[str, Any] = json.loads(json.dumps(job))
    return fresh


def job_yaml(job: Mapping[str, Any]) -> str:
    """The Job as YAML for ``--dry-run`` (``kubectl create -f -`` takes it; not ``apply``, which
    needs a fixed name where this Job has ``generateName``): keys sorted, no
    flow style, no line folding, so the text is the same for the same Job."""
    import yaml

    text: str = yaml.safe_dump(
        dict(job), sort_keys=True, default_flow_style=False, allow_unicode=True, width=10_000
    )
    return text


def validate_job(job: Mapping[str, Any]) -> None:
    """Check ``job`` against the official client's ``batch/v1`` models: deserialized into a
    ``V1Job`` (required fields and enums checked by the client) and serialized back, it must come
    out whole; a field the schema does not know would be dropped, and is named here."""
    client = _client_module()
    api = client.ApiClient()
    try:
        model = api._ApiClient__deserialize(dict(job), "V1Job")
    except (ValueError, TypeError) as exc:
        raise KubernetesError(f"the Job is not a valid batch/v1 Job ({exc})") from None
    back = api.sanitize_for_serialization(model)
    lost = sorted(_differences(dict(job), back))
    if lost:
        raise KubernetesError(
            f"the Job does not survive the batch/v1 schema: {', '.join(lost[:5])}",
            hint="this is a bug in envsnap; report it with the Job from --dry-run",
        )


# --- submitting and waiting ----------------------------------------------------------------------


JobState = Literal["succeeded", "failed", "unfinished"]


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """How a rerun Job ended, as Kubernetes tells it."""

    name: str
    namespace: str
    state: JobState
    reason: str = ""  # Kubernetes' word: DeadlineExceeded, BackoffLimitExceeded, Unschedulable...
    message: str = ""
    exit_code: int | None = None  # the replayed command's, when the container ended
    record: str = ""  # the new run's record, as the Job's envsnap push printed it

    @property
    def deadline_exceeded(self) -> bool:
        return self.reason == "DeadlineExceeded"


class Watcher(Protocol):
    """What ``kubernetes.watch.Watch`` offers: a stream of events from a list call."""

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterable[Any]: ...

    def stop(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class KubernetesClient:
    """The seam: the official client's API objects (``BatchV1Api``, ``CoreV1Api``) and its watch
    factory; a test hands in fakes."""

    batch: Any
    core: Any
    watch: Callable[[], Watcher]


def official_client(context: str = "", *, kubeconfig: str | None = None) -> KubernetesClient:
    """The official client, configured from the kubeconfig (``context``, else the current one) or,
    inside a pod, from its service account. ``kubeconfig`` is the file (the caller's
    ``$KUBECONFIG``, passed in); None is the client's own default."""
    import importlib

    client = _client_module()
    # Through Any: some releases of the client annotate these functions and others do not, and
    # strict typing must pass with either.
    config: Any = importlib.import_module("kubernetes.config")
    watch: Any = importlib.import_module("kubernetes.watch")

    try:
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context or None)
        except config.ConfigException:
            if context:
                raise
            config.load_incluster_config()
            api = client.ApiClient()
    except config.ConfigException as exc:
        raise KubernetesError(
            f"no Kubernetes cluster is configured here ({exc})",
            hint="set up a kubeconfig (kubectl config current-context) or name a context",
        ) from None
    return KubernetesClient(
        batch=client.BatchV1Api(api), core=client.CoreV1Api(api), watch=watch.Watch
    )


class KubernetesTarget:
    """Submit rerun Jobs and wait on them through ``client``."""

    def __init__(
        self,
        client: KubernetesClient,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        import time

        self.client = client
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep

    def submit(self, job: Mapping[str, Any]) -> str:
        """Create the Job; its name (the cluster completes ``generateName``)."""
        namespace = str(job["metadata"]["namespace"])
        try:
            created = self.client.batch.create_namespaced_job(
                namespace, dict(job), _request_timeout=API_TIMEOUT_S
            )
        except Exception as exc:
            raise _api_error(exc, f"creating the Job in namespace {namespace}") from None
        return str(_get(created, "metadata", "name"))

    def wait(self, name: str, namespace: str, timeout_s: float) -> JobResult:
        """Watch the Job until it completes or fails, or ``timeout_s`` passes; never longer."""
        deadline = self._clock() + timeout_s
        while True:
            try:
                job = self.client.batch.read_namespaced_job(
                    name, namespace, _request_timeout=API_TIMEOUT_S
                )
            except Exception as exc:
                raise _api_error(exc, f"reading the Job {name}") from None
            ended = self._ended(job, name, namespace)
            if ended is not None:
                return ended
            remaining = deadline - self._clock()
            if remaining <= 0:
                return JobResult(
                    name=name,
                    namespace=namespace,
                    state="unfinished",
                    reason="WaitTimeout",
                    message=f"the Job reached no end within {timeout_s:g} s; it is still there",
                )
            version = _get(job, "metadata", "resource_version") or None
            for job in self._events(name, namespace, remaining, version):
                ended = self._ended(job, name, namespace)
                if ended is not None:
                    return ended
            # The watch ended (its server-side timeout, a dropped connection): read and watch
            # again, a moment later so a server that closes at once is not asked in a loop.
            self._sleep(min(1.0, max(0.0, deadline - self._clock())))

    def _events(
        self, name: str, namespace: str, remaining: float, version: str | None
    ) -> Iterator[Any]:
        watcher = self.client.watch()
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={name}",
            "timeout_seconds": max(1, math.ceil(remaining)),
            # The server ends the watch at timeout_seconds; a connection that stalls instead
            # is given up a little later, so a wait never hangs on it.
            "_request_timeout": max(1, math.ceil(remaining)) + API_TIMEOUT_S,
        }
        if version:
            kwargs["resource_version"] = version
        try:
            for event in watcher.stream(self.client.batch.list_namespaced_job, namespace, **kwargs):
                kind = _get(event, "type")
                if kind == "ERROR":
                    return  # 410 Gone and friends: read the Job again and start over
                if kind == "DELETED":
                    raise KubernetesError(
                        f"the Job {name} was deleted before it ended",
                        hint="see kubectl get events in namespace " + namespace,
                    )
                yield _get(event, "object")
        except KubernetesError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == _GONE or _dropped(exc):
                return  # an expired resource version, a stalled connection: read, watch on
            raise _api_error(exc, f"watching the Job {name}") from None
        finally:
            watcher.stop()

    def _ended(self, job: Any, name: str, namespace: str) -> JobResult | None:
        conditions = _get(job, "status", "conditions") or []
        for wanted, state in (("Failed", "failed"), ("Complete", "succeeded")):
            for condition in conditions:
                if _get(condition, "type") == wanted and _get(condition, "status") == "True":
                    return self._result(
                        name,
                        namespace,
                        state,  # type: ignore[arg-type]
                        reason=str(_get(condition, "reason") or ""),
                        message=str(_get(condition, "message") or ""),
                    )
        return None

    def _result(
        self, name: str, namespace: str, state: JobState, *, reason: str, message: str
    ) -> JobResult:
        """The Job's end, with what its pod tells: exit code, record, why it did not run."""
        try:
            pods = self.client.core.list_namespaced_pod(
                namespace, label_selector=f"job-name={name}", _request_timeout=API_TIMEOUT_S
            )
        except Exception as exc:
            raise _api_error(exc, f"reading the pods of Job {name}") from None
        exit_code: int | None = None
        record = ""
        details: list[str] = []
        for pod in _get(pods, "items") or []:
            for status in _get(pod, "status", "init_container_statuses") or []:
                ended = _get(status, "state", "terminated")
                if ended is not None and _get(ended, "exit_code") not in (0, None):
                    details.append(
                        f"init container {_get(status, 'name')} exited {_get(ended, 'exit_code')}"
                        + _words(_get(ended, "reason"), _get(ended, "message"))
                    )
            for status in _get(pod, "status", "container_statuses") or []:
                if _get(status, "name") != MAIN_CONTAINER:
                    continue
                ended = _get(status, "state", "terminated")
                waiting = _get(status, "state", "waiting")
                if ended is not None:
                    exit_code = _get(ended, "exit_code")
                    record = _record_line(_get(ended, "message"))
                    if _get(ended, "reason") not in (None, "Completed", "Error"):
                        details.append(f"{MAIN_CONTAINER} {_get(ended, 'reason')}")
                elif waiting is not None:
                    details.append(
                        f"{MAIN_CONTAINER} waiting"
                        + _words(_get(waiting, "reason"), _get(waiting, "message"))
                    )
            for condition in _get(pod, "status", "conditions") or []:
                if (
                    _get(condition, "type") == "PodScheduled"
                    and _get(condition, "status") == "False"
                ):
                    details.append(
                        "not scheduled"
                        + _words(_get(condition, "reason"), _get(condition, "message"))
                    )
            if _get(pod, "status", "reason"):
                details.append(
                    "pod" + _words(_get(pod, "status", "reason"), _get(pod, "status", "message"))
                )
        text = "; ".join(part for part in (message, *details) if part)
        return JobResult(
            name=name,
            namespace=namespace,
            state=state,
            reason=reason,
            message=text,
            exit_code=exit_code,
            record=record,
        )


# --- helpers -----------------------------------------------------------------------------------


def _client_module() -> Any:
    try:
        from kubernetes import client
    except ImportError:
        raise KubernetesExtraMissingError(
            "the Kubernetes target needs the kubernetes package, which is not installed here",
            hint="install it with pip install 'envsnap[kubernetes]'",
        ) from None
    return client


def _dropped(exc: Exception) -> bool:
    """Whether a watch ended because its connection stalled or broke (urllib3's words)."""
    from urllib3.exceptions import ProtocolError, ReadTimeoutError

    return isinstance(exc, ReadTimeoutError | ProtocolError)


def _get(value: Any, *keys: str) -> Any:
    """A field of a client model or of a plain dict (a watch may hand either), None if absent."""
    for key in keys:
        if value is None:
            return None
        if isinstance(value, Mapping):
            value = value.get(key, value.get(_camel(key)))
        else:
            value = getattr(value, key, None)
    return value


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _words(reason: Any, message: Any) -> str:
    parts = [str(p).strip() for p in (reason, message) if p]
    return (" (" + ": ".join(parts) + ")") if parts else ""


def _record_line(message: Any) -> str:
    from envsnap.registry import record_reference

    lines = str(message or "").strip().splitlines()
    last = lines[-1].strip() if lines else ""
    return last if last and record_reference(last) is not None else ""


def _api_error(exc: Exception, doing: str) -> KubernetesError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or type(exc).__name__
    body = str(getattr(exc, "body", "") or "")
    message = ""
    if body:
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError):
            message = ""
    hints = {
        401: "log in again (kubectl get pods tells whether the credentials work)",
        403: "ask for permission to create and watch Jobs in this namespace",
        404: "check the namespace exists (kubectl get namespace)",
        422: "this is a bug in envsnap; report it with the Job from --dry-run",
    }
    what = f"{status} {reason}" if status else str(exc) or reason
    return KubernetesError(
        f"the cluster refused {doing}: {what}" + (f" ({message[:300]})" if message else ""),
        hint=hints.get(status or 0, "check the cluster answers: kubectl get jobs -n NAMESPACE"),
    )


def _config_error(what: str, hint: str) -> UsageError:
    return UsageError(f"[tool.envsnap.targets.kubernetes] {what}", hint=hint)


def _table(table: Mapping[str, Any], key: str, *, where: str = "") -> Mapping[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise _config_error(f"{where or key} is not a table", f"write [{where or key}] entries")
    return value


def _dns_label(value: str, what: str) -> None:
    if not _DNS_LABEL.fullmatch(value):
        raise _config_error(
            f"{what} {value!r} is not a Kubernetes name",
            "use at most 63 lowercase letters, digits and '-'",
        )


def _dns_subdomain(value: str, what: str) -> None:
    if not _DNS_SUBDOMAIN.fullmatch(value):
        raise _config_error(
            f"{what} {value!r} is not a Kubernetes name",
            "use lowercase letters, digits, '-' and '.'",
        )


def _safe_path(value: str, what: str, *, absolute: bool) -> None:
    path = PurePosixPath(value)
    if (
        not value
        or _CONTROL.search(value)
        or ":" in value
        or ".." in path.parts
        or path.is_absolute() != absolute
    ):
        kind = "an absolute path" if absolute else "a relative path inside the volume"
        raise _config_error(
            f"{what} {value!r} is not {kind}", "without '..', ':' or control characters"
        )


def _record(text: str) -> Any:
    from envsnap.registry import record_reference

    reference = record_reference(text)
    if reference is None:
        raise UsageError(
            f"{text!r} is not a run record in a registry",
            hint="push the run first (envsnap push RUN REPOSITORY) and give what it printed",
        )
    return reference


def _results(repository: str) -> str:
    reference = parse_reference(repository, "the results repository")
    if reference.tag or reference.digest or "/" not in repository:
        raise UsageError(
            f"the results repository {repository!r} is not a repository",
            hint="give REGISTRY/PATH without a tag or digest, e.g. registry.example/team/runs",
        )
    return reference.repository


def _gpus(gpus: int) -> int:
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_GPUS:
        raise UsageError(
            f"{gpus!r} GPUs cannot be asked of Kubernetes", hint=f"give 0 to {MAX_GPUS}"
        )
    return gpus


def _deadline(timeout_s: float | None) -> int | None:
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise UsageError(f"--timeout {timeout_s!r} is not a duration", hint="for example 2h")
    return max(1, math.ceil(timeout_s))


def _environment(
    manifest: Manifest, supplied: Mapping[str, str], config: KubernetesConfig
) -> dict[str, str]:
    for name, value in supplied.items():
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"{name!r} is not a variable name", hint="write NAME=VALUE")
        if is_secret_name(name):
            raise UsageError(
                f"--env {name} looks like a secret, and a Job's variables are readable by anyone "
                "who can read the Job",
                hint="put it in a Kubernetes secret and name it as env_secret in "
                "[tool.envsnap.targets.kubernetes]",
            )
        if "\x00" in value:
            raise UsageError(f"--env {name} holds a NUL character", hint="remove it")
    values = container_environment(manifest, supplied)
    values[ENGINE_VARIABLE] = f"kubernetes:{config.context or 'current'}/{config.namespace}"
    return values


def _env_list(values: Mapping[str, str]) -> list[dict[str, str]]:
    for name in values:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(
                f"the recorded variable {name!r} is not a variable name", hint="capture again"
            )
    return [{"name": name, "value": _inert(values[name])} for name in sorted(values)]


def _inert(value: str) -> str:
    """Kubernetes expands ``$(NAME)`` in args and env values, and reads ``$$`` as ``$``."""
    if "\x00" in value:
        raise UsageError("a value for the Job holds a NUL character", hint="remove it")
    return value.replace("$", "$$")


def _mount(
    volume: str, path: str, *, read_only: bool = False, sub_path: str = ""
) -> dict[str, Any]:
    mount: dict[str, Any] = {"mountPath": path, "name": volume}
    if read_only:
        mount["readOnly"] = True
    if sub_path:
        mount["subPath"] = sub_path
    return mount


def _data(
    manifest: Manifest, config: KubernetesConfig, workdir: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    recorded = {item.path for item in manifest.data}
    strays = sorted(set(config.data) - recorded)
    if strays:
        raise _config_error(
            f"maps data {', '.join(strays)}, which run {manifest.run_id} did not record",
            f"map the recorded paths: {', '.join(sorted(recorded)) or 'none'}",
        )
    mounts: list[dict[str, Any]] = []
    used: set[str] = set()
    for item in sorted(manifest.data, key=lambda d: d.path):
        mapped = config.data.get(item.path)
        if mapped is None:
            raise UsageError(
                f"the run's data {item.path} has no volume on the cluster, and a Job cannot copy "
                "it from this machine",
                hint=f'map it in [tool.envsnap.targets.kubernetes.data."{item.path}"] '
                '(volume = "NAME", sub_path = "PATH")',
            )
        path = PurePosixPath(item.path)
        target = str(path) if path.is_absolute() else str(PurePosixPath(workdir) / path)
        if _CONTROL.search(target) or ":" in target or ".." in PurePosixPath(target).parts:
            raise UsageError(
                f"the run's data path {item.path!r} cannot be a mount point",
                hint="capture with data at a plain path",
            )
        for reserved in (CODE_DIR, POD_ROOT, POD_TMP, "/dev", "/proc", "/sys"):
            inside = reserved != CODE_DIR and target.startswith(reserved + "/")
            if target == reserved or inside:
                raise UsageError(
                    f"the run's data path {item.path!r} would be mounted over {reserved}",
                    hint="capture with data at another path",
                )
        mounts.append(_mount(mapped.volume, target, read_only=True, sub_path=mapped.sub_path))
        used.add(mapped.volume)
    volumes: list[dict[str, Any]] = []
    for name in sorted(used):
        source = config.volumes[name]
        if source.claim:
            volumes.append(
                {
                    "name": name,
                    "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True},
                }
            )
        else:
            # Directory: a path missing on the node fails the pod, rather than being created empty.
            volumes.append(
                {"name": name, "hostPath": {"path": source.host_path, "type": "Directory"}}
            )
    return mounts, volumes


def _container_security(config: KubernetesConfig) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": config.read_only_root,
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
    }


def _differences(sent: Any, back: Any, where: str = "") -> Iterator[str]:
    """Paths where ``back`` (the schema round trip) lost or changed something of ``sent``."""
    if isinstance(sent, Mapping):
        if not isinstance(back, Mapping):
            yield where or "."
            return
        for key, value in sent.items():
            if key not in back:
                yield f"{where}.{key}"
            else:
                yield from _differences(value, back[key], f"{where}.{key}")
    elif isinstance(sent, list):
        if not isinstance(back, list) or len(back) != len(sent):
            yield where
            return
        for index, (a, b) in enumerate(zip(sent, back, strict=True)):
            yield from _differences(a, b, f"{where}[{index}]")
    elif sent != back:
        yield where
