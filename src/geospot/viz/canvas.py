"""Drawing primitives shared by every map: figure, view choice, basemap, shapes, axes.

matplotlib is used through ``matplotlib.figure.Figure`` on the Agg canvas,
never pyplot: no global state, no display, safe in server threads.
"""
from __future__ import annotations

import math

import numpy as np

from geospot.viz.basemap import country_features, polygon_rings
from geospot.viz.geometry import WORLD, View, cut_to_view, lon_interval, wrap_lon

SEA = "#eef3f7"
LAND = "#f4f1ea"
BORDER = "#8c8c8c"
# A view this wide (degrees of longitude) or wider shows the whole world.
WORLD_WIDTH_DEG = 220.0


def map_figure(view: View, width_in: float = 8.0, dpi: int = 100, top_in: float = 0.85, bottom_in: float = 1.15):
    """A figure whose single axes has the view's shape on screen (no empty bands), and those axes."""
    ratio = (view.x_max - view.x_min) * max(math.cos(math.radians(view.lat_mid)), 0.15) / (view.lat_max - view.lat_min)
    left, right = 0.55, 0.2
    ax_w = width_in - left - right
    ax_h = min(ax_w / ratio, 1.2 * width_in)
    height = ax_h + top_in + bottom_in
    fig = new_figure(width_in, height, dpi=dpi)
    ax = fig.add_axes([left / width_in, bottom_in / height, ax_w / width_in, ax_h / height])
    return fig, ax


