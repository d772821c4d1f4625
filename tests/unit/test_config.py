"""The settings cascade: defaults < [tool.envsnap] < ENVSNAP_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from envsnap.config import TargetConfig, load_config
from envsnap.drift.rules import MetricTolerance
from envsnap.errors import UsageError
from envsnap.kubernetes_table import DataVolume, KubernetesConfig, VolumeSource


def _pyproject(root: Path, body: str) -> None:
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n\n' + body)


class TestCascade:
    def test_defaults_without_pyproject(self, tmp_path: Path) -> None:
        """Without a pyproject.toml every setting has its default."""
        config = load_config(project_root=tmp_path, env={})
        assert config.store is None and config.git_max_untracked == 1000
        assert config.source == "defaults"

    def test_pyproject_table(self, tmp_path: Path) -> None:
        """[tool.envsnap] sets the store (relative to the project), severities and tolerances."""
        _pyproject(
            tmp_path,
            '[tool.envsnap]\nstore = "runs-store"\nenv-allow = ["MYLAB_*"]\nrtol = 1e-6\n'
            '[tool.envsnap.drift]\n"host.kernel" = "expected"\n'
            "[tool.envsnap.metrics.loss]\natol = 0.01\n",
        )
        config = load_config(project_root=tmp_path, env={})
        assert config.store == tmp_path / "runs-store"
        assert config.env_allow == ("MYLAB_*",)
        assert config.drift_severity == {"host.kernel": "expected"}
        assert config.metric_tolerance == MetricTolerance(rtol=1e-6)
        assert config.metrics == {"loss": MetricTolerance(atol=0.01)}

    def test_environment_wins(self, tmp_path: Path) -> None:
        """ENVSNAP_STORE overrides the pyproject store; ENVSNAP_ENV_ALLOW adds patterns."""
        _pyproject(tmp_path, '[tool.envsnap]\nstore = "a"\nenv-allow = ["A_*"]\n')
        config = load_config(
            project_root=tmp_path, env={"ENVSNAP_STORE": "/b", "ENVSNAP_ENV_ALLOW": "B_*, C"}
        )
        assert config.store == Path("/b")
        assert config.env_allow == ("A_*", "B_*", "C")


class TestBadConfig:
    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("[tool.envsnap]\nstorage = 'x'\n", "unknown key 'storage'"),
            ("[tool.envsnap.drift]\n'host.kernel' = 'fatal'\n", "must map field patterns"),
            ("[tool.envsnap]\nrtol = -1\n", "must be a number >= 0"),
            ("[tool.envsnap]\ngit-max-untracked = true\n", "must be an integer"),
            ("[tool.envsnap\n", "cannot be read as TOML"),
        ],
    )
    def test_refused_with_one_sentence(self, tmp_path: Path, body: str, message: str) -> None:
        """A malformed [tool.envsnap] is refused, naming the key and the file."""
        _pyproject(tmp_path, body)
        with pytest.raises(UsageError, match=message):
            load_config(project_root=tmp_path, env={})


class TestDriftPatterns:
    @pytest.mark.parametrize("key", ["hardwre", "pyhton.packages.pip", "kernel", "hots.*"])
    def test_typo_is_refused_naming_the_categories(self, tmp_path: Path, key: str) -> None:
        """A [tool.envsnap.drift] key that is no category and no field pattern is an error."""
        _pyproject(tmp_path, f'[tool.envsnap.drift]\n"{key}" = "info"\n')
        with pytest.raises(UsageError, match="neither a drift category") as caught:
            load_config(project_root=tmp_path, env={})
        assert "hardware" in str(caught.value) and repr(key) in str(caught.value)

    @pytest.mark.parametrize(
        "key", ["hardware", "hard*", "host.kernel", "python.packages.pip", "host.*", "*"]
    )
    def test_categories_and_field_patterns_pass(self, tmp_path: Path, key: str) -> None:
        """Categories, globs over them and patterns under a manifest section are accepted."""
        _pyproject(tmp_path, f'[tool.envsnap.drift]\n"{key}" = "info"\n')
        assert load_config(project_root=tmp_path, env={}).drift_severity == {key: "info"}


class TestTargets:
    def test_tables_are_read_whole(self, tmp_path: Path) -> None:
        """Each [tool.envsnap.targets.<name>] becomes a TargetConfig, data and options kept."""
        _pyproject(
            tmp_path,
            '[tool.envsnap.targets.b]\nengine = "docker"\ndocker-host = "ssh://gpu-box"\n'
            'data = {"data/train.csv" = "/mnt/shared/train.csv"}\n'
            '[tool.envsnap.targets.h100]\nengine = "slurm"\npartition = "gpu-h100"\n'
            'options = ["--qos=high"]\nruntime = "podman"\nregistry = "reg.example/envs"\n'
            '[tool.envsnap.targets.k8s]\nengine = "kubernetes"\nnamespace = "ml"\n'
            'image-pull-secret = "regcred"\n',
        )
        targets = load_config(project_root=tmp_path, env={}).targets
        assert sorted(targets) == ["b", "h100", "k8s"]
        assert targets["b"] == TargetConfig(
            name="b",
            engine="docker",
            docker_host="ssh://gpu-box",
            data={"data/train.csv": "/mnt/shared/train.csv"},
        )
        assert targets["h100"].partition == "gpu-h100"
        assert targets["h100"].options == ("--qos=high",)
        assert (targets["h100"].runtime, targets["h100"].registry) == ("podman", "reg.example/envs")
        assert targets["k8s"].kubernetes == KubernetesConfig(
            namespace="ml", image_pull_secret="regcred"
        )

    def test_a_kubernetes_table_is_read_whole(self, tmp_path: Path) -> None:
        """Every key of a kubernetes target, in kebab case, reaches the configuration its Job
        is rendered from; what is not given keeps its default."""
        _pyproject(
            tmp_path,
            """
