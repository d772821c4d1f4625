"""Seeding: ``seed_everything`` seeds random, numpy, torch and CUDA when present, and remembers
what it set so the next capture in this process records it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class SeedRecord:
    """What ``seed_everything`` seeded: library name -> seed, and the settings it changed."""

    seed: int
    libraries: dict[str, int] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


_last: list[SeedRecord] = []


def seed_everything(seed: int | None = None, *, deterministic: bool = False) -> SeedRecord:
    """Seed every random generator envsnap knows of that is installed.

    ``seed`` defaults to ``ENVSNAP_SEED`` (exported by ``envsnap capture --seed N -- CMD``).
    With ``deterministic=True``, torch is also asked for deterministic algorithms.
    """
    if seed is None:
        env_seed = os.environ.get("ENVSNAP_SEED", "")
        if not env_seed.lstrip("-").isdigit():
            raise ValueError("seed_everything() needs a seed, or ENVSNAP_SEED set to an integer")
        seed = int(env_seed)
    import random

    libraries: dict[str, int] = {"global": seed}
    settings: dict[str, str] = {}
    random.seed(seed)
    libraries["python"] = seed
    if _installed("numpy"):
        import numpy

        numpy.random.seed(seed % 2**32)
        libraries["numpy"] = seed % 2**32
    if _installed("torch"):
        import torch

        torch.manual_seed(seed)
        libraries["torch"] = seed
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
            libraries["cuda"] = seed
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            settings["torch.use_deterministic_algorithms"] = "true"
            settings["torch.backends.cudnn.benchmark"] = "false"
    if "tensorflow" in sys.modules:
        # Only when already imported: importing TensorFlow to seed it would take seconds.
        sys.modules["tensorflow"].random.set_seed(seed)
        libraries["tensorflow"] = seed
    record = SeedRecord(seed=seed, libraries=libraries, settings=settings)
    _last[:] = [record]
    return record


def last_seed_record() -> SeedRecord | None:
    """The record of the last ``seed_everything`` call in this process, if any."""
    return _last[0] if _last else None


def _installed(module: str) -> bool:
    import importlib.util

    return module in sys.modules or importlib.util.find_spec(module) is not None
