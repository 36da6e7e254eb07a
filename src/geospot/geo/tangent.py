"""Offsets on the sphere in the azimuthal-equidistant plane at a centre (torch-free; used by the hybrid head)."""
from __future__ import annotations

import numpy as np

from geospot.geo.distance import EARTH_RADIUS_KM, haversine_km


def tangent_offsets_km(lat, lon, c_lat, c_lon) -> np.ndarray:
    """East/north km ``[N, 2]`` of points from centres in the azimuthal equidistant plane (exact distance and bearing)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, np.float64)) for a in (c_lat, c_lon, lat, lon))
    d = haversine_km(c_lat, c_lon, lat, lon)
    dlon = lon2 - lon1
    bearing = np.arctan2(np.sin(dlon) * np.cos(lat2),
                         np.cos(lat1) * np.sin(lat2) - np.sin(lat1) * np.cos(lat2) * np.cos(dlon))
    return np.stack([d * np.sin(bearing), d * np.cos(bearing)], axis=-1)


def destination(c_lat, c_lon, offsets_km) -> tuple[np.ndarray, np.ndarray]:
    """Points at east/north ``offsets_km [N, 2]`` from centres (inverse of :func:`tangent_offsets_km`)."""
    off = np.asarray(offsets_km, np.float64)
    delta = np.hypot(off[:, 0], off[:, 1]) / EARTH_RADIUS_KM
    theta = np.arctan2(off[:, 0], off[:, 1])
    lat1, lon1 = np.radians(np.asarray(c_lat, np.float64)), np.radians(np.asarray(c_lon, np.float64))
    lat2 = np.arcsin(np.clip(np.sin(lat1) * np.cos(delta) + np.cos(lat1) * np.sin(delta) * np.cos(theta), -1, 1))
    lon2 = lon1 + np.arctan2(np.sin(theta) * np.sin(delta) * np.cos(lat1), np.cos(delta) - np.sin(lat1) * np.sin(lat2))
    return np.degrees(lat2), (np.degrees(lon2) + 540.0) % 360.0 - 180.0
