"""Training-time benchmark of `train_head` on synthetic embeddings.

    python benchmarks/bench_train.py [--sizes 2000 8000 32000] [--dim 1280] [--cells 500] [--epochs 2] [--threads N]

Fixed epochs, no validation or early stopping, so time measures the training
loop alone. Two losses on the same data in the same run:

- baseline: plain softmax regression with cross-entropy on hard cell labels;
- geospot: haversine label smoothing (PIGEON), whose targets are built per
  batch from the [C] centroid table.

Seconds per epoch and microseconds per sample should stay flat in N (linear
scaling); the last column is the smoothing overhead over the baseline.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from _common import print_table

from geospot.geo.cells import s2 as s2cells
from geospot.geo.cells import s2_table_from_tokens
from geospot.train.fit import TrainConfig, train_head


def synthetic_cells(n_cells: int, seed: int = 0, level: int = 8):
    """`n_cells` distinct S2 cells (~40 km) at random places; centroid = the sampled place."""
    rng = np.random.default_rng(seed)
    tokens: dict[str, tuple[float, float]] = {}
    while len(tokens) < n_cells:
        lat = float(np.degrees(np.arcsin(rng.uniform(-0.9, 0.95))))
        lon = float(rng.uniform(-180, 180))
        cell = s2cells.cell_parent(s2cells.latlon_to_leaf_id([lat], [lon]), level)[0]
        tokens.setdefault(s2cells.to_token(int(cell)), (lat, lon))
    lat, lon = np.array(list(tokens.values())).T
    return s2_table_from_tokens(list(tokens), lat, lon, np.ones(n_cells))


def synthetic_data(cells, n: int, dim: int, seed: int = 0):
    """Points within a few km of a random cell centroid; embeddings = cell prototype + noise."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(1).normal(size=(len(cells), dim)).astype(np.float32)
    y = rng.integers(0, len(cells), n)
    lat = np.clip(cells.centroid_lat[y] + rng.normal(0, 0.02, n), -90, 90)
    lon = (cells.centroid_lon[y] + rng.normal(0, 0.02, n) + 180) % 360 - 180
    emb = protos[y] + 2.0 * rng.standard_normal((n, dim), dtype=np.float32)
    return emb, lat, lon


def time_training(emb, lat, lon, cells, loss: str, epochs: int) -> tuple[float, float]:
    cfg = TrainConfig(loss=loss, epochs=epochs, val_fraction=0.0, patience=0)
    t0 = time.perf_counter()
    _, hist = train_head(emb, lat, lon, cells, cfg, progress=False)
    return (time.perf_counter() - t0) / epochs, hist["train_loss"][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cells = synthetic_cells(args.cells)
    # Warm-up: first-call costs (imports, allocator) must not land on the smallest N.
    emb, lat, lon = synthetic_data(cells, 512, args.dim)
    time_training(emb, lat, lon, cells, "haversine", 1)
    rows = []
    for n in args.sizes:
        emb, lat, lon = synthetic_data(cells, n, args.dim, seed=n)
        ce_s, ce_loss = time_training(emb, lat, lon, cells, "ce", args.epochs)
        hv_s, hv_loss = time_training(emb, lat, lon, cells, "haversine", args.epochs)
        rows.append([f"{n:,}", f"{ce_s:.3f}", f"{1e6 * ce_s / n:.1f}", f"{hv_s:.3f}", f"{1e6 * hv_s / n:.1f}",
                     f"{100 * (hv_s / ce_s - 1):+.0f}%", f"{ce_loss:.3f} / {hv_loss:.3f}"])
        print(f"N={n}: done", file=sys.stderr, flush=True)
    print_table(
        ["N", "CE s/epoch", "CE µs/sample", "haversine s/epoch", "haversine µs/sample", "smoothing overhead",
         "final loss CE / hav"],
        rows,
        title=f"train_head, D={args.dim}, C={len(cells)}, batch {TrainConfig().batch_size}, {args.epochs} epochs, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads (CPU)",
    )


if __name__ == "__main__":
    main()
