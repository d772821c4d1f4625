"""The Kubernetes rerun target: a recorded run as a ``batch/v1`` Job, and the Job waited on.

``KubernetesTarget`` (``--on kubernetes[:CONTEXT]``, or a table with ``engine = "kubernetes"``
read by kubernetes_table.py) checks the run's record is in its registry, renders and submits
the Job, waits on it (``KubernetesJobs``, through a client seam), pulls the new run's record
into the store and compares it; ``render`` is ``--dry-run``'s Job.

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
from envsnap.imageref import parse_reference
from envsnap.kubernetes_table import (
    CONTROL,
    KubernetesConfig,
    check_config,
    check_results,
)
from envsnap.rerunning.rerun import (
    ENGINE_VARIABLE,
    IMAGE_UID,
    check_rerunnable,
    container_environment,
)
from envsnap.store import CODE_ARCHIVE

if TYPE_CHECKING:
    from envsnap.drift.outcome import RerunOutcome
    from envsnap.manifest import Manifest
    from envsnap.rerunning.request import RerunRequest
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
WATCH_S = 600.0  # one watch's length when a wait has no end of its own
# How long a wait goes on past the Job's own deadline, for the Job controller to end it.
DEADLINE_GRACE_S = 120.0

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
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


class KubernetesError(EnvsnapError):
    """The cluster refused or could not be asked: no configuration, a forbidden namespace, an
    invalid Job."""


class KubernetesExtraMissingError(UsageError):
    """The Kubernetes target was asked for, but the kubernetes package is not installed."""


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
    results = check_results(request.results or record.repository, "the results repository")
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
    if CONTROL.search(workdir):
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


class KubernetesJobs:
    """Submit rerun Jobs, wait on them and delete them, through ``client``."""

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

    def delete(self, name: str, namespace: str) -> None:
        """Delete the Job and, in the background, its pod (Ctrl-C while waiting)."""
        try:
            self.client.batch.delete_namespaced_job(
                name,
                namespace,
                propagation_policy="Background",
                _request_timeout=API_TIMEOUT_S,
            )
        except Exception as exc:
            raise _api_error(exc, f"deleting the Job {name}") from None

    def wait(self, name: str, namespace: str, timeout_s: float | None) -> JobResult:
        """Watch the Job until it completes or fails, or ``timeout_s`` passes (None: until it
        ends, a watch at a time); never longer."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
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
            remaining = WATCH_S if deadline is None else deadline - self._clock()
            if remaining <= 0:
                return JobResult(
                    name=name,
                    namespace=namespace,
                    state="unfinished",
                    reason="WaitTimeout",
                    message=f"reached no end within {timeout_s:g} s; it is still there",
                )
            version = _get(job, "metadata", "resource_version") or None
            for job in self._events(name, namespace, remaining, version):
                ended = self._ended(job, name, namespace)
                if ended is not None:
                    return ended
            # The watch ended (its server-side timeout, a dropped connection): read and watch
            # again, a moment later so a server that closes at once is not asked in a loop.
            left = 1.0 if deadline is None else deadline - self._clock()
            self._sleep(min(1.0, max(0.0, left)))

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


# --- the target ----------------------------------------------------------------------------------

KUBERNETES = "kubernetes"


def connect_official(config: KubernetesConfig, env: Mapping[str, str]) -> KubernetesClient:
    """The official client for the target's context, from the caller's ``$KUBECONFIG`` (the
    client's default file when unset)."""
    return official_client(config.context, kubeconfig=env.get("KUBECONFIG") or None)


