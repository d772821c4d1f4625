"""The capture command line end to end: real git, real files, the real example project."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from envsnap.store import RUN_ID, Store
from tests.integration.conftest import Envsnap, default_sigint, envsnap_command, git

pytestmark = pytest.mark.integration

TRAIN = [
    "--params-file",
    "config.json",
    "--seed",
    "42",
    "--data",
    "data/train.csv",
    "--output",
    "outputs/*.npy",
    "--metrics",
    "metrics.json",
    "--",
    sys.executable,
    "train.py",
    "--config",
    "config.json",
    "--seed",
    "42",
    "--out",
    "outputs",
]


def _manifest(project: Path, run_id: str) -> dict[str, object]:
    return tomllib.loads((project / ".envsnap" / "runs" / run_id / "manifest.toml").read_text())


class TestCapture:
    def test_prints_only_the_run_id(self, envsnap: Envsnap, project: Path) -> None:
        """capture prints one run id on stdout and writes manifest.toml at the git top level."""
        done = envsnap("capture", "--name", "first", cwd=project / "data")
        run_id = done.stdout.strip()
        assert RUN_ID.match(run_id), done.stdout
        manifest = _manifest(project, run_id)
        assert manifest["name"] == "first"
        assert manifest["command"] == {"cwd": "data"}

    def test_json_output(self, envsnap: Envsnap, project: Path) -> None:
        """--json prints an object with the run id and the manifest path."""
        data = json.loads(envsnap("capture", "--json").stdout)
        assert RUN_ID.match(data["run_id"])
        assert Path(data["manifest"]).is_file()

    def test_manifest_holds_every_section(self, envsnap: Envsnap, project: Path) -> None:
        """A capture records host, python packages, git, params, seeds and data fingerprints."""
        run_id = envsnap(
            "capture",
            "--param",
            "lr=0.1",
            "--params-file",
            "config.json",
            "--seed",
            "7",
            "--data",
            "data",
            "--tag",
            "team=vision",
        ).stdout.strip()
        m = _manifest(project, run_id)
        assert m["schema"] == "envsnap.manifest/1"
        assert str(m["env_id"]).startswith("sha256:")
        assert m["host"]["kernel"] and m["host"]["cpu_count"] >= 1  # type: ignore[index]
        names = {p["name"] for p in m["python"]["packages"]}  # type: ignore[index]
        assert "click" in names and "envsnap" not in names
        assert m["tool"]["version"]  # type: ignore[index]
        assert m["git"]["commit"] == git(project, "rev-parse", "HEAD").strip()  # type: ignore[index]
        params = {p["key"]: (p["value"], p["source"]) for p in m["params"]}  # type: ignore[attr-defined]
        assert params["lr"] == (0.1, "cli")
        assert params["epochs"] == (300, "file")
        assert m["seeds"] == {"global": 7}
        assert m["tags"] == {"team": "vision"}
        (item,) = m["data"]  # type: ignore[misc]
        assert item["path"] == "data" and item["kind"] == "dir" and item["files"] == 2

    def test_dirty_tree_diff_is_stored(self, envsnap: Envsnap, project: Path) -> None:
        """A tracked change is stored as diff.patch with its sha256 in the manifest."""
        (project / "train.py").write_text((project / "train.py").read_text() + "\n# tweak\n")
        run_id = envsnap("capture").stdout.strip()
        m = _manifest(project, run_id)
        patch = (project / ".envsnap" / "runs" / run_id / "diff.patch").read_bytes()
        import hashlib

        assert m["git"]["dirty"] is True  # type: ignore[index]
        assert m["git"]["diff_sha256"] == hashlib.sha256(patch).hexdigest()  # type: ignore[index]
        assert b"+# tweak" in patch

    def test_same_environment_same_bytes(self, envsnap: Envsnap, project: Path) -> None:
        """Two captures of one environment differ only in run id, time and digest."""
        first = envsnap("capture", "--seed", "1").stdout.strip()
        second = envsnap("capture", "--seed", "1").stdout.strip()
        read = lambda r: [  # noqa: E731
            line
            for line in (project / ".envsnap/runs" / r / "manifest.toml").read_text().splitlines()
            if not line.startswith(("run_id", "created", "digest"))
        ]
        assert read(first) == read(second)


class TestCommand:
    def test_runs_command_and_records_result(self, envsnap: Envsnap, project: Path) -> None:
        """With -- CMD the command runs, and result.toml holds exit code, output hashes, metrics."""
        done = envsnap("capture", "--name", "train", *TRAIN)
        run_id = done.stdout.splitlines()[0]
        assert "valid_accuracy" in done.stdout or "acc" in done.stdout.lower()
        result = tomllib.loads((project / ".envsnap" / "runs" / run_id / "result.toml").read_text())
        assert result["exit_code"] == 0
        assert [o["path"] for o in result["outputs"]] == ["outputs/model.npy"]
        assert set(result["metrics"]) == {"train_loss", "valid_accuracy", "valid_loss"}

    def test_command_exit_code_is_passed_through(self, envsnap: Envsnap, project: Path) -> None:
        """A failing command leaves a complete manifest and a result, and its exit code is ours."""
        done = envsnap("capture", "--", sys.executable, "-c", "import sys; sys.exit(3)", check=3)
        run_id = done.stdout.strip()
        stored = Store(project / ".envsnap").load(run_id)
        assert stored.result is not None and stored.result.exit_code == 3

    def test_missing_executable(self, envsnap: Envsnap, project: Path) -> None:
        """A command that does not exist exits 127 and still records a result."""
        done = envsnap("capture", "--", "no-such-program-xyz", check=127)
        assert "was not found" in done.stderr
        stored = Store(project / ".envsnap").load(done.stdout.strip())
        assert stored.result is not None and stored.result.exit_code == 127

    def test_seed_is_exported(self, envsnap: Envsnap, project: Path) -> None:
        """--seed is passed to the command as ENVSNAP_SEED, with ENVSNAP_RUN_ID."""
        code = "import os; print(os.environ['ENVSNAP_SEED'], os.environ['ENVSNAP_RUN_ID'])"
        done = envsnap("capture", "--seed", "99", "--", sys.executable, "-c", code)
        run_id, line = done.stdout.splitlines()
        assert line == f"99 {run_id}"


class TestDiffListShow:
    def test_identical_runs_do_not_drift(self, envsnap: Envsnap) -> None:
        """Two trainings in one environment diff with exit 0 and identical metrics."""
        a = envsnap("capture", *TRAIN).stdout.splitlines()[0]
        envsnap("capture", *TRAIN)
        done = envsnap("diff", a, "latest", check=0)
        assert "outputs and metrics identical" in done.stdout

    def test_changed_data_drifts(self, envsnap: Envsnap, project: Path) -> None:
        """Changing the data gives exit 1 with data and metric drift reported."""
        a = envsnap("capture", *TRAIN).stdout.splitlines()[0]
        csv = project / "data" / "train.csv"
        lines = csv.read_text().splitlines()
        lines[1] = "9.0," + lines[1].split(",", 1)[1]
        csv.write_text("\n".join(lines) + "\n")
        envsnap("capture", *TRAIN)
        done = envsnap("diff", a, "latest", check=1)
        assert "data.data/train.csv.sha256" in done.stdout
        assert "metric valid_loss" in done.stdout or "metric train_loss" in done.stdout
        report = json.loads(envsnap("diff", a, "latest", "--json", check=1).stdout)
        assert report["max_severity"] == "breaking"

    def test_list_and_show(self, envsnap: Envsnap) -> None:
        """list shows every run; show prints a summary and --json the whole manifest."""
        a = envsnap("capture", "--name", "one").stdout.strip()
        b = envsnap("capture", "--name", "two").stdout.strip()
        listing = envsnap("list").stdout
        assert a in listing and b in listing and "two" in listing
        assert json.loads(envsnap("list", "--json").stdout)[1]["run_id"] == b
        assert f"run       {b}  (two)" in envsnap("show", "latest").stdout
        # The shortest prefix that tells a from b: a fixed length could match both runs when
        # they were captured in the same second.
        shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        prefix = a[: shared + 1]
        data = json.loads(envsnap("show", prefix, "--json").stdout)
        assert data["manifest"]["run_id"] == a

    def test_store_option_and_variable(self, envsnap: Envsnap, tmp_path: Path) -> None:
        """--store and ENVSNAP_STORE put runs elsewhere, for every command."""
        store = tmp_path / "elsewhere"
        run_id = envsnap("capture", "--store", str(store)).stdout.strip()
        assert (store / "runs" / run_id / "manifest.toml").is_file()
        assert run_id in envsnap("list", env={"ENVSNAP_STORE": str(store)}).stdout
        assert run_id in envsnap("show", "latest", "--store", str(store)).stdout

    def test_python_module_entry_point(self, envsnap: Envsnap) -> None:
        """envsnap --version answers through python -m envsnap."""
        assert envsnap("--version").stdout.startswith("envsnap ")


class TestSecrets:
    def test_planted_secrets_never_reach_the_store(self, envsnap: Envsnap, project: Path) -> None:
        """Secrets in env vars, argv, params and the git remote are absent from every file."""
        token = "ghp_" + "S" * 36
        git(project, "remote", "add", "origin", f"https://user:{token}@github.com/acme/r.git")
        env = {
            "HF_TOKEN": "hf_" + "H" * 30,
            "TORCH_HUB_TOKEN": "plain-secret-value",
            "CUDA_CACHE_PATH": "AKIA" + "Z" * 16,
            "PIP_INDEX_URL": "https://bob:hunter2pass@pypi.example.org/simple",
            "WANDB_API_KEY": "wandb-secret-value",
        }
        done = envsnap(
            "capture",
            "--param",
            "api_key=sk-" + "K" * 30,
            "--",
            sys.executable,
            "-c",
            "pass",
            "--token",
            "tok-secret-value",
            f"--auth={token}",
            env=env,
        )
        run_dir = project / ".envsnap" / "runs" / done.stdout.strip()
        text = "".join(p.read_text() for p in run_dir.iterdir())
        for secret in (
            token,
            "H" * 30,
            "plain-secret-value",
            "Z" * 16,
            "hunter2pass",
            "wandb-secret-value",
            "K" * 30,
            "tok-secret-value",
            "bob:",
        ):
            assert secret not in text, secret
        m = tomllib.loads((run_dir / "manifest.toml").read_text())
        assert m["git"]["remote_url"] == "https://github.com/acme/r.git"
        assert m["environment"]["PIP_INDEX_URL"] == "https://pypi.example.org/simple"
        redacted = {r["name"] for r in m["redacted"]}
        assert {"TORCH_HUB_TOKEN", "CUDA_CACHE_PATH", "api_key", "--token", "--auth"} <= redacted


class TestBadInput:
    def _one_sentence(self, done: subprocess.CompletedProcess[str]) -> str:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("envsnap: error: ") and "Traceback" not in done.stderr
        return lines[0]

    def _no_runs(self, project: Path) -> None:
        runs = project / ".envsnap" / "runs"
        assert not runs.exists() or list(runs.iterdir()) == []

    def test_param_without_equals(self, envsnap: Envsnap, project: Path) -> None:
        """--param without '=' exits 2 with one sentence and writes nothing."""
        line = self._one_sentence(envsnap("capture", "--param", "lr", check=2))
        assert "--param 'lr' is not KEY=VALUE" in line
        self._no_runs(project)

    def test_missing_params_file(self, envsnap: Envsnap, project: Path) -> None:
        """A missing params file exits 2 and writes nothing."""
        self._one_sentence(envsnap("capture", "--params-file", "nope.yaml", check=2))
        self._no_runs(project)

    def test_malformed_params_file(self, envsnap: Envsnap, project: Path) -> None:
        """A params file that does not parse exits 2 and writes nothing."""
        (project / "bad.yaml").write_text("a: [1, 2\n")
        line = self._one_sentence(envsnap("capture", "--params-file", "bad.yaml", check=2))
        assert "not valid YAML" in line
        self._no_runs(project)

    def test_missing_data_path(self, envsnap: Envsnap, project: Path) -> None:
        """A data path that does not exist exits 2 and writes nothing."""
        line = self._one_sentence(envsnap("capture", "--data", "data/nope.parquet", check=2))
        assert "data/nope.parquet" in line
        self._no_runs(project)

    @pytest.mark.parametrize("ref", ["20991231-000000-abcdef", "../../etc/passwd", "nope"])
    def test_unknown_or_escaping_run(self, envsnap: Envsnap, ref: str) -> None:
        """Unknown ids and ids with path parts exit 2 with one sentence."""
        envsnap("capture")
        self._one_sentence(envsnap("show", ref, check=2))

    def test_ambiguous_prefix(self, envsnap: Envsnap) -> None:
        """A prefix matching two runs exits 2 naming the count."""
        envsnap("capture")
        envsnap("capture")
        line = self._one_sentence(envsnap("show", "2", check=2))
        assert "matches 2 runs" in line

    def test_store_cannot_be_created(self, envsnap: Envsnap, project: Path) -> None:
        """A store under a regular file exits 2 and says to choose another store."""
        (project / "blocker").write_text("x")
        line = self._one_sentence(envsnap("capture", "--store", "blocker/store", check=2))
        assert "cannot be created" in line

    def test_edited_manifest(self, envsnap: Envsnap, project: Path) -> None:
        """A hand-edited manifest exits 2 naming its path."""
        run_id = envsnap("capture", "--name", "x").stdout.strip()
        path = project / ".envsnap" / "runs" / run_id / "manifest.toml"
        path.write_text(path.read_text().replace('name = "x"', 'name = "y"'))
        line = self._one_sentence(envsnap("show", run_id, check=2))
        assert "manifest.toml was modified after it was written" in line

    def test_truncated_manifest(self, envsnap: Envsnap, project: Path) -> None:
        """A truncated manifest exits 2 naming its path."""
        run_id = envsnap("capture").stdout.strip()
        path = project / ".envsnap" / "runs" / run_id / "manifest.toml"
        path.write_text(path.read_text()[:200])
        self._one_sentence(envsnap("diff", run_id, run_id, check=2))

    def test_debug_shows_traceback(self, envsnap: Envsnap) -> None:
        """--debug shows the traceback a user asked for."""
        done = envsnap("--debug", "show", "nope", check=2)
        assert "Traceback" in done.stderr


class TestReliability:
    def test_concurrent_captures(self, envsnap: Envsnap, project: Path) -> None:
        """Sixteen captures at once into one store give sixteen complete, distinct runs."""
        with ThreadPoolExecutor(max_workers=16) as pool:
            ids = list(
                pool.map(lambda i: envsnap("capture", "--name", f"c{i}").stdout.strip(), range(16))
            )
        assert len(set(ids)) == 16
        store = Store(project / ".envsnap")
        assert sorted(ids) == store.run_ids()
        names = {store.load(i).manifest.name for i in ids}
        assert names == {f"c{i}" for i in range(16)}

    def test_kill_9_leaves_no_partial_run(self, envsnap: Envsnap, project: Path) -> None:
        """Captures killed at many moments leave only complete runs behind."""
        for delay in (0.02, 0.05, 0.08, 0.11, 0.14, 0.17, 0.2, 0.3):
            proc = subprocess.Popen(
                [*envsnap_command(), "capture"],
                cwd=project,
                env=envsnap.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        store = Store(project / ".envsnap")
        for run_id in store.run_ids():
            store.load(run_id)  # verifies the digest: a partial manifest would raise
        runs = project / ".envsnap" / "runs"
        if runs.exists():
            assert all((p / "manifest.toml").is_file() for p in runs.iterdir())

    def test_ctrl_c_during_command_still_writes_result(
        self, envsnap: Envsnap, project: Path
    ) -> None:
        """SIGINT while the command runs stops it and still writes a result marked interrupted."""
        code = (
            "import time\ntry:\n    time.sleep(30)\n"
            "except KeyboardInterrupt:\n    raise SystemExit(130)"
        )
        proc = subprocess.Popen(
            [*envsnap_command(), "capture", "--", sys.executable, "-c", code],
            cwd=project,
            env=envsnap.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        result = Store(project / ".envsnap").load(run_id).result
        assert result is not None and result.interrupted and result.exit_code == 130


class TestCrashedRun:
    def test_crash_is_not_credited_with_earlier_results(
        self, envsnap: Envsnap, project: Path
    ) -> None:
        """The issue's command: a crash after a good run exits 3, its result holds none of the
        good run's model or metrics, show says they are stale, and diff reports the crash."""
        write = (
            "import json, pathlib; out = pathlib.Path('out'); out.mkdir(exist_ok=True); "
            "(out / 'model.pt').write_bytes(b'weights'); "
            "(out / 'metrics.json').write_text(json.dumps({'acc': 0.9}))"
        )
        declared = ["--output", "out/model.pt", "--metrics", "out/metrics.json", "--"]
        good = envsnap("capture", *declared, sys.executable, "-c", write).stdout.split()[0]
        crash = [sys.executable, "-c", "import sys; sys.exit(3)"]
        bad = envsnap("capture", *declared, *crash, check=3).stdout.split()[0]
        result = tomllib.loads((project / ".envsnap" / "runs" / bad / "result.toml").read_text())
        assert result["exit_code"] == 3
        assert "outputs" not in result and "metrics" not in result
        assert result["stale"] == ["out/metrics.json", "out/model.pt"]
        shown = envsnap("show", bad).stdout
        assert "result    exit 3" in shown and "0 outputs, 0 metrics" in shown
        assert "stale   out/metrics.json, out/model.pt: not written by this run" in shown
        done = envsnap("diff", good, bad, check=1)
        assert "exit code  0 -> 3" in done.stdout
        assert "out/model.pt" in done.stdout and "metric acc" in done.stdout
        assert "out/model.pt of run" in done.stdout and "not written by its command" in done.stdout


