"""Distances and means on the sphere.

Degrees in, degrees out; latitude before longitude. Every computation is done
on a sphere of radius :data:`EARTH_RADIUS_KM` (the IUGG mean Earth radius):
distances with the haversine formula, means as normalised sums of 3-D unit
vectors (so longitudes wrap correctly across the antimeridian).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: the NumPy functions must not pay for it
    import torch

EARTH_RADIUS_KM: float = 6371.0088

def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points given in degrees.

    Inputs broadcast against each other (NumPy rules). Numerically stable for
    identical points (0 exactly) and antipodes (``pi * R``): ``sqrt(a)`` is
    clipped to 1 before ``arcsin``. NaN inputs give NaN.
    """
    lat1, lon1, lat2, lon2 = (_f64(v) for v in (lat1, lon1, lat2, lon2))
    half_rad = np.pi / 360.0
    # In-place steps on few temporaries: memory traffic, not arithmetic, dominates here.
    s = np.asarray(lat2 - lat1)
    s *= half_rad
    np.sin(s, out=s)
    np.square(s, out=s)
    t = np.asarray(lon2 - lon1)
    t *= half_rad
    np.sin(t, out=t)
    np.square(t, out=t)
    a = np.asarray(np.cos(np.radians(lat1)) * np.cos(np.radians(lat2)) * t)
    a += s
    return _finish(a)


def _finish(a: np.ndarray) -> np.ndarray:
    """``2 R arcsin(min(1, sqrt(a)))`` in place; 0-d results come back as NumPy scalars."""
    np.sqrt(a, out=a)
    np.minimum(a, 1.0, out=a)
    np.arcsin(a, out=a)
    a *= 2.0 * EARTH_RADIUS_KM
    return a[()]


def haversine_km_torch(lat1, lon1, lat2, lon2) -> "torch.Tensor":
    """Great-circle distance in km on tensors (degrees in; broadcasting).

    Keeps the floating dtype and device of the inputs (ints become float32).
    Differentiable everywhere with finite gradients: at identical points and at
    antipodes, where the true gradient is undefined, the gradient is 0.
    """
    import torch

    tensors = [torch.as_tensor(v) for v in (lat1, lon1, lat2, lon2)]
    dtype = torch.promote_types(torch.promote_types(tensors[0].dtype, tensors[1].dtype),
                                torch.promote_types(tensors[2].dtype, tensors[3].dtype))
    if not dtype.is_floating_point:
        dtype = torch.float32
    lat1, lon1, lat2, lon2 = (torch.deg2rad(t.to(dtype)) for t in tensors)
    sin_dlat = torch.sin((lat2 - lat1) * 0.5)
    sin_dlon = torch.sin((lon2 - lon1) * 0.5)
    a = sin_dlat * sin_dlat + torch.cos(lat1) * torch.cos(lat2) * sin_dlon * sin_dlon
    # Double-where so that neither sqrt'(0) nor arcsin'(1) (both infinite) can
    # leak inf/NaN into the backward pass.
    positive = a > 0
    root = torch.where(positive, torch.sqrt(torch.where(positive, a, torch.ones_like(a))),
                       torch.zeros_like(a))
    inside = root < 1
    angle = torch.where(inside, torch.asin(torch.where(inside, root, torch.zeros_like(root))),
                        torch.full_like(root, torch.pi / 2))
    return 2.0 * EARTH_RADIUS_KM * angle


