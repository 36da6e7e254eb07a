"""Map geometry: cell outlines, geodesic circles and great-circle lines, cut for a flat map.

Maps are drawn in a plate carrée frame centred on a longitude ``lon0``: x is
longitude in ``[lon0 - 180, lon0 + 180]``, y is latitude. A shape is first
*unwrapped* (consecutive longitudes differ by less than 180 degrees, so a cell
across the antimeridian runs e.g. from 179 to 181 instead of jumping back to
-179), then cut against the view box with copies shifted by -360, 0 and +360
degrees: a cell across the map's seam comes out as two pieces, one at each edge.
A ring that winds once around a pole (an S2 cell or a confidence circle holding
the pole) is closed along the pole's latitude so that it stays a polygon.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geospot.geo.distance import EARTH_RADIUS_KM, latlon_to_xyz, xyz_to_latlon

# Largest angle (degrees) of one straight segment when a great-circle arc is densified.
ARC_STEP_DEG = 1.0
_SHIFTS = (-360.0, 0.0, 360.0)


@dataclass(frozen=True)
class View:
    """The visible box of a map, in the plate carrée frame centred on ``lon0``."""

    lon0: float
    x_min: float
    x_max: float
    lat_min: float
    lat_max: float

    @property
    def lat_mid(self) -> float:
        return 0.5 * (self.lat_min + self.lat_max)

    def box(self):
        from shapely.geometry import box

        return box(self.x_min, self.lat_min, self.x_max, self.lat_max)

    def is_world(self) -> bool:
        return self.x_max - self.x_min >= 359.0


WORLD = View(0.0, -180.0, 180.0, -90.0, 90.0)


def wrap_lon(lon):
    """Longitudes wrapped into [-180, 180)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def to_view_x(lon, view: View) -> np.ndarray:
    """Longitude -> x of the view frame (in ``[lon0 - 180, lon0 + 180)``)."""
    return wrap_lon(np.asarray(lon, dtype=np.float64) - view.lon0) + view.lon0


def unwrap_lon(lon) -> np.ndarray:
    """Longitudes of a path made continuous (no step of 180 degrees or more), starting in [-180, 180)."""
    lon = np.asarray(lon, dtype=np.float64)
    if lon.size == 0:
        return lon
    steps = wrap_lon(np.diff(lon))
    return wrap_lon(lon[0]) + np.concatenate([[0.0], np.cumsum(steps)])


def densify_arcs(lat, lon, closed: bool = True, step_deg: float = ARC_STEP_DEG) -> tuple[np.ndarray, np.ndarray]:
    """Points along the great-circle arcs joining consecutive vertices (the ring closed when ``closed``)."""
    xyz = latlon_to_xyz(np.asarray(lat, np.float64), np.asarray(lon, np.float64))
    ends = np.roll(xyz, -1, axis=0) if closed else xyz[1:]
    starts = xyz if closed else xyz[:-1]
    out = []
    for a, b in zip(starts, ends):
        angle = float(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0)))
        n = max(1, int(np.ceil(np.degrees(angle) / step_deg)))
        t = np.arange(n)[:, None] / n  # the end point is the next arc's start
        if angle < 1e-9:
            pts = np.repeat(a[None], n, axis=0)
        else:
            pts = (np.sin((1 - t) * angle) * a + np.sin(t * angle) * b) / np.sin(angle)
        out.append(pts)
    if not closed:
        out.append(xyz[-1:])
    lat_d, lon_d = xyz_to_latlon(np.concatenate(out, axis=0))
    return np.asarray(lat_d), np.asarray(lon_d)


def ring_polygon(lat, lon):
    """An open ring of (lat, lon) vertices -> a shapely polygon in unwrapped (x = lon, y = lat) coordinates.

    A ring whose unwrapped longitudes end 360 degrees from where they started
    goes around a pole; it is closed along that pole's latitude (the pole
    whose side the ring encloses: north when it winds eastward, as for a
    counter-clockwise ring).
    """
    from shapely.geometry import Polygon

    lat, lon = _split_pole_vertices(np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64))
    x = unwrap_lon(np.r_[lon, lon[:1]])
    winding = x[-1] - x[0]
    x, y = x[:-1], lat
    if abs(winding) > 180.0:  # encircles a pole
        pole = 90.0 if winding > 0 else -90.0
        end = x[0] + winding
        x = np.r_[x, end, end, x[0]]
        y = np.r_[y, y[0], pole, pole]
    poly = Polygon(np.column_stack([x, y]))
    if not poly.is_valid:
        import shapely

        poly = shapely.make_valid(poly)
    return poly


