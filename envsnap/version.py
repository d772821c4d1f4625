"""envsnap's version, written once here (the package, setuptools, the wheel envsnap builds for its
images and every manifest read it), and what ``envsnap --version`` says: the version and, when
envsnap runs from a git checkout, its commit.

The commit is read from ``.git`` directly (no git process), so ``--version`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

_SHORT = 12


def version_text(package_dir: Path | None = None) -> str:
    """``envsnap 0.1.0``, or ``envsnap 0.1.0 (commit 0123456789ab)`` from a checkout."""
    commit = checkout_commit((package_dir or Path(__file__).resolve().parent).parent)
    return f"envsnap {__version__}" + (f" (commit {commit})" if commit else "")


def checkout_commit(root: Path) -> str:
    """The short commit checked out at ``root`` when it is envsnap's own source tree (a clone
    installed editable, or run in place); empty for an installed wheel."""
    if not (root / "pyproject.toml").is_file():
        return ""
    git_dir = _git_dir(root / ".git")
    if git_dir is None:
        return ""
    head = _read(git_dir / "HEAD")
    if not head.startswith("ref: "):
        return head[:_SHORT] if _is_sha(head) else ""
    ref = head.removeprefix("ref: ")
    common = git_dir
    pointer = _read(git_dir / "commondir")  # a linked worktree keeps its refs in the main one
    if pointer:
        common = (git_dir / pointer).resolve()
    sha = _read(common / ref)
    if not sha:
        for line in _read(common / "packed-refs").splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[1] == ref:
                sha = parts[0]
                break
    return sha[:_SHORT] if _is_sha(sha) else ""


def _git_dir(dot_git: Path) -> Path | None:
    if dot_git.is_dir():
        return dot_git
    text = _read(dot_git)  # a worktree or submodule: "gitdir: <path>"
    if text.startswith("gitdir: "):
        return (dot_git.parent / text.removeprefix("gitdir: ")).resolve()
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)
