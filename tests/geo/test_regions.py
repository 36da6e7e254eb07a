"""Country outlines, region specs and point-in-country lookups."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box

import geospot
from geospot.geo.regions import (
    country_at,
    country_geometry,
    country_index,
    country_name,
    country_polygons,
    list_countries,
    resolve_region,
)

ASSET = Path(geospot.__file__).parent / "assets" / "ne_50m_countries.npz"


def test_vendored_file_is_small_and_complete():
    assert ASSET.stat().st_size < 1_000_000
    with zipfile.ZipFile(ASSET) as z:
        meta = json.loads(z.read("meta.json"))
    assert "Natural Earth 1:50m" in meta["source"]
    countries = list_countries()
    assert len(countries) == len(meta["features"]) > 230
    assert countries == sorted(countries, key=lambda c: c["name"])
    for c in countries:
        assert len(c["iso2"]) == 2 and c["iso2"].isupper() and len(c["iso3"]) == 3, c
    by_name = {c["name"]: c for c in countries}
    # Entries without an ISO id in Natural Earth are fixed.
    assert by_name["France"]["iso2"] == "FR" and by_name["Norway"]["iso2"] == "NO"
    assert by_name["Kosovo"]["iso2"] == "XK" and by_name["N. Cyprus"]["iso2"] == "CY"
    # Overseas parts that ISO 3166 codes separately are entries of their own.
    assert {"French Guiana", "Réunion", "Svalbard and Jan Mayen", "Christmas Island"} <= set(by_name)
    # Outlines displaced by more than their size are merged into their neighbour (labelled by GeoNames).
    assert "Vatican" not in by_name and "Monaco" not in by_name


def test_country_polygons_for_maps():
    polygons = country_polygons()
    assert [{k: p[k] for k in ("name", "iso2", "iso3")} for p in polygons] == list_countries()
    assert all(p["geometry"].is_valid and p["geometry"].area > 0 for p in polygons)
    world = shapely.union_all([p["geometry"] for p in polygons])
    lon_min, lat_min, lon_max, lat_max = world.bounds
    assert (lon_min, lat_min, lon_max) == (-180.0, -90.0, 180.0) and lat_max > 83
    # Land is about 29% of the sphere; in lon/lat degrees (poles stretched) about a third of the plane.
    assert 0.25 < world.area / (360 * 180) < 0.4
    # Outlines do not overlap (split-off and merged parts went to exactly one entry) ...
    assert sum(p["geometry"].area for p in polygons) == pytest.approx(world.area, rel=1e-4)
    # ... and every polygon off Antarctica was cut at the antimeridian (none wraps the globe).
    parts = shapely.get_parts([p["geometry"] for p in polygons if p["iso2"] != "AQ"])
    widths = shapely.bounds(parts)[:, 2] - shapely.bounds(parts)[:, 0]
    assert widths.max() < 180


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
    lat = np.array([48.8566, 51.5074, 39.7392, -33.8688, 35.6762, 0.0, np.nan, 45.81, -90.0, 64.15])
    lon = np.array([2.3522, -0.1278, -104.9903, 151.2093, 139.6503, -30.0, 0.0, 15.98, 0.0, -21.94])
    codes = country_at(lat, lon)
    assert codes.tolist() == ["FR", "GB", "US", "AU", "JP", "", "", "HR", "AQ", "IS"]
    assert country_at(2.0, 2.0).shape == ()
    grid = country_at(np.full((2, 3), 48.85), np.full((2, 3), 2.35))
    assert grid.shape == (2, 3) and (grid == "FR").all()
    assert country_at([91.0, 10.0], [0.0, 181.0]).tolist() == ["", ""]
    # One call over many points equals one call per point.
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 300), rng.uniform(-180, 180, 300)
    assert (country_at(lat, lon) == [country_at(a, b) for a, b in zip(lat, lon)]).all()
    assert (country_index(lat, lon) >= 0).sum() == (country_at(lat, lon) != "").sum()


def test_country_at_antimeridian_and_poles():
    # Fiji and Chukotka lie on both sides of 180 degrees.
    assert country_at([-16.82, -16.57, -16.51], [-179.93, 179.22, 179.997]).tolist() == ["FJ"] * 3
    assert country_at([66.64, 65.0, 71.24, 71.2], [-177.46, 175.0, -178.76, 179.43]).tolist() == ["RU"] * 4
    # Antarctica holds the South Pole and all of its longitudes; nothing holds the North Pole.
    assert country_at([-90.0, -90.0, -89.9, -85.0, -85.0], [-180.0, 180.0, 45.0, 0.0, 179.9]).tolist() == ["AQ"] * 5
    assert country_at(90.0, 0.0) == ""
    assert country_geometry("AQ").bounds[0:3] == (-180.0, -90.0, 180.0)


def test_borders_and_political_edge_cases():
    assert country_at(41.8933, 12.4829) == "IT"  # Rome
    assert country_at(45.4870, 18.6955) == "HR" and country_at(43.3438, 17.8078) == "BA"  # Osijek; Mostar
    assert country_at(45.0, 39.0) == "RU" and country_at(44.95, 34.1) == "UA"  # Krasnodar; Simferopol (ISO/GeoNames)
    assert country_at(53.59, 6.70) == "DE"  # Borkum, drawn with the Netherlands in Natural Earth 4.1
    assert country_at(4.94, -52.33) == "GF" and country_at(78.22, 15.65) == "SJ"  # Cayenne; Longyearbyen
    assert country_at(35.19, 33.36) == "CY"  # Nicosia, north of the line (N. Cyprus has CY's ISO-2)


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