@dataclass(frozen=True, kw_only=True)
class KubernetesTarget:
    """``--on kubernetes[:CONTEXT]``, or a table with ``engine = "kubernetes"``: the rerun as a
    Job on the cluster, waited on with a watch; the run goes there and the new run comes back
    through the registry (see the module docstring)."""

    label: str
    config: KubernetesConfig = field(default_factory=KubernetesConfig)
    # The seams: how the client is had (None: connect_official), and time, for tests.
    connect: Callable[[KubernetesConfig, Mapping[str, str]], KubernetesClient] | None = None
    clock: Callable[[], float] | None = None
    sleep: Callable[[float], None] | None = None

    def render(self, request: RerunRequest) -> dict[str, Any]:
        """The Job ``request`` would submit, from what this machine holds; neither the cluster
        nor the registry is asked (``--dry-run``), so the record is named as given, not yet
        pinned by the digest a rerun checks it has."""
        self._check_options(request)
        check_record_code(request.stored)
        record = self._record(request)
        return render_job(
            request.stored.manifest,
            self._job_request(request, record, recorded_image(request.stored)),
            self.config,
        )

    def rerun(self, request: RerunRequest) -> RerunOutcome:
        """Check the run's record is in its registry (with its code and image), submit its Job,
        wait for it to end, pull the new run's record into the store and compare it."""
        from envsnap.errors import InterruptError

        self._check_options(request)
        stored = request.stored
        record, image, image_id = self._pushed(request)
        job = render_job(stored.manifest, self._job_request(request, record, image), self.config)
        validate_job(job)
        connect = self.connect or connect_official
        jobs = KubernetesJobs(connect(self.config, request.env), clock=self.clock, sleep=self.sleep)
        namespace = self.config.namespace
        cancel = request.cancel  # a matrix's Ctrl-C, seen by its main thread
        if cancel is not None and cancel.cancelled.is_set():
            raise InterruptError(f"the rerun on {self.label} was cancelled before it started")
        name = jobs.submit(job)
        if cancel is not None:
            cancel.register(lambda: jobs.delete(name, namespace))
        self._say(
            request,
            f"envsnap: submitted Kubernetes Job {name} in namespace {namespace}; waiting for it "
            f"to end (kubectl logs -f job/{name} -n {namespace} follows its output)",
        )
        timeout = request.options.timeout_s
        stopped = InterruptError(
            f"the rerun was interrupted (Ctrl-C), and its Kubernetes Job {name} in namespace "
            f"{namespace} was deleted before it recorded a run"
        )
        try:
            ended = jobs.wait(
                name, namespace, None if timeout is None else timeout + DEADLINE_GRACE_S
            )
        except KeyboardInterrupt:
            jobs.delete(name, namespace)
            raise stopped from None
        except KubernetesError:
            if cancel is not None and cancel.cancelled.is_set():
                raise stopped from None  # the canceller deleted it: the watch saw it go
            raise
        return self._finish(request, ended, image, image_id)

    # --- the steps ---

    def _check_options(self, request: RerunRequest) -> None:
        """Refuse what a Kubernetes rerun cannot honour, rather than ignore it."""
        build = request.build
        if request.options.data_map:
            raise UsageError(
                f"--data maps data on a docker engine's host, and --on {self.label} takes the "
                "run's data from volumes on the cluster",
                hint='map it in the target\'s table: data = { "PATH" = { volume = "NAME", '
                'sub-path = "PATH" } }',
            )
        if build.base or build.rebuild or build.allow_unlocked:
            raise UsageError(
                f"--base, --rebuild and --allow-unlocked build an image, and --on {self.label} "
                "runs the image the run's record names by digest",
                hint="build and push it first: envsnap build RUN --push REPOSITORY",
            )

    def _record(self, request: RerunRequest) -> str:
        """Where the run's record is: the reference RUN was given as, else the target's
        results repository tagged with the run id (as envsnap push tags it)."""
        if request.record:
            return request.record
        run_id = request.stored.manifest.run_id
        if self.config.results:
            repository = check_results(self.config.results, "the target's results repository")
            return f"{repository}:{run_id}"
        raise UsageError(
            f"run {run_id} was given by id, and a Kubernetes Job takes the run from its record "
            f"in a registry, which --on {self.label} does not name",
            hint=f"push it (envsnap push {run_id} REPOSITORY) and rerun REPOSITORY:{run_id}, or "
            'set results = "REPOSITORY" in the target\'s table',
        )

    def _pushed(self, request: RerunRequest) -> tuple[str, str, str]:
        """The run's record as the registry holds it, pinned by digest, and the image it names;
        a UsageError when it is not there, is another run, or lacks its code or image."""
        import tempfile
        from pathlib import Path

        from envsnap.registry import RecordNotFoundError, RegistryOptions, pull_record
        from envsnap.store import Store

        stored = request.stored
        reference = self._record(request)
        with tempfile.TemporaryDirectory(prefix="envsnap-kubernetes-") as scratch:
            try:
                pulled = pull_record(
                    reference, Store(Path(scratch) / "store"), RegistryOptions(env=request.env)
                )
            except RecordNotFoundError:
                raise UsageError(
                    f"run {stored.run_id} has no record at {reference}, and a Kubernetes Job "
                    "takes the run from there",
                    hint=f"push it first: envsnap push {stored.run_id} REPOSITORY",
                ) from None
            run = pulled.run
            if run.manifest.digest != stored.manifest.digest:
                raise UsageError(
                    f"the record at {reference} is not run {stored.run_id} as this store holds it",
                    hint="push the run again (envsnap push), or rerun the record itself",
                )
            check_record_code(run)
            image = recorded_image(run)
            image_id = _recorded_image_id(run)
        return pulled.reference, image, image_id

    def _job_request(self, request: RerunRequest, record: str, image: str) -> JobRequest:
        manifest = request.stored.manifest
        return JobRequest(
            record=record,
            image=image,
            results=self.config.results,
            gpus=gpu_count(manifest, request.options.gpus),
            timeout_s=request.options.timeout_s,
            env=request.options.env,
        )

    def _finish(
        self, request: RerunRequest, ended: JobResult, image: str, image_id: str
    ) -> RerunOutcome:
        """The new run's record pulled into the store and compared with the original; one
        sentence with Kubernetes' reason when the Job pushed none."""
        from envsnap.drift.outcome import RerunOutcome
        from envsnap.registry import RegistryOptions, pull_record
        from envsnap.rerunning.rerun import compare_with_original, missing_environment

        stored = request.stored
        where = f"Kubernetes Job {ended.name} in namespace {ended.namespace}"
        if not ended.record:
            raise KubernetesError(_no_record(where, ended), hint=_no_record_hint(ended))
        new = pull_record(ended.record, request.store, RegistryOptions(env=request.env)).run
        if new.manifest.rerun_of != stored.run_id:
            raise KubernetesError(
                f"the {where} pushed {ended.record}, which is not a rerun of {stored.run_id}",
                hint="check the Job's results repository is not shared with other writers",
            )
        exit_code = (
            new.result.exit_code
            if new.result is not None
            else ended.exit_code
            if ended.exit_code is not None
            else 1
        )
        missing = (
            ()
            if self.config.env_secret
            else missing_environment(stored.manifest, request.options.env)
        )
        notes = (
            f"image {image} (pulled by the cluster by digest)",
            f"{where} ({ended.state}{', ' + ended.reason if ended.reason else ''}), context "
            f"{self.config.context or 'current'}",
            f"new record {ended.record}",
            "the pod had the cluster's network (a NetworkPolicy is the cluster's to set)",
        )
        return RerunOutcome(
            original=stored.run_id,
            rerun=new.run_id,
            directory=new.directory,
            image=image,
            image_id=image_id,
            exit_code=exit_code,
            timed_out=ended.deadline_exceeded,
            missing_env=missing,
            notes=notes,
            report=compare_with_original(stored, new.directory, request.config, request.options),
        )

    @staticmethod
    def _say(request: RerunRequest, line: str) -> None:
        if request.on_output is not None:
            request.on_output(line)


