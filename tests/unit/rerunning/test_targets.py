"""Targets: which engine ``--on NAME[:CONTEXT]`` names, and how a docker target points the
docker CLI at it."""

from __future__ import annotations

import dataclasses

import pytest

from envsnap.config import TargetConfig
from envsnap.errors import UsageError
from envsnap.kubernetes_table import KubernetesConfig
from envsnap.manifest import DataItem
from envsnap.rerunning.kubernetes import KubernetesTarget
from envsnap.rerunning.targets import DockerTarget, resolve_target, resolve_targets
from tests.conftest import sample_manifest

FLEET = {
    "a": TargetConfig(name="a", engine="docker"),
    "b": TargetConfig(
        name="b",
        engine="docker",
        docker_host="ssh://gpu-box",
        data={"data/train.csv": "/mnt/shared/train.csv", "data/other.csv": "/mnt/other.csv"},
    ),
    "ctx": TargetConfig(name="ctx", engine="docker", context="lab"),
    "h100": TargetConfig(name="h100", engine="slurm", partition="gpu-h100"),
    "k8s": TargetConfig(
        name="k8s",
        engine="kubernetes",
        kubernetes=KubernetesConfig(namespace="ml", context="prod", registry_secret="regcred"),
    ),
}


class TestResolve:
    def test_docker_alone_is_the_local_engine(self) -> None:
        """--on docker without a table of that name: no DOCKER_HOST, no context."""
        assert resolve_target("docker", {}) == DockerTarget(label="docker")

    def test_docker_with_a_context(self) -> None:
        """--on docker:CONTEXT is that docker context."""
        assert resolve_target("docker:lab", {}) == DockerTarget(label="docker:lab", context="lab")

    def test_a_configured_docker_target(self) -> None:
        """A table's docker-host and data mapping make the target."""
        target = resolve_target("b", FLEET)
        assert target == DockerTarget(label="b", docker_host="ssh://gpu-box", data=FLEET["b"].data)

    def test_a_context_after_the_name_overrides_the_table(self) -> None:
        """b:other is b's data on the docker context other."""
        target = resolve_target("b:other", FLEET)
        assert target == DockerTarget(label="b:other", context="other", data=FLEET["b"].data)

    @pytest.mark.parametrize(
        ("spec", "words"),
        [
            ("nope", ["--on nope names no target", "a (docker), b (docker)", "k8s (kubernetes)"]),
            ("kubernetes:", ["is not NAME or NAME:CONTEXT"]),
            ("b:", ["is not NAME or NAME:CONTEXT"]),
            (":x", ["is not NAME or NAME:CONTEXT"]),
        ],
    )
    def test_what_cannot_run_here_is_one_sentence(self, spec: str, words: list[str]) -> None:
        """Unknown names and engines not implemented yet: a UsageError (exit 2) naming what is
        configured."""
        with pytest.raises(UsageError) as caught:
            resolve_target(spec, FLEET)
        assert caught.value.exit_code == 2
        for word in words:
            assert word in str(caught.value)

    def test_kubernetes_alone_is_the_current_context(self) -> None:
        """--on kubernetes without a table: the current kubeconfig context, namespace
        default, nothing else configured."""
        assert resolve_target("kubernetes", {}) == KubernetesTarget(
            label="kubernetes", config=KubernetesConfig()
        )

    def test_kubernetes_colon_is_a_kubeconfig_context(self) -> None:
        """--on kubernetes:CONTEXT names the kubeconfig context; --namespace the namespace."""
        target = resolve_target("kubernetes:lab", {}, namespace="ml")
        assert target == KubernetesTarget(
            label="kubernetes:lab", config=KubernetesConfig(context="lab", namespace="ml")
        )

    def test_a_configured_kubernetes_target(self) -> None:
        """A kubernetes table is the target's whole configuration; NAME:CONTEXT and
        --namespace override its context and namespace and keep the rest."""
        assert resolve_target("k8s", FLEET) == KubernetesTarget(
            label="k8s",
            config=FLEET["k8s"].kubernetes,  # type: ignore[arg-type]
        )
        target = resolve_target("k8s:staging", FLEET, namespace="ci")
        assert isinstance(target, KubernetesTarget)
        assert (target.config.context, target.config.namespace) == ("staging", "ci")
        assert target.config.registry_secret == "regcred"

    @pytest.mark.parametrize(
        ("spec", "namespace", "words"),
        [
            ("a", "ml", "--namespace is for Kubernetes targets, and --on a is a docker target"),
            ("h100", "ml", "--on h100 is a slurm target"),
            ("kubernetes", "ML", "--namespace 'ML' is not a Kubernetes namespace"),
            ("kubernetes", "ml;x", "is not a Kubernetes namespace"),
        ],
    )
    def test_namespace_refused_where_it_means_nothing(
        self, spec: str, namespace: str, words: str
    ) -> None:
        """--namespace on a docker or Slurm target, or one that is no namespace: one sentence."""
        with pytest.raises(UsageError) as caught:
            resolve_target(spec, FLEET, namespace=namespace)
        assert words in str(caught.value)

    def test_partition_refused_on_kubernetes(self) -> None:
        """--partition on a Kubernetes target is refused, not ignored."""
        with pytest.raises(UsageError, match="--on k8s is a kubernetes target"):
            resolve_target("k8s", FLEET, partition="gpu")

    def test_nothing_configured_says_how_to_reach_docker(self) -> None:
        """Without any table, the hint names --on docker and docker:CONTEXT."""
        with pytest.raises(UsageError, match=r"no targets are configured.*--on docker:CONTEXT"):
            resolve_target("gpu", {})

    def test_docker_host_and_context_together_are_refused(self) -> None:
        """A table naming two engines is ambiguous."""
        both = {"x": TargetConfig(name="x", engine="docker", docker_host="tcp://h", context="c")}
        with pytest.raises(UsageError, match="both docker-host and context"):
            resolve_target("x", both)

    def test_a_matrix_resolves_every_target_first_and_each_once(self) -> None:
        """Order kept; a repeated --on, none at all, or one bad name fails before any rerun."""
        assert [t.label for t in resolve_targets(["b", "a", "docker"], FLEET)] == [
            "b",
            "a",
            "docker",
        ]
        with pytest.raises(UsageError, match="given twice"):
            resolve_targets(["a", "a"], FLEET)
        with pytest.raises(UsageError, match="at least one --on"):
            resolve_targets([], FLEET)
        with pytest.raises(UsageError, match="nope"):
            resolve_targets(["a", "nope"], FLEET)


