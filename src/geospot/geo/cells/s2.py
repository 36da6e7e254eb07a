"""Vectorised S2 cells in NumPy, and PlaNet's adaptive S2 partition.

The cell-id arithmetic follows Google's S2 library (and its Python port
``s2sphere``, against which the tests check every id): a point's unit vector
picks one of six cube faces, its face coordinates ``(u, v)`` go through S2's
quadratic ``st`` transform, are quantised to 30-bit leaf coordinates
``(i, j)``, and ``(face, i, j)`` is encoded as a position along a Hilbert
curve with S2's 4-bits-at-a-time lookup table. An S2 cell at level ``L`` owns
the contiguous leaf-id range ``[id - lsb + 1, id + lsb - 1]``, so assigning
points to a set of disjoint cells is one ``np.searchsorted``.

All ids are ``np.uint64``.
"""
from __future__ import annotations

import numpy as np

from ..distance import latlon_to_xyz, xyz_to_latlon

MAX_LEVEL = 30
_MAX_SIZE = 1 << MAX_LEVEL
_POS_BITS = 2 * MAX_LEVEL + 1
_LOOKUP_BITS = 4
_SWAP_MASK = 0x01
_INVERT_MASK = 0x02
_POS_TO_IJ = ((0, 1, 3, 2), (0, 2, 3, 1), (3, 2, 0, 1), (3, 1, 0, 2))
_POS_TO_ORIENTATION = (_SWAP_MASK, 0, 0, _INVERT_MASK | _SWAP_MASK)
_U64 = np.uint64


def _build_lookup_tables() -> tuple[np.ndarray, np.ndarray]:
    """S2's tables mapping 4 bits of (i, j) + orientation <-> 4 Hilbert steps + orientation."""
    size = 1 << (2 * _LOOKUP_BITS + 2)
    lookup_pos = np.zeros(size, dtype=np.int64)
    lookup_ij = np.zeros(size, dtype=np.int64)

    def fill(level: int, i: int, j: int, orig_orientation: int, pos: int, orientation: int) -> None:
        if level == _LOOKUP_BITS:
            ij = (i << _LOOKUP_BITS) + j
            lookup_pos[(ij << 2) + orig_orientation] = (pos << 2) + orientation
            lookup_ij[(pos << 2) + orig_orientation] = (ij << 2) + orientation
            return
        r = _POS_TO_IJ[orientation]
        for index in range(4):
            fill(level + 1, (i << 1) + (r[index] >> 1), (j << 1) + (r[index] & 1), orig_orientation,
                 (pos << 2) + index, orientation ^ _POS_TO_ORIENTATION[index])

    for orientation in range(4):
        fill(0, 0, 0, orientation, 0, orientation)
    return lookup_pos, lookup_ij


_LOOKUP_POS, _LOOKUP_IJ = _build_lookup_tables()


# --- points -> leaf cells ---------------------------------------------------------------

# S2's ValidFaceXYZtoUV, per face: u = sign * xyz[axis] / xyz[face axis], same for v.
_U_AXIS = np.array([1, 0, 0, 2, 2, 1])
_U_SIGN = np.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
_V_AXIS = np.array([2, 2, 1, 1, 0, 0])
_V_SIGN = np.array([1.0, 1.0, -1.0, 1.0, -1.0, -1.0])


