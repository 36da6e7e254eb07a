"""Leak-proof train/test splits and k-fold cross-validation.

Rows that share a group (the views of one location, or the panoramas of one
spatial block) always land on the same side of a split, so a model is never
evaluated on a place it has already seen from another angle.

- `group_kfold` / `group_split`: by any group key (e.g. `location_id`).
- `spatial_block_kfold` / `spatial_block_split`: groups are spatial blocks
  (S2 cells at a chosen level, or a `cell_km` grid), so panoramas a few metres
  apart never sit on both sides; an optional `buffer_km` also drops training
  rows that lie within that distance of any test row across a block edge.
- `write_split`: add the assignment to a manifest as a `split` or `fold` column.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from geospot.geo.distance import EARTH_RADIUS_KM, latlon_to_xyz, xyz_to_latlon
# Mean edge of an S2 cell at level 0 is sqrt(4*pi*R^2 / 6) ~ 9220 km; each level halves it.
_S2_LEVEL0_EDGE_KM = float(np.sqrt(4.0 * np.pi * EARTH_RADIUS_KM**2 / 6.0))

SplitIndices = tuple[np.ndarray, np.ndarray]


def _factorize(groups: Sequence | np.ndarray | pd.Series) -> tuple[np.ndarray, int]:
    """Map arbitrary hashable group keys to codes 0..G-1 (NaN is an error, not a group)."""
    series = pd.Series(np.asarray(groups, dtype=object) if not isinstance(groups, pd.Series) else groups.to_numpy(dtype=object))
    missing = series.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)[:10].tolist()
        raise ValueError(f"{int(missing.sum())} rows have no group (missing value), e.g. rows {rows}")
    codes, uniques = pd.factorize(series, sort=False)
    return codes.astype(np.int64), len(uniques)


def _shuffled_groups_by_size(codes: np.ndarray, n_groups: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Group order for greedy packing: a seeded shuffle, then largest first (stable, so
    equal-sized groups keep their random order)."""
    sizes = np.bincount(codes, minlength=n_groups)
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    return order, sizes


def group_fold_assignment(groups: Sequence | np.ndarray, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..n_splits-1) of every row; all rows of a group share a fold.

    Groups are shuffled with `seed`, then packed largest first into the fold
    with the fewest rows so far (ties: the lowest fold number), which balances
    the folds by row count.
    """
    if int(n_splits) != n_splits or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    codes, n_groups = _factorize(groups)
    if n_groups < n_splits:
        raise ValueError(f"cannot make {n_splits} folds from only {n_groups} groups: every fold needs at least one group")
    order, sizes = _shuffled_groups_by_size(codes, n_groups, seed)
    fold_rows = np.zeros(n_splits, dtype=np.int64)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    for g in order:
        f = int(np.argmin(fold_rows))
        fold_of_group[g] = f
        fold_rows[f] += sizes[g]
    return fold_of_group[codes]


def folds_to_indices(fold: np.ndarray) -> list[SplitIndices]:
    """Turn a per-row fold number into `[(train_idx, test_idx), ...]`, one pair per fold."""
    fold = np.asarray(fold)
    out = []
    for f in np.unique(fold[fold >= 0]):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero((fold != f) & (fold >= 0))
        out.append((train, test))
    return out


def group_kfold(groups: Sequence | np.ndarray, n_splits: int = 5, seed: int = 0) -> list[SplitIndices]:
    """K-fold cross-validation where no group straddles folds.

    Returns `n_splits` pairs `(train_idx, test_idx)` of sorted int64 row indices;
    every row is in exactly one test fold. Raises `ValueError` when there are
    fewer groups than folds.
    """
    return folds_to_indices(group_fold_assignment(groups, n_splits, seed))


def group_split(groups: Sequence | np.ndarray, test_fraction: float, seed: int = 0) -> SplitIndices:
    """One train/test split with about `test_fraction` of the rows in test, by whole groups.

    Groups are visited in a seeded random order; a group joins the test side
    while that brings the test row count closer to the target. Both sides get
    at least one group. Returns sorted int64 `(train_idx, test_idx)`.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}")
    codes, n_groups = _factorize(groups)
    if n_groups < 2:
        raise ValueError(f"cannot split {n_groups} group(s) into train and test: need at least 2 groups")
    sizes = np.bincount(codes, minlength=n_groups)
    target = float(test_fraction) * len(codes)
    order = np.random.default_rng(seed).permutation(n_groups)
    is_test = np.zeros(n_groups, dtype=bool)
    test_rows = 0
    for g in order:
        if abs(test_rows + sizes[g] - target) < abs(test_rows - target):
            is_test[g] = True
            test_rows += sizes[g]
    # Tiny fractions or one huge group can leave a side empty; keep both non-empty.
    if not is_test.any():
        is_test[order[np.argmin(sizes[order])]] = True
    if is_test.all():
        is_test[order[np.argmax(sizes[order])]] = False
    row_test = is_test[codes]
    return np.flatnonzero(~row_test), np.flatnonzero(row_test)


