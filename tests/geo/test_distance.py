"""Distances and means on the sphere: known answers and edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geospot.geo.distance import (
    EARTH_RADIUS_KM,
    geographic_medoid,
    haversine_km,
    haversine_km_torch,
    latlon_to_xyz,
    pairwise_haversine_km,
    spherical_mean,
    xyz_to_latlon,
)

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)


def test_known_distances():
    assert haversine_km(*PARIS, *LONDON) == pytest.approx(343.56, abs=0.1)
    assert haversine_km(90, 0, -90, 0) == pytest.approx(math.pi * EARTH_RADIUS_KM, rel=1e-12)
    # One degree of latitude / of longitude on the equator.
    assert haversine_km(0, 0, 1, 0) == pytest.approx(EARTH_RADIUS_KM * math.pi / 180, rel=1e-12)
    assert haversine_km(0, 0, 0, 1) == pytest.approx(EARTH_RADIUS_KM * math.pi / 180, rel=1e-12)


def test_identical_antipodal_and_wrapped_points():
    assert haversine_km(12.3, 45.6, 12.3, 45.6) == 0.0
    antipodes = haversine_km(10.0, 20.0, -10.0, -160.0)
    # Haversine loses a little precision near antipodes (sqrt(a) ~ 1); well under a metre.
    assert antipodes == pytest.approx(math.pi * EARTH_RADIUS_KM, abs=1e-3)
    assert antipodes <= math.pi * EARTH_RADIUS_KM
    assert np.isfinite(antipodes)
    # Across the antimeridian and between the two names of the same meridian.
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(haversine_km(0, 0, 0, 1))
    assert haversine_km(30, 180, 30, -180) == pytest.approx(0.0, abs=1e-9)
    # At a pole every longitude is the same point.
    assert haversine_km(90, 0, 90, 123) == pytest.approx(0.0, abs=1e-9)


def test_broadcasting_and_nan():
    d = haversine_km(np.zeros((3, 1)), 0, 0, np.array([0.0, 1.0, 2.0, 3.0]))
    assert d.shape == (3, 4)
    np.testing.assert_allclose(d[0], np.arange(4) * EARTH_RADIUS_KM * math.pi / 180)
    assert np.isnan(haversine_km(np.nan, 0, 0, 0))


def test_symmetry_and_triangle_inequality_random():
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, (3, 1000))))
    lon = rng.uniform(-180, 180, (3, 1000))
    ab = haversine_km(lat[0], lon[0], lat[1], lon[1])
    np.testing.assert_allclose(ab, haversine_km(lat[1], lon[1], lat[0], lon[0]))
    bc = haversine_km(lat[1], lon[1], lat[2], lon[2])
    ac = haversine_km(lat[0], lon[0], lat[2], lon[2])
    assert np.all(ac <= ab + bc + 1e-6)
    assert np.all((ab >= 0) & (ab <= math.pi * EARTH_RADIUS_KM + 1e-6))


def test_torch_matches_numpy_and_has_finite_gradients():
    rng = np.random.default_rng(1)
    lat1, lat2 = rng.uniform(-90, 90, (2, 500))
    lon1, lon2 = rng.uniform(-180, 180, (2, 500))
    ref = haversine_km(lat1, lon1, lat2, lon2)
    out = haversine_km_torch(*(torch.tensor(v) for v in (lat1, lon1, lat2, lon2)))
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-9)
    out32 = haversine_km_torch(*(torch.tensor(v, dtype=torch.float32) for v in (lat1, lon1, lat2, lon2)))
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=1e-3, atol=1.0)

    # Identical points and antipodes: exact values, finite gradients.
    lat_a = torch.tensor([10.0, 10.0, 20.0], dtype=torch.float64, requires_grad=True)
    d = haversine_km_torch(lat_a, torch.tensor([5.0, 5.0, 0.0], dtype=torch.float64),
                           torch.tensor([10.0, -10.0, 21.0], dtype=torch.float64),
                           torch.tensor([5.0, -175.0, 0.0], dtype=torch.float64))
    assert d[0].item() == 0.0
    assert d[1].item() == pytest.approx(math.pi * EARTH_RADIUS_KM)
    d.sum().backward()
    assert torch.isfinite(lat_a.grad).all()
    # Moving 1 degree of latitude along a meridian changes the distance by one degree's length.
    assert lat_a.grad[2].item() == pytest.approx(-EARTH_RADIUS_KM * math.pi / 180, rel=1e-9)


def test_pairwise():
    lat_a, lon_a = np.array([0.0, 10.0]), np.array([0.0, 20.0])
    lat_b, lon_b = np.array([0.0, 5.0, -5.0]), np.array([1.0, 2.0, 3.0])
    d = pairwise_haversine_km(lat_a, lon_a, lat_b, lon_b)
    assert d.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert d[i, j] == pytest.approx(haversine_km(lat_a[i], lon_a[i], lat_b[j], lon_b[j]))
    with pytest.raises(ValueError, match="same length"):
        pairwise_haversine_km([0, 1], [0], [0], [0])


def test_xyz_roundtrip():
    rng = np.random.default_rng(2)
    lat = rng.uniform(-89.9, 89.9, 1000)
    lon = rng.uniform(-179.9, 179.9, 1000)
    xyz = latlon_to_xyz(lat, lon)
    assert xyz.shape == (1000, 3)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0)
    back_lat, back_lon = xyz_to_latlon(xyz * 3.0)  # length does not matter
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(latlon_to_xyz(90, 0), [0, 0, 1], atol=1e-15)
    assert np.isnan(xyz_to_latlon([0.0, 0.0, 0.0])[0])
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        xyz_to_latlon(np.zeros((4, 2)))


def test_spherical_mean_across_antimeridian():
    lat, lon = spherical_mean([0.0, 0.0], [179.0, -179.0])
    assert lat == pytest.approx(0.0, abs=1e-9)
    assert abs(lon) == pytest.approx(180.0)
    lat, lon = spherical_mean([10.0, 10.0], [170.0, -160.0])
    assert lon == pytest.approx(-175.0, abs=1e-6)
    assert lat > 10.0  # the great-circle midpoint bulges poleward


def test_spherical_mean_weights_and_batches():
    lat, lon = spherical_mean([0.0, 0.0], [0.0, 90.0], weights=[1.0, 0.0])
    assert (lat, lon) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    lat, lon = spherical_mean([0.0, 0.0], [0.0, 90.0], weights=[1.0, 1.0])
    assert lon == pytest.approx(45.0)
    # Weight 3 on the first point: atan(1/3) from it.
    _, lon = spherical_mean([0.0, 0.0], [0.0, 90.0], weights=[3.0, 1.0])
    assert lon == pytest.approx(math.degrees(math.atan2(1, 3)))
    # 2-D [B, K] reduces the last axis, each row like its own 1-D call.
    rng = np.random.default_rng(3)
    lat2 = rng.uniform(-60, 60, (4, 5))
    lon2 = rng.uniform(-180, 180, (4, 5))
    w2 = rng.uniform(0, 1, (4, 5))
    blat, blon = spherical_mean(lat2, lon2, weights=w2)
    assert blat.shape == blon.shape == (4,)
    for b in range(4):
        rlat, rlon = spherical_mean(lat2[b], lon2[b], weights=w2[b])
        assert blat[b] == pytest.approx(rlat) and blon[b] == pytest.approx(rlon)
    # Poles, undefined means, bad input.
    assert spherical_mean([89.0, 89.0, 89.0], [0.0, 120.0, -120.0])[0] == pytest.approx(90.0)
    assert np.isnan(spherical_mean([0.0, 0.0], [0.0, 180.0])[0])
    assert np.isnan(spherical_mean([0.0], [0.0], weights=[0.0])[0])
    with pytest.raises(ValueError, match="non-negative"):
        spherical_mean([0.0, 1.0], [0.0, 1.0], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="1-D"):
        spherical_mean(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))


def test_geographic_medoid():
    # A cluster in Europe plus one far outlier: the medoid is the cluster's central point.
    lat = np.array([48.0, 49.0, 50.0, 49.0, 49.0, -40.0])
    lon = np.array([2.0, 2.0, 2.0, 1.0, 3.0, 170.0])
    assert geographic_medoid(lat, lon) == (49.0, 2.0)
    # Across the antimeridian the middle point wins, not a point near lon 0.
    assert geographic_medoid([0.0, 0.0, 0.0], [178.0, 179.5, -178.0]) == (0.0, 179.5)
    # Subsampling is seeded: same answer twice, and a data point.
    rng = np.random.default_rng(4)
    big_lat, big_lon = rng.normal(45, 5, 3000), rng.normal(10, 5, 3000)
    a = geographic_medoid(big_lat, big_lon, max_points=500, seed=1)
    assert a == geographic_medoid(big_lat, big_lon, max_points=500, seed=1)
    assert np.any((big_lat == a[0]) & (big_lon == a[1]))
    assert haversine_km(a[0], a[1], 45, 10) < 150
    with pytest.raises(ValueError, match="no finite"):
        geographic_medoid([np.nan], [0.0])
