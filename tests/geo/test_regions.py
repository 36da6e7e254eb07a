"""Country outlines, region specs and point-in-country lookups."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box

import geospot
from geospot.geo.regions import (
    country_at,
    country_geometry,
    country_name,
    list_countries,
    resolve_region,
)

ASSET = Path(geospot.__file__).parent / "assets" / "ne_110m_countries.geojson.gz"


def test_vendored_file_is_small_and_complete():
    assert ASSET.stat().st_size < 1_000_000
    data = json.loads(gzip.decompress(ASSET.read_bytes()))
    assert "Natural Earth" in data["source"]
    countries = list_countries()
    assert len(countries) == len(data["features"]) > 170
    assert countries == sorted(countries, key=lambda c: c["name"])
    for c in countries:
        assert len(c["iso2"]) == 2 and c["iso2"].isupper() and len(c["iso3"]) == 3, c
    by_name = {c["name"]: c for c in countries}
    # Natural Earth's -99 quirks are fixed.
    assert by_name["France"]["iso2"] == "FR" and by_name["Norway"]["iso2"] == "NO"
    assert by_name["Kosovo"]["iso2"] == "XK"


def test_country_geometry_by_name_and_codes():
    france = country_geometry("France")
    assert country_geometry("fr").equals(france) and country_geometry(" FRA ").equals(france)
    assert country_geometry("french republic").equals(france)  # ISO official name
    assert france.contains(shapely.Point(2.35, 48.86))  # Paris (lon, lat)
    assert not france.contains(shapely.Point(-0.13, 51.51))  # London
    # An ISO-2 code shared by two Natural Earth entries gives their union.
    cyprus = country_geometry("CY")
    assert cyprus.area > country_geometry("Cyprus").area
    assert cyprus.contains(shapely.Point(33.36, 35.19))  # Nicosia north of the line
    with pytest.raises(ValueError, match="did you mean 'france'"):
        country_geometry("Frence")


def test_country_name():
    assert country_name("fr") == "France"
    assert country_name("SG") == "Singapore"  # too small for an outline, but named
    assert country_name("ZZ") == "ZZ"


def test_country_at_vectorised():
    lat = np.array([48.8566, 51.5074, 40.7128, -33.8688, 35.6762, 0.0, np.nan, 45.81, -90.0, 64.15])
    lon = np.array([2.3522, -0.1278, -74.0060, 151.2093, 139.6503, -30.0, 0.0, 15.98, 0.0, -21.94])
    codes = country_at(lat, lon)
    assert codes.tolist() == ["FR", "GB", "US", "AU", "JP", "", "", "HR", "AQ", "IS"]
    assert country_at(2.0, 2.0).shape == ()
    grid = country_at(np.full((2, 3), 48.85), np.full((2, 3), 2.35))
    assert grid.shape == (2, 3) and (grid == "FR").all()


def test_resolve_region_forms(tmp_path):
    b = resolve_region("40,-10,50,5")
    assert b.bounds == (-10.0, 40.0, 5.0, 50.0)
    assert resolve_region((40, -10, 50, 5)).equals(b)
    assert resolve_region(b) is b
    assert resolve_region("croatia").equals(country_geometry("HR"))
    # Across the antimeridian: two boxes.
    fiji = resolve_region("-20,175,-15,-178")
    assert fiji.geom_type == "MultiPolygon"
    assert fiji.contains(shapely.Point(179.0, -17.0)) and fiji.contains(shapely.Point(-179.0, -17.0))
    assert not fiji.contains(shapely.Point(0.0, -17.0))

    path = tmp_path / "area.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(box(0, 0, 1, 1))},
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(box(2, 0, 3, 1))},
    ]}))
    region = resolve_region(str(path))
    assert region.area == pytest.approx(2.0)


def test_resolve_region_errors(tmp_path):
    with pytest.raises(ValueError, match="lat_min < lat_max"):
        resolve_region("50,0,40,10")
    with pytest.raises(ValueError, match="4 values"):
        resolve_region((1, 2, 3))
    with pytest.raises(FileNotFoundError, match="missing.geojson"):
        resolve_region(str(tmp_path / "missing.geojson"))
    bad = tmp_path / "bad.geojson"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="bad.geojson"):
        resolve_region(bad)
    line = tmp_path / "line.geojson"
    line.write_text(json.dumps({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}))
    with pytest.raises(ValueError, match="needs polygons"):
        resolve_region(line)
    with pytest.raises(TypeError):
        resolve_region(42)
