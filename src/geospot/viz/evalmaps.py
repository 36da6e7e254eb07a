"""Evaluation maps: where the model goes wrong, and how well it does per country.

``error_map`` draws one great-circle line per test place from the truth to the
estimate, coloured by the error; ``country_accuracy_map`` fills each country by
the share of its test places whose estimate lands in the right country.
``write_eval_maps`` writes both into a report folder (``geospot eval``/``cv``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from geospot.geo.distance import haversine_km
from geospot.viz.basemap import country_features
from geospot.viz.canvas import auto_view, colorbar, draw_basemap, draw_shapes, map_figure, setup_axes, titles
from geospot.viz.geometry import View, cut_to_view, great_circle_line, to_view_x

ERROR_MAP = "error_map.png"
COUNTRY_MAP = "country_accuracy_map.png"
# More lines than this are drawn from an evenly spaced sample (a map of 100k lines is just ink).
MAX_LINES = 5000


def _columns(data: Any) -> dict[str, np.ndarray]:
    """The columns of a DataFrame or a mapping as arrays."""
    if hasattr(data, "columns"):
        return {str(c): data[c].to_numpy() for c in data.columns}
    if isinstance(data, Mapping):
        return {str(k): np.asarray(v) for k, v in data.items()}
    raise TypeError(f"expected a DataFrame or a mapping of arrays, got {type(data).__name__}")


def _view_of(lat, lon) -> View:
    return auto_view(lat, lon, pad=0.05)


def error_map(true_lat, true_lon, pred_lat, pred_lon, title: str | None = None, view: View | None = None,
              width_in: float = 8.0, dpi: int = 100):
    """Lines truth -> estimate (great circles), coloured by error on a log scale; returns the Figure."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    t_lat, t_lon, p_lat, p_lon = (np.asarray(a, dtype=np.float64).reshape(-1)
                                  for a in (true_lat, true_lon, pred_lat, pred_lon))
    ok = np.isfinite(t_lat) & np.isfinite(t_lon) & np.isfinite(p_lat) & np.isfinite(p_lon)
    t_lat, t_lon, p_lat, p_lon = t_lat[ok], t_lon[ok], p_lat[ok], p_lon[ok]
    err = haversine_km(t_lat, t_lon, p_lat, p_lon)
    view = view or _view_of(np.r_[t_lat, p_lat], np.r_[t_lon, p_lon])
    fig, ax = map_figure(view, width_in=width_in, dpi=dpi)
    setup_axes(ax, view)
    draw_basemap(ax, view)
    pick = np.arange(err.size)
    if err.size > MAX_LINES:
        pick = np.unique(np.linspace(0, err.size - 1, MAX_LINES).round().astype(int))
    norm = LogNorm(vmin=10.0, vmax=max(10000.0, float(err.max()) if err.size else 10000.0))
    from matplotlib.colors import ListedColormap

    # plasma without its palest yellow end, which vanishes on the light land colour
    cmap = ListedColormap(matplotlib.colormaps["plasma"](np.linspace(0.0, 0.82, 256)))
    segs, colours = [], []
    for i in pick[np.argsort(-err[pick], kind="stable")]:  # short (good) errors drawn last, on top
        line = great_circle_line(t_lat[i], t_lon[i], p_lat[i], p_lon[i])
        for piece in cut_to_view([line], view)[0]:
            if piece.geom_type == "LineString":
                segs.append(np.asarray(piece.coords))
                colours.append(cmap(norm(max(err[i], 10.0))))
    ax.add_collection(LineCollection(segs, colors=colours, linewidths=0.8, alpha=0.8, zorder=5))
    ax.scatter(to_view_x(t_lon[pick], view), t_lat[pick], s=7, c="black", linewidths=0, zorder=6,
               label="true location")
    ax.scatter(to_view_x(p_lon[pick], view), p_lat[pick], s=7, facecolors="white", edgecolors="black",
               linewidths=0.5, zorder=6, label="estimate")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.85, markerscale=1.6)
    colorbar(fig, ax, ScalarMappable(norm=norm, cmap=cmap), "error (km, log scale)",
             fmt=FuncFormatter(lambda v, _: f"{v:g}"))
    median = float(np.median(err)) if err.size else float("nan")
    sub = f"{err.size} places, median error {median:.0f} km"
    if pick.size < err.size:
        sub += f" (lines for {pick.size} evenly spaced places)"
    titles(fig, title or "Errors: true location → estimate", sub)
    return fig


