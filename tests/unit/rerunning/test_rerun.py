"""The decisions envsnap rerun makes before any container starts, and the report it renders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from envsnap.checkout import CodeError, check_restorable
from envsnap.drift.compare import DriftReport, FieldDrift
from envsnap.drift.outcome import RerunOutcome
from envsnap.drift.report import render_rerun_json, render_rerun_markdown, render_rerun_text
from envsnap.errors import UsageError
from envsnap.manifest import (
    Command,
    Conda,
    DataItem,
    Git,
    Gpu,
    GpuDevice,
    Manifest,
    Python,
    Redaction,
    Tool,
)
from envsnap.rerunning.rerun import (
    GpuError,
    check_driver,
    check_rerunnable,
    choose_gpus,
    container_environment,
    missing_environment,
    parse_duration,
    parse_env_options,
)

NO_GPU = Gpu(available=False, reason="no NVIDIA driver loaded")
H100 = GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-1")
TWO_GPUS = Gpu(available=True, driver_version="570.86.15", devices=(H100, H100))


def manifest(**changes: object) -> Manifest:
    values: dict[str, object] = {
        "run_id": "20261123-120000-abcdef",
        "created": "2026-11-23T12:00:00Z",
        "tool": Tool(version="0.1.0"),
        "python": Python(),
        "conda": Conda(),
        "command": Command(argv=("python", "train.py"), cwd="."),
    }
    values.update(changes)
    return Manifest(**values)  # type: ignore[arg-type]


def never() -> Gpu:
    raise AssertionError("the host's GPUs must not be probed here")


class TestCheckRerunnable:
    def test_needs_a_command(self) -> None:
        """A run without a recorded command cannot be rerun."""
        with pytest.raises(UsageError, match="recorded no command"):
            check_rerunnable(manifest(command=Command()))

    def test_redacted_argv_is_refused(self) -> None:
        """A command line that lost a secret cannot be rerun as recorded; no value is invented."""
        argv = ("python", "train.py", "--api-key", "<redacted>")
        with pytest.raises(UsageError, match="redacted"):
            check_rerunnable(manifest(command=Command(argv=argv)))

    def test_cwd_outside_the_repository_is_refused(self) -> None:
        """A working directory with '..' cannot be mounted inside the checkout."""
        with pytest.raises(UsageError, match="not inside its repository"):
            check_rerunnable(manifest(command=Command(argv=("true",), cwd="../elsewhere")))

    def test_data_path_climbing_out_is_refused(self) -> None:
        """A data path with '..' (never written by capture) is not mounted."""
        item = DataItem(path="../../etc", kind="dir", sha256="0" * 64)
        with pytest.raises(UsageError, match="data path"):
            check_rerunnable(manifest(data=(item,)))

    def test_plain_run_passes(self) -> None:
        """A run with a command in a subdirectory is rerunnable."""
        check_rerunnable(manifest(command=Command(argv=("python", "x.py"), cwd="src/train")))


class TestGpus:
    def test_cpu_run_asks_for_nothing(self) -> None:
        """A run that used no GPU gets none and the host is not probed."""
        assert choose_gpus(NO_GPU, "", never) is None

    def test_none_overrides(self) -> None:
        """--gpus none runs on the CPU even when the original used GPUs."""
        assert choose_gpus(TWO_GPUS, "none", never) is None

    def test_default_is_as_many_as_the_original(self) -> None:
        """Without --gpus, the rerun asks for as many GPUs as the original used."""
        assert choose_gpus(TWO_GPUS, "", lambda: TWO_GPUS) == "2"

    def test_asked_on_a_host_without_gpus(self) -> None:
        """--gpus on a host without GPUs is an error that says why."""
        with pytest.raises(GpuError, match=r"no usable NVIDIA GPU \(no NVIDIA driver loaded\)"):
            choose_gpus(NO_GPU, "all", lambda: NO_GPU)

    def test_original_used_gpus_host_has_none(self) -> None:
        """A GPU run on a CPU host names the original devices and how to go on anyway."""
        with pytest.raises(GpuError, match=r"H100.*--gpus none"):
            choose_gpus(TWO_GPUS, "", lambda: NO_GPU)

    def test_more_than_the_host_has(self) -> None:
        """Asking for more devices than the host has is refused with both counts."""
        one = Gpu(available=True, driver_version="570.86.15", devices=(H100,))
        with pytest.raises(GpuError, match=r"2 GPU.*has 1"):
            choose_gpus(TWO_GPUS, "", lambda: one)

    @pytest.mark.parametrize("value", ["everything", "-1", "device=0;rm", "0"])
    def test_malformed_value(self, value: str) -> None:
        """--gpus takes all, none, a count or device=IDs, nothing else."""
        with pytest.raises(UsageError, match="--gpus"):
            choose_gpus(TWO_GPUS, value, never)

    def test_device_list_passes_through(self) -> None:
        """device=0,1 reaches docker as given."""
        assert choose_gpus(NO_GPU, "device=0,1", lambda: TWO_GPUS) == "device=0,1"


class TestDriver:
    def test_driver_too_old_for_the_cuda_major(self) -> None:
        """A driver below the CUDA major's minimum stops the rerun with both versions."""
        old = Gpu(available=True, driver_version="470.82.01", devices=(H100,))
        with pytest.raises(GpuError, match=r"470\.82\.01 is too old for CUDA 12\.1.*525\.60\.13"):
            check_driver("12.1", old)

    def test_minor_version_compatibility_is_a_note(self) -> None:
        """Above the major's minimum but below the toolkit's driver: a note, not an error."""
        gpu = Gpu(available=True, driver_version="525.85.12", devices=(H100,))
        assert "minor-version compatibility" in check_driver("12.4", gpu)

    def test_new_driver_is_silent(self) -> None:
        """A driver at or above the toolkit's own gives no note."""
        gpu = Gpu(available=True, driver_version="580.65.06", devices=(H100,))
        assert check_driver("12.8", gpu) == ""

    def test_no_cuda_no_check(self) -> None:
        """Without a recorded CUDA runtime nothing is checked."""
        assert check_driver("", TWO_GPUS) == ""


