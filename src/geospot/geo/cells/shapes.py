"""Cell outlines as lon/lat shapely geometries that are right at the antimeridian and the poles.

A cell's corners in degrees cannot simply be joined: a corner at 180°E may come
back as -180°, turning a thin cell east of Tokyo into a band round the whole
globe, and a cell holding a pole winds once around it. Here each ring is
unwrapped (consecutive longitudes differ by less than 180°), closed over the pole
when it winds around one, and cut at ±180° into a (Multi)Polygon inside
[-180, 180] x [-90, 90]. S2 edges are great-circle arcs and are densified.
"""
from __future__ import annotations

import numpy as np

_S2_EDGE_POINTS = 8  # points per S2 edge (great-circle arc) in the lon/lat outline


def _slerp_ring(corners_xyz: np.ndarray, steps: int) -> np.ndarray:
    """[K, 3] corners -> [K * steps, 3] points along the great-circle edges."""
    out = []
    k = len(corners_xyz)
    t = np.linspace(0.0, 1.0, steps, endpoint=False)[:, None]
    for a, b in zip(corners_xyz, np.roll(corners_xyz, -1, axis=0)):
        omega = np.arccos(np.clip(np.dot(a, b), -1.0, 1.0))
        if omega < 1e-12:
            out.append(np.repeat(a[None], steps, axis=0))
            continue
        pts = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
        out.append(pts)
    ring = np.concatenate(out) if k else np.zeros((0, 3))
    return ring / np.linalg.norm(ring, axis=1, keepdims=True)


def ring_to_geometry(lat, lon, pole_hint: float | None = None):
    """A closed lat/lon ring (degrees, any longitudes) -> shapely (Multi)Polygon in lon/lat.

    `pole_hint`: the latitude of a point inside the cell, to pick the pole a
    winding ring encloses (default: the ring's mean latitude)."""
    import shapely
    from shapely.affinity import translate
    from shapely.geometry import Polygon, box

    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if len(lat) < 3:
        return Polygon()
    steps = (np.diff(lon) + 180.0) % 360.0 - 180.0
    ulon = np.concatenate([[lon[0]], lon[0] + np.cumsum(steps)])
    closing = (lon[0] - ulon[-1] + 180.0) % 360.0 - 180.0
    winding = ulon[-1] + closing - ulon[0]
    pts = list(zip(ulon.tolist(), lat.tolist()))
    if abs(winding) > 180.0:  # the ring goes once around a pole: close it over that pole
        north = (pole_hint if pole_hint is not None else float(np.mean(lat))) >= 0
        pole = 90.0 if north else -90.0
        end = ulon[-1] + closing
        pts += [(end, lat[0]), (end, pole), (ulon[0], pole)]
    poly = Polygon(pts)
    if not poly.is_valid:
        poly = poly.buffer(0)
    world = box(-180.0, -90.0, 180.0, 90.0)
    parts = []
    lo, hi = poly.bounds[0], poly.bounds[2]
    for shift in (-720.0, -360.0, 0.0, 360.0, 720.0):
        if hi + shift <= -180.0 or lo + shift >= 180.0:
            continue
        piece = translate(poly, xoff=shift).intersection(world)
        if not piece.is_empty and piece.area > 1e-9 * poly.area:  # not a rounding-error sliver
            parts.append(piece)
    if not parts:
        return Polygon()
    return shapely.union_all(parts) if len(parts) > 1 else parts[0]


def cell_geometries(cells) -> list:
    """One lon/lat shapely geometry per cell of a `CellTable` (any scheme)."""
    if cells.scheme == "s2":
        from geospot.geo.cells import s2
        from geospot.geo.distance import xyz_to_latlon

        corners = s2.cell_vertices_xyz(cells.params["cell_id"])
        out = []
        for quad in corners:
            ring = _slerp_ring(quad, _S2_EDGE_POINTS)
            lat, lon = xyz_to_latlon(ring)
            centre_lat, _ = xyz_to_latlon(quad.mean(axis=0)[None])
            out.append(ring_to_geometry(lat, lon, pole_hint=float(np.asarray(centre_lat).ravel()[0])))
        return out
    if cells.scheme == "grid-square":  # latitude/longitude boxes: exact, including full-width polar rows
        from shapely.geometry import box

        from geospot.geo.cells import grid

        out = []
        for lo, hi, w, e in grid.square_bounds(cells.params).tolist():
            width = (e - w) % 360.0 or 360.0
            if w + width <= 180.0:
                out.append(box(w, lo, w + width, hi))
            else:  # crosses the antimeridian
                out.append(box(w, lo, 180.0, hi).union(box(-180.0, lo, w + width - 360.0, hi)))
        return out
    out = []
    for k, ring in enumerate(cells.polygons()):
        lat = [p[0] for p in ring]
        lon = [p[1] for p in ring]
        out.append(ring_to_geometry(lat, lon, pole_hint=float(cells.centroid_lat[k])))
    return out
