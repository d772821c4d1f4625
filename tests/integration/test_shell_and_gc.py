"""The installed command line as a person meets it: tab completion in a real bash, the zsh and
fish scripts, envsnap gc on a store of real captures, and --version."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import WHEEL_PYTHON_VARIABLE, Envsnap

pytestmark = pytest.mark.integration

# What a user puts in ~/.bashrc, then what bash does on <TAB> after `envsnap <words>`.
BASH_COMPLETE = """\
eval "$(_ENVSNAP_COMPLETE=bash_source envsnap)"
complete -p envsnap
COMP_WORDS=(envsnap {words})
COMP_CWORD={cword}
_envsnap_completion envsnap
printf 'reply:%s\\n' "${{COMPREPLY[@]}}"
"""


def _shell_env(envsnap: Envsnap) -> dict[str, str]:
    """The wheel's envsnap first on PATH, as after ``pip install envsnap``."""
    bin_dir = str(Path(os.environ[WHEEL_PYTHON_VARIABLE]).parent)
    return {**envsnap.env, "PATH": f"{bin_dir}{os.pathsep}{envsnap.env.get('PATH', '')}"}


def _bash_complete(envsnap: Envsnap, project: Path, *words: str) -> tuple[str, list[str]]:
    """The ``complete -p`` line and the candidates bash offers for the last of ``words``."""
    quoted = " ".join(f"'{w}'" for w in words)
    script = BASH_COMPLETE.format(words=quoted, cword=len(words))
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        cwd=project,
        env=_shell_env(envsnap),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    replies = [line.removeprefix("reply:") for line in lines if line.startswith("reply:")]
    return lines[0], [r for r in replies if r]


class TestCompletion:
    def test_bash_completes_run_ids_for_run_arguments(
        self, envsnap: Envsnap, project: Path
    ) -> None:
        """In a real bash with envsnap's completion script, <TAB> after show offers latest and
        the store's run ids, newest first; a typed prefix narrows them; diff completes both."""
        first = envsnap("capture", "--name", "first").stdout.strip()
        second = envsnap("capture", "--name", "second").stdout.strip()

        registered, offered = _bash_complete(envsnap, project, "show", "")
        assert registered == "complete -o nosort -F _envsnap_completion envsnap"
        assert offered == ["latest", second, first]
        # The shortest prefix of the first run id that the second does not share (two captures
        # may fall in one second, and then share more than the time).
        prefix = next(
            first[:n] for n in range(16, len(first) + 1) if not second.startswith(first[:n])
        )
        assert _bash_complete(envsnap, project, "diff", first, prefix)[1] == [first]
        assert _bash_complete(envsnap, project, "export", "lat")[1] == ["latest"]

    @pytest.mark.parametrize(("shell", "marker"), [("zsh", "compdef"), ("fish", "complete")])
    def test_zsh_and_fish_scripts_are_generated(
        self, envsnap: Envsnap, project: Path, shell: str, marker: str
    ) -> None:
        """click writes the zsh and fish completion scripts for the envsnap command."""
        done = subprocess.run(
            ["envsnap"],
            cwd=project,
            env={**_shell_env(envsnap), "_ENVSNAP_COMPLETE": f"{shell}_source"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert marker in done.stdout and "_ENVSNAP_COMPLETE" in done.stdout


class TestGc:
    def test_gc_removes_chosen_runs_and_keeps_the_original_of_a_rerun(
        self, envsnap: Envsnap, project: Path
    ) -> None:
        """gc --name: a dry run lists and removes nothing; the real run removes the chosen
        runs, keeps the one a rerun points to until --force, and leaves nothing in tmp/."""
        original = envsnap("capture", "--name", "sweep-1").stdout.strip()
        other = envsnap("capture", "--name", "sweep-2").stdout.strip()
        keep = envsnap("capture", "--name", "baseline").stdout.strip()
        script = (
            f"import envsnap; print(envsnap.capture(name='again', rerun_of='{original}').run_id)"
        )
        rerun = subprocess.run(
            [os.environ[WHEEL_PYTHON_VARIABLE], "-c", script],
            cwd=project,
            env=envsnap.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        runs = project / ".envsnap" / "runs"

        dry = envsnap("gc", "--name", "sweep-*", "--keep-images", "--dry-run").stdout
        assert f"would remove run {other}" in dry
        assert f"kept run {original}: rerun {rerun} points to it" in dry
        assert {p.name for p in runs.iterdir()} == {original, other, keep, rerun}

        envsnap("gc", "--name", "sweep-*", "--keep-images")
        assert {p.name for p in runs.iterdir()} == {original, keep, rerun}
        envsnap("gc", "--name", "sweep-*", "--keep-images", "--force")
        assert {p.name for p in runs.iterdir()} == {keep, rerun}
        assert list((project / ".envsnap" / "tmp").iterdir()) == []
        listed = envsnap("list").stdout.splitlines()
        assert [line.split()[0] for line in listed] == [keep, rerun]

    def test_a_bad_age_is_one_sentence(self, envsnap: Envsnap) -> None:
        """gc --older-than with a word that is no duration: exit 2 and one sentence."""
        done = envsnap("gc", "--older-than", "soon", check=2)
        assert done.stderr == (
            "envsnap: error: --older-than 'soon' is not a duration; "
            "write it as 90s, 30m, 12h, 7d or 2w.\n"
        )


def test_version_of_the_installed_wheel(envsnap: Envsnap) -> None:
    """An installed wheel says its version, and no commit (it is not a checkout)."""
    from envsnap import __version__

    assert envsnap("--version").stdout == f"envsnap {__version__}\n"
