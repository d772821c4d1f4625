"""The recorded code, materialised for a rerun or a build: the recorded commit plus the recorded
diff, in a scratch git repository of its own. The user's repository is only read (one shallow
fetch from it); its working tree, index and refs are never touched.

Declared data paths are data, not code: capture leaves them out of the diff (Git.excluded), and
the checkout marks the tracked ones skip-worktree, so the data mounted over them in the container
never reads as a code change there either.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from envsnap.errors import EnvsnapError, UsageError
from envsnap.git import GitRunner
from envsnap.manifest import Git

_TIMEOUT_S = 300.0
_TAIL_CHARS = 300


class CodeError(UsageError):
    """The recorded code cannot be restored: commit gone, diff missing or no longer applying."""


def check_restorable(git: Git, patch: bytes | None) -> None:
    """Refuse, before anything runs, a run whose code cannot be restored exactly."""
    if not git.present or not git.commit:
        raise CodeError(
            "the run recorded no git commit"
            + (f" ({git.reason})" if git.reason else "")
            + ", so its code cannot be restored",
            hint="capture runs inside a git repository to rerun them",
        )
    if git.diff_truncated:
        raise CodeError(
            f"the run's uncommitted diff was larger than git-max-diff-bytes and was cut at "
            f"{git.diff_bytes} bytes when it was captured (capture warned, and envsnap show says "
            "so), so its code cannot be restored",
            hint="raise git-max-diff-bytes in [tool.envsnap], or commit the changes, and capture "
            "again",
        )
    if git.dirty and git.reason:
        raise CodeError(
            f"the run's uncommitted diff was not recorded in full when it was captured "
            f"({git.reason}), so its code cannot be restored",
            hint="commit the changes and capture again",
        )
    if git.diff_sha256:
        if patch is None:
            raise CodeError(
                "the run's diff.patch is missing from its run directory",
                hint="restore the run directory from a backup",
            )
        if hashlib.sha256(patch).hexdigest() != git.diff_sha256:
            raise CodeError(
                "the run's diff.patch does not match the sha256 its manifest records",
                hint="restore the run directory from a backup",
            )


def _runner(env: Mapping[str, str], echo: Callable[[str], None] | None) -> _Git:
    runner = GitRunner(env, echo=echo)
    if runner.executable is None:
        raise CodeError("git is not installed (not found on PATH)", hint="install git")
    return _Git(runner)


class _Git:
    """``GitRunner.run`` with the checkout's timeout, a failure to run git as one sentence."""

    def __init__(self, runner: GitRunner) -> None:
        self._runner = runner

    def __call__(
        self, args: Sequence[str], cwd: Path, *, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return self._runner.run(args, cwd, stdin=stdin, timeout=_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            raise EnvsnapError(
                f"git could not be run ({exc})", hint="check the git install"
            ) from None


def check_commit(
    repo: Path,
    commit: str,
    *,
    env: Mapping[str, str],
    echo: Callable[[str], None] | None = None,
) -> None:
    """A CodeError when ``repo`` no longer has the recorded commit."""
    git = _runner(env, echo)
    if git(("cat-file", "-e", f"{commit}^{{commit}}"), repo).returncode != 0:
        raise CodeError(
            f"the recorded commit {commit[:12]} is not in the repository at {repo}",
            hint="fetch it (git fetch --all) or rerun from a clone that has it",
        )


def materialize(
    repo: Path,
    git: Git,
    patch: bytes | None,
    dest: Path,
    *,
    env: Mapping[str, str],
    echo: Callable[[str], None] | None = None,
) -> None:
    """Check out ``git.commit`` of ``repo`` into the new directory ``dest`` and apply the
    recorded diff there, so the tree is exactly what the run was captured in (tracked files)."""
    check_restorable(git, patch)
    check_commit(repo, git.commit, env=env, echo=echo)
    call = _runner(env, echo)
    commit = git.commit
    dest.mkdir(parents=True)
    steps: list[tuple[str, Sequence[str]]] = [
        ("git init", ("init", "--quiet")),
        ("git fetch", ("fetch", "--quiet", "--depth=1", "--no-tags", repo.as_uri(), commit)),
        ("git checkout", ("-c", "advice.detachedHead=false", "checkout", "--quiet", commit)),
    ]
    for what, args in steps:
        done = call(args, dest)
        if done.returncode != 0:
            raise CodeError(
                f"{what} of the recorded commit {commit[:12]} failed ({_tail(done.stderr)})",
                hint="check that the repository is readable and not shallow",
            )
    if patch:
        patch_file = dest / ".git" / "envsnap-diff.patch"
        patch_file.write_bytes(patch)
        done = call(("apply", "--binary", "--whitespace=nowarn", str(patch_file)), dest)
        patch_file.unlink()
        if done.returncode != 0:
            raise CodeError(
                f"the recorded diff no longer applies to commit {commit[:12]} "
                f"({_tail(done.stderr)})",
                hint="the run directory's diff.patch may have been edited; restore it",
            )
    if git.excluded:
        _skip_data(call, dest, git.excluded)


def _skip_data(call: _Git, dest: Path, excluded: Sequence[str]) -> None:
    """Mark the tracked files under the declared data paths skip-worktree in the checkout."""
    listed = call(("ls-files", "-z", "--", *(f":(top,literal){p}" for p in excluded)), dest)
    if listed.returncode != 0:
        raise CodeError(
            f"git ls-files in the rerun checkout failed ({_tail(listed.stderr)})",
            hint="check the git install",
        )
    if not listed.stdout.strip(b"\0"):
        return
    done = call(("update-index", "-z", "--skip-worktree", "--stdin"), dest, stdin=listed.stdout)
    if done.returncode != 0:
        raise CodeError(
            f"marking the data paths in the rerun checkout failed ({_tail(done.stderr)})",
            hint="check the git install",
        )


def _tail(data: bytes) -> str:
    text = " ".join(data.decode("utf-8", "replace").split())
    return text[-_TAIL_CHARS:] or "no output"


def pack_code(
    repo: Path,
    git: Git,
    patch: bytes | None,
    *,
    env: Mapping[str, str],
    echo: Callable[[str], None] | None = None,
) -> bytes:
    """The recorded code as a record carries it to another host: the checkout ``materialize``
    makes (a one-commit repository at the recorded commit, the diff applied), as a gzipped tar
    with fixed owners and times, so the same code always gives the same bytes."""
    import gzip
    import io
    import shutil
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="envsnap-code-") as scratch:
        dest = Path(scratch) / "code"
        materialize(repo, git, patch, dest, env=env, echo=echo)
        # FETCH_HEAD and the reflogs name the repository's path on this machine: they stay here.
        (dest / ".git" / "FETCH_HEAD").unlink(missing_ok=True)
        shutil.rmtree(dest / ".git" / "logs", ignore_errors=True)
        buffer = io.BytesIO()
        with (
            gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
        ):
            for path in sorted(dest.rglob("*")):
                info = archive.gettarinfo(str(path), arcname=path.relative_to(dest).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    with path.open("rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
        return buffer.getvalue()


def unpack_code(archive: bytes, git: Git, dest: Path) -> None:
    """Unpack what ``pack_code`` made into the new directory ``dest``; a CodeError when it is not
    the recorded commit's checkout."""
    import io
    import tarfile

    dest.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CodeError(
            f"the run's code archive cannot be unpacked ({exc})",
            hint="pull the run again from its registry",
        ) from None
    head = dest / ".git" / "HEAD"
    found = head.read_text(encoding="utf-8").strip() if head.is_file() else ""
    if found != git.commit:
        raise CodeError(
            f"the run's code archive holds {found[:12] or 'no commit'}, not the recorded commit "
            f"{git.commit[:12]}",
            hint="pull the run again from its registry",
        )