class TestMoreSecrets:
    def test_secrets_in_more_shapes_never_reach_the_store(
        self, envsnap: Envsnap, project: Path
    ) -> None:
        """Terraform's TF_ variables, PASS names, query-string tokens (remote, index URLs, argv)
        and secret keys in both option forms are absent from every stored byte."""
        git(
            project,
            "remote",
            "add",
            "origin",
            "https://gitlab.example/acme/r.git?private_token=glpat-remote-secret",
        )
        env = {
            "TF_VAR_db_pass": "tfvar-secret",
            "TF_CLI_CONFIG_FILE": "/home/me/tfcli-secret.rc",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "NCCL_DB_PASS": "ncclpass-secret",
            "CUDA_LAUNCH_EXTRA": "--Api-Key=launch-secret",
            "PIP_EXTRA_INDEX_URL": "https://pypi.org/simple https://idx.example/simple"
            "?access_token=index-secret",
        }
        done = envsnap(
            "capture",
            "--param",
            "db.Password=param-secret",
            "--",
            sys.executable,
            "-c",
            "pass",
            "--db-pass",
            "argv-pass-secret",
            "--DB-PASSWORD=argv-password-secret",
            "wandb.api_key=hydra-secret",
            "https://s3.example/b/k?X-Amz-Signature=sig-secret&v=1",
            env=env,
        )
        run_dir = project / ".envsnap" / "runs" / done.stdout.split()[0]
        data = b"".join(p.read_bytes() for p in run_dir.iterdir())
        for secret in (
            "tfvar-secret",
            "tfcli-secret",
            "glpat-remote-secret",
            "ncclpass-secret",
            "launch-secret",
            "index-secret",
            "param-secret",
            "argv-pass-secret",
            "argv-password-secret",
            "hydra-secret",
            "sig-secret",
        ):
            assert secret.encode() not in data, secret
        m = tomllib.loads((run_dir / "manifest.toml").read_text())
        assert m["git"]["remote_url"] == "https://gitlab.example/acme/r.git"
        assert m["environment"]["TF_CPP_MIN_LOG_LEVEL"] == "2"
        assert "TF_VAR_db_pass" not in m["environment"]