class TestOptions:
    @pytest.mark.parametrize(
        ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5h", 5400), ("45", 45)]
    )
    def test_durations(self, text: str, seconds: float) -> None:
        """--timeout takes seconds, minutes, hours or a bare number of seconds."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "soon", "0", "-5m", "1w"])
    def test_bad_durations(self, text: str) -> None:
        """Anything else is one clear error."""
        with pytest.raises(UsageError, match="not a duration"):
            parse_duration(text)

    def test_env_options(self) -> None:
        """--env NAME=VALUE keeps everything after the first '='."""
        assert parse_env_options(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}

    @pytest.mark.parametrize("item", ["X\n=1", "X\n\n=1", "1X=1", "X Y=1"])
    def test_a_variable_name_is_matched_whole(self, item: str) -> None:
        """A name with a trailing newline (which `$` in a pattern lets through) is refused."""
        with pytest.raises(UsageError, match="not NAME=VALUE"):
            parse_env_options([item])

    @pytest.mark.parametrize("asked", ["all\n", "2\n", "device=0\n"])
    def test_a_gpus_value_is_matched_whole(self, asked: str) -> None:
        """--gpus with a trailing newline is refused before docker sees it."""
        with pytest.raises(UsageError, match="is not all, none"):
            choose_gpus(NO_GPU, asked, lambda: NO_GPU)

    def test_env_option_without_value_does_not_echo_it(self) -> None:
        """A malformed --env is refused without repeating what might be a secret."""
        with pytest.raises(UsageError) as caught:
            parse_env_options(["hf_abcdefghijklmnopqrstuvwxyz"])
        assert "abcdefghijklmnop" not in str(caught.value)


class TestEnvironment:
    def test_recorded_variables_and_supplied_ones(self) -> None:
        """The container gets the allow-listed variables, determinism settings and --env."""
        m = manifest(
            environment={"OMP_PROC_BIND": "true"},
            determinism={"PYTHONHASHSEED": "0", "torch.use_deterministic_algorithms": "true"},
        )
        env = container_environment(m, {"HF_TOKEN": "t"})
        assert env["OMP_PROC_BIND"] == "true" and env["PYTHONHASHSEED"] == "0"
        assert env["HF_TOKEN"] == "t"
        assert "torch.use_deterministic_algorithms" not in env

    def test_redacted_variables_must_be_supplied(self) -> None:
        """Variables redacted at capture are listed unless --env supplies them."""
        m = manifest(
            redacted=(
                Redaction(where="environment", name="WANDB_API_KEY", reason="secret-looking name"),
                Redaction(where="environment", name="HF_TOKEN", reason="secret-looking name"),
                Redaction(where="argv", name="--token", reason="secret-looking option"),
            )
        )
        assert missing_environment(m, {"HF_TOKEN": "x"}) == ("WANDB_API_KEY",)


class TestRestorable:
    def test_no_git(self) -> None:
        """A run captured outside git has no code to restore."""
        with pytest.raises(CodeError, match="no git commit"):
            check_restorable(Git(present=False, reason="not inside a git repository"), None)

    def test_truncated_diff(self) -> None:
        """A diff cut at capture cannot restore the code."""
        git = Git(present=True, commit="a" * 40, dirty=True, diff_truncated=True, diff_bytes=9)
        with pytest.raises(CodeError, match="cut at 9 bytes"):
            check_restorable(git, b"x")

    def test_truncated_diff_points_at_the_setting_and_show(self) -> None:
        """The refusal names the size bound and where capture said so."""
        git = Git(present=True, commit="a" * 40, dirty=True, diff_truncated=True, diff_bytes=9)
        with pytest.raises(CodeError) as caught:
            check_restorable(git, b"x")
        assert "larger than git-max-diff-bytes" in str(caught.value)
        assert "envsnap show" in str(caught.value)

    def test_diff_that_failed_at_capture(self) -> None:
        """A diff git could not finish at capture is refused with git's reason."""
        git = Git(present=True, commit="a" * 40, dirty=True, reason="git diff timed out")
        with pytest.raises(CodeError, match=r"not recorded in full.*git diff timed out"):
            check_restorable(git, None)

    def test_missing_and_edited_patch(self) -> None:
        """diff.patch must be there and match the recorded sha256."""
        patch = b"diff --git a/x b/x\n"
        git = Git(present=True, commit="a" * 40, dirty=True, diff_sha256=_sha(patch))
        check_restorable(git, patch)
        with pytest.raises(CodeError, match="missing"):
            check_restorable(git, None)
        with pytest.raises(CodeError, match="does not match"):
            check_restorable(git, patch + b"edited")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TestRerunReport:
    def outcome(self, **changes: object) -> RerunOutcome:
        drift = FieldDrift(
            path="data.train.csv.sha256",
            category="data",
            severity="breaking",
            change="changed",
            old="aa",
            new="bb\n::error::forged",
        )
        values: dict[str, object] = {
            "original": "20261123-120000-abcdef",
            "rerun": "20261123-130000-123456",
            "directory": Path("store/runs/20261123-130000-123456"),
            "image": "envsnap/env:0123",
            "image_id": "sha256:" + "0" * 64,
            "exit_code": 0,
            "missing_env": ("WANDB_API_KEY",),
            "notes": ("data train.csv changed since the run was captured",),
            "report": DriftReport(old_run="a", new_run="b", fields=(drift,)),
        }
        values.update(changes)
        return RerunOutcome(**values)  # type: ignore[arg-type]

    def test_text_says_verdict_notes_and_what_to_supply(self) -> None:
        """The text report starts with the rerun's state, notes, missing variables, verdict."""
        text = render_rerun_text(self.outcome())
        lines = text.splitlines()
        assert lines[0] == "rerun 20261123-130000-123456 of 20261123-120000-abcdef: exit code 0"
        assert "  note: data train.csv changed since the run was captured" in lines
        assert any("--env WANDB_API_KEY=VALUE" in line for line in lines)
        assert "  verdict: NOT reproduced (breaking drift)" in lines

    def test_timeout_is_named(self) -> None:
        """A rerun stopped by --timeout says so."""
        text = render_rerun_text(self.outcome(exit_code=124, timed_out=True))
        assert "stopped at the timeout (exit code 124)" in text.splitlines()[0]

    def test_json_shape(self) -> None:
        """--json gives the rerun and the full drift report in one object."""
        data = json.loads(render_rerun_json(self.outcome()))
        assert data["schema"] == "envsnap.rerun/1"
        assert data["missing_env"] == ["WANDB_API_KEY"]
        assert data["report"]["max_severity"] == "breaking"

    def test_markdown_cannot_be_forged(self) -> None:
        """A value with a newline and '::' stays inside its table cell."""
        text = render_rerun_markdown(self.outcome())
        assert not any(line.startswith("::") for line in text.splitlines())


