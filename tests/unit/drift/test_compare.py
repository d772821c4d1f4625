"""The drift function: categories, severities, overrides, outputs and metrics."""

from __future__ import annotations

import dataclasses

import pytest

from envsnap.drift.compare import compare
from envsnap.drift.rules import MetricTolerance
from envsnap.errors import UsageError
from envsnap.manifest import DataItem, Gpu, GpuDevice, Manifest, OutputFile, Package, Result
from tests.conftest import sample_manifest


def _with_packages(m: Manifest, *packages: Package) -> Manifest:
    return dataclasses.replace(m, python=dataclasses.replace(m.python, packages=packages))


def _paths(report: object) -> dict[str, tuple[str, str]]:
    return {f.path: (f.category, f.severity) for f in report.fields}  # type: ignore[attr-defined]


def _result(**changes: object) -> Result:
    base = Result(
        run_id="r",
        exit_code=0,
        started="s",
        ended="e",
        outputs=(OutputFile(path="outputs/model.npy", sha256="1" * 64),),
        metrics={"loss": 0.5, "acc": 0.9},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class TestEnvironmentDrift:
    def test_identical_manifests_do_not_drift(self) -> None:
        """Two captures of the same environment differ only in expected fields."""
        a = sample_manifest()
        b = sample_manifest(run_id="20261122-170000-ffffff", created="2026-11-22T17:00:00Z")
        report = compare(a, b)
        assert not report.drifted("info")
        assert {f.severity for f in report.fields} == {"expected"}
        assert report.max_severity is None

    def test_package_bump_is_breaking(self) -> None:
        """A package version change is breaking, in the packages category."""
        a = sample_manifest()
        b = _with_packages(a, Package(name="numpy", version="2.2.0"), a.python.packages[1])
        report = compare(a, b)
        assert _paths(report)["python.packages.numpy"] == ("packages", "breaking")
        assert report.drifted("breaking")

    def test_added_package_is_one_difference(self) -> None:
        """A new package shows once, not once per field of it."""
        a = sample_manifest()
        extra = Package(name="torch", version="2.3.0", installer="pip", wheel_tag="cp311")
        b = _with_packages(a, *a.python.packages, extra)
        fields = [f for f in compare(a, b).fields if "torch" in f.path]
        assert [(f.path, f.change) for f in fields] == [("python.packages.torch", "added")]

    def test_python_patch_is_warning_minor_is_breaking(self) -> None:
        """Python 3.11.7 -> 3.11.9 warns; 3.11 -> 3.12 breaks."""
        a = sample_manifest()
        patch = dataclasses.replace(a, python=dataclasses.replace(a.python, version="3.11.9"))
        minor = dataclasses.replace(a, python=dataclasses.replace(a.python, version="3.12.1"))
        assert _paths(compare(a, patch))["python.version"] == ("python", "warning")
        assert _paths(compare(a, minor))["python.version"] == ("python", "breaking")

    def test_driver_patch_is_info_major_is_warning(self) -> None:
        """A driver patch change is info; a new driver branch is a warning."""
        gpu = Gpu(
            available=True,
            driver_version="550.54.14",
            cuda_driver_version="12.4",
            devices=(GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-1"),),
        )
        a = sample_manifest(gpu=gpu)
        patch = sample_manifest(gpu=dataclasses.replace(gpu, driver_version="550.54.15"))
        major = sample_manifest(gpu=dataclasses.replace(gpu, driver_version="560.28.03"))
        assert _paths(compare(a, patch))["gpu.driver_version"] == ("driver", "info")
        assert _paths(compare(a, major))["gpu.driver_version"] == ("driver", "warning")

    def test_cuda_runtime_major_is_breaking(self) -> None:
        """A CUDA runtime major change breaks; a minor change warns."""
        a = sample_manifest(
            cuda=dataclasses.replace(sample_manifest().cuda, runtime_version="11.8")
        )
        b = sample_manifest(cuda=dataclasses.replace(a.cuda, runtime_version="12.1"))
        c = sample_manifest(cuda=dataclasses.replace(a.cuda, runtime_version="11.7"))
        assert _paths(compare(a, b))["cuda.runtime_version"] == ("cuda", "breaking")
        assert _paths(compare(a, c))["cuda.runtime_version"] == ("cuda", "warning")

    def test_gpu_uuid_is_expected(self) -> None:
        """Another physical GPU of the same model is an expected difference."""
        dev = GpuDevice(index=0, name="NVIDIA A100", uuid="GPU-a")
        a = sample_manifest(gpu=Gpu(available=True, devices=(dev,)))
        b = sample_manifest(
            gpu=Gpu(available=True, devices=(dataclasses.replace(dev, uuid="GPU-b"),))
        )
        assert _paths(compare(a, b)) == {"gpu.devices.0.uuid": ("hardware", "expected")}

    def test_data_change_is_breaking(self) -> None:
        """A changed data fingerprint is breaking data drift."""
        a = sample_manifest()
        b = sample_manifest(
            data=(DataItem(path="data/train.csv", kind="file", sha256="c" * 64, bytes=1024),)
        )
        assert _paths(compare(a, b))["data.data/train.csv.sha256"] == ("data", "breaking")

    def test_field_leaving_its_default_is_a_change(self) -> None:
        """A field moving from its default (a clean tree) shows as changed with both values."""
        a = sample_manifest()
        b = sample_manifest(git=dataclasses.replace(a.git, dirty=True))
        (field,) = compare(a, b).fields
        assert (field.path, field.change, field.old, field.new) == (
            "git.dirty",
            "changed",
            "false",
            "true",
        )

    def test_hostname_is_expected_and_hidden(self) -> None:
        """A different host name is expected, never drift."""
        a = sample_manifest()
        b = sample_manifest(host=dataclasses.replace(a.host, hostname="other"))
        report = compare(a, b)
        assert _paths(report)["host.hostname"] == ("host", "expected")
        assert not report.drifted("info")

    def test_param_named_source_is_a_param(self) -> None:
        """A parameter whose key ends in .source is compared as a parameter value."""
        from envsnap.manifest import Param

        a = sample_manifest(params=(Param(key="data.source", value="s3", source="cli"),))
        b = sample_manifest(params=(Param(key="data.source", value="gcs", source="cli"),))
        assert _paths(compare(a, b))["params.data.source"] == ("config", "breaking")

    def test_overrides_change_severity(self) -> None:
        """Configured overrides by field pattern or category replace the default severity."""
        a = sample_manifest()
        b = _with_packages(a, Package(name="numpy", version="2.2.0"), a.python.packages[1])
        report = compare(a, b, overrides={"python.packages.numpy": "info"})
        assert _paths(report)["python.packages.numpy"] == ("packages", "info")
        assert not report.drifted("warning")
        by_category = compare(a, b, overrides={"packages": "warning"})
        assert _paths(by_category)["python.packages.numpy"] == ("packages", "warning")

    def test_ignore_by_field_or_category(self) -> None:
        """Ignored fields or categories are not reported at all."""
        a = sample_manifest()
        b = _with_packages(a, Package(name="numpy", version="2.2.0"), a.python.packages[1])
        assert compare(a, b, ignore=["python.packages.numpy"]).fields == ()
        assert compare(a, b, ignore=["packages"]).fields == ()

    def test_category_name_is_not_a_field_prefix(self) -> None:
        """Ignoring the python category leaves package drift (category packages) reported;
        python.* as a field pattern leaves it out."""
        a = sample_manifest()
        b = _with_packages(a, Package(name="numpy", version="2.2.0"), a.python.packages[1])
        assert "python.packages.numpy" in _paths(compare(a, b, ignore=["python", "host"]))
        assert compare(a, b, ignore=["python.*"]).fields == ()


class TestOutputDrift:
    def test_identical_results(self) -> None:
        """Same exit code, hashes and metrics: nothing to report."""
        m = sample_manifest()
        report = compare(m, m, old_result=_result(), new_result=_result())
        assert report.results_compared and not report.drifted("info")

    def test_exit_code_change_is_breaking(self) -> None:
        """A different exit code is breaking."""
        m = sample_manifest()
        report = compare(m, m, old_result=_result(), new_result=_result(exit_code=1))
        assert report.exit_codes == (0, 1) and report.drifted("breaking")

    def test_output_hash_change(self) -> None:
        """A changed output file hash is reported with both hashes."""
        m = sample_manifest()
        new = _result(outputs=(OutputFile(path="outputs/model.npy", sha256="2" * 64),))
        report = compare(m, m, old_result=_result(), new_result=new)
        assert [(o.path, o.old_sha256[:1], o.new_sha256[:1]) for o in report.outputs] == [
            ("outputs/model.npy", "1", "2")
        ]

    def test_metric_within_tolerance_is_info(self) -> None:
        """A metric inside rtol is shown as info with its difference, not drift."""
        m = sample_manifest()
        report = compare(
            m,
            m,
            old_result=_result(),
            new_result=_result(metrics={"loss": 0.5000001, "acc": 0.9}),
            tolerance=MetricTolerance(rtol=1e-3),
        )
        (metric,) = report.metrics
        assert metric.within and metric.severity == "info"
        assert metric.abs_diff is not None and abs(metric.abs_diff - 1e-7) < 1e-12
        assert not report.drifted("warning")

    def test_metric_outside_tolerance_is_breaking(self) -> None:
        """A metric beyond its per-metric tolerance is breaking, old and new values kept."""
        m = sample_manifest()
        report = compare(
            m,
            m,
            old_result=_result(),
            new_result=_result(metrics={"loss": 0.6, "acc": 0.9}),
            metric_tolerances={"loss": MetricTolerance(atol=0.01)},
        )
        (metric,) = report.metrics
        assert (metric.old, metric.new, metric.within) == (0.5, 0.6, False)
        assert report.drifted("breaking")

    def test_missing_metric_is_breaking(self) -> None:
        """A metric only one run wrote is breaking."""
        m = sample_manifest()
        report = compare(m, m, old_result=_result(), new_result=_result(metrics={"loss": 0.5}))
        assert [(x.name, x.new) for x in report.metrics] == [("acc", None)]


class TestHostIndexConfiguration:
    @pytest.mark.parametrize(
        ("changes", "path"),
        [
            ({"extra_index_urls": ()}, "python.extra_index_urls"),
            ({"index_url": "https://mirror.example/simple"}, "python.index_url"),
        ],
    )
    def test_index_urls_are_info(self, changes: dict[str, object], path: str) -> None:
        """The host's index configuration differs in every rerun: info, so an otherwise identical
        rerun passes --fail-on warning."""
        a = sample_manifest(
            python=dataclasses.replace(
                sample_manifest().python, extra_index_urls=("https://download.pytorch.org/whl",)
            )
        )
        b = dataclasses.replace(a, python=dataclasses.replace(a.python, **changes))  # type: ignore[arg-type]
        report = compare(a, b)
        assert _paths(report)[path] == ("packages", "info")
        assert not report.drifted("warning")

    @pytest.mark.parametrize("name", ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL"])
    def test_index_variables_are_info(self, name: str) -> None:
        """The same holds for the index variables of the recorded environment."""
        a = sample_manifest(environment={name: "https://a.example/simple"})
        b = sample_manifest(environment={name: "https://b.example/simple"})
        assert _paths(compare(a, b))[f"environment.{name}"] == ("config", "info")


RERUN_FIELDS = [
    ("branch", "main", ""),
    ("remote_url", "https://github.com/o/r.git", ""),
    ("untracked", ("notes.txt",), ()),
    ("untracked_omitted", 3, 0),
]


class TestRerunPair:
    @pytest.mark.parametrize(("name", "old", "new"), RERUN_FIELDS)
    def test_diff_and_rerun_agree(self, name: str, old: object, new: object) -> None:
        """Between a run and its rerun (either way round) branch, remote and untracked files
        are expected, as the rerun report shows them; between unrelated runs they are info."""
        a = sample_manifest(git=dataclasses.replace(sample_manifest().git, **{name: old}))
        rerun = sample_manifest(
            run_id="20261122-170000-ffffff",
            rerun_of=a.run_id,
            git=dataclasses.replace(a.git, **{name: new}),
        )
        other = dataclasses.replace(rerun, rerun_of="")
        assert _paths(compare(a, rerun))[f"git.{name}"] == ("code", "expected")
        assert _paths(compare(rerun, a))[f"git.{name}"] == ("code", "expected")
        assert _paths(compare(a, other))[f"git.{name}"] == ("code", "info")

    def test_overrides_still_win(self) -> None:
        """A configured severity applies to a rerun pair too."""
        a = sample_manifest()
        rerun = sample_manifest(
            run_id="20261122-170000-ffffff",
            rerun_of=a.run_id,
            git=dataclasses.replace(a.git, branch=""),
        )
        report = compare(a, rerun, overrides={"git.branch": "warning"})
        assert _paths(report)["git.branch"] == ("code", "warning")


class TestIgnoreEntries:
    @pytest.mark.parametrize(
        "pattern", ["hardwre", "pyhton.packages.numpy", "host.kernl", "python.packages.torch"]
    )
    def test_unknown_entry_is_an_error_naming_the_categories(self, pattern: str) -> None:
        """An ignore entry that is no category and matches no field is refused, not a no-op."""
        a = sample_manifest()
        with pytest.raises(UsageError) as caught:
            compare(a, a, ignore=[pattern])
        text = str(caught.value)
        assert repr(pattern) in text and "hardware" in text and "packages" in text

    @pytest.mark.parametrize(
        "pattern",
        [
            "hardware",
            "hard*",
            "host.kernel",
            "host.*",
            "python.packages.numpy",
            "gpu.count",
            "data",
        ],
    )
    def test_known_entries_are_accepted(self, pattern: str) -> None:
        """Categories, globs over them, and patterns matching a field are accepted."""
        a = sample_manifest()
        compare(a, a, ignore=[pattern])


class TestCrashedRuns:
    def test_crashed_run_never_reads_as_identical(self) -> None:
        """A crashed run whose old files were left out differs from the good run it followed:
        exit code, outputs and metrics, with a note on the stale files."""
        m = sample_manifest()
        crashed = _result(exit_code=3, outputs=(), metrics={}, stale=("outputs/model.npy",))
        report = compare(m, m, old_result=_result(), new_result=crashed)
        assert report.drifted("breaking")
        assert report.exit_codes == (0, 3)
        assert [o.path for o in report.outputs] == ["outputs/model.npy"]
        assert {x.name for x in report.metrics} == {"loss", "acc"}
        assert any("outputs/model.npy" in n and "not written" in n for n in report.notes)