class TestNotUtf8:
    def _run(self, envsnap: Envsnap, *args: str | bytes, env: dict[bytes, bytes] | None = None):  # type: ignore[no-untyped-def]
        environment = {k.encode(): v.encode() for k, v in envsnap.env.items()}
        environment.update(env or {})
        return subprocess.run(
            [*envsnap_command(), *args],
            cwd=envsnap.cwd,
            env=environment,  # type: ignore[arg-type]
            capture_output=True,
            timeout=120,
        )

    def test_argument_is_one_sentence_and_nothing_runs(
        self, envsnap: Envsnap, project: Path
    ) -> None:
        """A command argument that is not UTF-8 is refused in one sentence (escaped), before
        anything runs or is stored."""
        marker = project / "ran"
        code = f"open({str(marker)!r}, 'w')"
        done = self._run(envsnap, "capture", "--", sys.executable, "-c", code, b"caf\xe9.csv")
        assert done.returncode == 2
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("envsnap: error: ")
        assert "caf\\xe9.csv" in lines[0] and "not valid UTF-8" in lines[0]
        assert not marker.exists()
        runs = project / ".envsnap" / "runs"
        assert not runs.exists() or list(runs.iterdir()) == []

    def test_environment_value_is_left_out_and_named(self, envsnap: Envsnap, project: Path) -> None:
        """An allow-listed variable that is not UTF-8 is left out and named; the manifest
        stays readable."""
        done = self._run(envsnap, "capture", env={b"LD_LIBRARY_PATH": b"/opt/caf\xe9/lib"})
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.decode().strip()
        m = tomllib.loads((project / ".envsnap" / "runs" / run_id / "manifest.toml").read_text())
        assert "LD_LIBRARY_PATH" not in m.get("environment", {})
        assert {
            "where": "environment",
            "name": "LD_LIBRARY_PATH",
            "reason": "not valid UTF-8 text",
        } in m["redacted"]
        assert run_id in envsnap("show", run_id).stdout


