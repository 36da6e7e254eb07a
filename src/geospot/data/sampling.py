"""Random sample points for building a dataset (where to look for photos).

Points are uniform ON THE SPHERE (not in degrees: `z = sin(lat)` and the
longitude are drawn uniformly, so high latitudes are not over-sampled), kept
inside a region and a cell by rejection, and optionally only on land
(`global_land_mask`, ~1 km resolution; most lakes count as land). The same seed
gives the same points; each cell draws from its own seeded stream, so adding
cells does not move the points of the others.
"""
from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pandas as pd

__all__ = ["SamplingWarning", "region_geometry", "sample_points", "uniform_in_bounds"]

# Grid cells are built from a dense uniform sample of the region: this many points per
# cell area on average, so that every cell with a noticeable share of land gets one.
_DENSE_PER_CELL = 30
_DENSE_MIN, _DENSE_MAX = 20_000, 3_000_000


class SamplingWarning(UserWarning):
    """A cell or region where fewer points than asked could be found."""


def region_geometry(region):
    """`None` (the whole globe) or a shapely geometry (lon, lat) for a region spec:
    a country name / ISO code, `"lat_min,lon_min,lat_max,lon_max"`, a GeoJSON file,
    or a shapely geometry (returned as is)."""
    if region is None or (isinstance(region, str) and region.strip().lower() in ("world", "globe", "earth", "")):
        return None
    if hasattr(region, "geom_type"):
        return region
    from geospot.geo.regions import resolve_region

    return resolve_region(region)


def _box_of(geometry) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) of a geometry, or the globe."""
    if geometry is None:
        return -90.0, 90.0, -180.0, 180.0
    lon_min, lat_min, lon_max, lat_max = geometry.bounds
    return lat_min, lat_max, lon_min, lon_max


def _box_area_km2(lat_min: float, lat_max: float, lon_min: float, lon_max: float) -> float:
    from geospot.geo.distance import EARTH_RADIUS_KM

    return EARTH_RADIUS_KM**2 * math.radians(lon_max - lon_min) * (math.sin(math.radians(lat_max)) - math.sin(math.radians(lat_min)))


def uniform_in_bounds(rng: np.random.Generator, n: int, lat_min: float, lat_max: float,
                      lon_min: float, lon_max: float) -> tuple[np.ndarray, np.ndarray]:
    """`n` points uniform on the sphere inside a latitude/longitude box (degrees).
    A box with `lon_min > lon_max` crosses the antimeridian."""
    z = rng.uniform(math.sin(math.radians(lat_min)), math.sin(math.radians(lat_max)), n)
    lat = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
    width = (lon_max - lon_min) % 360.0 or (360.0 if lon_max != lon_min else 0.0)
    lon = lon_min + rng.uniform(0.0, width, n)
    lon = np.where(lon > 180.0, lon - 360.0, lon)
    return lat, lon


def _accept(lat: np.ndarray, lon: np.ndarray, geometry, land_only: bool) -> np.ndarray:
    import shapely

    keep = np.ones(lat.shape, dtype=bool)
    if geometry is not None:
        keep &= shapely.intersects_xy(geometry, lon, lat)
    if land_only and keep.any():
        from geospot.geo import landmask as globe  # global_land_mask's answers, loaded in ms

        keep[keep] = globe.is_land(lat[keep], lon[keep])
    return keep


def _rejection_sample(rng, n: int, box, geometry, land_only: bool, max_draws: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to `n` accepted points from at most `max_draws` candidates: (lat, lon, draws)."""
    got_lat, got_lon, got, draws = [], [], 0, 0
    batch = max(64, 2 * n)
    while got < n and draws < max_draws:
        size = min(batch, max_draws - draws)
        lat, lon = uniform_in_bounds(rng, size, *box)
        draws += size
        keep = _accept(lat, lon, geometry, land_only)
        got_lat.append(lat[keep])
        got_lon.append(lon[keep])
        got += int(keep.sum())
        # Grow the batch from the observed acceptance rate (bounded), fewer rounds in sparse cells.
        rate = max(got / draws, 1.0 / max_draws)
        batch = int(min(max(64, 1.2 * (n - got) / rate), 1_000_000))
    lat = np.concatenate(got_lat)[:n] if got_lat else np.zeros(0)
    lon = np.concatenate(got_lon)[:n] if got_lon else np.zeros(0)
    return lat, lon, draws


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(stream),)))


def _build_grid_cells(geometry, region, land_only: bool, seed: int, cell_km: float, shape: str):
    """Grid cells covering the region: `build_cells` over a dense uniform sample of it."""
    from geospot.geo.cells import build_cells

    box = _box_of(geometry)
    area = _box_area_km2(box[0], box[1], box[2], box[3])
    n_dense = int(np.clip(_DENSE_PER_CELL * area / cell_km**2, _DENSE_MIN, _DENSE_MAX))
    lat, lon = uniform_in_bounds(_rng(seed, 1 << 30), n_dense, *box)
    keep = _accept(lat, lon, geometry, land_only)
    if not keep.any():
        raise ValueError(f"region {region!r}: no point of a {n_dense}-point uniform sample lies inside it"
                         f"{' on land' if land_only else ''}; is it empty or entirely at sea?")
    # The sample is already inside the region, so the grid needs no region of its own
    # (a hex grid then centres its projection on the region's land).
    return build_cells(lat[keep], lon[keep], scheme="grid", shape=shape, cell_km=cell_km, min_per_cell=1)


