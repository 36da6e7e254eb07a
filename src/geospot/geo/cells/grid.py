"""Regular grids of geographic cells: square (global, equal-area-ish) and hexagonal (regional).

Square grid (``grid-square``): the globe is cut into ``n_rows`` rows of equal
latitude height, as close to ``cell_km`` as divides 180 degrees evenly. Row
``r`` covers latitudes ``[-90 + r*h, -90 + (r+1)*h)`` and is cut into
``ncols[r] = round(360 * cos(row centre) / h)`` (at least 1) columns of equal
longitude width starting at -180, so every cell is about ``cell_km`` wide at its
centre and cells never straddle the antimeridian. The layout depends only on
``cell_km``, so the same place always falls in the same cell whatever the
region. Points exactly on the north pole or on lon = 180 belong to the last row
or column (intervals are half-open otherwise).

Hexagonal grid (``grid-hex``): pointy-top hexagons whose edge (= circumradius)
is ``cell_km``, laid on a local equirectangular projection centred on the
region (``x = R * dlon * cos(lat0)``, ``y = R * dlat``). The projection is
affine in (lat, lon), so cell outlines are exact hexagons in degree space;
distortion grows away from the centre, which suits country-sized regions.
"""
from __future__ import annotations

import math

import numpy as np

from ..distance import EARTH_RADIUS_KM

KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180.0
_HEX_OFFSET = 1 << 30  # axial coordinates are shifted positive before packing into an int64 key
_SQRT3 = math.sqrt(3.0)
# |lat0| is capped here so that the projection's x scale stays finite near the poles.
_MAX_HEX_CENTRE_LAT = 89.0


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes wrapped into [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0


def lon_centre_deg(lon: np.ndarray) -> float:
    """Middle of the shortest longitude interval holding all ``lon`` (handles the antimeridian)."""
    values = np.unique(_wrap_lon(np.asarray(lon, dtype=np.float64).reshape(-1)))
    if values.size == 0:
        raise ValueError("no longitudes")
    if values.size == 1:
        return float(values[0])
    # The interval is the complement of the widest gap between neighbouring longitudes.
    gaps = np.diff(np.r_[values, values[0] + 360.0])
    widest = int(np.argmax(gaps))
    start = values[(widest + 1) % values.size]
    return float(_wrap_lon(start + (360.0 - gaps[widest]) / 2.0))


# --- square -----------------------------------------------------------------------------

def square_layout(cell_km: float) -> tuple[int, np.ndarray]:
    """Number of rows and the column count of each row for a square grid of ``cell_km``."""
    n_rows = max(1, int(round(180.0 * KM_PER_DEG / cell_km)))
    height_deg = 180.0 / n_rows
    centre = -90.0 + (np.arange(n_rows) + 0.5) * height_deg
    ncols = np.maximum(1, np.round(360.0 * np.cos(np.radians(centre)) / height_deg)).astype(np.int64)
    return n_rows, ncols


def square_keys(params: dict, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Global cell key (row offset + column) of each point (finite, in range)."""
    n_rows = int(params["n_rows"])
    ncols = params["row_ncols"]
    offsets = np.concatenate([[0], np.cumsum(ncols)[:-1]])
    row = np.floor((lat + 90.0) * (n_rows / 180.0)).astype(np.int64)
    row = _snap(row, lat, lambda r: -90.0 + r * (180.0 / n_rows), n_rows)
    cols = ncols[row]
    col = np.floor((lon + 180.0) * (cols / 360.0)).astype(np.int64)
    col = _snap(col, lon, lambda c: -180.0 + c * (360.0 / cols), cols)
    return offsets[row] + col


def _snap(index: np.ndarray, value: np.ndarray, edge, count) -> np.ndarray:
    """Correct a floor()-computed interval index by one where rounding put it across an edge.

    ``edge(k)`` must be the exact expression :func:`square_bounds` uses, so that a
    point's cell always contains it by those bounds.
    """
    index = np.clip(index, 0, count - 1)
    index = np.where((index > 0) & (value < edge(index)), index - 1, index)
    index = np.where((index < count - 1) & (value >= edge(index + 1)), index + 1, index)
    return index


def _square_row_col(params: dict, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(params["row_ncols"])])
    row = np.searchsorted(offsets, keys, side="right") - 1
    return row, keys - offsets[row]


def square_ids(params: dict, keys: np.ndarray) -> list[str]:
    row, col = _square_row_col(params, keys)
    return [f"sq:{r}:{c}" for r, c in zip(row.tolist(), col.tolist())]


def square_bounds(params: dict) -> np.ndarray:
    n_rows = int(params["n_rows"])
    row, col = _square_row_col(params, params["cell_key"])
    cols = params["row_ncols"][row]
    lat_lo = -90.0 + row * (180.0 / n_rows)
    lat_hi = -90.0 + (row + 1) * (180.0 / n_rows)
    lon_lo = -180.0 + col * (360.0 / cols)
    lon_hi = -180.0 + (col + 1) * (360.0 / cols)
    return np.stack([lat_lo, np.minimum(lat_hi, 90.0), lon_lo, np.minimum(lon_hi, 180.0)], axis=1)


def square_polygons(params: dict) -> list[list[tuple[float, float]]]:
    b = square_bounds(params)
    return [[(lo, w), (lo, e), (hi, e), (hi, w)] for lo, hi, w, e in b.tolist()]


# --- hexagonal --------------------------------------------------------------------------

def hex_centre_cos(params: dict) -> float:
    return math.cos(math.radians(min(abs(float(params["lat0_deg"])), _MAX_HEX_CENTRE_LAT)))


def _project(params: dict, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _wrap_lon(lon - float(params["lon0_deg"])) * (KM_PER_DEG * hex_centre_cos(params))
    y = (lat - float(params["lat0_deg"])) * KM_PER_DEG
    return x, y


def _unproject(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat = np.clip(float(params["lat0_deg"]) + y / KM_PER_DEG, -90.0, 90.0)
    lon = _wrap_lon(float(params["lon0_deg"]) + x / (KM_PER_DEG * hex_centre_cos(params)))
    return lat, lon


def hex_axial(params: dict, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axial hex coordinates ``(q, r)`` of each point (cube rounding of the fractional hex)."""
    size = float(params["cell_km"])
    x, y = _project(params, lat, lon)
    qf = (_SQRT3 / 3.0 * x - y / 3.0) / size
    rf = (2.0 / 3.0 * y) / size
    sf = -qf - rf
    q, r, s = np.round(qf), np.round(rf), np.round(sf)
    dq, dr, ds = np.abs(q - qf), np.abs(r - rf), np.abs(s - sf)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    q = np.where(fix_q, -r - s, q)
    r = np.where(fix_r, -q - s, r)
    return q.astype(np.int64), r.astype(np.int64)


def hex_keys(params: dict, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    q, r = hex_axial(params, lat, lon)
    return ((q + _HEX_OFFSET) << 32) | (r + _HEX_OFFSET)


def _hex_qr(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = np.asarray(keys, dtype=np.int64)
    return (keys >> 32) - _HEX_OFFSET, (keys & 0xFFFFFFFF) - _HEX_OFFSET


def hex_ids(params: dict, keys: np.ndarray) -> list[str]:
    q, r = _hex_qr(keys)
    return [f"hex:{a}:{b}" for a, b in zip(q.tolist(), r.tolist())]


def hex_vertices(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes of the 6 corners of every cell (counter-clockwise): ``[N, 6]`` each."""
    size = float(params["cell_km"])
    q, r = _hex_qr(params["cell_key"])
    cx = size * _SQRT3 * (q + r / 2.0)
    cy = size * 1.5 * r
    angles = np.radians(30.0 + 60.0 * np.arange(6))
    x = cx[:, None] + size * np.cos(angles)[None, :]
    y = cy[:, None] + size * np.sin(angles)[None, :]
    return _unproject(params, x, y)


def hex_bounds(params: dict) -> np.ndarray:
    lat, lon = hex_vertices(params)
    # Longitudes relative to the first vertex, so a cell across the antimeridian
    # gets lon_min > lon_max instead of a box around the world.
    rel = _wrap_lon(lon - lon[:, :1])
    lon_lo = _wrap_lon(lon[:, 0] + rel.min(axis=1))
    lon_hi = lon_lo + (rel.max(axis=1) - rel.min(axis=1))
    lon_hi = np.where(lon_hi > 180.0, lon_hi - 360.0, lon_hi)
    return np.stack([lat.min(axis=1), lat.max(axis=1), lon_lo, lon_hi], axis=1)


def hex_polygons(params: dict) -> list[list[tuple[float, float]]]:
    lat, lon = hex_vertices(params)
    return [list(zip(a, b)) for a, b in zip(lat.tolist(), lon.tolist())]