class TestGitState:
    def test_tracked_data_is_data_not_code(self, envsnap: Envsnap, project: Path) -> None:
        """A --data file git tracks is fingerprinted, left out of the diff, and listed as
        excluded; the store never shows up as untracked."""
        csv = project / "data" / "train.csv"
        csv.write_text(csv.read_text() + "1,2,3\n")
        (project / ".gitignore").write_text("outputs/\nmetrics.json\n")  # the store not ignored
        git(project, "commit", "--quiet", "-am", "store no longer ignored")
        envsnap("capture")
        run_id = envsnap("capture", "--data", "data/train.csv").stdout.strip()
        m = _manifest(project, run_id)
        assert m["git"]["excluded"] == ["data/train.csv"]  # type: ignore[index]
        assert m["git"].get("dirty", False) is False  # type: ignore[union-attr]
        assert "untracked" not in m["git"]  # type: ignore[operator]
        assert not (project / ".envsnap" / "runs" / run_id / "diff.patch").exists()

    def test_cut_diff_is_said_at_capture_and_in_show(self, envsnap: Envsnap, project: Path) -> None:
        """A diff over git-max-diff-bytes is said on stderr at capture and by show."""
        (project / "pyproject.toml").write_text("[tool.envsnap]\ngit-max-diff-bytes = 64\n")
        (project / "train.py").write_text((project / "train.py").read_text() + "# x\n" * 50)
        done = envsnap("capture")
        assert "envsnap: warning: the uncommitted diff is larger than git-max-diff-bytes" in (
            done.stderr
        )
        assert "cut at 64 bytes" in envsnap("show", done.stdout.strip()).stdout
