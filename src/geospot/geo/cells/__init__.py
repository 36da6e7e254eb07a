"""Geographic cells: the classes a geolocation model predicts.

``build_cells(lat, lon, scheme, **params)`` partitions training coordinates
into a :class:`CellTable`: a regular grid (square or hexagonal), PlaNet's
adaptive S2 quadtree, or PIGEON's semantic cells (merged and split GeoNames
administrative units, with names). Centroids are the spherical means of the training points
in each cell, not the cells' geometric centres.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..distance import latlon_to_xyz, xyz_to_latlon
from . import grid, s2, semantic
from .table import SCHEMES, CellTable, cell_keys, valid_coordinates

__all__ = ["CellTable", "SCHEMES", "build_cells", "s2_table_from_tokens"]


def _check_points(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"build_cells: lat and lon lengths differ ({lat.size} vs {lon.size})")
    bad = np.flatnonzero(~valid_coordinates(lat, lon))
    if bad.size:
        shown = "; ".join(f"row {i}: ({float(lat[i])!r}, {float(lon[i])!r})" for i in bad[:5])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise ValueError(f"build_cells: {bad.size} coordinates are NaN or outside [-90, 90] x [-180, 180] "
                         f"({shown}{more})")
    if lat.size == 0:
        raise ValueError("build_cells: no points")
    return lat, lon


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"build_cells: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _centroids(lat: np.ndarray, lon: np.ndarray, idx: np.ndarray, n: int):
    """Spherical mean and count of the points of each cell (``idx`` = -1 is ignored)."""
    inside = idx >= 0
    idx, xyz = idx[inside], latlon_to_xyz(lat[inside], lon[inside])
    sums = np.stack([np.bincount(idx, weights=xyz[:, k], minlength=n) for k in range(3)], axis=1)
    c_lat, c_lon = xyz_to_latlon(sums)
    return c_lat, c_lon, np.bincount(idx, minlength=n).astype(np.int64)


def build_cells(lat, lon, scheme: str = "s2", **params) -> CellTable:
    """Partition training coordinates (degrees) into cells.

    ``scheme="grid"`` (or ``"grid-square"`` / ``"grid-hex"``): ``shape``
    (``"square"`` or ``"hex"``), ``cell_km`` (edge length, default 100),
    ``region`` (None = the data's bounding box, a ``(lat_min, lon_min,
    lat_max, lon_max)`` tuple, a country name or ISO code, a
    ``"lat_min,lon_min,lat_max,lon_max"`` string, a GeoJSON path, or a shapely
    geometry; only points inside it are counted) and ``min_per_cell``
    (default 1).

    ``scheme="s2"``: ``min_per_cell`` (default 50), ``max_per_cell`` (default
    5000), ``min_level`` (default 1), ``max_level`` (default 20): PlaNet's
    adaptive quadtree. Cells holding fewer than ``min_per_cell`` points are
    dropped; their points get -1 from ``assign`` (or the nearest kept cell with
    ``nearest=True``).

    ``scheme="semantic"``: ``min_per_cell`` (default 50), ``max_per_cell``
    (default None: no splitting), ``seed`` (default 0): PIGEON's semantic
    cells from GeoNames administrative units (see
    :mod:`geospot.geo.cells.semantic`); the table carries cell ``names``.
    """
    lat, lon = _check_points(lat, lon)
    if scheme == "s2":
        return _build_s2(lat, lon, **params)
    if scheme == "semantic":
        return _build_semantic(lat, lon, **params)
    if scheme in ("grid", "grid-square", "grid-hex"):
        if scheme != "grid":
            implied = scheme.split("-")[1]
            if params.setdefault("shape", implied) != implied:
                raise ValueError(f"build_cells: scheme {scheme!r} contradicts shape={params['shape']!r}")
        return _build_grid(lat, lon, **params)
    raise ValueError(f"build_cells: unknown scheme {scheme!r}; expected 'grid', 'grid-square', 'grid-hex', "
                     "'s2' or 'semantic'")


def _build_s2(lat, lon, min_per_cell: int = 50, max_per_cell: int = 5000, min_level: int = 1,
              max_level: int = 20) -> CellTable:
    min_per_cell = _check_count("min_per_cell", min_per_cell, 1)
    max_per_cell = _check_count("max_per_cell", max_per_cell, 1)
    min_level = _check_count("min_level", min_level, 0)
    max_level = _check_count("max_level", max_level, 0)
    if max_level > s2.MAX_LEVEL or min_level > max_level:
        raise ValueError(f"build_cells: need 0 <= min_level <= max_level <= 30, got {min_level}, {max_level}")
    if max_per_cell < min_per_cell:
        raise ValueError(f"build_cells: max_per_cell ({max_per_cell}) < min_per_cell ({min_per_cell})")
    cell_id = s2.adaptive_cells(lat, lon, min_per_cell, max_per_cell, min_level, max_level)
    if cell_id.size == 0:
        raise ValueError(f"build_cells: no S2 cell holds >= {min_per_cell} points ({lat.size} points); "
                         "lower min_per_cell")
    idx = s2.assign_sorted(cell_id, lat, lon)
    c_lat, c_lon, count = _centroids(lat, lon, idx, cell_id.size)
    params = {"min_per_cell": min_per_cell, "max_per_cell": max_per_cell, "min_level": min_level,
              "max_level": max_level, "cell_id": cell_id}
    return CellTable("s2", [f"s2:{s2.to_token(c)}" for c in cell_id.tolist()], c_lat, c_lon, count, params)


def _build_semantic(lat, lon, min_per_cell: int = 50, max_per_cell: int | None = None, seed: int = 0) -> CellTable:
    min_per_cell = _check_count("min_per_cell", min_per_cell, 1)
    if max_per_cell is not None:
        max_per_cell = _check_count("max_per_cell", max_per_cell, 1)
        if max_per_cell < min_per_cell:
            raise ValueError(f"build_cells: max_per_cell ({max_per_cell}) < min_per_cell ({min_per_cell})")
    built = semantic.build_semantic(lat, lon, min_per_cell, max_per_cell, _check_count("seed", seed, 0))
    n = len(built["ids"])
    # Centroids and counts through the table's own assignment, so training labels match `assign`.
    draft = CellTable("semantic", built["ids"], np.zeros(n), np.zeros(n), np.zeros(n), built["params"],
                      built["names"])
    c_lat, c_lon, count = _centroids(lat, lon, draft.assign(lat, lon), n)
    table = CellTable("semantic", built["ids"], c_lat, c_lon, count, built["params"], built["names"])
    table._semantic = draft._semantic  # reuse the built k-d tree
    return table


def s2_table_from_tokens(tokens, centroid_lat=None, centroid_lon=None, count=None) -> CellTable:
    """A CellTable from given S2 cells, e.g. a published partition (tokens like ``"89c25"`` or ``"s2:89c25"``).

    Cells must not overlap. Without centroids, the cells' centres are used.
    Rows are reordered by cell id; bad tokens raise ``ValueError`` naming the row.
    """
    ids = []
    for row, token in enumerate(tokens):
        try:
            ids.append(s2.from_token(str(token)))
        except ValueError as exc:
            raise ValueError(f"row {row}: {exc}") from None
    cell_id = np.array(ids, dtype=np.uint64)
    order = np.argsort(cell_id, kind="stable")
    cell_id = cell_id[order]
    overlap = np.flatnonzero(s2.range_min(cell_id[1:]) <= s2.range_max(cell_id[:-1]))
    if overlap.size:
        a, b = order[overlap[0]], order[overlap[0] + 1]
        raise ValueError(f"rows {a} and {b}: S2 cells overlap or repeat")
    if centroid_lat is None or centroid_lon is None:
        centre = s2.cell_vertices_xyz(cell_id).sum(axis=1)
        c_lat, c_lon = xyz_to_latlon(centre)
    else:
        c_lat = np.asarray(centroid_lat, dtype=np.float64).reshape(-1)[order]
        c_lon = np.asarray(centroid_lon, dtype=np.float64).reshape(-1)[order]
    n = np.zeros(cell_id.size, np.int64) if count is None else np.asarray(count, np.int64).reshape(-1)[order]
    levels = s2.cell_level(cell_id)
    params = {"min_level": int(levels.min(initial=0)), "max_level": int(levels.max(initial=0)), "cell_id": cell_id}
    return CellTable("s2", [f"s2:{s2.to_token(c)}" for c in cell_id.tolist()], c_lat, c_lon, n, params)


def _region_spec(region, lat: np.ndarray, lon: np.ndarray):
    """(geometry or None, label, bbox) of a region spec; None means the data's bounding box."""
    if region is None:
        bbox = [float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max())]
        return None, None, bbox
    from ..regions import resolve_region

    geometry = resolve_region(region)
    lon_min, lat_min, lon_max, lat_max = geometry.bounds
    if isinstance(region, str):
        label = region
    elif isinstance(region, (tuple, list)):
        label = ",".join(repr(float(v)) for v in region)
    else:
        label = "geometry"
    return geometry, label, [lat_min, lon_min, lat_max, lon_max]


