"""Point in polygon on the vendored country outlines, in NumPy (no shapely on the answer path).

Answers are those of shapely's ``intersects_xy`` on the same polygons: the
test is GEOS's ray-crossing counter (``RayCrossingCounter``) rewritten for
arrays: a ray from the point towards +longitude, crossings counted over all
rings of a polygon (even-odd, so holes work), upward edges including their
start and downward edges their end, and a point on an edge or vertex counts
as inside. The orientation test is exact: a float64 determinant with a
Shewchuk-style error bound, and exact rational arithmetic for the rare
points that fall within it (on or a hair from an edge).

Only edges near the point are tested. A 1-degree grid lists the polygons
whose bounding box overlaps each cell; of those whose box holds the point,
only the edges in the point's thin latitude band (``BAND_DEG``; edges are
indexed by band and polygon) are tested, typically a few dozen. A cell that no edge
touches lies wholly inside one polygon (or none): the index records which, and points
there need no test at all (most of an answer's points: they land inland). The outlines are cut at the antimeridian (Fiji and
Chukotka are polygons on each side with edges along +-180 deg, on which points count
as inside), and Antarctica's ring runs along -90 deg, so the South Pole is
inside it: plain planar tests on (lon, lat) are right everywhere.
"""
from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Height of the latitude bands that index the edges (degrees).
BAND_DEG = 0.1
_NBANDS = int(round(180 / BAND_DEG))
_FORMAT = 4
_LOCK = threading.Lock()
# Relative error bound of the float64 orientation determinant (Shewchuk's ccwerrboundA is ~3.3e-16).
_ERRBOUND = 1e-15


def asset_path() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "ne_50m_countries.npz"


def read_asset(path: Path | None = None) -> tuple[dict, dict]:
    """``(arrays, meta)`` of the outlines file (format: scripts/make_countries.py): coordinates in
    degrees as float64 ``[N, 2]`` (lon, lat) and the ring / polygon / geometry offsets."""
    with zipfile.ZipFile(path or asset_path()) as z:
        arrays = {name: np.lib.format.read_array(z.open(f"{name}.npy"), allow_pickle=False)
                  for name in ("coords", "ring_offsets", "polygon_offsets", "geometry_offsets")}
        meta = json.loads(z.read("meta.json"))
    # The same float64 values shapely is given (geospot.geo.regions._countries).
    arrays["coords"] = np.cumsum(arrays["coords"], axis=0, dtype=np.int64) * float(meta["unit_deg"])
    return arrays, meta