def _xyz_to_face_uv(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    # Same tie-breaking as S2's LargestAbsComponent (ties go to the later axis).
    axis = np.where(ax > ay, np.where(ax > az, 0, 2), np.where(ay > az, 1, 2))
    den = np.take_along_axis(xyz, axis[..., None], axis=-1)[..., 0]
    face = axis + 3 * (den < 0)
    # Sign flips are exact, so these match S2's per-face expressions bit for bit.
    u = _U_SIGN[face] * np.take_along_axis(xyz, _U_AXIS[face][..., None], axis=-1)[..., 0] / den
    v = _V_SIGN[face] * np.take_along_axis(xyz, _V_AXIS[face][..., None], axis=-1)[..., 0] / den
    return face, u, v


def _uv_to_st(u: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(u >= 0, 0.5 * np.sqrt(1 + 3 * u), 1 - 0.5 * np.sqrt(1 - 3 * u))


def _st_to_uv(s: np.ndarray) -> np.ndarray:
    return np.where(s >= 0.5, (1.0 / 3.0) * (4 * s * s - 1), (1.0 / 3.0) * (1 - 4 * (1 - s) * (1 - s)))


def _st_to_ij(s: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(_MAX_SIZE * s), 0, _MAX_SIZE - 1).astype(np.int64)


def face_ij_to_id(face: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Leaf cell ids from faces and 30-bit leaf coordinates (S2's ``FromFaceIJ``)."""
    face = np.asarray(face, dtype=np.int64)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    n = face.astype(_U64) << _U64(_POS_BITS - 1)
    bits = face & _SWAP_MASK
    mask = (1 << _LOOKUP_BITS) - 1
    for k in range(7, -1, -1):
        bits = bits + (((i >> (k * _LOOKUP_BITS)) & mask) << (_LOOKUP_BITS + 2))
        bits = bits + (((j >> (k * _LOOKUP_BITS)) & mask) << 2)
        bits = _LOOKUP_POS[bits]
        n |= (bits >> 2).astype(_U64) << _U64(k * 2 * _LOOKUP_BITS)
        bits = bits & (_SWAP_MASK | _INVERT_MASK)
    return n * _U64(2) + _U64(1)


def latlon_to_leaf_id(lat, lon) -> np.ndarray:
    """S2 leaf-cell (level 30) ids of points in degrees, as ``np.uint64``.

    Coordinates must be finite; the caller filters NaN and out-of-range values.
    """
    xyz = latlon_to_xyz(lat, lon)
    face, u, v = _xyz_to_face_uv(xyz)
    return face_ij_to_id(face, _st_to_ij(_uv_to_st(u)), _st_to_ij(_uv_to_st(v)))


# --- cell-id arithmetic -----------------------------------------------------------------

def _ids(cell_ids) -> np.ndarray:
    return np.asarray(cell_ids, dtype=_U64)


def lsb(cell_ids) -> np.ndarray:
    """Lowest set bit of each id (its size marker)."""
    ids = _ids(cell_ids)
    return ids & (~ids + _U64(1))


def cell_level(cell_ids) -> np.ndarray:
    """Level (0 = face, 30 = leaf) of each id."""
    # Powers of two are exact in float64, so log2 is exact here.
    return (MAX_LEVEL - np.log2(lsb(cell_ids).astype(np.float64)).astype(np.int64) // 2).astype(np.int64)


def lsb_for_level(level) -> np.ndarray:
    level = np.asarray(level, dtype=np.int64)
    return np.left_shift(_U64(1), (2 * (MAX_LEVEL - level)).astype(_U64))


def cell_parent(cell_ids, level) -> np.ndarray:
    """Ancestor of each id at ``level`` (which must not exceed the id's own level)."""
    new_lsb = lsb_for_level(level)
    return (_ids(cell_ids) & (~new_lsb + _U64(1))) | new_lsb


def range_min(cell_ids) -> np.ndarray:
    """Smallest leaf id inside each cell."""
    return _ids(cell_ids) - (lsb(cell_ids) - _U64(1))


def range_max(cell_ids) -> np.ndarray:
    """Largest leaf id inside each cell."""
    return _ids(cell_ids) + (lsb(cell_ids) - _U64(1))


def is_valid(cell_ids) -> np.ndarray:
    """True for well-formed S2 cell ids (face < 6, lsb on an even bit)."""
    ids = _ids(cell_ids)
    low = lsb(ids)
    return ((ids >> _U64(_POS_BITS)) < _U64(6)) & (low != 0) & ((low & _U64(0x1555555555555555)) != 0)


def to_token(cell_id: int) -> str:
    """S2 token: the id in hex with trailing zeros stripped (``"X"`` for the invalid id 0)."""
    cell_id = int(cell_id)
    return format(cell_id, "016x").rstrip("0") or "X"


def from_token(token: str) -> int:
    """Inverse of :func:`to_token`; raises ``ValueError`` for malformed or invalid tokens."""
    text = token.strip().lower()
    if text.startswith("s2:"):
        text = text[3:]
    if not 1 <= len(text) <= 16 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not an S2 token: {token!r}")
    value = int(text.ljust(16, "0"), 16)
    if not bool(is_valid(np.array([value], dtype=_U64))[0]):
        raise ValueError(f"not a valid S2 cell: {token!r}")
    return value


def id_to_face_ij(cell_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face and leaf coordinates ``(i, j)`` of each id (S2's ``ToFaceIJOrientation``).

    For a non-leaf cell ``(i, j)`` is a leaf near its centre; mask with the
    cell size to get its low corner.
    """
    ids = _ids(cell_ids)
    face = (ids >> _U64(_POS_BITS)).astype(np.int64)
    bits = face & _SWAP_MASK
    i = np.zeros(ids.shape, dtype=np.int64)
    j = np.zeros(ids.shape, dtype=np.int64)
    for k in range(7, -1, -1):
        nbits = MAX_LEVEL - 7 * _LOOKUP_BITS if k == 7 else _LOOKUP_BITS
        chunk = ((ids >> _U64(k * 2 * _LOOKUP_BITS + 1)) & _U64((1 << (2 * nbits)) - 1)).astype(np.int64)
        bits = _LOOKUP_IJ[bits + (chunk << 2)]
        i += (bits >> (_LOOKUP_BITS + 2)) << (k * _LOOKUP_BITS)
        j += ((bits >> 2) & ((1 << _LOOKUP_BITS) - 1)) << (k * _LOOKUP_BITS)
        bits = bits & (_SWAP_MASK | _INVERT_MASK)
    return face, i, j


def _face_uv_to_xyz(face: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    one = np.ones_like(u)
    x = np.select([face == 0, face == 1, face == 2, face == 3, face == 4], [one, -u, -u, -one, v], v)
    y = np.select([face == 0, face == 1, face == 2, face == 3, face == 4], [u, one, -v, -v, -one], u)
    z = np.select([face == 0, face == 1, face == 2, face == 3, face == 4], [v, v, one, -u, -u], -one)
    xyz = np.stack([x, y, z], axis=-1)
    return xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)


def cell_vertices_xyz(cell_ids) -> np.ndarray:
    """Unit vectors of the 4 corners of each cell, counter-clockwise: ``[N, 4, 3]``."""
    ids = _ids(cell_ids)
    face, i, j = id_to_face_ij(ids)
    size = np.left_shift(np.int64(1), MAX_LEVEL - cell_level(ids))
    i0, j0 = i & ~(size - 1), j & ~(size - 1)
    u0, u1 = _st_to_uv(i0 / _MAX_SIZE), _st_to_uv((i0 + size) / _MAX_SIZE)
    v0, v1 = _st_to_uv(j0 / _MAX_SIZE), _st_to_uv((j0 + size) / _MAX_SIZE)
    # S2Cell::GetVertex order: (u0,v0), (u1,v0), (u1,v1), (u0,v1).
    us = np.stack([u0, u1, u1, u0], axis=-1)
    vs = np.stack([v0, v0, v1, v1], axis=-1)
    return _face_uv_to_xyz(np.repeat(face[:, None], 4, axis=1), us, vs)


def cell_vertices(cell_ids) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes (degrees) of the 4 corners of each cell: two ``[N, 4]`` arrays."""
    return xyz_to_latlon(cell_vertices_xyz(cell_ids))


def _edge_lat_extremes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Highest and lowest latitude (degrees) on the great-circle arcs a->b (NaN if at an end)."""
    n = np.cross(a, b)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    # Highest point of the whole great circle: the pole direction projected onto its plane.
    top = -n[..., 2:3] * n
    top[..., 2] += 1.0
    norm = np.linalg.norm(top, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = top / norm

    def on_arc(p: np.ndarray) -> np.ndarray:
        return (np.einsum("...k,...k", np.cross(a, p), n) > 0) & (np.einsum("...k,...k", np.cross(p, b), n) > 0)

    high = np.where(on_arc(top), np.degrees(np.arcsin(np.clip(top[..., 2], -1, 1))), np.nan)
    low = np.where(on_arc(-top), np.degrees(np.arcsin(np.clip(-top[..., 2], -1, 1))), np.nan)
    return high, low


def cell_bounds(cell_ids) -> np.ndarray:
    """``[N, 4]`` boxes ``(lat_min, lat_max, lon_min, lon_max)`` containing each cell.

    Latitude bounds are exact (cell edges are great-circle arcs whose extreme
    latitudes are computed); cells containing a pole get the full longitude
    range. A cell crossing the antimeridian has ``lon_min > lon_max``.
    """
    ids = _ids(cell_ids)
    verts = cell_vertices_xyz(ids)
    vlat, vlon = xyz_to_latlon(verts)
    nxt = np.roll(verts, -1, axis=1)
    high, low = _edge_lat_extremes(verts, nxt)
    lat_max = np.fmax(vlat.max(axis=1), np.nanmax(np.where(np.isnan(high), -np.inf, high), axis=1))
    lat_min = np.fmin(vlat.min(axis=1), np.nanmin(np.where(np.isnan(low), np.inf, low), axis=1))

    # Longitude is monotonic along a great circle that misses the poles, so the
    # span is set by the vertices, measured relative to a vertex off the poles
    # (a vertex on a pole has no longitude of its own).
    at_pole = np.abs(vlat) > 90.0 - 1e-9
    ref = np.take_along_axis(vlon, np.argmax(~at_pole, axis=1)[:, None], axis=1)
    rel = np.where(at_pole, np.nan, (vlon - ref + 180.0) % 360.0 - 180.0)
    lon_lo = ref[:, 0] + np.nanmin(rel, axis=1)
    span = np.nanmax(rel, axis=1) - np.nanmin(rel, axis=1)
    lon_lo = np.where(lon_lo >= 180.0, lon_lo - 360.0, np.where(lon_lo < -180.0, lon_lo + 360.0, lon_lo))
    lon_hi = lon_lo + span
    lon_hi = np.where(lon_hi > 180.0, lon_hi - 360.0, lon_hi)

    # Only the two polar faces hold a pole inside; below level 0 a pole is a vertex.
    face = (ids >> _U64(_POS_BITS)).astype(np.int64)
    north = (cell_level(ids) == 0) & (face == 2)
    south = (cell_level(ids) == 0) & (face == 5)
    lat_max = np.where(north, 90.0, lat_max)
    lat_min = np.where(south, -90.0, lat_min)
    polar = north | south
    lon_lo = np.where(polar, -180.0, lon_lo)
    lon_hi = np.where(polar, 180.0, lon_hi)
    return np.stack([lat_min, lat_max, lon_lo, lon_hi], axis=1)


# --- a set of disjoint cells ------------------------------------------------------------

def assign_sorted(cell_ids: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Index of the cell (in sorted, disjoint ``cell_ids``) holding each point, or -1.

    ``lat``/``lon`` must be finite and in range.
    """
    if cell_ids.size == 0:
        return np.full(np.shape(lat), -1, dtype=np.int64)
    leaf = latlon_to_leaf_id(lat, lon)
    lo, hi = range_min(cell_ids), range_max(cell_ids)
    idx = np.searchsorted(lo, leaf, side="right").astype(np.int64) - 1
    safe = np.maximum(idx, 0)
    inside = (idx >= 0) & (leaf <= hi[safe])
    return np.where(inside, idx, -1)


def adaptive_cells(lat: np.ndarray, lon: np.ndarray, min_per_cell: int, max_per_cell: int,
                   min_level: int, max_level: int) -> np.ndarray:
    """PlaNet's adaptive partition: sorted ids of the kept cells.

    Every occupied cell at ``min_level`` is split while it holds more than
    ``max_per_cell`` points and is above ``max_level``; leaves holding fewer
    than ``min_per_cell`` points are dropped.
    """
    leaf = np.sort(latlon_to_leaf_id(lat, lon))
    kept = []
    active = leaf
    for level in range(min_level, max_level + 1):
        if active.size == 0:
            break
        # Leaf ids are sorted, so their ancestors are too: runs give the counts.
        parent = cell_parent(active, level)
        starts = np.flatnonzero(np.r_[True, parent[1:] != parent[:-1]])
        counts = np.diff(np.r_[starts, parent.size])
        split = (counts > max_per_cell) & (level < max_level)
        keep = ~split & (counts >= min_per_cell)
        kept.append(parent[starts][keep])
        active = active[np.repeat(split, counts)]
    ids = np.concatenate(kept) if kept else np.zeros(0, dtype=_U64)
    return np.sort(ids)
