"""The basemap under every map: country outlines (coastlines and borders) from vendored Natural Earth.

One function, :func:`basemap_path`, decides which vendored file is drawn, so a
finer outline file can replace the 1:110m one in one place. The outlines are
public domain (Natural Earth), shipped with the package; nothing is downloaded.
"""
from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

_ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Finest first: the first file present is the basemap (1:50m arrives with the regions work).
BASEMAP_FILES = ("ne_50m_countries.geojson.gz", "ne_110m_countries.geojson.gz")


def basemap_path() -> Path:
    """The vendored country-outline GeoJSON (gzip) drawn under maps."""
    for name in BASEMAP_FILES:
        path = _ASSETS / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"no basemap in {_ASSETS} (expected one of {', '.join(BASEMAP_FILES)})")


@lru_cache(maxsize=2)
def _load(path: str) -> dict:
    with gzip.open(path, "rb") as raw:
        return json.loads(raw.read())


def basemap_geojson() -> dict:
    """The basemap as a GeoJSON FeatureCollection (properties: ``name``, ``iso2``, ``iso3``)."""
    return _load(str(basemap_path()))


@lru_cache(maxsize=1)
def country_shapes() -> tuple[list[str], list]:
    """ISO-2 codes and shapely (Multi)Polygons (x = lon, y = lat) of every basemap feature."""
    codes, _, geoms = country_features()
    return codes, geoms


@lru_cache(maxsize=1)
def country_features() -> tuple[list[str], list[str], list]:
    """ISO-2 codes, names and shapely (Multi)Polygons of every basemap feature."""
    import shapely
    from shapely.geometry import shape

    data = basemap_geojson()
    codes, names, geoms = [], [], []
    for feature in data["features"]:
        codes.append(str(feature.get("properties", {}).get("iso2", "")))
        names.append(str(feature.get("properties", {}).get("name", "")))
        geom = shape(feature["geometry"])
        # A few simplified outlines self-touch; clipping needs valid polygons.
        geoms.append(geom if geom.is_valid else shapely.make_valid(geom))
    return codes, names, geoms


def polygon_rings(geom) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exterior rings and all rings (exteriors + holes) of a (Multi)Polygon as ``[n, 2]`` arrays."""
    polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    exteriors, rings = [], []
    for p in polys:
        if p.geom_type != "Polygon" or p.is_empty:
            continue
        ext = np.asarray(p.exterior.coords)
        exteriors.append(ext)
        rings.append(ext)
        rings.extend(np.asarray(r.coords) for r in p.interiors)
    return exteriors, rings
