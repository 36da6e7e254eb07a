"""The skeptic's baselines: predictions that use no pixels, only training coordinates.

A geolocation model is only interesting by how much it beats these. Both take
the *training* coordinates (never the test ones, which would leak) and return
``n_test`` predictions as float64 ``(lat, lon)`` arrays in degrees.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from geospot.geo.distance import geographic_medoid


def _train_coords(train_lat: Any, train_lon: Any) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(train_lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(train_lon, dtype=np.float64).reshape(-1)
    if lat.size != lon.size:
        raise ValueError(f"train_lat ({lat.size}) and train_lon ({lon.size}) differ in length")
    if lat.size == 0:
        raise ValueError("baselines need at least one training location")
    bad = np.flatnonzero(~(np.isfinite(lat) & np.isfinite(lon)))
    if bad.size:
        raise ValueError(f"training coordinates are not finite at index {bad[:10].tolist()}")
    return lat, lon


def _check_n(n_test: int) -> int:
    if int(n_test) != n_test or n_test < 0:
        raise ValueError(f"n_test must be a non-negative integer, got {n_test!r}")
    return int(n_test)


def medoid_baseline(train_lat: Any, train_lon: Any, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Predict the training set's geographic medoid for every test item.

    Why a skeptic asks: on an unbalanced dataset (e.g. a third of the images in
    the US) always answering "the middle of the data" already scores well on
    the median error and at continent scale. A model's gain over this constant
    guess is the part that comes from looking at the image. The medoid (a real
    training location minimising the summed great-circle distance) is used
    rather than the mean, which can fall in an ocean.
    """
    lat, lon = _train_coords(train_lat, train_lon)
    n = _check_n(n_test)
    m_lat, m_lon = geographic_medoid(lat, lon)
    return np.full(n, float(m_lat), dtype=np.float64), np.full(n, float(m_lon), dtype=np.float64)


def random_location_baseline(
    train_lat: Any, train_lon: Any, n_test: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Predict a uniformly drawn training location for every test item (seeded).

    Why a skeptic asks: this is chance level *under the data's own
    distribution*. It shows how much accuracy the sampling density alone gives
    (e.g. many test images near many training images in one country), which a
    model gets for free by mimicking the label prior.
    """
    lat, lon = _train_coords(train_lat, train_lon)
    n = _check_n(n_test)
    idx = np.random.default_rng(seed).integers(0, lat.size, size=n)
    return lat[idx].copy(), lon[idx].copy()
