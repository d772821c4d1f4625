"""The git probe against real repositories: commit, branch, cleaned remote, bounded diff, a
capped untracked list with directories collapsed, data paths and the store left out, and dirty
submodules named, from as few git calls as possible."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from envsnap.capturing.probes.git import capture_git, find_repo_root
from envsnap.manifest import Git
from tests.integration.conftest import git

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on main with one commit holding two files."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet", "--initial-branch=main")
    (root / "train.py").write_text("print('train')\n")
    (root / "README.md").write_text("# project\n")
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "first")
    return root


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").strip()


class TestClean:
    def test_clean_repo(self, repo: Path) -> None:
        """A clean repository gives its commit and branch, not dirty, and no diff bytes."""
        section, diff = capture_git(repo, env=os.environ)
        assert section == Git(present=True, commit=head(repo), branch="main")
        assert diff == b""

    def test_from_subdirectory(self, repo: Path) -> None:
        """Capture from a subdirectory describes the whole repository, paths from its root."""
        (repo / "src").mkdir()
        (repo / "notes.txt").write_text("x\n")
        section, _ = capture_git(repo / "src", env=os.environ)
        assert (section.commit, section.untracked) == (head(repo), ("notes.txt",))

    def test_detached_head_has_no_branch(self, repo: Path) -> None:
        """A detached HEAD records the commit and an empty branch."""
        git(repo, "checkout", "--quiet", "--detach")
        section, _ = capture_git(repo, env=os.environ)
        assert (section.present, section.commit, section.branch) == (True, head(repo), "")


class TestDirty:
    def test_tracked_change_gives_applicable_diff(self, repo: Path, tmp_path: Path) -> None:
        """A tracked change makes the repo dirty and the diff applies cleanly to a clone of HEAD."""
        (repo / "train.py").write_text("print('train harder')\n")
        (repo / "weights.bin").write_bytes(bytes(range(256)))
        git(repo, "add", "weights.bin")
        section, diff = capture_git(repo, env=os.environ)
        assert section.dirty and not section.diff_truncated
        assert section.diff_bytes == len(diff) > 0
        assert section.diff_sha256 == hashlib.sha256(diff).hexdigest()
        assert b"GIT binary patch" in diff

        clone = tmp_path / "clone"
        git(tmp_path, "clone", "--quiet", str(repo), str(clone))
        (tmp_path / "patch.diff").write_bytes(diff)
        git(clone, "apply", "--index", str(tmp_path / "patch.diff"))
        assert (clone / "train.py").read_text() == "print('train harder')\n"
        assert (clone / "weights.bin").read_bytes() == bytes(range(256))

    def test_diff_ignores_user_diff_config(self, repo: Path) -> None:
        """noprefix and colour settings in the user's config do not change the recorded patch."""
        git(repo, "config", "diff.noprefix", "true")
        git(repo, "config", "color.diff", "always")
        (repo / "train.py").write_text("changed\n")
        _, diff = capture_git(repo, env=os.environ)
        assert diff.startswith(b"diff --git a/train.py b/train.py\n")
        assert b"\x1b[" not in diff

    def test_untracked_only_is_not_dirty(self, repo: Path) -> None:
        """Untracked files are listed but do not make the tree dirty or produce a diff."""
        (repo / "scratch.txt").write_text("x\n")
        section, diff = capture_git(repo, env=os.environ)
        assert (section.dirty, section.untracked, diff) == (False, ("scratch.txt",), b"")

    def test_diff_truncated_at_limit(self, repo: Path) -> None:
        """A diff larger than max_diff_bytes is cut at the limit and marked truncated."""
        (repo / "train.py").write_text("".join(f"line {i}\n" for i in range(5000)))
        section, diff = capture_git(repo, env=os.environ, max_diff_bytes=100)
        assert section.diff_truncated
        assert len(diff) == section.diff_bytes == 100
        assert section.diff_sha256 == hashlib.sha256(diff).hexdigest()
        full = git(repo, "diff", "HEAD", "--binary").encode()
        assert full.startswith(diff)

    def test_diff_exactly_at_limit_not_truncated(self, repo: Path) -> None:
        """A diff exactly max_diff_bytes long is complete, not truncated."""
        (repo / "train.py").write_text("changed\n")
        _, whole = capture_git(repo, env=os.environ)
        section, diff = capture_git(repo, env=os.environ, max_diff_bytes=len(whole))
        assert (diff, section.diff_truncated) == (whole, False)