def _split_pole_vertices(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A vertex on a pole has no longitude: draw it as two points, at its neighbours' longitudes.

    (An S2 cell with a corner on the pole then becomes the sector between its two edges.)
    """
    at_pole = np.abs(lat) > 90.0 - 1e-9
    if not at_pole.any() or at_pole.all():
        return lat, lon
    out_lat, out_lon = [], []
    n = lat.size
    for k in range(n):
        if at_pole[k]:
            pole = 90.0 if lat[k] > 0 else -90.0
            out_lat += [pole, pole]
            out_lon += [lon[(k - 1) % n], lon[(k + 1) % n]]
        else:
            out_lat.append(lat[k])
            out_lon.append(lon[k])
    return np.asarray(out_lat), np.asarray(out_lon)


def cut_to_view(geoms, view: View) -> list[list]:
    """Each unwrapped geometry -> the list of its non-empty pieces inside the view (shifted copies included)."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    box = view.box()
    pieces: list[list] = [[] for _ in range(len(geoms))]
    if len(geoms) == 0:
        return pieces
    # Geometries whose x range is far from the view need no intersection at all.
    for shift in _SHIFTS:
        moved = shapely.transform(geoms, lambda c, s=shift: c + np.array([s, 0.0]))
        hit = shapely.intersects(moved, box)
        idx = np.flatnonzero(hit)
        if idx.size == 0:
            continue
        inside = shapely.within(moved[idx], box)  # most shapes of a zoomed map need no clipping
        parts = np.where(inside, moved[idx], shapely.intersection(moved[idx], box) if not inside.all() else moved[idx])
        dims = shapely.get_dimensions(moved[idx])
        for k, part, dim in zip(idx, parts, dims):
            # Keep pieces of the shape's own dimension: a cell merely touching the box edge
            # (an edge on the seam) intersects it in a line, which is not a piece of the cell.
            pieces[k].extend(p for p in _parts(part) if shapely.get_dimensions(p) == dim)
    return pieces


def _parts(geom) -> list:
    """Polygon / line pieces of a geometry (collections flattened, empties and points dropped)."""
    if geom is None or geom.is_empty:
        return []
    kind = geom.geom_type
    if kind in ("Polygon", "LineString"):
        return [geom]
    if kind in ("MultiPolygon", "MultiLineString", "GeometryCollection"):
        out = []
        for g in geom.geoms:
            out.extend(_parts(g))
        return out
    return []


def cell_outlines(cells) -> list:
    """Every cell of a ``CellTable`` as an unwrapped shapely polygon, in its true shape.

    S2 cell edges are great-circle arcs and are densified; grid squares and
    hexagons are straight in (lat, lon) and are drawn from their corners.
    """
    polys = cells.polygons()
    if not polys:
        return []
    corners = np.asarray(polys, dtype=np.float64)  # [N, K, 2] (lat, lon), K = 4 or 6
    if cells.scheme == "s2":
        return _arc_rings(corners)
    return _rings_to_polygons(corners[..., 0], corners[..., 1])


def _arc_rings(corners: np.ndarray) -> list:
    """Rings of great-circle edges densified (vectorised by the number of points per edge)."""
    xyz = latlon_to_xyz(corners[..., 0], corners[..., 1])  # [N, K, 3]
    nxt = np.roll(xyz, -1, axis=1)
    angle = np.arccos(np.clip(np.einsum("nkc,nkc->nk", xyz, nxt), -1.0, 1.0))
    steps = np.maximum(1, np.ceil(np.degrees(angle.max(axis=1)) / ARC_STEP_DEG)).astype(int)
    out: list = [None] * len(corners)
    for n in np.unique(steps):
        rows = np.flatnonzero(steps == n)
        a, b, ang = xyz[rows], nxt[rows], angle[rows][..., None, None]  # [G, K, 1, 1]
        t = (np.arange(n) / n)[None, None, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            w0 = np.where(ang > 1e-12, np.sin((1 - t) * ang) / np.sin(ang), 1 - t)
            w1 = np.where(ang > 1e-12, np.sin(t * ang) / np.sin(ang), t)
        pts = w0 * a[:, :, None, :] + w1 * b[:, :, None, :]  # [G, K, n, 3]
        pts = pts.reshape(len(rows), -1, 3)
        lat, lon = xyz_to_latlon(pts)
        for k, poly in zip(rows, _rings_to_polygons(np.asarray(lat), np.asarray(lon))):
            out[k] = poly
    return out


def _rings_to_polygons(lat: np.ndarray, lon: np.ndarray) -> list:
    """``[N, M]`` ring vertices -> unwrapped polygons; plain rings in one vectorised call."""
    import shapely

    closed = np.concatenate([lon, lon[:, :1]], axis=1)
    steps = wrap_lon(np.diff(closed, axis=1))
    x = wrap_lon(lon[:, :1]) + np.concatenate([np.zeros((len(lon), 1)), np.cumsum(steps[:, :-1], axis=1)], axis=1)
    special = (np.abs(steps.sum(axis=1)) > 180.0) | (np.abs(lat) > 90.0 - 1e-9).any(axis=1)
    out = list(shapely.polygons(np.stack([x, lat], axis=-1)))
    for k in np.flatnonzero(special):  # around or touching a pole: the careful path
        out[k] = ring_polygon(lat[k], lon[k])
    invalid = np.flatnonzero(~shapely.is_valid(np.asarray(out, dtype=object)))
    for k in invalid:
        out[k] = shapely.make_valid(out[k])
    return out


def destination(lat, lon, bearing_deg, dist_km) -> tuple[np.ndarray, np.ndarray]:
    """Point reached from (lat, lon) after ``dist_km`` along ``bearing`` on the sphere (vectorised)."""
    lat1, lon1 = np.radians(lat), np.radians(lon)
    b = np.radians(bearing_deg)
    ang = np.asarray(dist_km, dtype=np.float64) / EARTH_RADIUS_KM
    sin_lat2 = np.sin(lat1) * np.cos(ang) + np.cos(lat1) * np.sin(ang) * np.cos(b)
    lat2 = np.arcsin(np.clip(sin_lat2, -1.0, 1.0))
    lon2 = lon1 + np.arctan2(np.sin(b) * np.sin(ang) * np.cos(lat1), np.cos(ang) - np.sin(lat1) * sin_lat2)
    return np.degrees(lat2), wrap_lon(np.degrees(lon2))


def geodesic_circle(lat: float, lon: float, radius_km: float, n: int = 180):
    """The circle of ``radius_km`` around (lat, lon) on the sphere, as an unwrapped polygon (draw its outline).

    Its boundary is exact at any radius; its inside is the disc only while the
    circle neither winds around a pole nor bulges past the antipodal side
    (radius under ~10,000 km), so maps draw the outline, never a fill.
    """
    # A radius past the antipode would fold back on itself; cap just short of it.
    radius = float(min(max(radius_km, 0.01), np.pi * EARTH_RADIUS_KM * 0.999))
    bearings = np.linspace(0.0, 360.0, n, endpoint=False)
    # Counter-clockwise (bearing decreasing), so a ring around the north pole winds eastward.
    c_lat, c_lon = destination(lat, lon, -bearings, radius)
    return ring_polygon(c_lat, c_lon)


def great_circle_line(lat1, lon1, lat2, lon2, step_deg: float = 2.0):
    """The shorter great-circle arc between two points as an unwrapped shapely LineString."""
    from shapely.geometry import LineString

    lat, lon = densify_arcs([lat1, lat2], [lon1, lon2], closed=False, step_deg=step_deg)
    x = unwrap_lon(lon)
    if x.size == 1:
        x, lat = np.r_[x, x], np.r_[lat, lat]
    return LineString(np.column_stack([x, lat]))


def lon_interval(lon) -> tuple[float, float]:
    """``(start, width)`` of the shortest longitude interval holding all ``lon`` (antimeridian aware)."""
    values = np.unique(wrap_lon(np.asarray(lon, dtype=np.float64).reshape(-1)))
    if values.size == 0:
        raise ValueError("no longitudes")
    if values.size == 1:
        return float(values[0]), 0.0
    gaps = np.diff(np.r_[values, values[0] + 360.0])
    widest = int(np.argmax(gaps))
    start = float(values[(widest + 1) % values.size])
    return start, float(360.0 - gaps[widest])
