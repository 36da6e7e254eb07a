"""The tiled land mask answers exactly like global_land_mask, and loads fast once built."""
from __future__ import annotations

import time

import numpy as np
import pytest

from geospot.geo import landmask


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    globe = pytest.importorskip("global_land_mask.globe")
    folder = landmask.build(globe._mask, globe._lat, globe._lon, tmp_path_factory.mktemp("lm") / "mask")
    return globe, landmask._load(folder), folder


def test_identical_to_global_land_mask(pair):
    globe, mask, _ = pair
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 200_000), rng.uniform(-180, 180, 200_000)
    assert np.array_equal(mask.is_land(lat, lon), globe.is_land(lat, lon))
    # coasts, where the coastal tiles' bits decide: points near land/sea changes
    coast_lat, coast_lon = np.repeat(np.linspace(-60, 75, 400), 400), np.tile(np.linspace(-180, 180, 400), 400)
    jitter = rng.uniform(-0.05, 0.05, (2, coast_lat.size))
    lat2, lon2 = np.clip(coast_lat + jitter[0], -90, 90), np.clip(coast_lon + jitter[1], -180, 180)
    assert np.array_equal(mask.is_ocean(lat2, lon2), globe.is_ocean(lat2, lon2))
    # edges, poles, the antimeridian and exact grid lines
    edge_lat = np.array([90, -90, 0, 89.99166666666667, -89.99166666666667, 45.0, 12.008333333333333, -33.87])
    edge_lon = np.array([180, -180, 0, 179.99166666666667, -179.99166666666667, 180.0, -180.0, 151.21])
    assert np.array_equal(mask.is_land(edge_lat, edge_lon), globe.is_land(edge_lat, edge_lon))
    assert mask.is_land(-33.87, 151.21) == globe.is_land(-33.87, 151.21)  # scalars too
    assert bool(mask.is_land(48.85, 2.35)) and not bool(mask.is_land(0.0, -30.0))  # Paris; mid-Atlantic


def test_bad_coordinates_are_refused_and_inputs_untouched(pair):
    _, mask, _ = pair
    lat = np.array([95.0, 10.0])
    with pytest.raises(ValueError, match="latitude"):
        mask.is_land(lat, np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="longitude"):
        mask.is_land(0.0, 181.0)
    with pytest.raises(ValueError, match="finite"):
        mask.is_land(np.nan, 0.0)
    ok = np.array([90.0, -90.0])
    mask.is_land(ok, np.array([0.0, 0.0]))
    assert ok.tolist() == [90.0, -90.0]  # clamping worked on a copy


def test_compact_and_fast_to_load(pair):
    _, _, folder = pair
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 20e6
    t = time.perf_counter()
    mask = landmask._load(folder)
    mask.is_land(np.zeros(10), np.zeros(10))
    assert time.perf_counter() - t < 0.3