class TestUntracked:
    def test_sorted_and_capped(self, repo: Path) -> None:
        """Untracked entries are listed sorted, capped with a count of the rest."""
        (repo / "out" / "b").mkdir(parents=True)
        for name in ("z.txt", "a.txt", "m.txt", "out/b/c.txt", "out/a.txt"):
            (repo / name).write_text(name)
        section, _ = capture_git(repo, env=os.environ, max_untracked=3)
        assert section.untracked == ("a.txt", "m.txt", "out/")
        assert section.untracked_omitted == 1

    def test_big_checkpoint_is_listed_fast(self, repo: Path) -> None:
        """A large untracked checkpoint is listed (by its new directory); its content is never
        read."""
        checkpoint = repo / "ckpt" / "model.pt"
        checkpoint.parent.mkdir()
        with checkpoint.open("wb") as handle:  # sparse: 4 GiB apparent size, no blocks
            handle.truncate(4 * 1024**3)
        section, diff = capture_git(repo, env=os.environ)
        assert section.untracked == ("ckpt/",)
        assert diff == b""

    def test_untracked_directories_collapse(self, repo: Path) -> None:
        """A virtual environment inside the repository is one entry, as git status shows it,
        not thousands of files; an untracked directory inside a tracked one likewise."""
        for i in range(1500):
            path = repo / ".venv" / "lib" / f"pkg{i % 30}" / f"m{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
        (repo / "src" / "new").mkdir(parents=True)
        (repo / "src" / "tracked.py").write_text("x\n")
        git(repo, "add", "src/tracked.py")
        git(repo, "commit", "--quiet", "-m", "src")
        (repo / "src" / "new" / "a.py").write_text("")
        (repo / "notes.txt").write_text("")
        section, _ = capture_git(repo, env=os.environ, max_untracked=1000)
        assert section.untracked == (".venv/", "notes.txt", "src/new/")
        assert section.untracked_omitted == 0

    def test_ignored_files_not_listed(self, repo: Path) -> None:
        """Files matched by .gitignore are not untracked entries."""
        (repo / ".gitignore").write_text("outputs/\n")
        (repo / "outputs").mkdir()
        (repo / "outputs" / "x.npy").write_bytes(b"x")
        section, _ = capture_git(repo, env=os.environ)
        assert section.untracked == (".gitignore",)


