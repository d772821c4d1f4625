"""Run by the base image's Python during ``docker build``: create the experiment's venv and link
into it the packages the base image already provides at the recorded version (an NGC torch
build, say), so they are not installed again and the venv holds exactly the recorded set.

Usage: python3 -I envsnap_venv.py VENV PROVIDED_FILE   (one normalised project name a line)

Only the standard library: it runs before anything is installed. The venv does not see the
base's other packages (no --system-site-packages), so a capture inside finds no extras.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import venv
from pathlib import Path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_entries(dist: importlib.metadata.Distribution) -> set[str]:
    """The names a distribution puts directly in its site directory: packages, modules and its
    own metadata directory (from RECORD, else top_level.txt)."""
    names: set[str] = set()
    for entry in dist.files or ():
        first = entry.parts[0] if entry.parts else ""
        # __pycache__ at the top holds the caches of every top-level module: not this one's.
        if first and first not in (".", "..", "__pycache__"):
            names.add(first)
    metadata_dir = getattr(dist, "_path", None)  # the dist-info/egg-info directory itself
    if isinstance(metadata_dir, Path):
        names.add(metadata_dir.name)
    if not dist.files:
        names.update(line.strip() for line in (dist.read_text("top_level.txt") or "").splitlines())
    return {n for n in names if n and "/" not in n}


def site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def remove_distribution(site: Path, name: str) -> None:
    """Remove what ensurepip put in the venv for ``name`` (pip, setuptools) before the base's
    copy is linked in its place."""
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if normalize(dist.metadata["Name"] or "") != name:
            continue
        for entry in top_level_entries(dist):  # read before anything is deleted
            target = site / entry
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)


def main(argv: list[str]) -> int:
    prefix, provided_file = Path(argv[1]), Path(argv[2])
    wanted = {line.strip() for line in provided_file.read_text().splitlines() if line.strip()}
    found: dict[str, importlib.metadata.Distribution] = {}
    for each in importlib.metadata.distributions():  # in sys.path order: the first one wins
        found.setdefault(normalize(each.metadata["Name"] or ""), each)
    venv.EnvBuilder(with_pip=True, symlinks=os.name != "nt").create(prefix)
    site = site_packages(prefix)
    for name in sorted(wanted):
        dist = found.get(name)
        if dist is None:
            print(f"envsnap: the base image no longer provides {name}", file=sys.stderr)
            return 1
        remove_distribution(site, name)
        origin = Path(str(dist.locate_file("")))
        for entry in sorted(top_level_entries(dist)):
            source, target = origin / entry, site / entry
            if not source.exists():
                continue
            if target.exists() or target.is_symlink():
                if target.resolve() == source.resolve():
                    continue  # a namespace directory another provided package linked already
                print(f"envsnap: {target} exists; cannot link {name}'s {entry}", file=sys.stderr)
                return 1
            target.symlink_to(source)
        print(f"envsnap: {name} {dist.version} from the base image ({origin})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
