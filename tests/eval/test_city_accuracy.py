"""The hierarchy's city accuracy (OSV-5M's city: the nearest GeoNames place) and the bootstrap intervals
of every country / region / district / city accuracy that `eval` prints."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.eval.admin import _labels, hierarchy_accuracy, point_admin_accuracy
from geospot.eval.cities import cities_listed, city_argmax, city_keys, city_shares
from geospot.geo.cells import build_cells

# Honolulu x3 + 'Aiea (a cell resolving Honolulu, 75%); Paris x3 + La Garenne-Colombes; four New York
# boroughs' nearest towns, one each (no town holds half: the cell resolves none); two Fiji places either side
# of the antimeridian whose nearest town is Lambasa (one cell across 180°). Nearest GeoNames towns checked by hand.
LAT = np.array([21.30, 21.301, 21.299, 21.39, 48.85, 48.86, 48.84, 48.90, 40.73, 40.65, 40.84, 40.71, -16.5, -16.5])
LON = np.array([-157.85, -157.851, -157.849, -157.94, 2.35, 2.34, 2.36, 2.25, -73.95, -73.95, -73.87, -74.00,
                179.9, -179.9])


@pytest.fixture(scope="module")
def cells():
    c = build_cells(LAT, LON, "grid", shape="hex", cell_km=100.0, min_per_cell=1)
    assert len(c) == 4
    return c


@pytest.fixture(scope="module")
def shares(cells):
    return city_shares(cells, LAT, LON)


def _probs(cells, *weighted):
    """One answer: probability ``w`` on the cell of each ``(lat, lon, w)``."""
    p = np.zeros((1, len(cells)))
    for lat, lon, w in weighted:
        p[0, cells.assign([lat], [lon])[0]] += w
    return p


def _city(key: str) -> str:
    return key.split("/")[2]


def test_city_keys_are_the_point_metric_s_labels_and_bad_coordinates_have_none():
    keys = city_keys(np.append(LAT, 91.0), np.append(LON, 0.0))
    assert [_city(k) for k in keys[:4]] == ["Honolulu"] * 3 + ["'Aiea"] and keys[-1] == ""
    assert keys[12] == keys[13] and _city(keys[12]) == "Lambasa"  # either side of the antimeridian
    np.testing.assert_array_equal(keys[:-1], _labels(LAT, LON)[2])


def test_city_shares_split_each_cell_by_its_places(cells, shares):
    cell, index, share = shares.triplets
    np.testing.assert_allclose(np.bincount(cell, weights=share, minlength=len(cells)), 1.0)
    honolulu = cells.assign([21.3], [-157.85])[0]
    got = {_city(shares.cities[j]): s for c, j, s in zip(cell, index, share) if c == honolulu}
    assert got == pytest.approx({"Honolulu": 0.75, "'Aiea": 0.25})
    resolving = shares.resolving()
    assert resolving[honolulu] and not resolving[cells.assign([40.73], [-73.95])[0]]
    assert resolving[cells.assign([-16.5], [179.99])[0]]


def test_city_argmax_and_listed_follow_the_summed_mass(cells, shares):
    paris = _probs(cells, (48.85, 2.35, 1.0))
    assert _city(city_argmax(paris, shares)[0]) == "Paris" and cities_listed(paris, shares).tolist() == [True]
    # 60% on New York (four towns at 15% each), 40% on Honolulu (30% Honolulu): Honolulu is the argmax city,
    # but most of the mass lies in a cell that resolves no city, so the answer does not list one.
    mixed = _probs(cells, (40.73, -73.95, 0.6), (21.3, -157.85, 0.4))
    assert _city(city_argmax(mixed, shares)[0]) == "Honolulu" and cities_listed(mixed, shares).tolist() == [False]
    both = np.vstack([paris, mixed, np.zeros((1, len(cells)))])
    np.testing.assert_array_equal(city_argmax(both, shares, chunk=1), city_argmax(both, shares))
    assert city_argmax(both, shares)[2] == ""  # no probability anywhere: no city
    with pytest.raises(ValueError, match="probs must be"):
        city_argmax(np.ones((1, len(cells) + 1)), shares)


def test_cells_without_training_places_have_no_city(cells):
    only_paris = city_shares(cells, LAT[4:8], LON[4:8])
    assert city_argmax(_probs(cells, (21.3, -157.85, 1.0)), only_paris).tolist() == [""]
    assert city_shares(cells, [], []).cities == []


def test_hierarchy_city_accuracy_with_listed_answers_and_intervals(shares, cells):
    t_lat, t_lon = LAT[[0, 4, 8, 12]], LON[[0, 4, 8, 12]]  # Honolulu, Paris, Long Island City, Lambasa
    probs = np.vstack([_probs(cells, (lat, lon, 1.0)) for lat, lon in zip(t_lat, t_lon)])
    regions = ["US/Hawaii", "FR/Ile-de-France", "US/New York", "FJ/Northern"]
    acc = hierarchy_accuracy(["US", "FR", "US", "FJ"], regions, t_lat, t_lon,
                             pred_city=city_argmax(probs, shares), city_listed=cities_listed(probs, shares))
    # New York's cell: a tie of four towns at 25%; argmax takes the first key (Brooklyn), not Long Island City.
    assert acc["city_acc"] == pytest.approx(0.75) and acc["city_listed"] == pytest.approx(0.75)
    assert acc["city_acc_listed"] == 1.0
    lo, hi = acc["city_acc_ci"]
    assert 0 <= lo < 0.75 < hi <= 1
    assert acc["country_acc"] == 1.0 and acc["country_acc_ci"] == [1.0, 1.0]
    assert "city_acc" not in hierarchy_accuracy(["US"], ["US/Hawaii"], t_lat[:1], t_lon[:1])
    with pytest.raises(ValueError, match="1 city answers, 4 truths"):
        hierarchy_accuracy(["US"] * 4, ["US/Hawaii"] * 4, t_lat, t_lon, pred_city=["x"])


def test_intervals_resample_whole_groups_and_skip_unknown_truths():
    # Two groups of two truths: group a right, group b wrong (a point in Paris for Honolulu truths).
    t_lat, t_lon = LAT[[4, 5, 0, 1]], LON[[4, 5, 0, 1]]
    p_lat, p_lon = np.full(4, 48.85), np.full(4, 2.35)
    rows = point_admin_accuracy(p_lat, p_lon, t_lat, t_lon, seed=1)
    grouped = point_admin_accuracy(p_lat, p_lon, t_lat, t_lon, groups=["a", "a", "b", "b"], seed=1)
    assert rows["city_acc"] == grouped["city_acc"] == 0.5
    assert grouped["city_acc_ci"] == [0.0, 1.0]  # two groups: resamples are all a, all b, or both
    assert grouped["city_acc_ci"][1] - grouped["city_acc_ci"][0] >= rows["city_acc_ci"][1] - rows["city_acc_ci"][0]
    bad = point_admin_accuracy([48.85], [2.35], [91.0], [0.0])
    assert bad["n_unknown"] == 1 and np.isnan(bad["city_acc"]) and np.isnan(bad["city_acc_ci"]).all()


def test_eval_lines_print_the_intervals_and_both_city_accuracies():
    from geospot.cli.methods_cmds import admin_lines

    point = {"country_acc": 0.5, "country_acc_ci": [0.4, 0.6], "region_acc": 0.25, "city_acc": 0.1,
             "city_acc_ci": [0.05, 0.15], "district_acc": float("nan")}
    hier = {"n": 10, "country_acc": 0.6, "country_acc_ci": [0.5, 0.7], "region_acc": 0.3, "city_acc": 0.2,
            "city_acc_ci": [0.1, 0.3], "city_listed": 0.4, "city_acc_listed": 0.5}
    lines = admin_lines({"admin": {"hierarchy": hier, "point": point, "shares_from": "training places"}})
    assert lines[0] == ("country / region accuracy (OSV-5M, GeoNames labels): hierarchy 60.0% [50.0, 70.0] / 30.0% "
                        "(summed cell probabilities, shares from training places); point 50.0% [40.0, 60.0] / 25.0%")
    assert lines[1] == ("city accuracy (OSV-5M, the nearest GeoNames place): hierarchy 20.0% [10.0, 30.0]; answers "
                        "list a city for 40% of them, 50.0% right there; point 10.0% [5.0, 15.0]")