def pairwise_haversine_km(lat_a, lon_a, lat_b, lon_b) -> np.ndarray:
    """Distances in km between every point of set A and every point of set B: ``[A, B]``."""
    lat_a, lon_a, lat_b, lon_b = (_f64(v).reshape(-1) for v in (lat_a, lon_a, lat_b, lon_b))
    if lat_a.shape != lon_a.shape or lat_b.shape != lon_b.shape:
        raise ValueError("pairwise_haversine_km: lat and lon of a set must have the same length "
                         f"(A: {lat_a.size} vs {lon_a.size}, B: {lat_b.size} vs {lon_b.size})")
    # Expand sin((b - a) / 2) with the difference formula so that every
    # trigonometric call is per point; per pair only products, sqrt and arcsin remain.
    def halves(deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.radians(deg) * 0.5
        return np.sin(r), np.cos(r)

    sa, ca = halves(lat_a)
    sb, cb = halves(lat_b)
    s = np.multiply.outer(ca, sb)
    s -= np.multiply.outer(sa, cb)
    np.square(s, out=s)
    sa, ca = halves(lon_a)
    sb, cb = halves(lon_b)
    t = np.multiply.outer(ca, sb)
    t -= np.multiply.outer(sa, cb)
    np.square(t, out=t)
    t *= np.multiply.outer(np.cos(np.radians(lat_a)), np.cos(np.radians(lat_b)))
    t += s
    return _finish(t)


def latlon_to_xyz(lat, lon) -> np.ndarray:
    """Unit vectors ``[..., 3]`` (x towards (0, 0), z towards the north pole) from degrees."""
    lat, lon = np.broadcast_arrays(np.radians(_f64(lat)), np.radians(_f64(lon)))
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def xyz_to_latlon(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude in degrees of vectors ``[..., 3]`` (need not be unit length).

    Longitudes are in ``[-180, 180]``. The zero vector has no direction and gives NaN.
    """
    xyz = _f64(xyz)
    if xyz.shape[-1:] != (3,):
        raise ValueError(f"xyz_to_latlon: expected shape [..., 3], got {xyz.shape}")
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    zero = (x == 0) & (y == 0) & (z == 0)
    if np.any(zero):
        lat = np.where(zero, np.nan, lat)
        lon = np.where(zero, np.nan, lon)
    return lat, lon


def spherical_mean(lat, lon, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean direction of points on the sphere, in degrees.

    The mean is the normalised (weighted) sum of the points' unit vectors, so
    179 and -179 average to +-180, not 0. 1-D inputs ``[K]`` give scalars;
    2-D inputs ``[B, K]`` reduce the last axis and give ``[B]`` arrays.
    ``weights`` broadcasts against ``lat`` (default: equal weights). Where the
    mean direction is undefined (no weight, or points that cancel exactly, such
    as two antipodes) the result is NaN.
    """
    lat, lon = np.broadcast_arrays(_f64(lat), _f64(lon))
    if lat.ndim not in (1, 2):
        raise ValueError(f"spherical_mean: expected 1-D [K] or 2-D [B, K] inputs, got shape {lat.shape}")
    xyz = latlon_to_xyz(lat, lon)
    if weights is not None:
        w = np.broadcast_to(_f64(weights), lat.shape)
        if np.any(w < 0):
            raise ValueError("spherical_mean: weights must be non-negative")
        xyz = xyz * w[..., None]
    total = xyz.sum(axis=-2)
    # Relative threshold: a resultant this short is rounding noise, not a direction.
    scale = np.abs(xyz).sum(axis=(-2, -1))
    norm = np.linalg.norm(total, axis=-1)
    undefined = ~(norm > 1e-12 * scale)
    total = np.where(undefined[..., None], 0.0, total)
    mean_lat, mean_lon = xyz_to_latlon(total)
    if lat.ndim == 1:
        return np.float64(mean_lat), np.float64(mean_lon)
    return mean_lat, mean_lon


def geographic_medoid(lat, lon, max_points: int = 5000, seed: int = 0) -> tuple[float, float]:
    """The data point minimising the summed great-circle distance to all points.

    Above ``max_points`` points, both the candidates and the points they are
    scored against are a seeded random subsample of ``max_points`` points, which
    keeps the cost at ``max_points**2`` distances.
    """
    lat, lon = _f64(lat).reshape(-1), _f64(lon).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"geographic_medoid: lat and lon lengths differ ({lat.size} vs {lon.size})")
    keep = np.isfinite(lat) & np.isfinite(lon)
    lat, lon = lat[keep], lon[keep]
    if lat.size == 0:
        raise ValueError("geographic_medoid: no finite coordinates")
    if max_points < 1:
        raise ValueError(f"geographic_medoid: max_points must be >= 1, got {max_points}")
    if lat.size > max_points:
        pick = np.random.default_rng(seed).choice(lat.size, size=max_points, replace=False)
        lat, lon = lat[pick], lon[pick]
    xyz = latlon_to_xyz(lat, lon)
    totals = np.empty(lat.size)
    chunk = 1024  # bounds memory at chunk * max_points distances
    for start in range(0, lat.size, chunk):
        dot = xyz[start:start + chunk] @ xyz.T
        # Central angle from the chord length; monotone in distance, so the sum ranks correctly.
        chord = np.sqrt(np.clip(2.0 - 2.0 * dot, 0.0, 4.0))
        totals[start:start + chunk] = (2.0 * np.arcsin(np.minimum(1.0, chord * 0.5))).sum(axis=1)
    best = int(np.argmin(totals))
    return float(lat[best]), float(lon[best])
