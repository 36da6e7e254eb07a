"""GeoJSON for the web map: the model's cells, confidence circles and the view of an answer.

Everything is cut with the same code as the static maps (``geospot.viz``):
cells keep their true shapes, and a shape across the antimeridian becomes two
pieces inside [-180, 180], so the browser never draws a band across the world.
"""
from __future__ import annotations

import numpy as np

from geospot.viz.geometry import WORLD, cut_to_view, geodesic_circle
from geospot.viz.maps import cell_outlines, probability_view

_DECIMALS = 4


def _multipolygon(pieces) -> dict | None:
    polys = []
    for piece in pieces:
        if piece.geom_type != "Polygon":
            continue
        rings = [np.round(np.asarray(piece.exterior.coords), _DECIMALS).tolist()]
        rings += [np.round(np.asarray(r.coords), _DECIMALS).tolist() for r in piece.interiors]
        polys.append(rings)
    if not polys:
        return None
    return {"type": "MultiPolygon", "coordinates": polys}


def cells_geojson(cells) -> dict:
    """Every cell as a Feature (properties ``i``: index in the model, ``id``: cell id)."""
    features = []
    for i, pieces in enumerate(cut_to_view(cell_outlines(cells), WORLD)):
        geom = _multipolygon(pieces)
        if geom is not None:
            features.append({"type": "Feature", "properties": {"i": i, "id": cells.ids[i]}, "geometry": geom})
    return {"type": "FeatureCollection", "features": features}


def circle_geometry(lat: float, lon: float, radius_km: float) -> dict | None:
    """The circle at ``radius_km`` around (lat, lon) on the sphere, as a GeoJSON MultiLineString.

    Only the circle itself: where the world's edge (lon +-180, the poles) cut
    it, no line is drawn.
    """
    lines = []
    for piece in cut_to_view([geodesic_circle(lat, lon, radius_km)], WORLD)[0]:
        if piece.geom_type != "Polygon":
            continue
        xy = np.asarray(piece.exterior.coords)
        on_edge = np.isclose(np.abs(xy[:, 0]), 180.0) | np.isclose(np.abs(xy[:, 1]), 90.0)
        # Segments with both ends on the edge are the cut; everything else is the circle.
        keep = ~(on_edge[:-1] & on_edge[1:])
        run: list = []
        for k in range(len(xy) - 1):
            if keep[k]:
                if not run:
                    run.append(xy[k])
                run.append(xy[k + 1])
            elif run:
                lines.append(run)
                run = []
        if run:
            lines.append(run)
    if not lines:
        return None
    return {"type": "MultiLineString", "coordinates": [np.round(np.asarray(r), _DECIMALS).tolist() for r in lines]}


def answer_bounds(cells, probs: np.ndarray, prediction: dict) -> list[list[float]]:
    """``[[south, west], [north, east]]`` to show an answer (the static map's auto-zoom), in [-180, 180]."""
    view = probability_view(cells, probs, prediction)
    if view.x_min < -180.0 or view.x_max > 180.0:  # across the antimeridian: the web map shows the world
        return [[max(view.lat_min, -85.0), -180.0], [min(view.lat_max, 85.0), 180.0]]
    return [[view.lat_min, view.x_min], [view.lat_max, view.x_max]]
