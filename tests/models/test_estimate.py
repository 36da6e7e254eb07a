"""Point estimates and confidence radii against hand-computed answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geospot.geo.distance import EARTH_RADIUS_KM, haversine_km
from geospot.models.estimate import point_estimates

KM_PER_DEG = np.pi * EARTH_RADIUS_KM / 180.0


def test_top_cells_sorted_and_top_estimate_is_argmax_centroid():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    cell_lat, cell_lon = np.array([10.0, 20.0, 30.0]), np.array([1.0, 2.0, 3.0])
    est = point_estimates(probs, cell_lat, cell_lon, top_k=2)
    np.testing.assert_array_equal(est["top_idx"], [[1, 2], [0, 2]])
    np.testing.assert_allclose(est["top_prob"], [[0.6, 0.3], [0.5, 0.3]])
    np.testing.assert_allclose(est["top_lat"][:, 0], [20.0, 10.0])
    np.testing.assert_allclose(est["top_lon"][:, 0], [2.0, 1.0])
    assert est["top_idx"].dtype == np.int64 and est["mean_lat"].shape == (2,)


def test_weighted_mean_of_two_centroids_on_the_equator():
    # Two centroids on the equator 10 degrees apart, weights 3:1 (renormalised
    # from 0.6/0.2). Unit vectors: the mean direction has
    # tan(lon) = 0.25 sin(10 deg) / (0.75 + 0.25 cos(10 deg)).
    probs = np.array([[0.6, 0.2, 0.2]])
    est = point_estimates(probs, [0.0, 0.0, 45.0], [0.0, 10.0, 100.0], top_k=2)
    expected_lon = np.degrees(np.arctan2(0.25 * np.sin(np.radians(10)), 0.75 + 0.25 * np.cos(np.radians(10))))
    assert est["mean_lat"][0] == pytest.approx(0.0, abs=1e-12)
    assert est["mean_lon"][0] == pytest.approx(expected_lon, abs=1e-9)
    # The third cell is outside the top-2 and must not pull the mean.
    assert 2.0 < est["mean_lon"][0] < 3.0


def test_weighted_mean_across_the_antimeridian():
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25]], dtype=torch.float32)
    est = point_estimates(probs, [0.0, 0.0], [179.0, -179.0], top_k=5)  # top_k clipped to C
    assert est["top_idx"].shape == (2, 2)
    assert abs(est["mean_lon"][0]) == pytest.approx(180.0, abs=1e-9)
    assert est["mean_lat"][0] == pytest.approx(0.0, abs=1e-12)
    # 3:1 towards 179: strictly between 179 and 180, never near 0.
    assert 179.0 < est["mean_lon"][1] < 180.0
    expected = 180.0 - np.degrees(np.arctan2(0.5 * np.sin(np.radians(1)), np.cos(np.radians(1))))
    assert est["mean_lon"][1] == pytest.approx(expected, abs=1e-6)


def test_cancelling_centroids_fall_back_to_top_cell():
    est = point_estimates(np.array([[0.5, 0.5]]), [0.0, 0.0], [0.0, 180.0], top_k=2)
    assert np.isfinite(est["mean_lat"]).all()
    assert (est["mean_lat"][0], est["mean_lon"][0]) == (0.0, 0.0)


def test_point_estimate_input_errors():
    with pytest.raises(ValueError, match="cells"):
        point_estimates(np.ones((1, 3)) / 3, [0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="row 1"):
        point_estimates(np.array([[1.0, 0.0], [np.nan, 1.0]]), [0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="top_k"):
        point_estimates(np.array([[1.0, 0.0]]), [0.0, 1.0], [0.0, 1.0], top_k=0)


def test_local_mean_ignores_rival_hypotheses_far_from_the_top_cell():
    # two nearby cells in Europe and a rival in Australia
    cell_lat = np.array([48.0, 50.0, -25.0])
    cell_lon = np.array([2.0, 4.0, 134.0])
    probs = np.array([[0.5, 0.2, 0.3]])
    est = point_estimates(probs, cell_lat, cell_lon, top_k=3, local_km=1000)
    from geospot.geo.distance import spherical_mean

    exp_lat, exp_lon = spherical_mean(cell_lat[:2], cell_lon[:2], weights=np.array([0.5, 0.2]))
    assert np.allclose([est["local_lat"][0], est["local_lon"][0]], [exp_lat, exp_lon])
    # the plain top-k mean is dragged towards the rival; the local one stays in Europe
    assert haversine_km(est["local_lat"], est["local_lon"], 48.5, 2.7)[0] < 200
    assert haversine_km(est["mean_lat"], est["mean_lon"], est["local_lat"], est["local_lon"])[0] > 1000


def test_local_mean_equals_topk_mean_when_all_cells_are_near():
    cell_lat = np.array([45.0, 45.5, 46.0])
    cell_lon = np.array([15.0, 15.5, 16.0])
    probs = np.array([[0.2, 0.5, 0.3]])
    est = point_estimates(probs, cell_lat, cell_lon, top_k=3, local_km=1000)
    assert np.allclose(est["local_lat"], est["mean_lat"]) and np.allclose(est["local_lon"], est["mean_lon"])


def test_given_centroid_vectors_give_the_spherical_means_of_geo_distance():
    """The means come from one pass over the top cells' unit vectors (kept by an answer context);
    they must equal `spherical_mean` of the same cells and weights, poles and antimeridian included."""
    from geospot.geo.distance import latlon_to_xyz, spherical_mean

    rng = np.random.default_rng(3)
    lat = np.concatenate([[90.0, -90.0, 10.0, -10.0], rng.uniform(-89, 89, 36)])
    lon = np.concatenate([[0.0, 45.0, 179.9, -179.9], rng.uniform(-180, 180, 36)])
    probs = rng.dirichlet(np.full(lat.size, 0.3), size=16)
    plain = point_estimates(probs, lat, lon, top_k=6, local_km=3000.0)
    given = point_estimates(probs, lat, lon, top_k=6, local_km=3000.0, cell_xyz=latlon_to_xyz(lat, lon))
    for key in plain:
        np.testing.assert_array_equal(plain[key], given[key])
    w = plain["top_prob"] / plain["top_prob"].sum(1, keepdims=True)
    want_lat, want_lon = spherical_mean(plain["top_lat"], plain["top_lon"], weights=w)
    np.testing.assert_allclose(plain["mean_lat"], want_lat, atol=1e-9)
    assert np.all(haversine_km(plain["mean_lat"], plain["mean_lon"], want_lat, want_lon) < 1e-6)