class TestExcluded:
    def test_tracked_data_file_is_data_not_code(self, repo: Path) -> None:
        """A changed data file git tracks is left out of dirty, diff and untracked, and the
        section lists it as excluded; a code change beside it is still recorded."""
        (repo / "data").mkdir()
        (repo / "data" / "train.csv").write_text("a,b\n1,2\n")
        git(repo, "add", "-A")
        git(repo, "commit", "--quiet", "-m", "data")
        (repo / "data" / "train.csv").write_text("a,b\n9,9\n")
        (repo / "data" / "extra.csv").write_text("new\n")
        section, diff = capture_git(repo, env=os.environ, exclude_data=["data"])
        assert (section.dirty, section.diff_sha256, diff) == (False, "", b"")
        assert (section.untracked, section.excluded) == ((), ("data",))

        (repo / "train.py").write_text("print('changed')\n")
        section, diff = capture_git(repo, env=os.environ, exclude_data=["data/train.csv"])
        assert section.dirty and b"train.py" in diff and b"train.csv" not in diff
        assert section.untracked == ("data/extra.csv",)

    def test_exclusions_are_from_the_repository_root(self, repo: Path) -> None:
        """Excluded paths are repository-relative, whatever directory capture runs in."""
        (repo / "exp").mkdir()
        (repo / "exp" / "data.csv").write_text("x\n")
        (repo / "exp" / "run.py").write_text("x\n")
        section, _ = capture_git(repo / "exp", env=os.environ, exclude_data=["exp/data.csv"])
        assert section.untracked == ("exp/",)  # run.py is in it
        (repo / "exp" / "run.py").unlink()
        section, _ = capture_git(repo / "exp", env=os.environ, exclude_data=["exp/data.csv"])
        assert section.untracked == ()

    def test_store_is_never_listed_nor_named(self, repo: Path) -> None:
        """envsnap's own store inside the repository is neither untracked drift nor recorded."""
        (repo / ".envsnap" / "runs" / "x").mkdir(parents=True)
        (repo / ".envsnap" / "runs" / "x" / "manifest.toml").write_text("x\n")
        section, _ = capture_git(repo, env=os.environ, exclude_private=[".envsnap"])
        assert section == Git(present=True, commit=head(repo), branch="main")


class TestSubmodule:
    @pytest.fixture
    def with_submodule(self, repo: Path, tmp_path: Path) -> Path:
        lib = tmp_path / "lib"
        lib.mkdir()
        git(lib, "init", "--quiet", "--initial-branch=main")
        (lib / "lib.py").write_text("VALUE = 1\n")
        git(lib, "add", "-A")
        git(lib, "commit", "--quiet", "-m", "lib")
        git(
            repo,
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "--quiet",
            str(lib),
            "vendor/lib",
        )
        git(repo, "commit", "--quiet", "-m", "submodule")
        return repo

    def test_uncommitted_changes_inside_are_named(self, with_submodule: Path) -> None:
        """Changes inside a submodule's working tree are recorded by its path (the patch cannot
        carry them), and alone do not make the tree dirty."""
        repo = with_submodule
        (repo / "vendor" / "lib" / "lib.py").write_text("VALUE = 2\n")
        section, diff = capture_git(repo, env=os.environ)
        assert section.submodules_dirty == ("vendor/lib",)
        assert (section.dirty, diff) == (False, b"")

    def test_patch_beside_a_dirty_submodule_applies(
        self, with_submodule: Path, tmp_path: Path
    ) -> None:
        """With a dirty submodule and a code change, the patch holds only what git apply takes."""
        repo = with_submodule
        (repo / "vendor" / "lib" / "new.txt").write_text("untracked inside\n")
        (repo / "train.py").write_text("print('changed')\n")
        section, diff = capture_git(repo, env=os.environ)
        assert section.dirty and section.submodules_dirty == ("vendor/lib",)
        assert b"-dirty" not in diff and b"Subproject" not in diff
        clone = tmp_path / "clone"
        git(tmp_path, "clone", "--quiet", str(repo), str(clone))
        (tmp_path / "patch.diff").write_bytes(diff)
        git(clone, "apply", str(tmp_path / "patch.diff"))
        assert (clone / "train.py").read_text() == "print('changed')\n"


