"""Readable explain and audit figures: each picture says what it shows without the docs.

- :func:`gradcam_figure`: the photo as the network saw it beside its Grad-CAM
  overlay, a colour bar and a caption (predicted cell and place, probability,
  truth when known).
- :func:`gradcam_examples_figure`: several of those, one row each.
- :func:`mean_gradcam_figure`: the mean heatmap with a colour bar and a title.
- :func:`occlusion_grid_figure`: the audit's occlusion grid, each region
  annotated with the GeoScore change when it is hidden.

All return a ``matplotlib.figure.Figure`` (Agg, no pyplot).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from geospot.explain.gradcam import overlay

_CAM_LABEL = "Grad-CAM: 0 = no evidence, 1 = strongest"


def _figure(width_in: float, height_in: float, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _jet():
    # The same ramp as `jet_colormap`, which paints the overlays.
    import matplotlib

    return matplotlib.colormaps["jet"]


def gradcam_caption(cell_id: str, prob: float, place: str = "", truth: tuple[float, float] | None = None,
                    cell_latlon: tuple[float, float] | None = None) -> str:
    """``predicted cell s2:4767 (near Zagreb, Croatia), p = 47.7% · truth 45.90°N 16.70°E, 23 km from the cell``."""
    text = f"predicted cell {cell_id}" + (f" ({place})" if place else "") + f", p = {100 * float(prob):.1f}%"
    if truth is not None:
        lat, lon = truth
        text += f"  ·  truth {abs(lat):.2f}°{'N' if lat >= 0 else 'S'} {abs(lon):.2f}°{'E' if lon >= 0 else 'W'}"
        if cell_latlon is not None:
            from geospot.geo.distance import haversine_km

            text += f", {float(haversine_km(lat, lon, *cell_latlon)):.0f} km from the cell's centre"
    return text


def _pair(fig, axes_photo, axes_cam, photo, cam, alpha: float):
    axes_photo.imshow(np.asarray(photo))
    axes_photo.set_title("what the model saw", fontsize=9)
    shown = axes_cam.imshow(np.asarray(overlay(photo, cam, alpha=alpha)))
    axes_cam.set_title("where it looked (Grad-CAM)", fontsize=9)
    for ax in (axes_photo, axes_cam):
        ax.set_xticks([])
        ax.set_yticks([])
    return shown


def _cam_colorbar(fig, cax):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cb = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=_jet()), cax=cax)
    cb.set_label(_CAM_LABEL, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return cb


def gradcam_figure(photo, cam: np.ndarray, caption: str = "", title: str = "", alpha: float = 0.45, dpi: int = 100):
    """The photo (as the network saw it) beside its Grad-CAM overlay, with a colour bar and a caption."""
    fig = _figure(7.4, 4.0 if caption or title else 3.6, dpi=dpi)
    ax1 = fig.add_axes([0.02, 0.14, 0.42, 0.72])
    ax2 = fig.add_axes([0.47, 0.14, 0.42, 0.72])
    cax = fig.add_axes([0.905, 0.18, 0.018, 0.64])
    _pair(fig, ax1, ax2, photo, cam, alpha)
    _cam_colorbar(fig, cax)
    if title:
        fig.text(0.5, 0.975, title, ha="center", va="top", fontsize=11, fontweight="bold")
    if caption:
        fig.text(0.5, 0.05, caption, ha="center", va="center", fontsize=8.5, wrap=True)
    return fig


def gradcam_examples_figure(examples: Sequence[tuple], title: str = "Grad-CAM examples", alpha: float = 0.45,
                            dpi: int = 100):
    """One row per ``(photo, cam, caption)``: photo, overlay, caption; one shared colour bar."""
    n = len(examples)
    if n == 0:
        raise ValueError("gradcam_examples_figure: no examples")
    row_in = 2.6
    fig = _figure(7.4, 0.8 + row_in * n, dpi=dpi)
    h = fig.get_figheight()
    for k, (photo, cam, caption) in enumerate(examples):
        top = 1 - (0.7 + k * row_in) / h
        bottom = top - (row_in - 0.45) / h
        ax1 = fig.add_axes([0.02, bottom, 0.42, top - bottom])
        ax2 = fig.add_axes([0.47, bottom, 0.42, top - bottom])
        _pair(fig, ax1, ax2, photo, cam, alpha)
        if caption:
            fig.text(0.5, bottom - 0.08 / h, caption, ha="center", va="top", fontsize=8)
    cax = fig.add_axes([0.905, 0.1, 0.018, 0.8])
    _cam_colorbar(fig, cax)
    fig.text(0.5, 1 - 0.1 / h, title, ha="center", va="top", fontsize=11, fontweight="bold")
    return fig


def mean_gradcam_figure(mean: np.ndarray, n_images: int, image=None, alpha: float = 0.45, dpi: int = 100):
    """The mean heatmap (peak-normalised), over the mean image when given, with a colour bar and a title."""
    mean = np.asarray(mean, dtype=np.float32)
    peak = float(mean.max())
    norm = mean / peak if peak > 0 else mean
    fig = _figure(4.6, 4.4, dpi=dpi)
    ax = fig.add_axes([0.04, 0.06, 0.74, 0.78])
    cax = fig.add_axes([0.82, 0.1, 0.03, 0.7])
    if image is not None:
        ax.imshow(np.asarray(overlay(image, norm, alpha=alpha)))
    else:
        ax.imshow(norm, cmap=_jet(), vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    _cam_colorbar(fig, cax)
    fig.text(0.5, 0.975, f"Mean Grad-CAM over {n_images} images", ha="center", va="top", fontsize=11,
             fontweight="bold")
    fig.text(0.5, 0.905, "top predicted cell; the centre crop the network sees", ha="center", va="top", fontsize=8,
             color="#444444")
    return fig


def occlusion_grid_figure(rows: Sequence[dict], dpi: int = 100):
    """The occlusion grid: each region's GeoScore change when hidden, written in it and coloured.

    ``rows`` are the audit's per-mask results (``name`` ``"grid r{i}c{j}"``,
    ``rel_drop``, ``flagged``); other masks are ignored. Returns None when
    there is no grid.
    """
    from matplotlib.colors import TwoSlopeNorm

    cells = {}
    flagged = set()
    for r in rows:
        name = str(r.get("name", ""))
        if name.startswith("grid r") and "c" in name[6:]:
            i, j = name[6:].split("c", 1)
            cells[(int(i), int(j))] = -float(r["rel_drop"])  # a drop is a negative change
            if r.get("flagged"):
                flagged.add((int(i), int(j)))
    if not cells:
        return None
    g = max(max(i, j) for i, j in cells) + 1
    change = np.full((g, g), np.nan, dtype=np.float64)
    for (i, j), v in cells.items():
        change[i, j] = v
    span = max(float(np.nanmax(np.abs(change))), 0.01)
    norm = TwoSlopeNorm(vmin=-span, vcenter=0.0, vmax=span)
    fig = _figure(5.2, 4.8, dpi=dpi)
    ax = fig.add_axes([0.12, 0.06, 0.64, 0.76])
    cax = fig.add_axes([0.8, 0.1, 0.03, 0.68])
    import matplotlib

    cmap = matplotlib.colormaps["RdBu"]  # red: hiding the region hurts; blue: it helps
    im = ax.imshow(change, cmap=cmap, norm=norm)
    for (i, j), v in cells.items():
        dark = abs(norm(v) - 0.5) > 0.3
        ax.text(j, i, f"{100 * v:+.1f}%" + ("\nSHORTCUT" if (i, j) in flagged else ""), ha="center", va="center",
                fontsize=11 if g <= 4 else 8, fontweight="bold", color="white" if dark else "black")
    ax.set_xticks(range(g))
    ax.set_yticks(range(g))
    ax.set_xticklabels([f"col {j + 1}" for j in range(g)], fontsize=8)
    ax.set_yticklabels([f"row {i + 1}" for i in range(g)], fontsize=8)
    cb = fig.colorbar(im, cax=cax, format=matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    cb.set_label("GeoScore change when the region is hidden", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    fig.text(0.5, 0.975, "Occlusion audit: hide one region of every photo", ha="center", va="top", fontsize=11,
             fontweight="bold")
    fig.text(0.5, 0.905, "red = the model needs this region; a big drop in a small region is a shortcut",
             ha="center", va="top", fontsize=8, color="#444444")
    return fig