class TestDockerTarget:
    def test_the_local_engine_clears_the_callers_engine(self) -> None:
        """--on docker from a shell with DOCKER_HOST set still means the local engine."""
        env = {"PATH": "/bin", "DOCKER_HOST": "tcp://elsewhere", "DOCKER_CONTEXT": "x"}
        assert DockerTarget(label="docker").engine_environment(env) == {"PATH": "/bin"}

    def test_a_host_or_a_context_is_set_alone(self) -> None:
        """DOCKER_HOST for a docker-host target; DOCKER_CONTEXT for a context."""
        env = {"DOCKER_CONTEXT": "x", "HOME": "/h"}
        assert DockerTarget(label="b", docker_host="ssh://b").engine_environment(env) == {
            "HOME": "/h",
            "DOCKER_HOST": "ssh://b",
        }
        assert DockerTarget(label="c", context="lab").engine_environment(
            {"DOCKER_HOST": "tcp://h"}
        ) == {"DOCKER_CONTEXT": "lab"}

    def test_data_mappings_for_recorded_paths_with_the_command_line_winning(self) -> None:
        """Mappings of data this run did not record are left out; --data overrides the table."""
        target = resolve_target("b", FLEET)
        assert isinstance(target, DockerTarget)
        manifest = sample_manifest()
        assert target.data_map(manifest, {}) == {"data/train.csv": "/mnt/shared/train.csv"}
        assert target.data_map(manifest, {"data/train.csv": "/other/train.csv"}) == {
            "data/train.csv": "/other/train.csv"
        }
        bare = dataclasses.replace(manifest, data=(DataItem(path="x", kind="file", sha256="0"),))
        assert target.data_map(bare, {}) == {}
