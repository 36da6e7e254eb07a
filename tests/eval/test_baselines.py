"""The skeptic's baselines."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.eval.baselines import medoid_baseline, random_location_baseline
from geospot.eval.metrics import distance_metrics


def _cluster():
    # Four points around Paris and one in Sydney: the medoid must be a Paris point.
    lat = np.array([48.85, 48.86, 48.87, 48.84, -33.87])
    lon = np.array([2.35, 2.34, 2.36, 2.33, 151.21])
    return lat, lon


def test_medoid_baseline_repeats_a_training_point():
    lat, lon = _cluster()
    p_lat, p_lon = medoid_baseline(lat, lon, 7)
    assert p_lat.shape == (7,) and p_lon.shape == (7,)
    assert p_lat.dtype == np.float64
    assert np.all(p_lat == p_lat[0]) and np.all(p_lon == p_lon[0])
    assert any((p_lat[0], p_lon[0]) == (a, b) for a, b in zip(lat, lon))
    assert 48.8 < p_lat[0] < 48.9  # not Sydney, not the (oceanic) mean
    assert medoid_baseline(lat, lon, 0)[0].shape == (0,)


def test_random_location_baseline_is_seeded_and_from_training_set():
    lat, lon = _cluster()
    a = random_location_baseline(lat, lon, 200, seed=3)
    b = random_location_baseline(lat, lon, 200, seed=3)
    c = random_location_baseline(lat, lon, 200, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    pairs = set(zip(lat.tolist(), lon.tolist()))
    assert all(p in pairs for p in zip(a[0].tolist(), a[1].tolist()))
    # Draws cover the training set (Sydney is 1 in 5: seen in 200 draws).
    assert np.isclose(a[0], -33.87).any()
    # The returned arrays are fresh copies: writing them leaves the training data intact.
    a[0][:] = 0.0
    assert lat[0] == 48.85


def test_model_should_beat_baselines_on_clustered_data():
    # The medoid of a clustered training set is near most test points: a baseline that scores.
    lat, lon = _cluster()
    m = distance_metrics(*medoid_baseline(lat, lon, 4), lat[:4], lon[:4])
    assert m["acc_25km"] == 1.0


def test_baselines_reject_bad_training_data():
    with pytest.raises(ValueError, match="at least one"):
        medoid_baseline([], [], 3)
    with pytest.raises(ValueError, match="differ in length"):
        random_location_baseline([1.0, 2.0], [1.0], 3)
    with pytest.raises(ValueError, match="not finite at index \\[1\\]"):
        random_location_baseline([1.0, np.nan], [1.0, 2.0], 3)
    with pytest.raises(ValueError, match="n_test"):
        medoid_baseline([1.0], [1.0], -1)
