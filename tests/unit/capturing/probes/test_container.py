"""The container probe tells inside from outside by marker files, /proc/1/cgroup and variables."""

from __future__ import annotations

from pathlib import Path

from envsnap.capturing.probes.container import capture_container, split_image_reference
from envsnap.manifest import Container

DIGEST = "sha256:" + "ab" * 32


def write(root: Path, relative: str, text: str = "") -> None:
    """Create a file under the fake root."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class TestOutside:
    def test_no_signal_means_outside(self, tmp_path: Path) -> None:
        """An empty root and environment give the default, outside, section."""
        assert capture_container({}, root=tmp_path) == Container()

    def test_host_cgroup_is_not_a_container(self, tmp_path: Path) -> None:
        """A host's PID 1 in init.scope is not taken for a container."""
        write(tmp_path, "proc/1/cgroup", "0::/init.scope\n")
        assert capture_container({}, root=tmp_path).inside is False


class TestRuntimes:
    def test_dockerenv(self, tmp_path: Path) -> None:
        """/.dockerenv means docker, and detected_by names the file."""
        write(tmp_path, ".dockerenv")
        assert capture_container({}, root=tmp_path) == Container(
            inside=True, runtime="docker", detected_by="/.dockerenv"
        )

    def test_podman_containerenv_with_image(self, tmp_path: Path) -> None:
        """/run/.containerenv means podman; its image line names the image, its imageid is no
        pullable digest and is left out."""
        write(
            tmp_path,
            "run/.containerenv",
            'engine="podman-4.9.3"\nname="t"\nid="123"\n'
            'image="docker.io/library/python:3.11"\nimageid="deadbeef"\nrootless=1\n',
        )
        assert capture_container({}, root=tmp_path) == Container(
            inside=True,
            runtime="podman",
            image="docker.io/library/python:3.11",
            detected_by="/run/.containerenv",
        )

    def test_podman_image_with_digest(self, tmp_path: Path) -> None:
        """A podman image reference pinned by digest is split into image and digest."""
        write(tmp_path, "run/.containerenv", f'image="ghcr.io/o/img@{DIGEST}"\n')
        found = capture_container({}, root=tmp_path)
        assert (found.image, found.image_digest) == ("ghcr.io/o/img", DIGEST)

    def test_container_variable(self, tmp_path: Path) -> None:
        """The ``container`` variable (systemd-nspawn, lxc) names the runtime."""
        assert capture_container({"container": "systemd-nspawn"}, root=tmp_path) == Container(
            inside=True, runtime="systemd-nspawn", detected_by="container variable"
        )

    def test_kubernetes_variable(self, tmp_path: Path) -> None:
        """KUBERNETES_SERVICE_HOST means a kubernetes pod."""
        found = capture_container({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, root=tmp_path)
        assert (found.inside, found.runtime, found.detected_by) == (
            True,
            "kubernetes",
            "KUBERNETES_SERVICE_HOST",
        )

    def test_cgroup_v1_docker(self, tmp_path: Path) -> None:
        """A cgroup v1 path under /docker/ means docker when no marker file exists."""
        write(tmp_path, "proc/1/cgroup", "12:cpu,cpuacct:/docker/0123abcd\n0::/\n")
        found = capture_container({}, root=tmp_path)
        assert (found.runtime, found.detected_by) == ("docker", "/proc/1/cgroup")

    def test_cgroup_kubepods_wins_over_runtime_name(self, tmp_path: Path) -> None:
        """A kubepods cgroup path is kubernetes even though it also names containerd or docker."""
        write(tmp_path, "proc/1/cgroup", "1:name=systemd:/kubepods/burstable/pod1/docker-2\n")
        assert capture_container({}, root=tmp_path).runtime == "kubernetes"

    def test_dockerenv_wins_over_variables(self, tmp_path: Path) -> None:
        """The marker file is the strongest signal and is reported first."""
        write(tmp_path, ".dockerenv")
        found = capture_container({"KUBERNETES_SERVICE_HOST": "x"}, root=tmp_path)
        assert found.detected_by == "/.dockerenv"


class TestEnvsnapImage:
    def test_envsnap_image_splits_reference(self, tmp_path: Path) -> None:
        """ENVSNAP_IMAGE "ref@sha256:..." gives the image and its digest."""
        write(tmp_path, ".dockerenv")
        found = capture_container({"ENVSNAP_IMAGE": f"envsnap/abc:1@{DIGEST}"}, root=tmp_path)
        assert (found.image, found.image_digest) == ("envsnap/abc:1", DIGEST)

    def test_envsnap_image_wins_over_podman(self, tmp_path: Path) -> None:
        """The image envsnap built is preferred to podman's own record."""
        write(tmp_path, "run/.containerenv", 'image="docker.io/library/python:3.11"\n')
        found = capture_container({"ENVSNAP_IMAGE": f"envsnap/abc@{DIGEST}"}, root=tmp_path)
        assert (found.runtime, found.image, found.image_digest) == (
            "podman",
            "envsnap/abc",
            DIGEST,
        )

    def test_envsnap_image_alone_marks_inside(self, tmp_path: Path) -> None:
        """With no other signal (cgroup v2 namespaces hide it), ENVSNAP_IMAGE still says inside."""
        found = capture_container({"ENVSNAP_IMAGE": f"envsnap/abc@{DIGEST}"}, root=tmp_path)
        assert (found.inside, found.runtime, found.detected_by) == (True, "", "ENVSNAP_IMAGE")

    def test_reference_without_digest(self) -> None:
        """A reference without a sha256 digest is kept whole with an empty digest."""
        assert split_image_reference("python:3.11") == ("python:3.11", "")