def _build_grid(lat, lon, shape: str = "square", cell_km: float = 100.0, region=None,
                min_per_cell: int = 1) -> CellTable:
    import shapely

    min_per_cell = _check_count("min_per_cell", min_per_cell, 1)
    if isinstance(cell_km, bool) or not (isinstance(cell_km, numbers.Real) and np.isfinite(cell_km) and cell_km > 0):
        raise ValueError(f"build_cells: cell_km must be a positive number, got {cell_km!r}")
    cell_km = float(cell_km)
    geometry, label, bbox = _region_spec(region, lat, lon)
    if geometry is not None:
        shapely.prepare(geometry)
        inside = shapely.intersects_xy(geometry, lon, lat)  # boundary points count as inside
        lat, lon = lat[inside], lon[inside]
    if shape == "square":
        scheme = "grid-square"
        n_rows, row_ncols = grid.square_layout(cell_km)
        params = {"shape": "square", "cell_km": cell_km, "n_rows": n_rows, "row_ncols": row_ncols}
    elif shape == "hex":
        scheme = "grid-hex"
        # Centre on the region (or the data), the short way round across the antimeridian.
        lons = lon if geometry is None else shapely.get_coordinates(geometry)[:, 0]
        params = {"shape": "hex", "cell_km": cell_km, "lat0_deg": (bbox[0] + bbox[2]) / 2.0,
                  "lon0_deg": grid.lon_centre_deg(lons)}
    else:
        raise ValueError(f"build_cells: grid shape must be 'square' or 'hex', got {shape!r}")
    params.update({"min_per_cell": min_per_cell, "region": label, "region_bbox": bbox})

    keys = cell_keys(scheme, params, lat, lon)
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    keep = counts >= min_per_cell
    if not keep.any():
        where = f" inside region {label!r}" if label else ""
        raise ValueError(f"build_cells: no {shape} cell of {cell_km:g} km holds >= {min_per_cell} points{where} "
                         f"({lat.size} points)")
    params["cell_key"] = uniq[keep].astype(np.int64)
    idx = np.where(keep[inverse], np.cumsum(keep)[inverse] - 1, -1)
    c_lat, c_lon, count = _centroids(lat, lon, idx, int(keep.sum()))
    make_ids = grid.square_ids if shape == "square" else grid.hex_ids
    return CellTable(scheme, make_ids(params, params["cell_key"]), c_lat, c_lon, count, params)
