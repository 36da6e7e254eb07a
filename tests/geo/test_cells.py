"""Grid cells (square and hexagonal) and the CellTable contract shared by every scheme."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Polygon

from geospot.geo.cells import CellTable, build_cells
from geospot.geo.distance import EARTH_RADIUS_KM, haversine_km, spherical_mean
from geospot.geo.regions import country_geometry

KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180


def _points(n: int, seed: int, lat_range=(-90, 90), lon_range=(-180, 180)):
    rng = np.random.default_rng(seed)
    s = np.sin(np.radians(lat_range))
    return np.degrees(np.arcsin(rng.uniform(s[0], s[1], n))), rng.uniform(*lon_range, n)


def _inside_bounds(bounds: np.ndarray, lat: np.ndarray, lon: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    lat_ok = (bounds[:, 0] - tol <= lat) & (lat <= bounds[:, 1] + tol)
    wraps = bounds[:, 2] > bounds[:, 3]
    plain = (bounds[:, 2] - tol <= lon) & (lon <= bounds[:, 3] + tol)
    wrapped = (lon >= bounds[:, 2] - tol) | (lon <= bounds[:, 3] + tol)
    # lon -180 and 180 are the same meridian.
    alt = np.where(lon == 180.0, -180.0, np.where(lon == -180.0, 180.0, lon))
    plain |= (bounds[:, 2] - tol <= alt) & (alt <= bounds[:, 3] + tol)
    return lat_ok & np.where(wraps, wrapped, plain)


# --- square grid ------------------------------------------------------------------------

def test_square_grid_layout_and_cell_size():
    lat, lon = _points(20000, 0)
    table = build_cells(lat, lon, "grid", shape="square", cell_km=500)
    assert table.scheme == "grid-square" and table.ids[0].startswith("sq:")
    b = table.bounds()
    height_km = (b[:, 1] - b[:, 0]) * KM_PER_DEG
    np.testing.assert_allclose(height_km, 180 * KM_PER_DEG / table.params["n_rows"])
    assert abs(height_km[0] - 500) < 500 / table.params["n_rows"] + 1
    mid = (b[:, 0] + b[:, 1]) / 2
    width_km = (b[:, 3] - b[:, 2]) * KM_PER_DEG * np.cos(np.radians(mid))
    temperate = np.abs(mid) < 70
    assert np.all((width_km[temperate] > 0.85 * 500) & (width_km[temperate] < 1.15 * 500))
    # Rows tile the globe exactly, columns tile each row.
    assert b[:, 0].min() == -90 and b[:, 1].max() == 90
    assert b[:, 2].min() == -180 and b[:, 3].max() == pytest.approx(180)


def test_square_grid_every_point_in_its_cell_including_edges():
    lat, lon = _points(5000, 1)
    table = build_cells(lat, lon, "grid", shape="square", cell_km=300)
    n_rows = table.params["n_rows"]
    ncols = table.params["row_ncols"]
    # Points exactly on row and column edges, the poles and the antimeridian.
    rows = np.arange(0, n_rows, 7)
    edge_lat = -90.0 + rows * (180.0 / n_rows)
    edge_lon = -180.0 + (np.arange(rows.size) % ncols[rows]) * (360.0 / ncols[rows])
    extra_lat = np.r_[edge_lat, edge_lat, 90.0, -90.0, 90.0, 0.0, 0.0, 45.0, -0.0]
    extra_lon = np.r_[edge_lon, np.full(rows.size, 180.0), 0.0, 180.0, -180.0, 180.0, -180.0, 180.0, -0.0]
    lat, lon = np.r_[lat, extra_lat], np.r_[lon, extra_lon]
    table = build_cells(lat, lon, "grid", shape="square", cell_km=300)
    idx = table.assign(lat, lon)
    assert (idx >= 0).all()  # min_per_cell=1: every training point has a cell
    assert _inside_bounds(table.bounds()[idx], lat, lon, tol=0.0).all()
    np.testing.assert_array_equal(np.bincount(idx, minlength=len(table)), table.count)
    # Edges are half-open: a point on a row edge belongs to the row above it.
    k = np.flatnonzero((lat == edge_lat[3]) & (lon == edge_lon[3]))[0]
    assert table.bounds()[idx[k], 0] == edge_lat[3]


def test_square_grid_min_per_cell_and_centroids():
    rng = np.random.default_rng(2)
    lat = np.r_[rng.normal(45, 0.3, 500), rng.normal(-20, 0.3, 3), [10.0]]
    lon = np.r_[rng.normal(7, 0.3, 500), rng.normal(30, 0.3, 3), [10.0]]
    table = build_cells(lat, lon, "grid", shape="square", cell_km=50, min_per_cell=5)
    assert (table.count >= 5).all()
    idx = table.assign(lat, lon)
    assert table.count.sum() == (idx >= 0).sum() < lat.size
    assert idx[-1] == -1 and table.assign([10.0], [10.0], nearest=True)[0] >= 0
    for c in range(len(table)):
        m_lat, m_lon = spherical_mean(lat[idx == c], lon[idx == c])
        assert table.centroid_lat[c] == pytest.approx(m_lat) and table.centroid_lon[c] == pytest.approx(m_lon)
    with pytest.raises(ValueError, match="no square cell"):
        build_cells(lat, lon, "grid", cell_km=50, min_per_cell=10_000)


def test_square_grid_is_global_and_region_only_filters():
    lat, lon = _points(4000, 3, (40, 50), (0, 25))
    everything = build_cells(lat, lon, "grid", cell_km=100)
    box = (43.0, 5.0, 47.0, 15.0)
    region = build_cells(lat, lon, "grid", cell_km=100, region=box)
    inside = (lat >= 43) & (lat <= 47) & (lon >= 5) & (lon <= 15)
    assert region.count.sum() == inside.sum()
    # The same place has the same cell id whatever the region.
    ids_all = np.array(everything.ids)[everything.assign(lat[inside], lon[inside])]
    ids_region = np.array(region.ids)[region.assign(lat[inside], lon[inside])]
    np.testing.assert_array_equal(ids_all, ids_region)
    assert region.params["region_bbox"] == [43.0, 5.0, 47.0, 15.0]
    # Cells outside the region do not exist; points there are -1.
    assert (region.assign(lat[~inside], lon[~inside]) == -1).mean() > 0.5


def test_grid_region_country_and_geometry():
    france = country_geometry("France")
    lat, lon = _points(20000, 4, (35, 55), (-10, 15))
    inside = shapely.intersects_xy(france, lon, lat)
    table = build_cells(lat, lon, "grid", cell_km=100, region="FR")
    assert table.count.sum() == inside.sum() and table.params["region"] == "FR"
    by_geometry = build_cells(lat, lon, "grid", cell_km=100, region=france)
    assert by_geometry.ids == table.ids and by_geometry.params["region"] == "geometry"
    with pytest.raises(ValueError, match="unknown country"):
        build_cells(lat, lon, "grid", region="Atlantis")


# --- hexagonal grid ---------------------------------------------------------------------

def test_hex_grid_points_in_their_hexagons():
    lat, lon = _points(5000, 5, (42.0, 46.5), (13.0, 19.5))
    table = build_cells(lat, lon, "grid", shape="hex", cell_km=20)
    assert table.scheme == "grid-hex" and table.ids[0].startswith("hex:")
    assert table.params["lat0_deg"] == pytest.approx((lat.min() + lat.max()) / 2)
    idx = table.assign(lat, lon)
    assert (idx >= 0).all()
    polygons = [Polygon([(b, a) for a, b in ring]) for ring in table.polygons()]
    assert all(len(ring) == 6 for ring in table.polygons())
    for k in range(0, lat.size, 5):
        assert polygons[idx[k]].distance(shapely.Point(lon[k], lat[k])) < 1e-9
    assert _inside_bounds(table.bounds()[idx], lat, lon).all()
    # Hexagon size: edge cell_km, so the centre-to-vertex distance is ~20 km.
    ring = table.polygons()[0]
    c_lat, c_lon = spherical_mean([p[0] for p in ring], [p[1] for p in ring])
    radii = [haversine_km(c_lat, c_lon, a, b) for a, b in ring]
    assert np.allclose(radii, 20, rtol=0.05)  # the projection stretches a little off-centre


def test_hex_grid_assignment_is_nearest_centre():
    lat, lon = _points(3000, 6, (-5, 5), (170, 180))
    lat2, lon2 = _points(3000, 7, (-5, 5), (-180, -170))
    lat, lon = np.r_[lat, lat2], np.r_[lon, lon2]
    # A region across the antimeridian: "lat_min,lon_min,lat_max,lon_max" with lon_min > lon_max.
    table = build_cells(lat, lon, "grid-hex", cell_km=50, region="-5,170,5,-170")
    assert table.params["shape"] == "hex" and abs(table.params["lon0_deg"]) == pytest.approx(180)
    idx = table.assign(lat, lon)
    assert (idx >= 0).all()
    centres = np.array([np.mean(ring, axis=0) for ring in table.polygons()])
    # In the projection (x ~ lon offset, y ~ lat) the assigned centre is the nearest one.
    lon0, cos0 = table.params["lon0_deg"], math.cos(math.radians(table.params["lat0_deg"]))
    ring_lon = np.array([[p[1] for p in ring] for ring in table.polygons()])
    centre_x = ((ring_lon - lon0 + 180) % 360 - 180).mean(axis=1) * cos0
    x = ((lon - lon0 + 180) % 360 - 180) * cos0
    d2 = (x[:, None] - centre_x[None, :]) ** 2 + (lat[:, None] - centres[None, :, 0]) ** 2
    np.testing.assert_allclose(d2[np.arange(lat.size), idx], d2.min(axis=1), atol=1e-9)
    wrapped = table.bounds()
    assert (wrapped[:, 2] > wrapped[:, 3]).any()  # some cells straddle the antimeridian


def test_grid_bad_parameters():
    lat, lon = _points(100, 8)
    with pytest.raises(ValueError, match="shape"):
        build_cells(lat, lon, "grid", shape="triangle")
    with pytest.raises(ValueError, match="cell_km"):
        build_cells(lat, lon, "grid", cell_km=-5)
    with pytest.raises(ValueError, match="contradicts"):
        build_cells(lat, lon, "grid-hex", shape="square")
    with pytest.raises(ValueError, match="unknown scheme"):
        build_cells(lat, lon, "h3")


# --- the table contract -----------------------------------------------------------------

@pytest.fixture(params=["s2", "grid-square", "grid-hex"])
def table_and_points(request):
    lat, lon = _points(3000, 9, (30, 60), (-20, 40))
    if request.param == "s2":
        table = build_cells(lat, lon, "s2", min_per_cell=5, max_per_cell=100)
    else:
        table = build_cells(lat, lon, request.param, cell_km=150, min_per_cell=2)
    return table, lat, lon


def test_save_load_roundtrip_and_hash(table_and_points, tmp_path):
    table, lat, lon = table_and_points
    table.save(tmp_path / "cells")
    meta = json.loads((tmp_path / "cells" / "cells.json").read_text())
    assert meta["scheme"] == table.scheme and meta["ids"] == table.ids
    loaded = CellTable.load(tmp_path / "cells")
    assert loaded.hash() == table.hash() and len(table.hash()) == 64
    assert loaded.ids == table.ids and loaded.scheme == table.scheme
    np.testing.assert_array_equal(loaded.centroid_lat, table.centroid_lat)
    np.testing.assert_array_equal(loaded.count, table.count)
    np.testing.assert_array_equal(loaded.assign(lat, lon), table.assign(lat, lon))
    np.testing.assert_array_equal(loaded.bounds(), table.bounds())
    # A second save of the loaded table is identical.
    loaded.save(tmp_path / "again")
    assert CellTable.load(tmp_path / "again").hash() == table.hash()
    # The hash sees every part.
    moved = CellTable(table.scheme, table.ids, table.centroid_lat + 1e-9, table.centroid_lon, table.count,
                      table.params)
    assert moved.hash() != table.hash()


def test_load_rejects_damaged_tables(table_and_points, tmp_path):
    table, _, _ = table_and_points
    table.save(tmp_path)
    meta = json.loads((tmp_path / "cells.json").read_text())
    meta["ids"] = list(reversed(meta["ids"]))
    (tmp_path / "cells.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hash mismatch"):
        CellTable.load(tmp_path)
    (tmp_path / "cells.json").write_text("{not json")
    with pytest.raises(ValueError, match="cells.json"):
        CellTable.load(tmp_path)
    (tmp_path / "cells.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="cells.safetensors"):
        CellTable.load(tmp_path)


def test_assign_bad_coordinates_and_nearest(table_and_points):
    table, lat, lon = table_and_points
    query_lat = np.array([np.nan, 95.0, 45.0, -80.0, lat[0]])
    query_lon = np.array([0.0, 0.0, np.inf, 100.0, lon[0]])
    idx = table.assign(query_lat, query_lon)
    assert idx.dtype == np.int64 and idx[:4].tolist() == [-1, -1, -1, -1] and idx[4] >= 0
    near = table.assign(query_lat, query_lon, nearest=True)
    assert near[:3].tolist() == [-1, -1, -1]  # invalid stays invalid
    d = haversine_km(-80.0, 100.0, table.centroid_lat, table.centroid_lon)
    assert near[3] == np.argmin(d)
    with pytest.raises(ValueError, match="lengths differ"):
        table.assign([1.0, 2.0], [1.0])
    assert table.assign([], []).shape == (0,)


def test_bounds_and_polygons_contain_centroids(table_and_points):
    table, _, _ = table_and_points
    b = table.bounds()
    assert b.shape == (len(table), 4)
    assert _inside_bounds(b, table.centroid_lat, table.centroid_lon, tol=1e-9).all()
    polygons = table.polygons()
    assert len(polygons) == len(table) and all(len(p) in (4, 6) for p in polygons)
    corners = np.array([p[0] for p in polygons])
    assert _inside_bounds(b, corners[:, 0], corners[:, 1], tol=1e-9).all()


def test_build_rejects_bad_training_coordinates():
    with pytest.raises(ValueError, match=r"row 1: \(nan"):
        build_cells([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "grid")
    with pytest.raises(ValueError, match=r"row 2: \(3.0, 200.0\)"):
        build_cells([1.0, 2.0, 3.0], [1.0, 2.0, 200.0], "s2")
    with pytest.raises(ValueError, match="lengths differ"):
        build_cells([1.0, 2.0], [1.0], "s2")
    with pytest.raises(ValueError, match="no points"):
        build_cells([], [], "s2")


def test_table_validation():
    with pytest.raises(ValueError, match="unknown cell scheme"):
        CellTable("h3", [], [], [], [], {"cell_key": np.zeros(0, np.int64)})
    with pytest.raises(ValueError, match="count has 1"):
        CellTable("grid-square", ["a", "b"], [0, 1], [0, 1], [3], {"cell_key": np.arange(2)})
    with pytest.raises(ValueError, match="not unique"):
        CellTable("grid-square", ["a", "a"], [0, 1], [0, 1], [1, 1], {"cell_key": np.arange(2)})


@pytest.mark.realdata
def test_hex_grid_over_real_croatian_locations(shared_data):
    df = pd.read_csv(shared_data / "streetview-croatia" / "manifest.csv").drop_duplicates("location_id")
    lat, lon = df["lat"].to_numpy(), df["lon"].to_numpy()
    table = build_cells(lat, lon, "grid", shape="hex", cell_km=25, region="Croatia", min_per_cell=2)
    inside = shapely.intersects_xy(country_geometry("HR"), lon, lat)
    idx = table.assign(lat, lon)
    assert table.count.sum() == (idx[inside] >= 0).sum() and (table.count >= 2).all()
    assert (table.assign(lat, lon, nearest=True) >= 0).all()