def new_figure(width_in: float = 8.0, height_in: float = 5.2, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def auto_view(lat, lon, aspect: float = 1.6, pad: float = 0.08, min_span_deg: float = 3.0) -> View:
    """The smallest view holding every point, padded, at the given width/height ratio on screen.

    Longitudes take the shortest interval (a view across the antimeridian is
    centred on it); a view that would span ``WORLD_WIDTH_DEG`` or more is the
    whole world.
    """
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return WORLD
    lat, lon = lat[ok], lon[ok]
    start, width = lon_interval(lon)
    lo, hi = float(lat.min()), float(lat.max())
    lat_span = max(hi - lo, min_span_deg) * (1 + 2 * pad)
    lat_mid = 0.5 * (lo + hi)
    cos_mid = max(math.cos(math.radians(lat_mid)), 0.15)
    lon_span = max(width, min_span_deg / cos_mid) * (1 + 2 * pad)
    # Equal scale at the view's middle latitude: widen or heighten to the figure's shape.
    if lon_span * cos_mid < aspect * lat_span:
        lon_span = aspect * lat_span / cos_mid
    else:
        lat_span = lon_span * cos_mid / aspect
    if lon_span >= WORLD_WIDTH_DEG or lat_span >= 150.0:
        return WORLD
    lat_min, lat_max = lat_mid - lat_span / 2, lat_mid + lat_span / 2
    if lat_min < -90.0:
        lat_min, lat_max = -90.0, min(90.0, -90.0 + lat_span)
    if lat_max > 90.0:
        lat_min, lat_max = max(-90.0, 90.0 - lat_span), 90.0
    lon0 = float(wrap_lon(start + width / 2))
    return View(lon0, lon0 - lon_span / 2, lon0 + lon_span / 2, lat_min, lat_max)


def setup_axes(ax, view: View, ticks: bool = True) -> None:
    """Limits, equal scale at the view's middle latitude, degree tick labels, sea background."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlim(view.x_min, view.x_max)
    ax.set_ylim(view.lat_min, view.lat_max)
    ax.set_aspect(1.0 / max(math.cos(math.radians(view.lat_mid)), 0.15))
    ax.set_facecolor(SEA)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _lon_label(x)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: _lat_label(y)))
        ax.tick_params(labelsize=8, colors="#555555", length=2)
    for spine in ax.spines.values():
        spine.set_color("#999999")
        spine.set_linewidth(0.6)


def _lon_label(x: float) -> str:
    v = float(wrap_lon(x))
    if abs(v) < 1e-9 or abs(abs(v) - 180.0) < 1e-9:
        return f"{abs(v):g}°"
    return f"{abs(v):g}°{'E' if v > 0 else 'W'}"


def _lat_label(y: float) -> str:
    return "0°" if abs(y) < 1e-9 else f"{abs(y):g}°{'N' if y > 0 else 'S'}"


def draw_basemap(ax, view: View, zorder: float = 1.0, labels: bool = True) -> None:
    """Land under everything (zorder), coastlines and borders on top of the cells (zorder + 2),
    and the names of the countries big enough on screen to carry one."""
    from matplotlib.collections import LineCollection, PolyCollection

    _, names, geoms = country_features()
    fills, lines, spots = [], [], []
    for name, pieces in zip(names, cut_to_view(geoms, view)):
        biggest = None
        for piece in pieces:
            if piece.geom_type != "Polygon":
                continue
            ext, rings = polygon_rings(piece)
            fills.extend(ext)
            lines.extend(rings)
            if biggest is None or piece.area > biggest.area:
                biggest = piece
        if biggest is not None:
            spots.append((biggest.area, name, biggest))
    ax.add_collection(PolyCollection(fills, facecolors=LAND, edgecolors="none", zorder=zorder))
    width = 0.35 if view.is_world() else 0.6
    ax.add_collection(LineCollection(lines, colors=BORDER, linewidths=width, zorder=zorder + 2))
    if labels:
        _label_countries(ax, view, spots, zorder + 3)


def _label_countries(ax, view: View, spots, zorder: float, max_labels: int = 14) -> None:
    import matplotlib.patheffects as pe

    view_area = (view.x_max - view.x_min) * (view.lat_max - view.lat_min)
    placed = []
    for area, name, piece in sorted(spots, key=lambda s: -s[0])[:max_labels]:
        if area < view_area * 0.012 or not name:
            continue
        p = piece.representative_point()
        # Keep labels apart: skip one too close to a bigger country's label.
        if any(abs(p.x - x) < (view.x_max - view.x_min) * 0.08 and abs(p.y - y) < (view.lat_max - view.lat_min) * 0.05
               for x, y in placed):
            continue
        placed.append((p.x, p.y))
        ax.text(p.x, p.y, name, fontsize=7.5, color="#555555", style="italic", ha="center", va="center",
                zorder=zorder, clip_on=True, path_effects=[pe.withStroke(linewidth=2, foreground="white", alpha=0.7)])


def shape_vertices(pieces: list) -> list[np.ndarray]:
    """``[n, 2]`` vertex arrays (exteriors of polygons, coordinates of lines) of cut pieces."""
    out = []
    for piece in pieces:
        if piece.geom_type == "Polygon":
            out.append(np.asarray(piece.exterior.coords))
        elif piece.geom_type == "LineString":
            out.append(np.asarray(piece.coords))
    return out


def draw_shapes(ax, geoms, view: View, facecolors, edgecolor="#666666", linewidth=0.3, zorder=2.0, alpha=None):
    """Fill unwrapped polygons cut to the view; each keeps its colour across all of its pieces."""
    from matplotlib.collections import PolyCollection

    verts, colours = [], []
    facecolors = list(facecolors)
    for pieces, colour in zip(cut_to_view(geoms, view), facecolors):
        for v in shape_vertices(pieces):
            verts.append(v)
            colours.append(colour)
    coll = PolyCollection(verts, facecolors=colours if colours else "none", edgecolors=edgecolor,
                          linewidths=linewidth, zorder=zorder, alpha=alpha)
    ax.add_collection(coll)
    return coll


def colorbar(fig, ax, mappable, label: str, fmt=None):
    """A slim horizontal colour bar under the map."""
    box = ax.get_position()
    height_in = fig.get_figheight()
    cax = fig.add_axes([box.x0, box.y0 - 0.55 / height_in, box.width, 0.13 / height_in])
    cb = fig.colorbar(mappable, cax=cax, orientation="horizontal", format=fmt)
    if fmt is not None:
        cb.ax.xaxis.set_minor_formatter(fmt if getattr(cb.norm, "vmin", 0) and _few_decades(cb.norm) else "")
    cb.set_label(label, fontsize=9)
    cb.ax.tick_params(labelsize=8, which="both")
    cb.outline.set_linewidth(0.5)
    return cb


def _few_decades(norm) -> bool:
    """Label the minor ticks of a log colour bar only when it spans under two decades."""
    try:
        return norm.vmax / norm.vmin < 100
    except (AttributeError, ZeroDivisionError, TypeError):
        return False


def titles(fig, head: str, sub: str = "") -> None:
    """A bold headline and a grey subtitle in the figure's top band (fixed size in inches)."""
    h = fig.get_figheight()
    fig.text(0.5, 1 - 0.1 / h, head, ha="center", va="top", fontsize=13, fontweight="bold")
    if sub:
        fig.text(0.5, 1 - 0.47 / h, sub, ha="center", va="top", fontsize=9, color="#333333")


def format_latlon(lat: float, lon: float, decimals: int = 2) -> str:
    return (f"{abs(lat):.{decimals}f}°{'N' if lat >= 0 else 'S'}, "
            f"{abs(lon):.{decimals}f}°{'E' if lon >= 0 else 'W'}")