def _no_record(where: str, ended: JobResult) -> str:
    """Why a Job brought back no record, in one sentence with Kubernetes' own words."""
    if ended.state == "unfinished":
        return f"the {where} {ended.message}"
    how = {
        "DeadlineExceeded": "passed its deadline (activeDeadlineSeconds, from --timeout)",
        "BackoffLimitExceeded": "failed",
    }.get(ended.reason, "failed" if ended.state == "failed" else "ended")
    why = (
        f" ({ended.reason}: {ended.message})"
        if ended.message
        else (f" ({ended.reason})" if ended.reason else "")
    )
    code = f", the command's container exited {ended.exit_code}" if ended.exit_code else ""
    return f"the {where} {how} without pushing the new run's record{why}{code}"


def _no_record_hint(ended: JobResult) -> str:
    if ended.state == "unfinished":
        return f"wait for it, or delete it: kubectl delete job {ended.name} -n {ended.namespace}"
    return (
        f"see kubectl describe job {ended.name} -n {ended.namespace} and the logs of its pod "
        f"(kubectl logs job/{ended.name} -n {ended.namespace} --all-containers)"
    )


def _recorded_image_id(stored: StoredRun) -> str:
    from envsnap.image.build import IMAGE_FILE

    try:
        data = tomllib.loads((stored.directory / IMAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    image_id = data.get("image_id", "")
    return image_id if isinstance(image_id, str) else ""


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


def _record(text: str) -> Any:
    from envsnap.registry import record_reference

    reference = record_reference(text)
    if reference is None:
        raise UsageError(
            f"{text!r} is not a run record in a registry",
            hint="push the run first (envsnap push RUN REPOSITORY) and give what it printed",
        )
    return reference


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
                hint="put it in a Kubernetes secret and name it as env-secret in the target's "
                "[tool.envsnap.targets.<name>] table",
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
    # Mappings of data this run did not record are left out: a team's table maps the data of
    # many runs (as a docker or Slurm target's does).
    mounts: list[dict[str, Any]] = []
    used: set[str] = set()
    for item in sorted(manifest.data, key=lambda d: d.path):
        mapped = config.data.get(item.path)
        if mapped is None:
            raise UsageError(
                f"the run's data {item.path} has no volume on the cluster, and a Job cannot copy "
                "it from this machine",
                hint=f'map it in the target\'s table: data = {{ "{item.path}" = '
                '{ volume = "NAME", sub-path = "PATH" } }',
            )
        path = PurePosixPath(item.path)
        target = str(path) if path.is_absolute() else str(PurePosixPath(workdir) / path)
        if CONTROL.search(target) or ":" in target or ".." in PurePosixPath(target).parts:
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