[tool.envsnap.targets.gpu]
engine = "kubernetes"
context = "prod"
namespace = "ml"
image-pull-secret = "regcred"
registry-secret = "records"
env-secret = "wandb"
service-account = "rerunner"
results = "registry.example/team/reruns"
node-selector = { "nvidia.com/gpu.product" = "NVIDIA-H100-80GB-HBM3" }
read-only-root = false
volumes = { datasets = { claim = "datasets" }, scratch = { host-path = "/mnt/scratch" } }

[tool.envsnap.targets.gpu.data]
"data/train.csv" = { volume = "datasets", sub-path = "v3/train.csv" }
"/scratch/cache" = { volume = "scratch" }

[tool.envsnap.targets.plain]
engine = "kubernetes"
""",
        )
        targets = load_config(project_root=tmp_path, env={}).targets
        assert targets["gpu"] == TargetConfig(
            name="gpu",
            engine="kubernetes",
            kubernetes=KubernetesConfig(
                context="prod",
                namespace="ml",
                image_pull_secret="regcred",
                registry_secret="records",
                env_secret="wandb",
                service_account="rerunner",
                results="registry.example/team/reruns",
                node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                read_only_root=False,
                volumes={
                    "datasets": VolumeSource(claim="datasets"),
                    "scratch": VolumeSource(host_path="/mnt/scratch"),
                },
                data={
                    "/scratch/cache": DataVolume(volume="scratch"),
                    "data/train.csv": DataVolume(volume="datasets", sub_path="v3/train.csv"),
                },
            ),
        )
        assert targets["plain"].kubernetes == KubernetesConfig(namespace="default")

    def test_none_configured(self, tmp_path: Path) -> None:
        """Without tables there are no targets."""
        assert load_config(project_root=tmp_path, env={}).targets == {}

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("[tool.envsnap.targets.b]\nengine = 'lsf'\n", "has engine 'lsf'"),
            ("[tool.envsnap.targets.b]\ndocker-host = 'x'\n", "has engine None"),
            ("[tool.envsnap.targets.b]\nengine = 'docker'\ndocker_host = 'x'\n", "unknown key"),
            ("[tool.envsnap.targets.b]\nengine = 'docker'\ndata = {x = 'rel'}\n", "absolute"),
            ("[tool.envsnap.targets.b]\nengine = 'slurm'\noptions = '--qos'\n", "list of str"),
            ("[tool.envsnap.targets.b]\nengine = 'slurm'\npartition = 3\n", "must be a string"),
            ("[tool.envsnap.targets]\nb = 'docker'\n", "is not a table"),
            ("[tool.envsnap.targets.b]\nengine = 'slurm'\nruntime = 'lxc'\n", "runtime in"),
            ("[tool.envsnap.targets.'b:c']\nengine = 'docker'\n", "has a name with ':'"),
            ("[tool.envsnap.targets.b]\nengine = 'docker'\nnamespace = 'ml'\n", "docker target"),
            ("[tool.envsnap.targets.b]\nengine = 'slurm'\ncontext = 'x'\n", "slurm target"),
            ("[tool.envsnap.targets.b]\nengine = 'kubernetes'\npartition = 'x'\n", "key 'part"),
            ("[tool.envsnap.targets.b]\nengine = 'kubernetes'\nimage_pull_secret = 'x'\n", "unk"),
            ("[tool.envsnap.targets.b]\nengine = 'kubernetes'\nnamespace = 'ML'\n", "'ML'"),
            ("[tool.envsnap.targets.b]\nengine = 'kubernetes'\ndata = {x = '/x'}\n", "data.'x'"),
            (
                "[tool.envsnap.targets.b]\nengine = 'kubernetes'\n"
                "volumes = {tmp = {claim = 'c'}}\n",
                "envsnap's Job uses itself",
            ),
        ],
    )
    def test_a_bad_table_is_one_sentence(self, tmp_path: Path, body: str, message: str) -> None:
        """A typo in a fleet's configuration stops the command, naming the table."""
        _pyproject(tmp_path, body)
        with pytest.raises(UsageError, match=r"tool\.envsnap\.targets") as caught:
            load_config(project_root=tmp_path, env={})
        assert message in str(caught.value)
