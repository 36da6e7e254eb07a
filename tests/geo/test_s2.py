"""Vectorised S2 against the s2sphere reference, and the adaptive (PlaNet) S2 partition."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import s2sphere

from geospot.geo.cells import build_cells, s2_table_from_tokens
from geospot.geo.cells import s2
from geospot.geo.distance import spherical_mean

# Points on faces' edges and corners, the poles, the antimeridian, and signed zeros.
EDGE_LAT = np.array([90.0, -90.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 45.0, -45.0, 35.26438968275466,
                     -35.26438968275466, 89.999999, -89.999999, 0.0, -0.0, 0.0, 12.5, -60.0, 45.0])
EDGE_LON = np.array([0.0, 0.0, 45.0, -45.0, 135.0, -135.0, 180.0, -180.0, 45.0, -135.0, 45.0,
                     -45.0, -179.9999, 179.9999, -0.0, 0.0, 90.0, 180.0, -180.0, 0.0])


def _random_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)


def _lon_diff(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


def _reference_ids(lat, lon) -> np.ndarray:
    return np.array([s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).id()
                     for a, b in zip(lat.tolist(), lon.tolist())], dtype=np.uint64)


def test_leaf_ids_equal_s2sphere():
    lat, lon = _random_points(3000, 0)
    lat, lon = np.r_[lat, EDGE_LAT], np.r_[lon, EDGE_LON]
    ids = s2.latlon_to_leaf_id(lat, lon)
    assert ids.dtype == np.uint64
    np.testing.assert_array_equal(ids, _reference_ids(lat, lon))


def test_cell_arithmetic_equals_s2sphere():
    lat, lon = _random_points(300, 1)
    leaf = s2.latlon_to_leaf_id(lat, lon)
    for level in (0, 1, 7, 16, 29, 30):
        parent = s2.cell_parent(leaf, level)
        ref = [s2sphere.CellId(int(c)).parent(level) for c in leaf.tolist()]
        np.testing.assert_array_equal(parent, np.array([r.id() for r in ref], dtype=np.uint64))
        assert (s2.cell_level(parent) == level).all()
        np.testing.assert_array_equal(s2.range_min(parent), [r.range_min().id() for r in ref])
        np.testing.assert_array_equal(s2.range_max(parent), [r.range_max().id() for r in ref])
        assert [s2.to_token(c) for c in parent.tolist()] == [r.to_token() for r in ref]
        face, i, j = s2.id_to_face_ij(parent[:40])
        assert [tuple(v) for v in zip(face, i, j)] == [r.to_face_ij_orientation()[:3] for r in ref[:40]]
        # The leaf lies inside its ancestor's id range.
        assert ((s2.range_min(parent) <= leaf) & (leaf <= s2.range_max(parent))).all()


def test_tokens_roundtrip_and_reject_garbage():
    leaf = s2.latlon_to_leaf_id(np.array([40.7]), np.array([-74.0]))
    cell = int(s2.cell_parent(leaf, 10)[0])
    token = s2.to_token(cell)
    assert s2.from_token(token) == cell and s2.from_token("s2:" + token.upper()) == cell
    assert s2.to_token(0) == "X"
    for bad in ("", "xyz", "0", "c", "12345678901234567"):  # "c": face 6 does not exist
        with pytest.raises(ValueError):
            s2.from_token(bad)


def test_vertices_and_bounds_match_s2sphere():
    lat, lon = _random_points(400, 2)
    rng = np.random.default_rng(2)
    cells = np.unique(s2.cell_parent(s2.latlon_to_leaf_id(lat, lon), rng.integers(0, 14, lat.size)))
    vlat, vlon = s2.cell_vertices(cells)
    bounds = s2.cell_bounds(cells)
    for k, c in enumerate(cells.tolist()):
        cell = s2sphere.Cell(s2sphere.CellId(c))
        for m in range(4):
            ll = s2sphere.LatLng.from_point(cell.get_vertex(m))
            assert vlat[k, m] == pytest.approx(ll.lat().degrees, abs=1e-9)
            if abs(vlat[k, m]) < 90 - 1e-9:  # a pole has no longitude
                assert _lon_diff(vlon[k, m], ll.lng().degrees) == pytest.approx(0, abs=1e-9)
        rect = cell.get_rect_bound()
        # s2sphere pads its bounds slightly; ours are exact.
        assert bounds[k, 0] == pytest.approx(rect.lat_lo().degrees, abs=1e-6)
        assert bounds[k, 1] == pytest.approx(rect.lat_hi().degrees, abs=1e-6)
        touches_pole = np.abs(vlat[k]).max() > 90 - 1e-9 or s2.cell_level(np.array([c]))[0] == 0
        if not rect.lng().is_full() and not touches_pole:
            # -180 and 180 are the same meridian.
            assert _lon_diff(bounds[k, 2], rect.lng_lo().degrees) == pytest.approx(0, abs=1e-6)
            assert _lon_diff(bounds[k, 3], rect.lng_hi().degrees) == pytest.approx(0, abs=1e-6)


def test_bounds_of_faces_and_polar_cells():
    faces = s2.cell_parent(s2.latlon_to_leaf_id(np.array([0, 0, 90, 0, 0, -90.0]),
                                                np.array([0, 90, 0, 180, -90, 0.0])), 0)
    b = s2.cell_bounds(faces)
    np.testing.assert_allclose(b[0], [-45, 45, -45, 45])  # face 0 around (0, 0)
    np.testing.assert_allclose(b[2], [35.26438968275466, 90, -180, 180])  # holds the north pole
    np.testing.assert_allclose(b[3, :2], [-45, 45])
    assert b[3, 2] == pytest.approx(135) and b[3, 3] == pytest.approx(-135)  # wraps: lon_min > lon_max
    np.testing.assert_allclose(b[5], [-90, -35.26438968275466, -180, 180])


def _random_clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[48.8, 2.3], [40.7, -74.0], [-33.9, 151.2], [35.7, 139.7], [0.0, 179.9], [89.5, 10.0]])
    pick = rng.integers(0, len(centres), n)
    lat = np.clip(centres[pick, 0] + rng.normal(0, 2, n), -90, 90)
    lon = (centres[pick, 1] + rng.normal(0, 2, n) + 180) % 360 - 180
    spread_lat, spread_lon = _random_points(n // 4, seed + 1)
    return np.r_[lat, spread_lat, EDGE_LAT], np.r_[lon, spread_lon, EDGE_LON]


def test_adaptive_partition_respects_limits_and_contains_points():
    lat, lon = _random_clustered(6000, 3)
    table = build_cells(lat, lon, "s2", min_per_cell=20, max_per_cell=300, min_level=2, max_level=14)
    cell_id = table.params["cell_id"]
    levels = s2.cell_level(cell_id)
    assert table.scheme == "s2" and len(table) > 20
    assert (np.diff(cell_id.astype(np.float64)) > 0).all()  # sorted
    assert (s2.range_min(cell_id[1:]) > s2.range_max(cell_id[:-1])).all()  # disjoint
    assert levels.min() >= 2 and levels.max() <= 14
    assert (table.count >= 20).all()
    assert ((table.count <= 300) | (levels == 14)).all()
    assert table.ids == ["s2:" + s2sphere.CellId(int(c)).to_token() for c in cell_id]

    # Every training point sits in the cell s2sphere says contains it, or in none.
    idx = table.assign(lat, lon)
    assert table.count.sum() == (idx >= 0).sum()
    np.testing.assert_array_equal(np.bincount(idx[idx >= 0], minlength=len(table)), table.count)
    ref_leaf = _reference_ids(lat, lon)
    got = idx >= 0
    owner = cell_id[idx[got]]
    assert ((s2.range_min(owner) <= ref_leaf[got]) & (ref_leaf[got] <= s2.range_max(owner))).all()
    # A point was dropped only when its cell at the final level holds too few points.
    for k in np.flatnonzero(~got)[:50]:
        leaf = s2sphere.CellId(int(ref_leaf[k]))
        ancestors = [leaf.parent(level).id() for level in range(2, 15)]
        assert not np.isin(np.array(ancestors, dtype=np.uint64), cell_id).any()

    # Centroids are the spherical means of the cells' points.
    for c in range(0, len(table), 7):
        m_lat, m_lon = spherical_mean(lat[idx == c], lon[idx == c])
        assert table.centroid_lat[c] == pytest.approx(m_lat, abs=1e-9)
        assert _lon_diff(table.centroid_lon[c], m_lon) == pytest.approx(0, abs=1e-9)


def test_adaptive_split_rule_exactly():
    # 3 points on face 0, 1 on face 1; max_per_cell=2 splits only face 0, once: its
    # level-1 quadrants hold 2 ((1, 1), (2, 2)) and 1 ((-3, -3)) points.
    lat = np.array([1.0, 2.0, -3.0, 0.0])
    lon = np.array([1.0, 2.0, -3.0, 90.0])
    table = build_cells(lat, lon, "s2", min_per_cell=1, max_per_cell=2, min_level=0, max_level=30)
    levels = s2.cell_level(table.params["cell_id"])
    idx = table.assign(lat, lon)
    assert idx[0] == idx[1] and len(set(idx.tolist())) == 3
    assert levels[idx].tolist() == [1, 1, 1, 0]  # the lone point keeps its whole face
    assert table.count[idx].tolist() == [2, 2, 1, 1]
    # max_level caps the split even when the cell is crowded.
    capped = build_cells(lat, lon, "s2", min_per_cell=1, max_per_cell=2, min_level=0, max_level=0)
    assert len(capped) == 2 and sorted(capped.count.tolist()) == [1, 3]
    # min_per_cell drops small cells; nearest=True still places their points.
    sparse = build_cells(lat, lon, "s2", min_per_cell=2, max_per_cell=10, min_level=0, max_level=5)
    assert len(sparse) == 1 and sparse.count.tolist() == [3]
    assert sparse.assign([0.0], [90.0]).tolist() == [-1]
    assert sparse.assign([0.0], [90.0], nearest=True).tolist() == [0]


def test_s2_bad_parameters():
    lat, lon = _random_points(100, 4)
    with pytest.raises(ValueError, match="min_per_cell"):
        build_cells(lat, lon, "s2", min_per_cell=0)
    with pytest.raises(ValueError, match="max_level"):
        build_cells(lat, lon, "s2", min_level=5, max_level=3)
    with pytest.raises(ValueError, match="max_per_cell"):
        build_cells(lat, lon, "s2", min_per_cell=10, max_per_cell=5)
    with pytest.raises(ValueError, match="no S2 cell"):
        build_cells(lat, lon, "s2", min_per_cell=1000)


def test_table_from_tokens():
    leaf = s2.latlon_to_leaf_id(np.array([48.85, 40.7, -33.9]), np.array([2.35, -74.0, 151.2]))
    tokens = [s2.to_token(c) for c in s2.cell_parent(leaf, np.array([8, 5, 10])).tolist()]
    table = s2_table_from_tokens(tokens)
    assert len(table) == 3
    assert table.assign([48.85, 40.7, -33.9, 0.0], [2.35, -74.0, 151.2, 0.0]).tolist() == [
        table.ids.index("s2:" + t) for t in tokens] + [-1]
    with pytest.raises(ValueError, match="row 1"):
        s2_table_from_tokens([tokens[0], "zz"])
    parent = s2.to_token(int(s2.cell_parent(leaf[:1], 4)[0]))
    with pytest.raises(ValueError, match="overlap"):
        s2_table_from_tokens([tokens[0], parent])


@pytest.mark.realdata
def test_published_mp16_partition(shared_data):
    """The GeoEstimation S2 partitions load, and each cell's mean coordinate falls in its own cell."""
    df = pd.read_csv(shared_data / "coordinates" / "cells_50_5000.csv", skiprows=2, dtype={"hex_id": str})
    table = s2_table_from_tokens(df["hex_id"], df["latitude_mean"], df["longitude_mean"], df["imgs_per_cell"])
    assert len(table) == len(df)
    idx = table.assign(df["latitude_mean"].to_numpy(), df["longitude_mean"].to_numpy())
    own = np.array([table.ids.index("s2:" + t) for t in df["hex_id"]])
    # Means are plain lat/lon averages, so a few cells (across the antimeridian) miss.
    assert (idx == own).mean() > 0.99
    assert table.count.sum() == df["imgs_per_cell"].sum()