# ---------------------------------------------------------------- spatial blocks


def s2_level_edge_km(level: int) -> float:
    """Approximate mean edge length of an S2 cell at `level`, in km."""
    return _S2_LEVEL0_EDGE_KM / 2.0**level


def _s2_block_ids(lat: np.ndarray, lon: np.ndarray, level: int) -> np.ndarray | None:
    """S2 cell id (uint64) at `level` of every point, or None when the S2 helpers are unavailable."""
    try:
        from geospot.geo.cells.s2 import cell_parent, latlon_to_leaf_id
    except ImportError:
        return None
    return np.asarray(cell_parent(latlon_to_leaf_id(lat, lon), level))


def grid_block_ids(lat: np.ndarray, lon: np.ndarray, cell_km: float) -> np.ndarray:
    """Near-square blocks of about `cell_km` on a side (geospot's global square grid:
    latitude rows of `cell_km`, each cut into columns about `cell_km` wide, so blocks
    do not shrink towards the poles). Returns int64 block keys."""
    from geospot.geo.cells.grid import square_keys, square_layout

    if not cell_km > 0:
        raise ValueError(f"cell_km must be positive, got {cell_km!r}")
    n_rows, row_ncols = square_layout(float(cell_km))
    return square_keys({"n_rows": n_rows, "row_ncols": row_ncols}, np.asarray(lat, np.float64), np.asarray(lon, np.float64))


def spatial_block_ids(lat, lon, level: int | None = None, cell_km: float | None = None) -> np.ndarray:
    """Block of every point: the S2 cell at `level` (when geospot's S2 helpers are
    installed), else a `cell_km` grid (default: the S2 level's mean edge length)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon have different shapes {lat.shape} and {lon.shape}")
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    if bad.any():
        rows = np.flatnonzero(bad)[:10].tolist()
        raise ValueError(f"{int(bad.sum())} rows have invalid coordinates, e.g. rows {rows}")
    if level is None and cell_km is None:
        raise ValueError("give an S2 level or a block size cell_km")
    if level is not None:
        if int(level) != level or not 0 <= level <= 30:
            raise ValueError(f"S2 level must be an integer in 0..30, got {level!r}")
        if cell_km is None:
            ids = _s2_block_ids(lat, lon, int(level))
            if ids is not None:
                return ids
            cell_km = s2_level_edge_km(int(level))
    return grid_block_ids(lat, lon, float(cell_km))


def _blocks_for(lat, lon, level, cell_km, groups) -> np.ndarray:
    """Block per row; with `groups`, every row of a group takes the block of the
    group's spherical mean position, so a location is never cut by a block edge."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if groups is None:
        return spatial_block_ids(lat, lon, level, cell_km)
    codes, n = _factorize(groups)
    if len(codes) != len(lat):
        raise ValueError(f"groups has {len(codes)} rows but lat/lon have {len(lat)}")
    xyz = latlon_to_xyz(lat, lon)
    sums = np.zeros((n, 3))
    np.add.at(sums, codes, xyz)
    # A group whose views cancel out (antipodes) has no mean: use its first row.
    first = xyz[np.unique(codes, return_index=True)[1]]
    degenerate = np.linalg.norm(sums, axis=1) < 1e-12
    sums[degenerate] = first[degenerate]
    g_lat, g_lon = xyz_to_latlon(sums)
    return spatial_block_ids(g_lat, g_lon, level, cell_km)[codes]