@dataclass(frozen=True)
class OutlineIndex:
    """Edges of every polygon, indexed by (latitude band, polygon)."""

    coords: np.ndarray  # [V, 2] vertices (lon, lat)
    edge_start: np.ndarray  # [E] vertex where each indexed edge starts, and where it ends,
    edge_end: np.ndarray  # sorted by key (an edge spanning several bands is listed in each)
    keys: np.ndarray  # [K] sorted unique band * n_polygons + polygon
    starts: np.ndarray  # [K + 1] each key's slice of the edge arrays
    bounds: np.ndarray  # [P, 4] polygon lon min, lat min, lon max, lat max
    owner: np.ndarray  # [P] index of the outline (country entry) each polygon belongs to
    cell_polygons: np.ndarray  # polygons whose box overlaps each 1-degree cell, cell by cell,
    cell_start: np.ndarray  # [180 * 360 + 1] each cell's slice of cell_polygons
    cell_owner: np.ndarray  # [180 * 360] the polygon holding a cell no edge touches (-1: none), -2: edges

    @staticmethod
    def build_arrays(arrays: dict) -> dict[str, np.ndarray]:
        """The index's arrays from the asset's (:func:`read_asset`)."""
        xy = arrays["coords"]
        rings = arrays["ring_offsets"].astype(np.int64)
        polys = arrays["polygon_offsets"].astype(np.int64)
        geoms = arrays["geometry_offsets"].astype(np.int64)
        n_rings, n_polys = len(rings) - 1, len(polys) - 1
        ring_poly = np.repeat(np.arange(n_polys), np.diff(polys))
        owner = np.repeat(np.arange(len(geoms) - 1), np.diff(geoms))
        # Edge k joins vertex k to k + 1 within a ring; the last vertex joins the first (a
        # zero-length edge when the ring is closed, which never crosses and only marks its vertex).
        start = np.arange(len(xy))
        ring_of = np.repeat(np.arange(n_rings), np.diff(rings))
        nxt = start + 1
        nxt[rings[1:] - 1] = rings[:-1]
        y1, y2 = xy[start, 1], xy[nxt, 1]
        b0, b1 = _band(np.minimum(y1, y2)), _band(np.maximum(y1, y2))
        count = b1 - b0 + 1
        edge = np.repeat(start, count)
        band = np.repeat(b0, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
        key = band * n_polys + ring_poly[ring_of][edge]
        order = np.argsort(key, kind="stable")
        key, edge = key[order], edge[order]
        keys, first = np.unique(key, return_index=True)
        bounds = np.empty((n_polys, 4))
        for j, (fn, col) in enumerate(((np.minimum, 0), (np.minimum, 1), (np.maximum, 0), (np.maximum, 1))):
            bounds[:, j] = fn.reduceat(fn.reduceat(xy[:, col], rings[:-1]), polys[:-1])
        # Every (1-degree cell, polygon whose box overlaps it) pair, as CSR over the cells.
        col = np.clip(np.floor(bounds[:, [0, 2]] + 180.0), 0, 359).astype(np.int64)
        row = np.clip(np.floor(bounds[:, [1, 3]] + 90.0), 0, 179).astype(np.int64)
        ncols = col[:, 1] - col[:, 0] + 1
        size = (row[:, 1] - row[:, 0] + 1) * ncols
        ids = np.repeat(np.arange(n_polys), size)
        j = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
        cells = (row[ids, 0] + j // ncols[ids]) * 360 + col[ids, 0] + j % ncols[ids]
        by_cell = np.argsort(cells, kind="stable")
        out = {"coords": xy, "edge_start": edge.astype(np.int32), "edge_end": nxt[edge].astype(np.int32),
               "keys": keys, "starts": np.append(first, len(key)).astype(np.int64), "bounds": bounds,
               "owner": owner.astype(np.int32), "cell_polygons": ids[by_cell].astype(np.int32),
               "cell_start": np.searchsorted(cells[by_cell], np.arange(360 * 180 + 1)).astype(np.int64),
               "cell_owner": np.full(180 * 360, -2, np.int32)}
        # Cells that no edge's box touches (closed, with a hair of slack): each lies on one side of every
        # ring, so the polygon holding its centre holds all of it (holes and enclaves included).
        lo, hi = np.minimum(xy[start], xy[nxt]) - 1e-9, np.maximum(xy[start], xy[nxt]) + 1e-9
        c0, c1 = (np.clip(np.floor(v[:, 0] + 180.0), 0, 359).astype(np.int64) for v in (lo, hi))
        r0, r1 = (np.clip(np.floor(v[:, 1] + 90.0), 0, 179).astype(np.int64) for v in (lo, hi))
        span = (c1 - c0 + 1) * (r1 - r0 + 1)
        e_of, k = _expand(np.zeros(len(span), np.int64), span)
        width = (c1 - c0 + 1)[e_of]
        touched = np.zeros(180 * 360, bool)
        touched[(r0[e_of] + k // width) * 360 + c0[e_of] + k % width] = True
        free = np.flatnonzero(~touched)
        centre_lat, centre_lon = free // 360 - 89.5, free % 360 - 179.5
        out["cell_owner"][free] = OutlineIndex.from_arrays(out).polygon_of(centre_lat, centre_lon)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "OutlineIndex":
        v, e, k, p = len(a["coords"]), len(a["edge_start"]), len(a["keys"]), len(a["owner"])
        ok = (a["coords"].shape == (v, 2) and a["edge_end"].shape == (e,) and a["starts"].shape == (k + 1,)
              and a["bounds"].shape == (p, 4) and (e == 0 or (0 <= min(a["edge_start"].min(), a["edge_end"].min())
                                                              and max(a["edge_start"].max(), a["edge_end"].max()) < v))
              and bool(np.all(np.diff(a["keys"]) > 0)) and bool(np.all(np.diff(a["starts"]) >= 0))
              and (k == 0 or int(a["starts"][-1]) == e) and a["cell_start"].shape == (180 * 360 + 1,)
              and int(a["cell_start"][-1]) == len(a["cell_polygons"])
              and (len(a["cell_polygons"]) == 0 or (0 <= a["cell_polygons"].min() and a["cell_polygons"].max() < p))
              and a["cell_owner"].shape == (180 * 360,) and -2 <= int(a["cell_owner"].min())
              and int(a["cell_owner"].max()) < p)
        if not ok:
            raise ValueError("country outline index arrays are inconsistent")
        return cls(**{name: a[name] for name in ("coords", "edge_start", "edge_end", "keys", "starts", "bounds",
                                                 "owner", "cell_polygons", "cell_start", "cell_owner")})

    @property
    def n_polygons(self) -> int:
        return len(self.owner)

    def polygon_of(self, lat, lon) -> np.ndarray:
        """Index of the polygon holding each point (-1 when none); a point in several (on a shared
        border) gets the highest index, as a loop over polygons in order that overwrites would."""
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        out = np.full(lat.shape, -1, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            ok = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
        if ok.size == 0:
            return out
        cell = _cell(lat[ok], lon[ok])
        whole = self.cell_owner[cell]  # a cell no edge touches: its polygon (or none), no test needed
        settled = whole >= -1
        out[ok[settled]] = whole[settled]
        ok, cell = ok[~settled], cell[~settled]
        if ok.size == 0:
            return out
        # (point, polygon whose box overlaps the point's 1-degree cell) pairs, kept where the box holds it.
        first = self.cell_start[cell]
        pair_pt, pos = _expand(first, self.cell_start[cell + 1] - first)
        pt = ok[pair_pt]
        px, py = lon[pt], lat[pt]
        poly = self.cell_polygons[pos].astype(np.int64)
        box = self.bounds[poly]
        keep = (px >= box[:, 0]) & (px <= box[:, 2]) & (py >= box[:, 1]) & (py <= box[:, 3])
        pt, poly, px, py = pt[keep], poly[keep], px[keep], py[keep]
        # Each pair's edges: those of its polygon in the point's latitude band.
        key = _band(py) * self.n_polygons + poly
        pair_key = np.minimum(np.searchsorted(self.keys, key), max(len(self.keys) - 1, 0))
        has = self.keys[pair_key] == key if len(self.keys) else np.zeros(key.size, bool)
        pt, pair_key, poly, px, py = pt[has], pair_key[has], poly[has], px[has], py[has]
        if pt.size == 0:
            return out
        # Every (pair, edge of that polygon in that band): GEOS's RayCrossingCounter.countSegment.
        e_pair, e = _expand(self.starts[pair_key], self.starts[pair_key + 1] - self.starts[pair_key])
        qx, qy = px[e_pair], py[e_pair]
        a, b = self.coords[self.edge_start[e]], self.coords[self.edge_end[e]]
        x1, y1, x2, y2 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
        live = ~((x1 < qx) & (x2 < qx))  # edges entirely west of the point never cross the ray
        on = live & (qx == x2) & (qy == y2)
        flat = live & ~on & (y1 == qy) & (y2 == qy)
        on |= flat & (qx >= np.minimum(x1, x2)) & (qx <= np.maximum(x1, x2))
        spans = live & ~on & ~flat & (((y1 > qy) & (y2 <= qy)) | ((y2 > qy) & (y1 <= qy)))
        s = np.flatnonzero(spans)
        orient = _orientation(x1[s], y1[s], x2[s], y2[s], qx[s], qy[s])
        on[s[orient == 0]] = True
        orient = np.where(y2[s] < y1[s], -orient, orient)  # re-oriented upward
        crossings = np.bincount(e_pair[s[orient > 0]], minlength=pt.size)
        boundary = np.bincount(e_pair[on], minlength=pt.size) > 0
        inside = boundary | (crossings % 2 == 1)
        np.maximum.at(out, pt[inside], poly[inside])
        return out

    def owner_of(self, lat, lon) -> np.ndarray:
        """Index of the outline (country entry) holding each point, -1 when none."""
        poly = self.polygon_of(lat, lon)
        return np.where(poly >= 0, self.owner[np.maximum(poly, 0)], -1)


def _band(lat: np.ndarray) -> np.ndarray:
    # Monotone in lat, so an edge's bands [band(min y), band(max y)] hold the band of every
    # latitude it spans, and the same arithmetic for points and edges keeps them consistent.
    return np.clip(np.floor((np.asarray(lat) + 90.0) / BAND_DEG), 0, _NBANDS - 1).astype(np.int64)


def _cell(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    return (np.minimum(np.floor(lat + 90.0), 179).astype(np.int64) * 360
            + np.minimum(np.floor(lon + 180.0), 359).astype(np.int64))


def _expand(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged ranges ``first[i] .. first[i] + count[i]`` flattened: (owner i, value) per element."""
    count = np.asarray(count, dtype=np.int64)
    total = int(count.sum())
    owner = np.repeat(np.arange(count.size), count)
    offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return owner, np.asarray(first, dtype=np.int64)[owner] + offset


def _orientation(ax, ay, bx, by, cx, cy) -> np.ndarray:
    """Sign of the turn a -> b -> c (+1 left / counter-clockwise, -1 right, 0 collinear), exact."""
    left = (ax - cx) * (by - cy)
    right = (ay - cy) * (bx - cx)
    det = left - right
    sign = np.sign(det).astype(np.int64)
    unsure = np.flatnonzero(np.abs(det) <= _ERRBOUND * (np.abs(left) + np.abs(right)))
    for k in unsure.tolist():  # on or a hair from the edge: exact rational arithmetic
        a, b, c = (Fraction(float(ax[k])), Fraction(float(ay[k]))), (Fraction(float(bx[k])), Fraction(float(by[k]))), \
            (Fraction(float(cx[k])), Fraction(float(cy[k])))
        exact = (a[0] - c[0]) * (b[1] - c[1]) - (a[1] - c[1]) * (b[0] - c[0])
        sign[k] = (exact > 0) - (exact < 0)
    return sign


@lru_cache(maxsize=1)
def _index() -> OutlineIndex:
    from .arraycache import cached_arrays

    path = asset_path()
    st = path.stat()
    source = f"outlines v{_FORMAT} bands {BAND_DEG} {path} {st.st_size} {st.st_mtime_ns}"
    return OutlineIndex.from_arrays(cached_arrays("outlines", source, lambda: OutlineIndex.build_arrays(
        read_asset(path)[0])))


def outline_index() -> OutlineIndex:
    """The process-wide index of the vendored outlines (built once into the cache, ~0.1 s; then loaded)."""
    with _LOCK:
        return _index()
