"""Geographic core throughput: cell assignment and haversine distances.

Each vectorised NumPy path is timed against a per-point pure-Python baseline
in the same run. Slow baselines are timed on a subsample and extrapolated
linearly (the table says so).

    python benchmarks/bench_geo.py [--points 1000000] [--pairs 10000000]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _common import print_table

from geospot.geo.cells import build_cells
from geospot.geo.distance import EARTH_RADIUS_KM, haversine_km


def _uniform_sphere(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)


def _best_of(fn, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _math_haversine_loop(lat1, lon1, lat2, lon2) -> list[float]:
    out = []
    for a, b, c, d in zip(lat1, lon1, lat2, lon2):
        p1, p2 = math.radians(a), math.radians(c)
        h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(d - b) / 2) ** 2
        out.append(2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h))))
    return out


def _s2sphere_loop(table, lat, lon) -> list[int]:
    """Per-point S2 assignment with the pure-Python reference library and a dict of cells."""
    import s2sphere

    ids = table.params["cell_id"].tolist()
    index = {c: k for k, c in enumerate(ids)}
    levels = sorted({s2sphere.CellId(c).level() for c in ids})
    out = []
    for a, b in zip(lat.tolist(), lon.tolist()):
        leaf = s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b))
        out.append(next((index[p] for p in (leaf.parent(lv).id() for lv in levels) if p in index), -1))
    return out


def _grid_loop(table, lat, lon) -> list[int]:
    """Per-point square-grid assignment in pure Python (same layout, dict lookup)."""
    n_rows = table.params["n_rows"]
    ncols = table.params["row_ncols"].tolist()
    offsets = [0]
    for c in ncols[:-1]:
        offsets.append(offsets[-1] + c)
    index = {k: i for i, k in enumerate(table.params["cell_key"].tolist())}
    out = []
    for a, b in zip(lat.tolist(), lon.tolist()):
        row = min(n_rows - 1, int(math.floor((a + 90.0) * n_rows / 180.0)))
        cols = ncols[row]
        col = min(cols - 1, int(math.floor((b + 180.0) * cols / 360.0)))
        out.append(index.get(offsets[row] + col, -1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000, help="points to assign")
    ap.add_argument("--train", type=int, default=100_000, help="points the cell tables are built from")
    ap.add_argument("--pairs", type=int, default=10_000_000, help="haversine pairs")
    ap.add_argument("--loop-points", type=int, default=100_000, help="subsample for Python-loop baselines")
    ap.add_argument("--s2sphere-points", type=int, default=5_000, help="subsample for the s2sphere baseline")
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    train_lat, train_lon = _uniform_sphere(args.train, rng)
    t = time.perf_counter()
    s2_table = build_cells(train_lat, train_lon, "s2", min_per_cell=10, max_per_cell=200)
    s2_build = time.perf_counter() - t
    t = time.perf_counter()
    sq_table = build_cells(train_lat, train_lon, "grid", shape="square", cell_km=100)
    sq_build = time.perf_counter() - t
    hex_table = build_cells(train_lat, train_lon, "grid", shape="hex", cell_km=100,
                            region=(35.0, -10.0, 60.0, 30.0))
    lat, lon = _uniform_sphere(args.points, rng)

    rows = []

    def row(task, method, n, seconds, baseline_s=None, note=""):
        speed = f"{baseline_s / seconds:,.1f}x" if baseline_s else ("1x (baseline)" if "baseline" in note else "-")
        rows.append([task, method, f"{n:,}", f"{seconds:.3f}", f"{n / seconds:,.0f}", speed, note])

    n_sub = min(args.s2sphere_points, args.points)
    base = _best_of(lambda: _s2sphere_loop(s2_table, lat[:n_sub], lon[:n_sub]), 1) * args.points / n_sub
    check = np.array(_s2sphere_loop(s2_table, lat[:2000], lon[:2000]))
    assert (check == s2_table.assign(lat[:2000], lon[:2000])).all(), "S2 assignment disagrees with s2sphere"
    fast = _best_of(lambda: s2_table.assign(lat, lon))
    task = f"S2 assign ({len(s2_table):,} cells)"
    row(task, "s2sphere per-point loop", args.points, base, note=f"baseline; timed on {n_sub:,}, extrapolated")
    row(task, "geospot CellTable.assign", args.points, fast, base)

    n_sub = min(args.loop_points, args.points)
    base = _best_of(lambda: _grid_loop(sq_table, lat[:n_sub], lon[:n_sub]), 1) * args.points / n_sub
    check = np.array(_grid_loop(sq_table, lat[:2000], lon[:2000]))
    assert (check == sq_table.assign(lat[:2000], lon[:2000])).all(), "grid assignment disagrees"
    fast = _best_of(lambda: sq_table.assign(lat, lon))
    task = f"square grid assign ({len(sq_table):,} cells)"
    row(task, "Python per-point loop", args.points, base, note=f"baseline; timed on {n_sub:,}, extrapolated")
    row(task, "geospot CellTable.assign", args.points, fast, base)
    row(f"hex grid assign ({len(hex_table):,} cells)", "geospot CellTable.assign", args.points,
        _best_of(lambda: hex_table.assign(lat, lon)), note="no loop to compare")
    row(f"nearest-centroid fallback ({len(s2_table):,} cells)", "geospot assign(nearest=True)", args.points,
        _best_of(lambda: s2_table.assign(lat, lon, nearest=True), 1), note="KD-tree for points in dropped cells")

    lat1, lon1 = _uniform_sphere(args.pairs, rng)
    lat2, lon2 = _uniform_sphere(args.pairs, rng)
    n_sub = min(args.loop_points, args.pairs)
    sub = [v[:n_sub].tolist() for v in (lat1, lon1, lat2, lon2)]
    base = _best_of(lambda: _math_haversine_loop(*sub), 1) * args.pairs / n_sub
    assert np.allclose(_math_haversine_loop(*sub)[:1000], haversine_km(lat1[:1000], lon1[:1000], lat2[:1000],
                                                                       lon2[:1000]))
    fast = _best_of(lambda: haversine_km(lat1, lon1, lat2, lon2))
    row("haversine", "Python math loop", args.pairs, base, note=f"baseline; timed on {n_sub:,}, extrapolated")
    row("haversine", "geospot haversine_km (NumPy)", args.pairs, fast, base)

    print_table(["task", "method", "n", "seconds", "per second", "speedup", "note"], rows,
                title=f"geospot geo benchmark (tables built from {args.train:,} uniform points: "
                      f"S2 {s2_build:.2f} s, square grid {sq_build:.2f} s; best of 3 for vectorised paths)")


if __name__ == "__main__":
    main()
