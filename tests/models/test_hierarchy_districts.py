"""District (admin-2) probabilities: shares by places, the 'cells allow' rule, old files, JSON and eval."""
from __future__ import annotations

import json

import numpy as np
import pytest

from geospot.eval.admin import hierarchy_accuracy, point_admin_accuracy
from geospot.geo.cells import build_cells
from geospot.models.hierarchy import (CellShares, cell_shares, district_argmax, district_probs, districts_listed,
                                      model_shares)

# Three places in Paris and one in Hauts-de-Seine (one cell across the district border); four in New York
# City, one in each of Queens, Brooklyn (Kings County), the Bronx and Manhattan (no GeoNames admin-2);
# one in Honolulu. GeoNames admin-2 of each, checked by hand.
LAT = np.array([48.85, 48.86, 48.84, 48.90, 40.73, 40.65, 40.84, 40.71, 21.30])
LON = np.array([2.35, 2.34, 2.36, 2.25, -73.95, -73.95, -73.87, -74.00, -157.85])
PARIS = "FR/Ile-de-France/Paris"
HAUTS_DE_SEINE = "FR/Ile-de-France/Departement des Hauts-de-Seine"


@pytest.fixture(scope="module")
def cells():
    c = build_cells(LAT, LON, "grid", shape="hex", cell_km=100.0, min_per_cell=1)
    assert len(c) == 3
    return c


@pytest.fixture(scope="module")
def shares(cells):
    return cell_shares(cells, LAT, LON)


def _one_hot(cells, lat, lon):
    probs = np.zeros((1, len(cells)))
    probs[0, cells.assign([lat], [lon])[0]] = 1.0
    return probs


def test_district_shares_sum_to_one_and_a_border_cell_splits_by_its_places(cells, shares):
    np.testing.assert_allclose(np.asarray(shares.district.sum(axis=1)).ravel(), 1.0)
    [paris] = district_probs(_one_hot(cells, 48.85, 2.35), shares)
    assert [(d["code"], d["prob"]) for d in paris] == [(PARIS, 0.75), (HAUTS_DE_SEINE, 0.25)]
    assert paris[0]["name"] == "Paris, Ile-de-France, France"
    assert paris[1]["region"] == "Ile-de-France" and paris[1]["country_code"] == "FR"
    assert list(district_argmax(_one_hot(cells, 48.85, 2.35), shares)) == [PARIS]


def test_districts_listed_only_where_the_cells_resolve_them(cells, shares):
    # New York's cell: no district holds half its places (Manhattan has no GeoNames admin-2).
    paris_cell, ny_cell, hawaii_cell = cells.assign([48.85, 40.73, 21.30], [2.35, -73.95, -157.85])
    resolving = shares.resolving()
    assert resolving[paris_cell] and resolving[hawaii_cell] and not resolving[ny_cell]
    ny = _one_hot(cells, 40.73, -73.95)
    assert district_probs(ny, shares) == [[]]
    assert district_argmax(ny, shares)[0].startswith("US/New York/")  # eval still scores the argmax
    # Half the mass in cells that resolve districts lists them, less does not.
    paris, hawaii = _one_hot(cells, 48.85, 2.35), _one_hot(cells, 21.30, -157.85)
    mixed = np.vstack([0.5 * paris + 0.5 * ny, 0.4 * hawaii + 0.6 * ny])
    assert list(districts_listed(mixed, shares)) == [True, False]
    listed, unlisted = district_probs(mixed, shares)
    assert listed[0] == {"code": PARIS, "name": "Paris, Ile-de-France, France", "region": "Ile-de-France",
                         "country_code": "FR", "prob": 0.375} and unlisted == []


def test_centroids_alone_give_no_districts(cells, tmp_path):
    centroids = model_shares(tmp_path, cells)
    assert centroids.source == "cell centroids" and not centroids.has_districts
    assert district_probs(np.eye(len(cells)), centroids) == [[]] * len(cells)
    assert list(district_argmax(np.eye(len(cells)), centroids)) == [""] * len(cells)


def test_saved_shares_round_trip_and_format_1_files_load_without_districts(cells, shares, tmp_path):
    from safetensors.numpy import load_file, save_file

    shares.save(tmp_path)
    back = model_shares(tmp_path, cells)
    assert back.district_parts == shares.district_parts and (back.district != shares.district).nnz == 0
    assert json.loads((tmp_path / "hierarchy.json").read_text())["format_version"] == 2
    # A file written before districts: format 1, no "districts", no district tensors.
    meta = json.loads((tmp_path / "hierarchy.json").read_text())
    meta["format_version"] = 1
    del meta["districts"]
    (tmp_path / "hierarchy.json").write_text(json.dumps(meta))
    tensors = {k: v for k, v in load_file(str(tmp_path / "hierarchy.safetensors")).items()
               if not k.startswith("district.")}
    save_file(tensors, str(tmp_path / "hierarchy.safetensors"))
    old = CellShares.load(tmp_path)
    assert not old.has_districts and old.countries == shares.countries
    probs = np.eye(len(cells))
    assert district_probs(probs, old) == [[]] * len(cells) and not districts_listed(probs, old).any()
    meta["format_version"] = 3
    (tmp_path / "hierarchy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hierarchy.json: unreadable.*newer"):
        CellShares.load(tmp_path)


def test_district_accuracy_counts_only_truths_with_a_district():
    # Truths: Paris, Hauts-de-Seine, Manhattan (no admin-2: left out).
    t_lat, t_lon = LAT[[0, 3, 7]], LON[[0, 3, 7]]
    acc = hierarchy_accuracy(["FR", "FR", "US"], ["FR/Ile-de-France", "FR/Ile-de-France", "US/New York"],
                             t_lat, t_lon, pred_district=[PARIS, PARIS, ""], listed=[True, False, False])
    assert acc["n_district"] == 2 and acc["district_acc"] == pytest.approx(0.5)
    assert acc["district_listed"] == pytest.approx(0.5) and acc["district_acc_listed"] == 1.0
    assert "district_acc" not in hierarchy_accuracy(["FR"], ["FR/Ile-de-France"], t_lat[:1], t_lon[:1])
    pts = point_admin_accuracy(LAT[[3]], LON[[3]], LAT[[0]], LON[[0]])  # Hauts-de-Seine for Paris
    assert pts["region_acc"] == 1.0 and pts["district_acc"] == 0.0 and pts["n_district"] == 1


def test_eval_lines_name_district_accuracy_only_when_the_hierarchy_has_districts():
    from geospot.cli.methods_cmds import admin_lines

    point = {"country_acc": 0.5, "region_acc": 0.25, "district_acc": 0.1, "city_acc": 0.0}
    hier = {"n": 10, "country_acc": 0.6, "region_acc": 0.3}
    old = admin_lines({"admin": {"hierarchy": hier, "point": point, "shares_from": "training places"}})
    assert len(old) == 2 and not any("district" in line for line in old)
    hier = {**hier, "n_district": 8, "district_acc": 0.125, "district_listed": 0.5, "district_acc_listed": 0.25}
    lines = admin_lines({"admin": {"hierarchy": hier, "point": point, "shares_from": "training places"}})
    assert lines[1] == ("district accuracy (admin-2, over the 8 of 10 places GeoNames gives one): hierarchy 12.5%; "
                        "answers list districts for 50% of them, 25.0% right there; point 10.0%")
    assert lines[2].startswith("city accuracy (OSV-5M, the nearest GeoNames place): hierarchy n/a")