class TestVerdict:
    def outcome(self, report: DriftReport) -> RerunOutcome:
        return RerunOutcome(
            original="20261123-120000-abcdef",
            rerun="20261123-130000-123456",
            directory=Path("store/runs/20261123-130000-123456"),
            image="envsnap/env:0123",
            image_id="sha256:" + "0" * 64,
            exit_code=0,
            report=report,
        )

    @pytest.mark.parametrize(
        ("report", "verdict", "failed", "text"),
        [
            (
                DriftReport(old_run="a", new_run="b", results_compared=True, exit_codes=(0, 0)),
                "reproduced",
                False,
                "  verdict: reproduced",
            ),
            (
                DriftReport(old_run="a", new_run="b"),
                "not compared",
                True,
                "  verdict: NOT verified (no breaking environment drift, but exit code, outputs "
                "and metrics were not compared: run 20261123-120000-abcdef recorded no result)",
            ),
            (
                DriftReport(old_run="a", new_run="b", results_compared=True, exit_codes=(0, 3)),
                "not reproduced",
                True,
                "  verdict: NOT reproduced (breaking drift)",
            ),
        ],
        ids=["compared", "no-result", "drift"],
    )
    def test_verdict(self, report: DriftReport, verdict: str, failed: bool, text: str) -> None:
        """Without results on both sides the verdict says they were not compared, is never
        "reproduced", and the rerun fails (exit 1)."""
        outcome = self.outcome(report)
        assert outcome.verdict() == verdict
        assert outcome.failed("breaking") is failed
        assert text in render_rerun_text(outcome).splitlines()
        assert json.loads(render_rerun_json(outcome))["verdict"] == verdict
        assert "verdict" in render_rerun_markdown(outcome)

    def test_the_verdict_is_judged_where_the_exit_code_is(self) -> None:
        """With --fail-on warning, a rerun with only warning drift reads NOT reproduced in every
        format, as its exit code 1 says; at breaking it reads reproduced."""
        from envsnap.drift.compare import FieldDrift

        warning = FieldDrift(
            path="python.version",
            category="python",
            severity="warning",
            change="changed",
            old="3.11.7",
            new="3.11.2",
        )
        report = DriftReport(
            old_run="a", new_run="b", results_compared=True, exit_codes=(0, 0), fields=(warning,)
        )
        outcome = self.outcome(report)
        assert outcome.failed("warning") and not outcome.failed("breaking")
        text = render_rerun_text(outcome, fail_on="warning").splitlines()
        assert "  verdict: NOT reproduced (drift at or above warning)" in text
        assert "  verdict: reproduced" in render_rerun_text(outcome).splitlines()
        data = json.loads(render_rerun_json(outcome, fail_on="warning"))
        assert (data["verdict"], data["fail_on"]) == ("not reproduced", "warning")
        assert "NOT reproduced" in render_rerun_markdown(outcome, fail_on="warning")