def _warn(message: str) -> None:
    warnings.warn(message, SamplingWarning, stacklevel=3)


def sample_points(
    region=None,
    n_per_cell: int | None = None,
    n: int | None = None,
    cells=None,
    land_only: bool = True,
    seed: int = 0,
    cell_km: float = 100.0,
    shape: str = "square",
    max_draws_per_point: int = 2000,
) -> pd.DataFrame:
    """Random points, uniform on the sphere, as a DataFrame `(cell, lat, lon)`.

    - `region`: country name/ISO code, `"lat_min,lon_min,lat_max,lon_max"`, a
      GeoJSON file, a shapely geometry, or None / `"world"` for the globe.
    - `n_per_cell`: that many points in every cell (`cells`: a `CellTable`, or
      None to build a `shape` grid of `cell_km` over the region's land); points
      fall inside both the cell and the region.
    - `n`: that many points over the whole region; `cell` is the id of the cell
      holding each point when `cells` is given, else the region spec.
    - `land_only`: reject points at sea (`global_land_mask`).

    A cell (or region) where `max_draws_per_point * n` random draws find too
    few points is given up with a `SamplingWarning` naming it; the points found
    so far are kept.
    """
    if (n_per_cell is None) == (n is None):
        raise ValueError("give exactly one of n_per_cell (points per cell) or n (points in the region)")
    count = n_per_cell if n is None else n
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise ValueError(f"the number of points must be a positive integer, got {count!r}")
    count = int(count)
    geometry = region_geometry(region)
    if geometry is not None:
        import shapely

        if geometry.is_empty:
            raise ValueError(f"region {region!r} is empty")
        shapely.prepare(geometry)
    label = "world" if geometry is None else (region if isinstance(region, str) else "region")

    if n is not None:
        box = _box_of(geometry)
        lat, lon, draws = _rejection_sample(_rng(seed, 0), count, box, geometry, land_only, max_draws_per_point * count)
        if len(lat) < count:
            _warn(f"region {label!r}: gave up after {draws:,} random draws with {len(lat)} of {count} points "
                  f"inside{' on land' if land_only else ''}")
        if cells is not None:
            idx = cells.assign(lat, lon)
            cell_col = np.where(idx >= 0, np.asarray(cells.ids, dtype=object)[np.maximum(idx, 0)], "")
        else:
            cell_col = np.full(len(lat), label, dtype=object)
        return pd.DataFrame({"cell": cell_col, "lat": lat, "lon": lon})

    if cells is None:
        cells = _build_grid_cells(geometry, region, land_only, seed, float(cell_km), shape)
    return _sample_in_cells(cells, count, geometry, land_only, seed, max_draws_per_point)


def _sample_in_cells(cells, n_per_cell: int, geometry, land_only: bool, seed: int, max_draws_per_point: int) -> pd.DataFrame:
    import shapely
    from tqdm import tqdm

    from geospot.geo.cells.shapes import cell_geometries

    bounds = cells.bounds()
    shapes = cell_geometries(cells)  # right at the antimeridian and the poles
    out_cell, out_lat, out_lon = [], [], []
    given_up = []
    for k in tqdm(range(len(cells)), desc="sampling cells", unit="cell", file=sys.stderr,
                  disable=len(cells) < 200):
        lat_min, lat_max, lon_min, lon_max = (float(v) for v in bounds[k])
        poly = shapes[k]
        area = poly if geometry is None else poly.intersection(geometry)
        if area.is_empty:
            given_up.append((cells.ids[k], 0, 0))
            continue
        shapely.prepare(area)
        box = (lat_min, lat_max, lon_min, lon_max)
        lat, lon, draws = _rejection_sample(_rng(seed, k), n_per_cell, box, area, land_only,
                                            max_draws_per_point * n_per_cell)
        if len(lat) < n_per_cell:
            given_up.append((cells.ids[k], len(lat), draws))
        out_cell.extend([cells.ids[k]] * len(lat))
        out_lat.append(lat)
        out_lon.append(lon)
    for cell_id, got, draws in given_up:
        where = "inside the region" + (" on land" if land_only else "")
        _warn(f"cell {cell_id}: gave up after {draws:,} random draws with {got} of {n_per_cell} points {where} "
              f"(the cell is almost entirely {'at sea or ' if land_only else ''}outside the region)")
    return pd.DataFrame({
        "cell": np.asarray(out_cell, dtype=object),
        "lat": np.concatenate(out_lat) if out_lat else np.zeros(0),
        "lon": np.concatenate(out_lon) if out_lon else np.zeros(0),
    })
