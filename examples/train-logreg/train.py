"""Trains a logistic regression by full-batch gradient descent on the shipped CSV data.

Deterministic by construction: float64 throughout, a seeded initialisation, and no BLAS calls
(products are element-wise multiplies plus numpy's pairwise sums), so the outputs are
bit-identical from run to run whatever the thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEED_ENV_VAR = "ENVSNAP_SEED"
DEFAULTS = {
    "lr": 0.1,
    "epochs": 100,
    "l2": 0.0,
    "seed": 0,
    "data": "data/train.csv",
    "valid": "data/valid.csv",
    "out": "outputs",
    "metrics": "metrics.json",
}


class ConfigError(Exception):
    """A bad --config file or option value; printed as one line, exit code 2."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    lr: float
    epochs: int
    l2: float
    seed: int
    data: Path
    valid: Path
    out: Path
    metrics: Path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="JSON file with any of the options below")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {DEFAULTS['lr']})")
    parser.add_argument("--epochs", type=int, help=f"steps (default {DEFAULTS['epochs']})")
    parser.add_argument("--l2", type=float, help=f"L2 penalty (default {DEFAULTS['l2']})")
    parser.add_argument(
        "--seed", type=int, help=f"initialisation seed (default ${SEED_ENV_VAR}, else 0)"
    )
    parser.add_argument("--data", type=Path, help="training CSV (last column is the label)")
    parser.add_argument("--valid", type=Path, help="validation CSV")
    parser.add_argument("--out", type=Path, help="directory for model.npy")
    parser.add_argument("--metrics", type=Path, help="where to write metrics.json")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace, environ: dict[str, str]) -> TrainConfig:
    """Built-in defaults < config file < $ENVSNAP_SEED (seed only) < command-line options."""
    values: dict[str, Any] = dict(DEFAULTS)
    if args.config is not None:
        try:
            from_file = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
        if not isinstance(from_file, dict):
            raise ConfigError(f"config {args.config} must hold a JSON object")
        unknown = sorted(set(from_file) - set(DEFAULTS))
        if unknown:
            raise ConfigError(
                f"config {args.config} has unknown keys {unknown}; known: {sorted(DEFAULTS)}"
            )
        values.update(from_file)
    if SEED_ENV_VAR in environ:
        try:
            values["seed"] = int(environ[SEED_ENV_VAR])
        except ValueError as exc:
            raise ConfigError(
                f"${SEED_ENV_VAR}={environ[SEED_ENV_VAR]!r} is not an integer"
            ) from exc
    for key in DEFAULTS:
        given = getattr(args, key)
        if given is not None:
            values[key] = given
    try:
        config = TrainConfig(
            lr=float(values["lr"]),
            epochs=int(values["epochs"]),
            l2=float(values["l2"]),
            seed=int(values["seed"]),
            data=Path(str(values["data"])),
            valid=Path(str(values["valid"])),
            out=Path(str(values["out"])),
            metrics=Path(str(values["metrics"])),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad option value: {exc}") from exc
    if config.epochs < 0 or config.lr <= 0 or config.l2 < 0:
        raise ConfigError("need epochs >= 0, lr > 0 and l2 >= 0")
    return config


def load_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read data {path}: {exc}") from exc
    return table[:, :-1], table[:, -1]


def logits(features: np.ndarray, params: np.ndarray) -> np.ndarray:
    # params = [weights..., bias]; an explicit sum rather than `@` keeps BLAS (and its
    # thread-count dependent summation order) out of the computation.
    return (features * params[:-1]).sum(axis=1) + params[-1]


def log_loss(features: np.ndarray, labels: np.ndarray, params: np.ndarray) -> float:
    z = logits(features, params)
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def train(features: np.ndarray, labels: np.ndarray, config: TrainConfig) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    params = rng.normal(0.0, 0.01, size=features.shape[1] + 1)
    rows = features.shape[0]
    for _ in range(config.epochs):
        z = logits(features, params)
        residual = 1.0 / (1.0 + np.exp(-z)) - labels
        grad = np.empty_like(params)
        grad[:-1] = (features * residual[:, None]).sum(axis=0) / rows + config.l2 * params[:-1]
        grad[-1] = residual.sum() / rows
        params = params - config.lr * grad
    return params


def run(config: TrainConfig) -> dict[str, float]:
    train_x, train_y = load_csv(config.data)
    valid_x, valid_y = load_csv(config.valid)
    if train_x.shape[1] != valid_x.shape[1]:
        raise ConfigError(
            f"{config.data} has {train_x.shape[1]} features but {config.valid} has "
            f"{valid_x.shape[1]}"
        )
    params = train(train_x, train_y, config)
    predictions = (logits(valid_x, params) > 0.0).astype(np.float64)
    metrics = {
        "train_loss": log_loss(train_x, train_y, params),
        "valid_accuracy": float(np.mean(predictions == valid_y)),
        "valid_loss": log_loss(valid_x, valid_y, params),
    }
    config.out.mkdir(parents=True, exist_ok=True)
    np.save(config.out / "model.npy", params)
    if config.metrics.parent != Path():
        config.metrics.parent.mkdir(parents=True, exist_ok=True)
    config.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", "utf-8")
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = resolve_config(args, dict(os.environ))
        metrics = run(config)
    except ConfigError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    summary = " ".join(f"{key}={value:.6f}" for key, value in metrics.items())
    print(f"seed={config.seed} lr={config.lr} epochs={config.epochs} {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
