"""Shell completion of RUN arguments (bash, zsh, fish through click's mechanism): the run ids of
the store the command would use, newest first, and ``latest``.

Completion must never print an error into the user's prompt, so a store that cannot be read
completes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

_NAMED_RUNS = 50


def run_candidates(incomplete: str, *, store: Path | str | None = None) -> list[tuple[str, str]]:
    """``(value, help)`` pairs that complete ``incomplete``: ``latest``, then run ids newest
    first, each with its name (when it has one) as help."""
    from envsnap import api
    from envsnap.errors import EnvsnapError

    found: list[tuple[str, str]] = []
    if "latest".startswith(incomplete):
        found.append(("latest", "the newest run"))
    try:
        runs = api.workspace(store).store
        # In creation order (runs of one second ordered by their manifests' times), oldest first.
        ids = [run_id for run_id in runs.latest_runs() if run_id.startswith(incomplete)]
        for rank, run_id in enumerate(reversed(ids)):
            # Names are read for the newest runs only, so a large store still completes at once.
            path = runs.runs_dir / run_id / "manifest.toml"
            found.append((run_id, _run_name(path) if rank < _NAMED_RUNS else ""))
    except (EnvsnapError, OSError):
        return found
    return found


def _run_name(manifest: Path) -> str:
    """The run's name as a hint beside its id (not verified against the digest)."""
    import tomllib

    try:
        with manifest.open("rb") as handle:
            name = tomllib.load(handle).get("name", "")
    except (OSError, ValueError):
        return ""
    return name if isinstance(name, str) else ""


def complete_run(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """click's ``shell_complete`` for every RUN argument; honours a ``--store`` already typed."""
    from click.shell_completion import CompletionItem

    store = ctx.params.get("store_dir")
    return [
        CompletionItem(value, help=text or None)
        for value, text in run_candidates(incomplete, store=store)
    ]


def target_candidates(incomplete: str) -> list[tuple[str, str]]:
    """``(value, help)`` pairs that complete an ``--on`` value: the built-in targets and every
    ``[tool.envsnap.targets.<name>]`` of the project here, each with its engine as help."""
    from envsnap import api
    from envsnap.errors import EnvsnapError

    found = {
        "docker": "the local docker engine",
        "kubernetes": "the current kubeconfig context's cluster",
        "slurm": "this host's Slurm cluster",
    }
    try:
        for name, target in api.workspace().config.targets.items():
            found[name] = f"{target.engine} target"
    except (EnvsnapError, OSError):
        pass
    return [(name, text) for name, text in sorted(found.items()) if name.startswith(incomplete)]


def complete_target(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """click's ``shell_complete`` for ``--on``."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(value, help=text) for value, text in target_candidates(incomplete)]
