"""Probability maps and cell maps: every cell in its true shape, on vendored country outlines.

``probability_map`` draws one answer the way the practitioner article shows
it: cells shaded by the model's probability, the estimate with circles
holding 50% and 90% of the probability (geodesic, so they stay true circles on
the sphere) and the true point when known. ``cells_map`` shows a cell table
coloured by its training places. Both return a ``matplotlib.figure.Figure``
(shown inline by notebooks; ``fig.savefig(path)`` writes it).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from geospot.geo.distance import haversine_km
from geospot.viz.canvas import (auto_view, colorbar, draw_basemap, draw_shapes, format_latlon, map_figure,
                                setup_axes, titles)
from geospot.viz.geometry import View, cut_to_view, geodesic_circle, to_view_x
from geospot.viz.geometry import cell_outlines as _cell_outlines

# Cells under this fraction of the top cell's probability are outlined only (log colour scale floor).
PROB_FLOOR = 1e-3
# A model whose cells fit in this box (degrees) is regional: its map always shows all of it.
REGIONAL_LON_DEG, REGIONAL_LAT_DEG = 60.0, 45.0
# The map of a world model zooms to the cells holding this much of the probability.
ZOOM_MASS = 0.8
ESTIMATE_COLOUR = "#1f4e9c"
TRUTH_COLOUR = "#13a44a"

_outline_cache: dict[str, list] = {}


def cell_outlines(cells) -> list:
    """Cached unwrapped outlines of a cell table (keyed by its hash: a model's cells never change)."""
    key = cells.hash()
    if key not in _outline_cache:
        if len(_outline_cache) > 8:
            _outline_cache.clear()
        _outline_cache[key] = _cell_outlines(cells)
    return _outline_cache[key]


def _outline_points(outlines, index) -> tuple[np.ndarray, np.ndarray]:
    pts = [np.asarray(outlines[i].exterior.coords) for i in index if outlines[i].geom_type == "Polygon"]
    if not pts:
        return np.empty(0), np.empty(0)
    xy = np.concatenate(pts)
    return xy[:, 1], xy[:, 0]


def _as_dict(prediction) -> dict | None:
    if prediction is None:
        return None
    if isinstance(prediction, Mapping):
        return dict(prediction)
    if hasattr(prediction, "to_dict"):
        return prediction.to_dict()
    raise TypeError(f"prediction: expected a Prediction or its dict, got {type(prediction).__name__}")


def probability_view(cells, probs: np.ndarray, prediction: dict | None = None, truth=None) -> View:
    """Where the map of one answer looks.

    A regional model (its cells fit in about a country or a small continent)
    always shows all of its cells; a world model zooms to the cells holding
    ``ZOOM_MASS`` of the probability, plus the estimate and the truth.
    """
    outlines = cell_outlines(cells)
    all_lat, all_lon = _outline_points(outlines, range(len(outlines)))
    probe = auto_view(all_lat, all_lon, pad=0.0, min_span_deg=0.0)
    regional = (probe.x_max - probe.x_min) <= REGIONAL_LON_DEG * 1.6 and \
        (probe.lat_max - probe.lat_min) <= REGIONAL_LAT_DEG * 1.6 and not probe.is_world()
    if regional:
        lat, lon = all_lat, all_lon
    else:
        order = np.argsort(-probs, kind="stable")
        mass = np.cumsum(probs[order]) / max(float(probs.sum()), 1e-12)
        keep = order[: int(np.searchsorted(mass, ZOOM_MASS)) + 1]
        lat, lon = _outline_points(outlines, keep)
    extra_lat, extra_lon = [], []
    if prediction is not None:
        extra_lat.append(prediction["lat"])
        extra_lon.append(prediction["lon"])
    if truth is not None:
        extra_lat.append(truth[0])
        extra_lon.append(truth[1])
    return auto_view(np.r_[lat, extra_lat], np.r_[lon, extra_lon])


def _marker(ax, lat: float, lon: float, view: View, **kwargs) -> None:
    ax.plot([float(to_view_x(lon, view))], [lat], linestyle="none", zorder=8, clip_on=True, **kwargs)


def _draw_circle(ax, lat: float, lon: float, radius_km: float, view: View, **kwargs) -> bool:
    """Draw the circle's outline inside the view; False when none of it is in the view."""
    pieces = cut_to_view([geodesic_circle(lat, lon, radius_km)], view)[0]
    drawn = False
    for piece in pieces:
        if piece.geom_type != "Polygon":
            continue
        xy = np.asarray(piece.exterior.coords)
        # Only the circle's own arc, not where the view box cut it.
        on_edge = (np.isclose(xy[:, 0], view.x_min) | np.isclose(xy[:, 0], view.x_max)
                   | np.isclose(xy[:, 1], view.lat_min) | np.isclose(xy[:, 1], view.lat_max))
        xs = np.where(on_edge, np.nan, xy[:, 0])
        if np.isfinite(xs).sum() >= 2:
            import matplotlib.patheffects as pe

            # A white casing keeps the circle visible on the darkest cells, even as a thumbnail.
            ax.plot(xs, xy[:, 1], zorder=7, path_effects=[pe.Stroke(linewidth=4.0, foreground="white", alpha=0.9),
                                                          pe.Normal()], **kwargs)
            drawn = True
    return drawn


def _title(pred: dict | None, probs: np.ndarray, ids, truth) -> tuple[str, str]:
    top = int(np.argmax(probs))
    top_text = f"top cell {ids[top]}: {100 * float(probs[top]):.1f}%"
    if pred is None:
        return "Cell probabilities", top_text
    from geospot.predict import decimals_for, place_phrase

    r = pred.get("radius_km") or {}
    r50 = float(r.get("50", float("inf")))
    # no more precise than the answer: the terminal output's rule (geospot.predict)
    head = (format_latlon(pred["lat"], pred["lon"], decimals_for(r50)) + "  "
            + place_phrase(r50, pred.get("city", ""), pred.get("region", ""), pred.get("country", "")))
    parts = []
    if "50" in r and "90" in r:
        parts.append(f"50% within {r['50']:.0f} km, 90% within {r['90']:.0f} km")
    parts.append(top_text)
    if truth is not None:
        err = float(haversine_km(pred["lat"], pred["lon"], truth[0], truth[1]))
        parts.append(f"truth {err:.0f} km away")
    return head, "  ·  ".join(parts)


def probability_map(cells, probs, prediction: Any = None, truth: tuple[float, float] | None = None,
                    title: str | None = None, view: View | None = None, width_in: float = 8.0,
                    dpi: int = 100):
    """One answer on a map: ``probs`` [C] over ``cells`` (a ``CellTable``), shaded in their true shapes.

    ``prediction``: a ``Prediction`` or its ``to_dict()`` (estimate, 50%/90%
    radii, place name); ``truth``: ``(lat, lon)`` of the true point. The view
    zooms to where the probability is (see :func:`probability_view`) unless
    ``view`` is given. Returns the Figure.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if probs.size != len(cells):
        raise ValueError(f"probability_map: {probs.size} probabilities for {len(cells)} cells")
    pred = _as_dict(prediction)
    view = view or probability_view(cells, probs, pred, truth)
    fig, ax = map_figure(view, width_in=width_in, dpi=dpi)
    setup_axes(ax, view)
    draw_basemap(ax, view)

    import matplotlib

    cmap = matplotlib.colormaps["YlOrRd"]
    vmax = max(float(probs.max()), 1e-12)
    norm = LogNorm(vmin=vmax * PROB_FLOOR, vmax=vmax)
    shaded = probs >= vmax * PROB_FLOOR
    colours = [(*cmap(norm(p))[:3], 0.85) if s else (0, 0, 0, 0) for p, s in zip(probs, shaded)]
    outlines = cell_outlines(cells)
    order = np.argsort(probs, kind="stable")  # most probable drawn last, on top
    thin = 0.4 if len(cells) < 2000 else 0.15
    # Cells the model gives (almost) nothing: faint outlines, so the map still shows the model's coverage.
    faint = [i for i in order if not shaded[i]]
    draw_shapes(ax, [outlines[i] for i in faint], view, [colours[i] for i in faint], edgecolor="#b5aca3",
                linewidth=thin * 0.7, zorder=2)
    strong = [i for i in order if shaded[i]]
    draw_shapes(ax, [outlines[i] for i in strong], view, [colours[i] for i in strong], edgecolor="#7a6a5a",
                linewidth=thin, zorder=2.1)
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    colorbar(fig, ax, mappable, "probability of the cell (log scale)",
             fmt=FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))

    handles = []
    if pred is not None:
        r = pred.get("radius_km") or {}
        for level, style in (("50", "-"), ("90", "--")):
            if level in r:
                seen = _draw_circle(ax, pred["lat"], pred["lon"], float(r[level]), view, color=ESTIMATE_COLOUR,
                                    linewidth=2.0, linestyle=style)
                where = "" if seen else ", beyond this map"
                handles.append(Line2D([], [], color=ESTIMATE_COLOUR, linestyle=style, linewidth=1.6,
                                      label=f"{level}% of the probability ({float(r[level]):.0f} km{where})"))
        _marker(ax, pred["lat"], pred["lon"], view, marker="*", markersize=20, color=ESTIMATE_COLOUR,
                markeredgecolor="white", markeredgewidth=1.2)
        handles.insert(0, Line2D([], [], marker="*", markersize=13, color=ESTIMATE_COLOUR, linestyle="none",
                                 markeredgecolor="white", label="estimate"))
    if truth is not None:
        _marker(ax, float(truth[0]), float(truth[1]), view, marker="o", markersize=10, color=TRUTH_COLOUR,
                markeredgecolor="black", markeredgewidth=1.0)
        handles.append(Line2D([], [], marker="o", markersize=8, color=TRUTH_COLOUR, markeredgecolor="black",
                              linestyle="none", label="true location"))
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.85, borderpad=0.5)
    head, sub = _title(pred, probs, cells.ids, truth)
    titles(fig, title or head, sub)
    return fig


def cells_map(cells, title: str | None = None, view: View | None = None, width_in: float = 8.0,
              dpi: int = 100):
    """A cell table on a map, each cell in its true shape, coloured by its number of training places."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import FuncFormatter

    outlines = cell_outlines(cells)
    if view is None:
        lat, lon = _outline_points(outlines, range(len(outlines)))
        view = auto_view(lat, lon)
    counts = np.asarray(cells.count, dtype=np.float64)
    hi = max(float(counts.max()) if counts.size else 1.0, 1.0)
    lo = max(float(counts.min()) if counts.size else 1.0, 1.0)
    norm = LogNorm(vmin=lo, vmax=hi) if hi > lo else Normalize(vmin=lo - 1, vmax=hi)
    cmap = matplotlib.colormaps["viridis"]
    fig, ax = map_figure(view, width_in=width_in, dpi=dpi)
    setup_axes(ax, view)
    draw_basemap(ax, view)
    draw_shapes(ax, outlines, view, [(*cmap(norm(max(c, lo)))[:3], 0.75) for c in counts], edgecolor="#333333",
                linewidth=0.4 if len(cells) < 2000 else 0.15, zorder=2)
    colorbar(fig, ax, ScalarMappable(norm=norm, cmap=cmap), "training places in the cell",
             fmt=FuncFormatter(lambda v, _: f"{v:g}"))
    scheme = {"s2": "adaptive S2", "grid-square": "square grid", "grid-hex": "hexagonal grid"}[cells.scheme]
    titles(fig, title or f"{len(cells)} {scheme} cells, {int(counts.sum())} places",
           f"places per cell: min {int(counts.min())}, median {int(np.median(counts))}, max {int(counts.max())}")
    return fig
