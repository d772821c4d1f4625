"""Targets: where a rerun runs, chosen by ``--on NAME[:CONTEXT]`` and configured in
``[tool.envsnap.targets.<name>]``. A target turns a stored run and the rerun's options into work
on its engine and hands back the RerunOutcome: docker engines here, Slurm in slurm.py,
Kubernetes in kubernetes.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from envsnap.errors import UsageError
from envsnap.rerunning.request import RerunRequest, Target

if TYPE_CHECKING:
    from envsnap.config import TargetConfig
    from envsnap.drift.outcome import RerunOutcome
    from envsnap.manifest import Manifest

# The built-in target: ``--on docker`` is the local engine, ``--on docker:CONTEXT`` a context.
DOCKER = "docker"
# How the docker CLI is pointed at an engine; a target sets one and clears the other.
_ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT")


@dataclass(frozen=True, kw_only=True)
class DockerTarget:
    """A docker engine: the local one, another host's (``DOCKER_HOST``) or a docker context."""

    label: str
    docker_host: str = ""
    context: str = ""
    # Recorded data path -> where the data lives on the engine's host (from the target's table).
    data: Mapping[str, str] = field(default_factory=dict)

    def engine_environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` pointed at this target's engine, whatever DOCKER_HOST or DOCKER_CONTEXT the
        caller's environment had: with neither set here, the docker CLI's local engine."""
        pointed = {k: v for k, v in env.items() if k not in _ENGINE_VARIABLES}
        if self.docker_host:
            pointed["DOCKER_HOST"] = self.docker_host
        elif self.context:
            pointed["DOCKER_CONTEXT"] = self.context
        return pointed

    def data_map(self, manifest: Manifest, given: Mapping[str, str]) -> dict[str, str]:
        """The target's data mappings for the paths ``manifest`` recorded (a fleet's table may
        map data other runs use), with the command line's mappings (``given``) winning."""
        recorded = {d.path for d in manifest.data}
        mapped = {path: place for path, place in self.data.items() if path in recorded}
        return {**mapped, **given}

    def rerun(self, request: RerunRequest) -> RerunOutcome:
        """The rerun of rerunning/rerun.py, on this target's engine."""
        from envsnap.image.engine import Engine
        from envsnap.rerunning.rerun import rerun_run

        env = self.engine_environment(request.env)
        return rerun_run(
            request.stored,
            request.store,
            Engine.detect(env, echo=request.echo),
            build=request.build,
            options=replace(
                request.options,
                data_map=self.data_map(request.stored.manifest, request.options.data_map),
            ),
            config=request.config,
            repo_root=request.repo_root,
            cwd=request.cwd,
            env=env,
            on_output=request.on_output,
            on_build_line=request.on_build_line,
            echo=request.echo,
            prepare_lock=request.prepare_lock,
            cancel=request.cancel,
        )


def resolve_target(
    spec: str, targets: Mapping[str, TargetConfig], *, partition: str = "", namespace: str = ""
) -> Target:
    """The target ``--on SPEC`` names: a configured ``NAME``, or the built-in ``docker`` /
    ``docker:CONTEXT``, ``slurm`` / ``slurm:PARTITION`` and ``kubernetes`` /
    ``kubernetes:CONTEXT``. After a configured name, ``:CONTEXT`` overrides a docker target's
    docker context, a Slurm target's partition, a Kubernetes target's kubeconfig context.
    ``partition`` (``--partition``) overrides a Slurm target's, ``namespace`` (``--namespace``)
    a Kubernetes target's. A UsageError, before anything runs, for a name nobody configured or an
    option the target's engine does not take."""
    from envsnap.rerunning.kubernetes import KUBERNETES
    from envsnap.rerunning.slurm import SLURM, SlurmTarget

    name, colon, context = spec.partition(":")
    if not name or (colon and not context):
        raise UsageError(
            f"--on {spec!r} is not NAME or NAME:CONTEXT", hint=_configured_hint(targets)
        )
    configured = targets.get(name)
    if configured is None and name not in (DOCKER, SLURM, KUBERNETES):
        raise UsageError(
            f"--on {spec} names no target: [tool.envsnap.targets] has no table {name!r}",
            hint=_configured_hint(targets),
        )
    engine = configured.engine if configured is not None else name
    if partition and engine != SLURM:
        raise UsageError(
            f"--partition is for Slurm targets, and --on {spec} is a {engine} target",
            hint="leave out --partition, or name a Slurm target",
        )
    if namespace and engine != KUBERNETES:
        raise UsageError(
            f"--namespace is for Kubernetes targets, and --on {spec} is a {engine} target",
            hint="leave out --namespace, or name a Kubernetes target (--on kubernetes)",
        )
    if engine == SLURM:
        return SlurmTarget(
            label=spec,
            partition=partition or context or (configured.partition if configured else ""),
            runtime=(configured.runtime if configured else "") or DOCKER,
            registry=configured.registry if configured else "",
            options=configured.options if configured else (),
            data=configured.data if configured else {},
        )
    if engine == KUBERNETES:
        return _kubernetes_target(spec, configured, context=context, namespace=namespace)
    if configured is None:
        return DockerTarget(label=spec, context=context)
    if configured.docker_host and configured.context:
        raise UsageError(
            f"target {name} sets both docker-host and context, so which engine it means is "
            "ambiguous",
            hint="keep one of them in its [tool.envsnap.targets] table",
        )
    if context:
        return DockerTarget(label=spec, context=context, data=configured.data)
    return DockerTarget(
        label=spec,
        docker_host=configured.docker_host,
        context=configured.context,
        data=configured.data,
    )


def _kubernetes_target(
    spec: str, configured: TargetConfig | None, *, context: str, namespace: str
) -> Target:
    """A configured Kubernetes target (or the built-in one: the current context, namespace
    default) with ``--on NAME:CONTEXT``'s kubeconfig context and ``--namespace``."""
    from envsnap.kubernetes_table import (
        KubernetesConfig,
        check_context,
        check_namespace,
    )
    from envsnap.rerunning.kubernetes import KubernetesTarget

    config = (configured.kubernetes if configured else None) or KubernetesConfig()
    if namespace:
        check_namespace(namespace, "--namespace")
        config = replace(config, namespace=namespace)
    if context:
        check_context(context, f"--on {spec}: the context")
        config = replace(config, context=context)
    return KubernetesTarget(label=spec, config=config)


def resolve_targets(specs: Sequence[str], targets: Mapping[str, TargetConfig]) -> list[Target]:
    """Every ``--on`` of a matrix, each named once; all resolved before any rerun starts."""
    if not specs:
        raise UsageError("envsnap matrix needs at least one --on", hint=_configured_hint(targets))
    seen = [spec for index, spec in enumerate(specs) if spec in specs[:index]]
    if seen:
        raise UsageError(f"--on {seen[0]} is given twice", hint="name each target once")
    return [resolve_target(spec, targets) for spec in specs]


def _configured_hint(targets: Mapping[str, TargetConfig]) -> str:
    if not targets:
        return (
            "no targets are configured in [tool.envsnap.targets]; --on docker is the local "
            "engine, --on docker:CONTEXT a docker context, --on slurm[:PARTITION] this host's "
            "Slurm cluster, --on kubernetes[:CONTEXT] a kubeconfig context's cluster"
        )
    listed = ", ".join(f"{name} ({t.engine})" for name, t in sorted(targets.items()))
    return (
        f"configured targets: {listed}; --on docker is the local engine, --on slurm this host's "
        "Slurm cluster, --on kubernetes the current kubeconfig context's cluster"
    )


@dataclass(frozen=True, kw_only=True)
class TargetRun:
    """What one target of a matrix gave back: its rerun, or the sentence of its error."""

    label: str
    outcome: RerunOutcome | None = None
    error: str = ""


def rerun_everywhere(
    targets: Sequence[Target],
    request: RerunRequest,
    *,
    on_target: Callable[[str], None] | None = None,
) -> list[TargetRun]:
    """Rerun on every target at once, one thread each (the engines and the scheduler do the
    work; the threads wait). Images are got one target at a time (``prepare_lock``); each
    target's output lines are prefixed with its name. A target whose rerun fails is a TargetRun
    with its error, and the others go on. Ctrl-C stops every rerun (their containers killed,
    their jobs cancelled) and is an InterruptError naming what was recorded."""
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor, wait

    from envsnap.errors import EnvsnapError, InterruptError
    from envsnap.rerunning.rerun import Cancellation

    cancel = Cancellation()
    lock = threading.Lock()

    def one(target: Target) -> TargetRun:
        sink = request.on_output
        prefixed = None if sink is None else _prefixed(sink, target.label)
        asked = replace(request, on_output=prefixed, prepare_lock=lock, cancel=cancel)
        if on_target is not None:
            on_target(target.label)
        try:
            return TargetRun(label=target.label, outcome=target.rerun(asked))
        except InterruptError as exc:
            return TargetRun(label=target.label, error=str(exc))
        except EnvsnapError as exc:
            return TargetRun(label=target.label, error=str(exc))

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        futures: list[Future[TargetRun]] = []
        try:
            futures.extend(pool.submit(one, target) for target in targets)
            runs = [future.result() for future in futures]
        except KeyboardInterrupt:
            cancel.cancel()
            wait(futures)
            recorded = [
                f"{f.result().label}: run {f.result().outcome.rerun}"  # type: ignore[union-attr]
                for f in futures
                if f.exception() is None and f.result().outcome is not None
            ]
            raise InterruptError(
                "the matrix was interrupted; every target's rerun was stopped"
                + (f" (recorded as interrupted: {', '.join(recorded)})" if recorded else "")
            ) from None
    interrupted = [r for r in runs if r.outcome is not None and r.outcome.interrupted]
    if interrupted:  # Ctrl-C reached a rerun's own process: it stops the matrix too
        first = interrupted[0]
        assert first.outcome is not None
        raise InterruptError(
            f"the matrix was interrupted during the rerun on {first.label} (run "
            f"{first.outcome.rerun} recorded it)"
        )
    return runs


def _prefixed(sink: Callable[[str], None], label: str) -> Callable[[str], None]:
    def say(line: str) -> None:
        sink(f"[{label}] {line}")

    return say
