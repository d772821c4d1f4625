"""Regenerates data/train.csv and data/valid.csv, the small data set this example ships.

Run once; the CSVs are committed so the example does not depend on this script's numpy version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_SEED = 20240607
TRUE_WEIGHTS = np.array([1.5, -2.0, 0.75, 0.0])
TRUE_BIAS = -0.25
HEADER = "x1,x2,x3,x4,label"


def make_split(rng: np.random.Generator, rows: int) -> np.ndarray:
    features = rng.normal(0.0, 1.0, size=(rows, TRUE_WEIGHTS.size))
    logits = (features * TRUE_WEIGHTS).sum(axis=1) + TRUE_BIAS
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)
    return np.column_stack([features, labels])


def write_csv(path: Path, table: np.ndarray) -> None:
    lines = [HEADER]
    for row in table:
        lines.append(",".join(f"{value:.6f}" for value in row[:-1]) + f",{int(row[-1])}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    data_dir = Path(__file__).resolve().parent / "data"
    data_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(DATA_SEED)
    write_csv(data_dir / "train.csv", make_split(rng, 300))
    write_csv(data_dir / "valid.csv", make_split(rng, 100))


if __name__ == "__main__":
    main()
