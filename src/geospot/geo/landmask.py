"""Land or sea at ~1 km, loaded in milliseconds: a tiled, bit-packed copy of `global_land_mask`.

`global_land_mask` (MIT; data: NOAA's GLOBE 30-arc-second elevation grid, US
public domain) decompresses a 21600 x 43200 boolean array at import: 3-7 s and
~900 MB. Most of the Earth is far from a coast, so here the grid is cut into
60 x 60-cell tiles: tiles entirely land or entirely sea are one entry of a
360 x 720 table, and only the ~16k coastal tiles keep their bits (450 bytes
each). The copy (~8 MB) is built once from `global_land_mask`'s own file and
cached in `$GEOSPOT_CACHE/landmask/`; after that, loading memory-maps it
(well under 0.3 s and 100 MB). Indexing reproduces `global_land_mask.globe`
exactly (same float arithmetic, same clamping), so answers are identical
(tests/geo/test_landmask.py, benchmarks/bench_landmask.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

TILE = 60
_VERSION = 1
_ALL_SEA, _ALL_LAND = -1, -2
_LOCK = threading.Lock()


class LandMask:
    """`is_land(lat, lon)` / `is_ocean(lat, lon)` over the tiled copy (degrees; arrays or scalars)."""

    def __init__(self, tiles: np.ndarray, bits: np.ndarray, axes: np.ndarray) -> None:
        self.tiles, self.bits = tiles, bits
        # lat[0], lat[1], lat min, lat max, lon[0], lon[1], lon min, lon max of the source grid
        self._axes = [float(v) for v in axes]

    def _index(self, values, first: float, second: float, lo: float, hi: float, name: str, limit: float):
        v = np.array(values, dtype=np.float64)  # a copy: clamping must not touch the caller's array
        if not np.isfinite(v).all():
            raise ValueError(f"{name} must be finite")
        if np.any(v > limit) or np.any(v < -limit):
            raise ValueError(f"{name} must be within [-{limit:g}, {limit:g}]")
        v[v > hi] = hi
        v[v < lo] = lo
        return ((v - first) / (second - first)).astype(np.int64)  # global_land_mask's own arithmetic

    def is_ocean(self, lat, lon) -> np.ndarray:
        a = self._axes
        i = self._index(lat, a[0], a[1], a[2], a[3], "latitude", 90.0)
        j = self._index(lon, a[4], a[5], a[6], a[7], "longitude", 180.0)
        i, j = np.broadcast_arrays(i, j)
        state = self.tiles[i // TILE, j // TILE]
        out = np.array(state == _ALL_SEA)
        mixed = state >= 0
        if mixed.any():
            bit = (i[mixed] % TILE) * TILE + (j[mixed] % TILE)
            byte = np.asarray(self.bits[state[mixed], bit >> 3])
            out[mixed] = ((byte >> (7 - (bit & 7))) & 1).astype(bool)
        return out if out.ndim else out[()]  # scalars in, a NumPy bool out (as global_land_mask)

    def is_land(self, lat, lon) -> np.ndarray:
        """True on land (most lakes count as land, as in `global_land_mask`)."""
        return np.logical_not(self.is_ocean(lat, lon))


def build(mask: np.ndarray, lat_axis: np.ndarray, lon_axis: np.ndarray, out_dir: str | os.PathLike) -> Path:
    """Write the tiled copy of an ocean mask [n_lat, n_lon] (True = sea) to `out_dir` atomically."""
    n_lat, n_lon = mask.shape
    if n_lat % TILE or n_lon % TILE:
        raise ValueError(f"mask shape {mask.shape} is not a multiple of the {TILE}-cell tile")
    view = mask.reshape(n_lat // TILE, TILE, n_lon // TILE, TILE)
    every, some = view.all(axis=(1, 3)), view.any(axis=(1, 3))
    tiles = np.where(every, _ALL_SEA, _ALL_LAND).astype(np.int32)
    rows, cols = np.nonzero(some & ~every)
    tiles[rows, cols] = np.arange(len(rows), dtype=np.int32)
    bits = np.empty((len(rows), TILE * TILE // 8), dtype=np.uint8)
    for start in range(0, len(rows), 1024):  # bounded temporaries
        r, c = rows[start : start + 1024], cols[start : start + 1024]
        block = view[r, :, c, :]  # [k, TILE, TILE]
        bits[start : start + len(r)] = np.packbits(block.reshape(len(r), -1), axis=1)
    axes = np.array([lat_axis[0], lat_axis[1], lat_axis.min(), lat_axis.max(),
                     lon_axis[0], lon_axis[1], lon_axis.min(), lon_axis.max()], dtype=np.float64)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        np.save(tmp / "tiles.npy", tiles)
        np.save(tmp / "bits.npy", bits)
        np.save(tmp / "axes.npy", axes)
        os.rename(tmp, out)  # atomic; a concurrent builder may have won, which is fine
    except OSError:
        if not out.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _source_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the global_land_mask package is not installed (pip install global-land-mask)")
    return Path(spec.origin).parent / "globe_combined_mask_compressed.npz"


def _load(folder: Path) -> LandMask:
    return LandMask(np.load(folder / "tiles.npy"), np.load(folder / "bits.npy", mmap_mode="r"),
                    np.load(folder / "axes.npy"))


@lru_cache(maxsize=1)
def _mask() -> LandMask:
    from geospot.encoders.preprocess import cache_root

    source = _source_file()
    st = source.stat()
    folder = cache_root() / "landmask" / f"v{_VERSION}-{st.st_size}-{st.st_mtime_ns}"
    try:
        return _load(folder)
    except (OSError, ValueError):
        pass  # first use: build it (one read of global_land_mask's file, a few seconds)
    with np.load(source) as data:
        build(data["mask"], data["lat"], data["lon"], folder)
    return _load(folder)


def land_mask() -> LandMask:
    """The process-wide mask (built on first use, then memory-mapped)."""
    with _LOCK:
        return _mask()


def is_land(lat, lon) -> np.ndarray:
    """True where (lat, lon) is on land; identical to `global_land_mask.globe.is_land`."""
    return land_mask().is_land(lat, lon)


def is_ocean(lat, lon) -> np.ndarray:
    """True where (lat, lon) is at sea; identical to `global_land_mask.globe.is_ocean`."""
    return land_mask().is_ocean(lat, lon)