class TestRemote:
    @pytest.mark.parametrize(
        ("url", "recorded"),
        [
            (
                "https://gitlab.example/o/r.git?private_token=glpat-hunter2",
                "https://gitlab.example/o/r.git",
            ),
            ("https://h.example/o/r.git?access_token=hunter2&x=1", "https://h.example/o/r.git?x=1"),
        ],
    )
    def test_token_in_query_removed(self, repo: Path, url: str, recorded: str) -> None:
        """A token in the remote URL's query string is not recorded."""
        git(repo, "remote", "add", "origin", url)
        assert capture_git(repo, env=os.environ)[0].remote_url == recorded

    def test_token_removed_from_https_remote(self, repo: Path) -> None:
        """An https remote with an embedded token is recorded without user or token."""
        git(repo, "remote", "add", "origin", "https://user:ghp_xxx@github.com/o/r.git")
        section, _ = capture_git(repo, env=os.environ)
        assert section.remote_url == "https://github.com/o/r.git"

    def test_scp_remote_loses_user(self, repo: Path) -> None:
        """An scp-like ssh remote keeps host and path but not the user."""
        git(repo, "remote", "add", "origin", "git@github.com:o/r.git")
        assert capture_git(repo, env=os.environ)[0].remote_url == "github.com:o/r.git"

    def test_upstream_remote_preferred_over_origin(self, repo: Path, tmp_path: Path) -> None:
        """The remote of the branch's upstream is recorded, even when its name holds a slash."""
        upstream = tmp_path / "upstream.git"
        git(tmp_path, "init", "--quiet", "--bare", str(upstream))
        git(repo, "remote", "add", "origin", "https://example.com/origin.git")
        git(repo, "remote", "add", "team/fork", str(upstream))
        git(repo, "push", "--quiet", "--set-upstream", "team/fork", "main")
        assert capture_git(repo, env=os.environ)[0].remote_url == str(upstream)

    def test_no_remote(self, repo: Path) -> None:
        """A repository without remotes records an empty remote URL."""
        assert capture_git(repo, env=os.environ)[0].remote_url == ""


class TestAbsent:
    def test_not_a_repo(self, tmp_path: Path) -> None:
        """A directory outside any repository gives present=False with the reason."""
        assert capture_git(tmp_path, env=os.environ) == (
            Git(present=False, reason="not inside a git repository"),
            b"",
        )

    def test_repo_without_commits(self, tmp_path: Path) -> None:
        """A repository with no commits yet gives present=False with the reason."""
        git(tmp_path, "init", "--quiet")
        (tmp_path / "x.py").write_text("x\n")
        section, diff = capture_git(tmp_path, env=os.environ)
        assert section == Git(present=False, reason="the git repository has no commits yet")
        assert diff == b""

    def test_missing_directory(self, tmp_path: Path) -> None:
        """A working directory that does not exist gives present=False, not an exception."""
        section, _ = capture_git(tmp_path / "gone", env=os.environ)
        assert section.present is False

    def test_git_not_installed(self, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without git on PATH the section says git is not installed."""
        section, _ = capture_git(repo, env={**os.environ, "PATH": ""})
        assert section == Git(present=False, reason="git is not installed (not found on PATH)")

    def test_git_error_tail_in_reason(self, repo: Path) -> None:
        """A failing git status puts the tail of git's stderr into the reason."""
        (repo / ".git" / "index").write_bytes(b"DIRC")
        section, _ = capture_git(repo, env=os.environ)
        assert section.present is False
        assert section.reason.startswith("git status failed: ")
        assert "index file" in section.reason


class TestFindRepoRoot:
    def test_finds_root_from_nested_directory(self, repo: Path) -> None:
        """The nearest directory holding .git is found from deep inside the tree."""
        nested = repo / "a" / "b"
        nested.mkdir(parents=True)
        assert find_repo_root(nested) == repo

    def test_git_file_counts(self, repo: Path, tmp_path: Path) -> None:
        """A worktree's .git file marks its root as well as a .git directory does."""
        worktree = tmp_path / "wt"
        git(repo, "worktree", "add", "--quiet", str(worktree))
        assert (worktree / ".git").is_file()
        assert find_repo_root(worktree) == worktree
        assert capture_git(worktree, env=os.environ)[0].commit == head(repo)

    def test_outside_any_repo(self, tmp_path: Path) -> None:
        """Outside a repository the answer is None."""
        assert find_repo_root(tmp_path) is None

    def test_runs_no_process(self, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Finding the root starts no process."""

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("find_repo_root started a process")

        monkeypatch.setattr(subprocess, "Popen", refuse)
        assert find_repo_root(repo) == repo
