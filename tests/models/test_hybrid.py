"""Hybrid head (OSV-5M): per-cell offset regression moves answers off the cell centroids."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.geo.cells import build_cells
from geospot.geo.distance import haversine_km
from geospot.models.hybrid import HybridOffsets, destination, fit_hybrid, hybrid_estimate, tangent_offsets_km


@pytest.mark.parametrize("c_lat,c_lon", [(45.0, 16.0), (10.0, 179.9), (-10.0, -179.95), (89.0, 30.0)])
def test_offsets_and_destination_are_inverse(c_lat, c_lon):
    rng = np.random.default_rng(0)
    off = rng.uniform(-300, 300, (50, 2))
    lat, lon = destination(np.full(50, c_lat), np.full(50, c_lon), off)
    assert (np.abs(lon) <= 180).all()
    np.testing.assert_allclose(haversine_km(c_lat, c_lon, lat, lon), np.hypot(off[:, 0], off[:, 1]), rtol=1e-9)
    np.testing.assert_allclose(tangent_offsets_km(lat, lon, np.full(50, c_lat), np.full(50, c_lon)), off, atol=1e-6)


def _data(n=600, seed=0):
    """Places in a few 300 km cells; the embedding carries the cell and (noisily) the position inside it."""
    rng = np.random.default_rng(seed)
    centres = np.array([[45.0, 16.0], [40.0, -3.0], [-33.9, 151.0], [10.0, 179.5]])
    which = rng.integers(0, len(centres), n)
    off = rng.uniform(-100, 100, (n, 2))
    lat, lon = destination(centres[which, 0], centres[which, 1], off)
    emb = np.concatenate([np.eye(len(centres))[which] * 2.0, off / 100.0 + 0.05 * rng.normal(size=(n, 2)),
                          0.1 * rng.normal(size=(n, 8))], axis=1).astype(np.float32)
    return emb, lat, lon


def test_hybrid_beats_the_centroid_when_the_embedding_knows_the_offset(tmp_path):
    emb, lat, lon = _data()
    cells = build_cells(lat, lon, "s2", min_per_cell=5, max_per_cell=10_000, min_level=3, max_level=3)
    head = fit_hybrid(emb[:500], lat[:500], lon[:500], cells, epochs=150, batch_size=500, lr=0.05, weight_decay=0.0)
    idx = cells.assign(lat[500:], lon[500:], nearest=True)
    h_lat, h_lon = hybrid_estimate(head, emb[500:], idx, cells)
    centroid_err = haversine_km(cells.centroid_lat[idx], cells.centroid_lon[idx], lat[500:], lon[500:])
    hybrid_err = haversine_km(h_lat, h_lon, lat[500:], lon[500:])
    assert np.median(hybrid_err) < 0.5 * np.median(centroid_err)
    assert len(np.unique(np.round(h_lat, 4))) > 50  # no longer snapped to a handful of centroids
    head.save(tmp_path)
    back = HybridOffsets.load(tmp_path, cells)
    b_lat, _ = hybrid_estimate(back, emb[500:], idx, cells)
    np.testing.assert_allclose(b_lat, h_lat)
    with pytest.raises(ValueError, match="another cell table"):
        HybridOffsets.load(tmp_path, build_cells(lat, lon, "s2", min_per_cell=5, max_per_cell=50))


def test_offsets_are_clipped_to_max_scales():
    emb, lat, lon = _data(200)
    cells = build_cells(lat, lon, "s2", min_per_cell=5, max_per_cell=10_000, min_level=3, max_level=3)
    head = fit_hybrid(emb, lat, lon, cells, epochs=5)
    idx = cells.assign(lat, lon, nearest=True)
    h_lat, h_lon = hybrid_estimate(head, emb * 50, idx, cells, max_scales=1.0)  # absurd inputs, huge offsets
    moved = haversine_km(h_lat, h_lon, cells.centroid_lat[idx], cells.centroid_lon[idx])
    assert (moved <= head.scale_km.numpy()[idx] * 1.0 + 1e-6).all()