def _drop_buffer(train: np.ndarray, test: np.ndarray, lat, lon, buffer_km: float) -> np.ndarray:
    """Training rows further than `buffer_km` (great-circle) from every test row."""
    if buffer_km <= 0 or len(test) == 0 or len(train) == 0:
        return train
    from scipy.spatial import cKDTree

    xyz = latlon_to_xyz(lat, lon)
    # Great-circle distance d maps to chord 2 sin(d / 2R); the KD-tree works on chords.
    chord = 2.0 * np.sin(min(buffer_km / EARTH_RADIUS_KM, np.pi) / 2.0)
    dist, _ = cKDTree(xyz[test]).query(xyz[train], k=1, distance_upper_bound=chord * (1 + 1e-12))
    return train[~np.isfinite(dist)]


def spatial_block_split(
    lat, lon, test_fraction: float, level: int | None = None, seed: int = 0, *,
    cell_km: float | None = None, groups=None, buffer_km: float = 0.0,
) -> SplitIndices:
    """Train/test split by spatial blocks (S2 cells at `level`, or a `cell_km` grid).

    Nearby rows share a block and so a side. `groups` (e.g. location ids) keeps
    each group in one block; `buffer_km > 0` removes training rows within that
    distance of any test row (neighbours across a block edge), so the returned
    train and test may not cover every row.
    """
    blocks = _blocks_for(lat, lon, level, cell_km, groups)
    train, test = group_split(blocks, test_fraction, seed)
    return _drop_buffer(train, test, lat, lon, buffer_km), test


def spatial_block_kfold(
    lat, lon, n_splits: int = 5, level: int | None = None, seed: int = 0, *,
    cell_km: float | None = None, groups=None, buffer_km: float = 0.0,
) -> list[SplitIndices]:
    """K-fold cross-validation by spatial blocks; see `spatial_block_split`."""
    blocks = _blocks_for(lat, lon, level, cell_km, groups)
    return [(_drop_buffer(tr, te, lat, lon, buffer_km), te) for tr, te in group_kfold(blocks, n_splits, seed)]


# ---------------------------------------------------------------- writing


def split_labels(n_rows: int, train_idx, test_idx, excluded: str = "excluded") -> np.ndarray:
    """Per-row labels `"train"` / `"test"` (rows in neither, e.g. a buffer, get `excluded`)."""
    labels = np.full(n_rows, excluded, dtype=object)
    labels[np.asarray(train_idx, dtype=np.int64)] = "train"
    labels[np.asarray(test_idx, dtype=np.int64)] = "test"
    return labels


def fold_labels(n_rows: int, folds: list[SplitIndices]) -> np.ndarray:
    """Per-row fold number from `group_kfold` output (the fold where the row is tested)."""
    out = np.full(n_rows, -1, dtype=np.int64)
    for f, (_, test) in enumerate(folds):
        out[np.asarray(test, dtype=np.int64)] = f
    return out


def write_split(manifest, assignment, out: str | Path, column: str | None = None) -> Path:
    """Write `manifest` (a `Manifest`, a DataFrame or a manifest path) to `out` with
    the per-row `assignment` added: strings go to a `split` column, integers to a
    `fold` column (or the name given as `column`). Returns `out`."""
    out = Path(out)
    assignment = np.asarray(assignment)
    if isinstance(manifest, (str, Path)):
        from geospot.data.manifest import read_manifest

        manifest = read_manifest(manifest, check_files=False)
    df = manifest if isinstance(manifest, pd.DataFrame) else manifest.df
    if len(assignment) != len(df):
        raise ValueError(f"assignment has {len(assignment)} rows but the manifest has {len(df)}")
    if column is None:
        column = "fold" if np.issubdtype(assignment.dtype, np.integer) else "split"
    df = df.copy()
    df[column] = assignment
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(manifest, pd.DataFrame):
        if out.suffix.lower() == ".parquet":
            df.to_parquet(out, index=False)
        else:
            df.to_csv(out, index=False)
    else:
        # Write through the Manifest so its path conventions (relative paths) hold.
        clone = copy.copy(manifest)
        clone.df = df
        clone.write(out)
    return out