def country_accuracy(true_cc, pred_cc) -> dict[str, tuple[int, float]]:
    """ISO-2 code -> (test places, share whose estimate is in the same country); unknown codes skipped."""
    true_cc = np.asarray(true_cc, dtype=str)
    pred_cc = np.asarray(pred_cc, dtype=str)
    out = {}
    for code in np.unique(true_cc):
        if not code.strip():
            continue
        rows = true_cc == code
        out[str(code)] = (int(rows.sum()), float((pred_cc[rows] == code).mean()))
    return out


def country_accuracy_map(true_lat, true_lon, true_cc, pred_cc, title: str | None = None, view: View | None = None,
                         width_in: float = 8.0, dpi: int = 100):
    """Countries filled by the share of their test places located in the right country; returns the Figure."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import PercentFormatter

    stats = country_accuracy(true_cc, pred_cc)
    codes, names, geoms = country_features()
    t_lat = np.asarray(true_lat, dtype=np.float64).reshape(-1)
    t_lon = np.asarray(true_lon, dtype=np.float64).reshape(-1)
    ok = np.isfinite(t_lat) & np.isfinite(t_lon)
    view = view or _view_of(t_lat[ok], t_lon[ok])
    fig, ax = map_figure(view, width_in=width_in, dpi=dpi)
    setup_axes(ax, view)
    draw_basemap(ax, view, labels=False)
    cmap = matplotlib.colormaps["RdYlGn"]
    norm = Normalize(0.0, 1.0)
    hit = [k for k, c in enumerate(codes) if c in stats]
    draw_shapes(ax, [geoms[k] for k in hit], view, [(*cmap(norm(stats[codes[k]][1]))[:3], 0.9) for k in hit],
                edgecolor="#555555", linewidth=0.5, zorder=2)
    import matplotlib.patheffects as pe

    view_area = (view.x_max - view.x_min) * (view.lat_max - view.lat_min)
    placed: list[tuple[float, float]] = []
    for k in sorted(hit, key=lambda k: -stats[codes[k]][0]):
        pieces = [p for p in cut_to_view([geoms[k]], view)[0] if p.geom_type == "Polygon"]
        if not pieces or len(placed) >= 25:
            continue
        big = max(pieces, key=lambda p: p.area)
        pt = big.representative_point()
        # Label countries big enough on screen, never on top of another label.
        if big.area < 0.002 * view_area or any(abs(pt.x - x) < 0.07 * (view.x_max - view.x_min)
                                               and abs(pt.y - y) < 0.06 * (view.lat_max - view.lat_min)
                                               for x, y in placed):
            continue
        placed.append((pt.x, pt.y))
        n, acc = stats[codes[k]]
        ax.text(pt.x, pt.y, f"{codes[k]} {100 * acc:.0f}%\nn={n}", fontsize=7, ha="center", va="center",
                zorder=6, clip_on=True, path_effects=[pe.withStroke(linewidth=2, foreground="white", alpha=0.8)])
    colorbar(fig, ax, ScalarMappable(norm=norm, cmap=cmap), "test places located in the right country",
             fmt=PercentFormatter(1.0, decimals=0))
    total = sum(n for n, _ in stats.values())
    overall = sum(n * a for n, a in stats.values()) / total if total else float("nan")
    titles(fig, title or "Country accuracy per true country",
           f"{len(stats)} countries, {total} places, {100 * overall:.1f}% overall (uncoloured: no test places)")
    return fig


def write_eval_maps(predictions: Any, out_dir: str | Path, dpi: int = 100) -> dict[str, str]:
    """Write ``error_map.png`` and ``country_accuracy_map.png`` into ``out_dir``; return {title: file name}.

    ``predictions``: a DataFrame or a mapping of arrays with ``true_lat``,
    ``true_lon``, ``pred_lat``, ``pred_lon`` and optionally ``true_cc`` /
    ``pred_cc`` (ISO-2 country codes; reverse-geocoded offline when absent).
    """
    cols = _columns(predictions)
    missing = [k for k in ("true_lat", "true_lon", "pred_lat", "pred_lon") if k not in cols]
    if missing:
        raise ValueError(f"write_eval_maps: missing columns {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "true_cc" not in cols or "pred_cc" not in cols:
        from geospot.geo.geocode import country_codes

        cols["true_cc"] = country_codes(cols["true_lat"], cols["true_lon"])
        cols["pred_cc"] = country_codes(cols["pred_lat"], cols["pred_lon"])
    written = {}
    fig = error_map(cols["true_lat"], cols["true_lon"], cols["pred_lat"], cols["pred_lon"], dpi=dpi)
    fig.savefig(out / ERROR_MAP)
    written["error map"] = ERROR_MAP
    fig = country_accuracy_map(cols["true_lat"], cols["true_lon"], cols["true_cc"], cols["pred_cc"], dpi=dpi)
    fig.savefig(out / COUNTRY_MAP)
    written["country accuracy map"] = COUNTRY_MAP
    return written
