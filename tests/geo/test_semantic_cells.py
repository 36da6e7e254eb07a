"""Semantic geocells (PIGEON): GeoNames admin units merged within their parents, split by k-means, named."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.geo.cells import CellTable, build_cells, semantic
from geospot.geo.distance import haversine_km
from geospot.geo.geocode import geonames_country_codes as country_codes  # the GeoNames units cells are built from
from geospot.geo.geocode import reverse_geocode


def _around_places(cc: str, n: int, seed: int, jitter_km: float = 2.0):
    """Training places near random GeoNames towns of one country (realistic: people photograph towns)."""
    gaz = semantic.gazetteer()
    rows = np.flatnonzero(gaz["cc"] == cc)
    rng = np.random.default_rng(seed)
    pick = rng.choice(rows, n)
    d = jitter_km / 111.0
    return gaz["lat"][pick] + rng.uniform(-d, d, n), gaz["lon"][pick] + rng.uniform(-d, d, n)


@pytest.fixture(scope="module")
def balkans():
    parts = [_around_places("HR", 300, 0), _around_places("SI", 60, 1), _around_places("BA", 3, 2)]
    lat = np.concatenate([p[0] for p in parts])
    lon = np.concatenate([p[1] for p in parts])
    return lat, lon, build_cells(lat, lon, "semantic", min_per_cell=20, max_per_cell=80)


def test_cells_stay_inside_one_country_and_hold_min_places(balkans):
    lat, lon, cells = balkans
    assert cells.scheme == "semantic" and len(cells) >= 5
    idx = cells.assign(lat, lon)
    cc = country_codes(lat, lon)
    # Bosnia has 3 places < min_per_cell: no cell, its places get -1 (or the nearest cell on request).
    assert (idx[cc == "BA"] == -1).all() and (cells.assign(lat, lon, nearest=True) >= 0).all()
    kept = idx >= 0
    assert (cc[kept] != "BA").all()
    for k in range(len(cells)):
        assert len(set(cc[idx == k])) == 1, f"cell {cells.ids[k]} straddles a border"
    # Counts and centroids are those of `assign`, so training labels match the table.
    np.testing.assert_array_equal(cells.count, np.bincount(idx[kept], minlength=len(cells)))
    assert cells.count.sum() == kept.sum()
    # Unsplit areas hold >= min_per_cell; every sub-cell of a split area comes from one > max_per_cell area.
    group = cells.params["cell_group"]
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        total = cells.count[members].sum()
        assert total >= 20
        if len(members) > 1:
            assert total > 80 and len(members) == int(np.ceil(total / 80))


def test_names_follow_admin_units(balkans):
    lat, lon, cells = balkans
    assert cells.names is not None and len(cells.names) == len(cells)
    assert all(n.endswith(("Croatia", "Slovenia")) or n.endswith(")") for n in cells.names)
    # The dominant admin-1 region of each cell's places appears in its name.
    idx = cells.assign(lat, lon)
    places = reverse_geocode(lat, lon)
    for k in range(len(cells)):
        regions = [places[i].region for i in np.flatnonzero(idx == k)]
        assert any(r and r in cells.names[k] for r in set(regions)) or "Slovenia" in cells.names[k] \
            or cells.names[k].startswith("Croatia"), cells.names[k]


def test_new_points_go_to_the_cell_of_their_nearest_town(balkans):
    lat, lon, cells = balkans
    # Points a few hundred metres from training places land in the same cell.
    near = cells.assign(lat + 0.002, lon - 0.002)
    same = near == cells.assign(lat, lon)
    assert same.mean() > 0.97
    # Far from any cell country (mid-Pacific, the poles): -1, or the nearest centroid when asked.
    out = cells.assign([0.0, 90.0, -90.0, np.nan], [-150.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out, [-1, -1, -1, -1])
    fallback = cells.assign([90.0, 0.0], [0.0, -150.0], nearest=True)
    assert (fallback >= 0).all()


def test_save_load_keeps_names_and_hash(balkans, tmp_path):
    _, _, cells = balkans
    cells.save(tmp_path)
    back = CellTable.load(tmp_path)
    assert back.names == cells.names and back.ids == cells.ids and back.hash() == cells.hash()
    np.testing.assert_array_equal(back.params["place_area"], cells.params["place_area"])
    # Names are part of the identity of a table that has them, and absent ones keep old hashes.
    renamed = CellTable(cells.scheme, cells.ids, cells.centroid_lat, cells.centroid_lon, cells.count,
                        cells.params, [n + "!" for n in cells.names])
    assert renamed.hash() != cells.hash()
    s2 = build_cells(np.array([45.0, 45.1, 45.2]), np.array([16.0, 16.1, 16.2]), "s2", min_per_cell=1)
    assert s2.names is None
    s2.save(tmp_path / "s2")
    assert "names" not in (tmp_path / "s2" / "cells.json").read_text()
    assert CellTable.load(tmp_path / "s2").hash() == s2.hash()


def test_polygons_outline_the_cells(balkans):
    _, _, cells = balkans
    rings, boxes = cells.polygons(), cells.bounds()
    assert len(rings) == len(cells) == len(boxes)
    for k, ring in enumerate(rings):
        assert len(ring) >= 3
        lat_min, lat_max, lon_min, lon_max = boxes[k]
        # The centroid of a cell's training places lies within its box (up to the towns' spread).
        assert lat_min - 0.2 <= cells.centroid_lat[k] <= lat_max + 0.2
        assert lon_min - 0.2 <= cells.centroid_lon[k] <= lon_max + 0.2


def test_antimeridian_region():
    # Chukotka straddles 180 degrees: towns on both sides, one admin-1 region of Russia.
    gaz = semantic.gazetteer()
    rows = np.flatnonzero(gaz["admin1"] == "Chukotskiy Avtonomnyy Okrug")
    assert (gaz["lon"][rows] < 0).any() and (gaz["lon"][rows] > 0).any()
    lat = np.concatenate([gaz["lat"][rows], [64.5, 64.6, 65.0, 65.1]])
    lon = np.concatenate([gaz["lon"][rows], [179.999, -179.999, 178.0, -178.0]])
    cells = build_cells(lat, lon, "semantic", min_per_cell=len(lat))
    assert len(cells) == 1 and cells.names == ["Russia"]
    np.testing.assert_array_equal(cells.assign([64.5, 64.5, 66.0], [179.99, -179.99, -172.0]), [0, 0, 0])
    # The centroid is in Chukotka, not averaged across the globe to lon 0.
    assert haversine_km(cells.centroid_lat[0], cells.centroid_lon[0], 66.0, 175.0) < 600


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="max_per_cell"):
        build_cells(np.array([45.0]), np.array([16.0]), "semantic", min_per_cell=10, max_per_cell=5)
    with pytest.raises(ValueError, match="lower min_per_cell"):
        build_cells(np.array([45.0, 45.1]), np.array([16.0, 16.1]), "semantic", min_per_cell=10)


def test_bounds_open_across_the_antimeridian():
    boxes = semantic.bounds([[(-16.0, 179.0), (-17.0, -179.5), (-18.0, 178.5)], [(10.0, -5.0), (12.0, 5.0), (11.0, 0.0)]])
    np.testing.assert_allclose(boxes[0], [-18.0, -16.0, 178.5, -179.5])
    np.testing.assert_allclose(boxes[1], [10.0, 12.0, -5.0, 5.0])


@pytest.mark.realdata
def test_semantic_cells_over_real_global_street_view(shared_data):
    import pandas as pd

    df = pd.read_csv(shared_data / "streetview-global" / "manifest.csv").drop_duplicates("location_id")
    lat, lon = df["lat"].to_numpy(), df["lon"].to_numpy()
    cells = build_cells(lat, lon, "semantic", min_per_cell=10, max_per_cell=60)
    idx = cells.assign(lat, lon)
    cc = country_codes(lat, lon)
    kept = idx >= 0
    assert kept.mean() > 0.9  # only countries with < 10 places lose their cells
    for k in range(len(cells)):
        assert len(set(cc[idx == k])) == 1, cells.names[k]
    assert (cells.count >= 1).all() and cells.count.sum() == kept.sum()
    assert len(set(cells.names)) > 0.8 * len(cells)  # names mostly tell cells apart (two areas of one region can share one)
