"""Retrieval: exact/FAISS gallery search, kNN geolocation, PIGEON prototypes and refinement."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.geo.cells import build_cells
from geospot.geo.distance import haversine_km
from geospot.models.refine import Gallery, Prototypes, build_prototypes, knn_locate, knn_refine, refine


def _places(n_places=40, views=3, dim=16, seed=0):
    """Each place has its own embedding direction; its views are noisy copies of it."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-60, 60, n_places)
    lon = rng.uniform(-180, 180, n_places)
    centre = rng.normal(size=(n_places, dim))
    emb = np.repeat(centre, views, 0) + 0.05 * rng.normal(size=(n_places * views, dim))
    return emb.astype(np.float32), np.repeat(lat, views), np.repeat(lon, views), np.repeat(np.arange(n_places), views), centre


def test_exact_search_matches_brute_force_and_faiss():
    emb, lat, lon, _, _ = _places()
    q = np.random.default_rng(1).normal(size=(7, emb.shape[1]))
    g = Gallery(emb, lat, lon, backend="numpy")
    sims, idx = g.search(q, 5)
    norm = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    brute = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ norm.T
    np.testing.assert_array_equal(idx, np.argsort(-brute, axis=1)[:, :5])
    np.testing.assert_allclose(sims, np.sort(brute, axis=1)[:, ::-1][:, :5], rtol=1e-5)
    assert g.search(q, 10_000)[1].shape == (7, len(g))  # k above the gallery size: all rows
    pytest.importorskip("faiss")
    f_sims, f_idx = Gallery(emb, lat, lon, backend="faiss").search(q, 5)
    np.testing.assert_array_equal(f_idx, idx)
    np.testing.assert_allclose(f_sims, sims, rtol=1e-4)
    with pytest.raises(ValueError, match="queries must be"):
        g.search(np.ones((2, 3)), 1)


def test_knn_locate_finds_the_place_and_votes_for_a_mode():
    emb, lat, lon, place, centre = _places()
    g = Gallery(emb, lat, lon)
    est_lat, est_lon = knn_locate(centre[:5], g, k=3)
    assert (haversine_km(est_lat, est_lon, lat[::3][:5], lon[::3][:5]) < 1).all()
    # Neighbours split between two far places: the answer is the better-supported one, not a midpoint.
    two = Gallery(np.array([[1, 0], [1, 0.01], [1, -0.01], [0.99, 0.2]], np.float32),
                  [45.0, 45.0, 45.0, -33.0], [16.0, 16.0, 16.0, 151.0])
    a_lat, a_lon = knn_locate(np.array([[0.98, 0.2]]), two, k=4, temperature=1.0)
    assert haversine_km(a_lat[0], a_lon[0], 45.0, 16.0) < 1


def test_prototypes_cluster_places_within_cells_and_round_trip(tmp_path):
    emb, lat, lon, place, _ = _places()
    cells = build_cells(lat, lon, "grid", cell_km=3000.0)
    protos = build_prototypes(emb, lat, lon, cells, radius_km=50.0, groups=place)
    assert protos.count.sum() == len(emb)
    # Places are 100s of km apart: one prototype per place, each in its place's cell.
    assert len(protos.lat) == 40
    np.testing.assert_array_equal(protos.cell, cells.assign(protos.lat, protos.lon, nearest=True))
    protos.save(tmp_path)
    back = Prototypes.load(tmp_path, cells)
    np.testing.assert_allclose(back.emb, protos.emb, atol=1e-3)  # stored as float16
    np.testing.assert_array_equal(back.cell, protos.cell)
    with pytest.raises(ValueError, match="another cell table"):
        Prototypes.load(tmp_path, build_cells(lat, lon, "grid", cell_km=1000.0))


def test_prototype_mean_is_spherical_across_the_antimeridian():
    cells = build_cells(np.array([10.0, 10.0]), np.array([179.9, -179.9]), "s2", min_per_cell=1, max_per_cell=10,
                        min_level=0)
    assert len(cells) == 1
    protos = build_prototypes(np.eye(2, dtype=np.float32), [10.0, 10.0], [179.9, -179.9], cells, radius_km=50.0)
    assert len(protos.lat) == 1 and abs(abs(protos.lon[0]) - 180.0) < 1e-6


def test_refine_moves_to_the_matching_prototype_only_within_max_km():
    emb, lat, lon, place, centre = _places()
    cells = build_cells(lat, lon, "grid", cell_km=3000.0)
    protos = build_prototypes(emb, lat, lon, cells, radius_km=50.0, groups=place)
    target = 7
    t_lat, t_lon = lat[3 * target], lon[3 * target]
    probs = np.full((1, len(cells)), 1e-3)
    probs[0, cells.assign([t_lat], [t_lon])[0]] = 1.0
    probs /= probs.sum()
    c = cells.assign([t_lat], [t_lon])[0]
    base_lat, base_lon = cells.centroid_lat[[c]], cells.centroid_lon[[c]]
    r_lat, r_lon, done = refine(probs, centre[[target]], protos, base_lat, base_lon, max_km=20000)
    assert done[0] and haversine_km(r_lat[0], r_lon[0], t_lat, t_lon) < 1
    k_lat, k_lon, k_done = knn_refine(probs, centre[[target]], Gallery(emb, lat, lon), cells, base_lat, base_lon,
                                      max_km=20000)
    assert k_done[0] and haversine_km(k_lat[0], k_lon[0], t_lat, t_lon) < 1
    far = float(haversine_km(t_lat, t_lon, base_lat[0], base_lon[0]))
    s_lat, s_lon, s_done = refine(probs, centre[[target]], protos, base_lat, base_lon, max_km=far / 2)
    assert not s_done[0] and (s_lat[0], s_lon[0]) == (base_lat[0], base_lon[0])
