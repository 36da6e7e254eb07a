"""Hierarchical answers: cell probabilities summed up to countries and regions, border cells split by places."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.eval.admin import hierarchy_accuracy, point_admin_accuracy
from geospot.geo.cells import build_cells
from geospot.models.hierarchy import CellShares, cell_shares, hierarchy_argmax, hierarchy_probs, model_shares

# Three places around Zagreb (Croatia) and one in Brezice (Slovenia), 30 km apart across the border;
# two places in Split (Dalmatia, Croatia); two in Honolulu (the other side of the world).
LAT = np.array([45.81, 45.80, 45.83, 45.904, 43.51, 43.52, 21.30, 21.31])
LON = np.array([15.98, 15.96, 16.00, 15.592, 16.44, 16.45, -157.85, -157.86])


@pytest.fixture(scope="module")
def cells():
    c = build_cells(LAT, LON, "grid", shape="hex", cell_km=100.0, min_per_cell=1)
    assert len(c) == 3
    return c


def test_border_cell_splits_its_mass_by_its_places(cells):
    shares = cell_shares(cells, LAT, LON)
    zagreb = cells.assign([45.81], [15.98])[0]
    probs = np.zeros((1, len(cells)))
    probs[0, zagreb] = 1.0
    countries, regions = hierarchy_probs(probs, shares)
    assert [(c["code"], c["prob"]) for c in countries[0]] == [("HR", 0.75), ("SI", 0.25)]
    assert countries[0][0]["name"] == "Croatia"
    assert regions[0][0]["country_code"] == "HR" and regions[0][0]["prob"] == pytest.approx(0.75)
    # Every cell's shares sum to one, so country probabilities sum like the cell probabilities.
    np.testing.assert_allclose(np.asarray(shares.country.sum(axis=1)).ravel(), 1.0)
    np.testing.assert_allclose(np.asarray(shares.region.sum(axis=1)).ravel(), 1.0)


def test_mass_adds_up_across_cells_and_top_limits(cells):
    shares = cell_shares(cells, LAT, LON)
    idx = cells.assign(LAT[[0, 4, 6]], LON[[0, 4, 6]])
    probs = np.zeros((2, len(cells)))
    probs[0, idx] = [0.5, 0.3, 0.2]
    probs[1, idx[2]] = 1.0
    countries, regions = hierarchy_probs(probs, shares, top=2)
    assert [c["code"] for c in countries[0]] == ["HR", "US"]  # SI (0.125) is third
    assert countries[0][0]["prob"] == pytest.approx(0.5 * 0.75 + 0.3)
    assert [c["code"] for c in countries[1]] == ["US"] and regions[1][0]["name"] == "Hawaii"
    c, r = hierarchy_argmax(probs, shares)
    assert list(c) == ["HR", "US"] and r[1] == "US/Hawaii"
    with pytest.raises(ValueError, match="probs must be"):
        hierarchy_probs(np.ones((1, len(cells) + 1)), shares)


def test_saved_with_the_model_and_checked_against_its_cells(cells, tmp_path):
    shares = cell_shares(cells, LAT, LON)
    shares.save(tmp_path)
    back = model_shares(tmp_path, cells)
    assert back.countries == shares.countries and back.regions == shares.regions
    assert (back.country != shares.country).nnz == 0
    other = build_cells(LAT, LON, "grid", cell_km=50.0, min_per_cell=1)
    with pytest.raises(ValueError, match="another cell table"):
        model_shares(tmp_path, other)
    (tmp_path / "hierarchy.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="hierarchy.json: unreadable"):
        CellShares.load(tmp_path)


def test_without_saved_shares_falls_back_to_places_then_centroids(cells, tmp_path):
    from_places = model_shares(tmp_path, cells, (LAT, LON))
    assert from_places.source == "training places"
    centroids = model_shares(tmp_path, cells)
    assert centroids.source == "cell centroids"
    zagreb = cells.assign([45.81], [15.98])[0]
    # The border cell's centroid is in Croatia: the whole cell counts for Croatia.
    row = centroids.country.getrow(zagreb).toarray().ravel()
    assert centroids.countries[int(np.argmax(row))] == "HR" and row.max() == 1.0


def test_osv5m_admin_accuracy():
    true_lat, true_lon = LAT[[0, 3, 6]], LON[[0, 3, 6]]
    acc = hierarchy_accuracy(["HR", "HR", "US"], ["HR/Grad Zagreb", "HR/Grad Zagreb", "US/Hawaii"],
                             true_lat, true_lon)
    assert acc["country_acc"] == pytest.approx(2 / 3) and acc["n"] == 3
    # A point 5 km off is the same country and region, not necessarily the same town; one at Split is not.
    pts = point_admin_accuracy(true_lat + [0.0, 0.0, 0.0], true_lon, true_lat, true_lon)
    assert pts["country_acc"] == pts["region_acc"] == pts["city_acc"] == 1.0
    far = point_admin_accuracy([43.51], [16.44], [45.81], [15.98])
    assert far["country_acc"] == 1.0 and far["region_acc"] == 0.0
    bad = point_admin_accuracy([45.8], [16.0], [np.nan], [16.0])
    assert bad["n_unknown"] == 1
