"""The basemap under every map: country outlines (coastlines and borders) from vendored Natural Earth.

The outlines are the ones country labels use (`geospot.geo.regions.country_polygons`,
Natural Earth 1:50m, public domain, shipped with the package; nothing is
downloaded), so a map and its labels never disagree.
"""
from __future__ import annotations

import gzip
import json
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def basemap_geojson_gz() -> bytes:
    """The basemap as gzip-compressed GeoJSON (properties ``name``, ``iso2``, ``iso3``), built once,
    coordinates rounded to 0.001 degrees (~100 m, finer than the 1:50m outlines)."""
    from shapely import set_precision
    from shapely.geometry import mapping

    feats = []
    for c in country_polygons_cached():
        geom = mapping(set_precision(c["geometry"], 1e-3))
        feats.append({"type": "Feature", "properties": {"name": c["name"], "iso2": c["iso2"], "iso3": c["iso3"]},
                      "geometry": geom})
    text = json.dumps({"type": "FeatureCollection", "features": feats}, separators=(",", ":"))
    return gzip.compress(text.encode("utf-8"), mtime=0)


def basemap_geojson() -> dict:
    """The basemap as a GeoJSON FeatureCollection (properties: ``name``, ``iso2``, ``iso3``)."""
    return json.loads(gzip.decompress(basemap_geojson_gz()))


@lru_cache(maxsize=1)
def country_polygons_cached() -> list[dict]:
    from geospot.geo.regions import country_polygons

    return country_polygons()


@lru_cache(maxsize=1)
def country_shapes() -> tuple[list[str], list]:
    """ISO-2 codes and shapely (Multi)Polygons (x = lon, y = lat) of every basemap feature."""
    codes, _, geoms = country_features()
    return codes, geoms


@lru_cache(maxsize=1)
def country_features() -> tuple[list[str], list[str], list]:
    """ISO-2 codes, names and shapely (Multi)Polygons of every basemap feature."""
    import shapely

    codes, names, geoms = [], [], []
    for c in country_polygons_cached():
        codes.append(str(c["iso2"]))
        names.append(str(c["name"]))
        geom = c["geometry"]
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
