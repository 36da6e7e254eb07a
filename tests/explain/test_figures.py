"""Explain and audit figures read without the docs: photo beside overlay, captions, colour bars, numbers."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from geospot.explain.figures import (gradcam_caption, gradcam_examples_figure, gradcam_figure, mean_gradcam_figure,
                                     occlusion_grid_figure)


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [t.get_text() for t in ax.texts] + [ax.get_title(), ax.get_ylabel(), ax.get_xlabel()]
    return " | ".join(parts)


def _photo(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_gradcam_figure_shows_photo_overlay_colourbar_and_caption():
    cam = np.zeros((64, 64), np.float32)
    cam[40:, 40:] = 1.0
    caption = gradcam_caption("s2:4767", 0.477, "near Zagreb, Croatia", truth=(45.9, 16.7), cell_latlon=(45.7, 16.7))
    assert "s2:4767" in caption and "47.7%" in caption and "truth 45.90°N 16.70°E" in caption and "22 km" in caption
    fig = gradcam_figure(_photo(), cam, caption=caption, title="0.jpg")
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # photo, overlay, colour bar
    photo_ax, cam_ax, bar = fig.axes
    shown = photo_ax.images[0].get_array()
    assert np.array_equal(np.asarray(shown), np.asarray(_photo()))  # the photo itself, untouched, on the left
    assert not np.array_equal(np.asarray(cam_ax.images[0].get_array()), np.asarray(shown))
    text = _texts(fig)
    assert caption in text and "0.jpg" in text and "Grad-CAM" in text and "0 = no evidence" in text


def test_examples_figure_has_one_row_per_example():
    cams = [np.random.default_rng(k).random((64, 64)).astype(np.float32) for k in range(3)]
    fig = gradcam_examples_figure([(_photo(k), cams[k], f"photo {k}") for k in range(3)])
    assert len(fig.axes) == 3 * 2 + 1
    assert all(f"photo {k}" in _texts(fig) for k in range(3))


def test_occlusion_grid_is_annotated_with_each_regions_change():
    drops = np.array([[0.02, 0.05, 0.01], [0.08, 0.12, 0.03], [-0.01, 0.04, 0.45]])
    rows = [{"name": f"grid r{i}c{j}", "rel_drop": float(v), "flagged": (i, j) == (2, 2)}
            for (i, j), v in np.ndenumerate(drops)]
    rows.append({"name": "bottom strip", "rel_drop": 0.3, "flagged": False})  # not part of the grid
    fig = occlusion_grid_figure(rows)
    text = _texts(fig)
    for v in drops.ravel():
        assert f"{-100 * v:+.1f}%" in text
    assert "SHORTCUT" in text and "Occlusion audit" in text and "GeoScore change" in text
    assert len(fig.axes) == 2  # grid + colour bar
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (3, 3) and grid[2, 2] == -0.45
    assert occlusion_grid_figure([{"name": "bottom strip", "rel_drop": 0.3}]) is None


def test_mean_gradcam_figure_has_title_and_colourbar():
    fig = mean_gradcam_figure(np.random.default_rng(0).random((32, 32)), 12)
    assert "Mean Grad-CAM over 12 images" in _texts(fig) and len(fig.axes) == 2
