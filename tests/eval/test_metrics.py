"""Metrics on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from geospot.eval.metrics import (
    THRESHOLDS_KM,
    accuracy,
    distance_metrics,
    error_metrics,
    geoscore,
    per_group_metrics,
    summarize_folds,
    topk_accuracy,
)
from geospot.geo.distance import EARTH_RADIUS_KM

KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180.0


def test_geoscore_known_values():
    assert geoscore(0) == pytest.approx(5000.0)
    assert geoscore(1492.7) == pytest.approx(5000.0 / math.e)
    arr = geoscore(np.array([0.0, 1492.7 * 2]))
    assert isinstance(arr, np.ndarray)
    np.testing.assert_allclose(arr, [5000.0, 5000.0 / math.e**2])


def test_distance_metrics_three_known_errors():
    # Predictions along the equator: the error is exactly the longitude offset times km/deg.
    errors = np.array([0.5, 100.0, 1000.0])
    m = distance_metrics(np.zeros(3), errors / KM_PER_DEG, np.zeros(3), np.zeros(3))
    assert m["n"] == 3
    assert m["median_km"] == pytest.approx(100.0)
    assert m["mean_km"] == pytest.approx(1100.5 / 3)
    assert m["acc_1km"] == pytest.approx(1 / 3)
    assert m["acc_25km"] == pytest.approx(1 / 3)
    assert m["acc_200km"] == pytest.approx(2 / 3)
    assert m["acc_750km"] == pytest.approx(2 / 3)
    assert m["acc_2500km"] == pytest.approx(1.0)
    assert m["geoscore"] == pytest.approx(np.mean(5000 * np.exp(-errors / 1492.7)))
    assert set(m) == {"n", "median_km", "mean_km", "geoscore"} | {f"acc_{t}km" for t in THRESHOLDS_KM}
    assert all(type(v) in (int, float) for v in m.values())  # JSON-ready


def test_distance_metrics_antipode_and_wraparound():
    # Across the antimeridian 179.5 -> -179.5 is 1 degree, not 359.
    m = distance_metrics([0.0], [179.5], [0.0], [-179.5])
    assert m["median_km"] == pytest.approx(KM_PER_DEG)
    m = distance_metrics([90.0], [0.0], [-90.0], [0.0])
    assert m["median_km"] == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert m["acc_2500km"] == 0.0


def test_thresholds_are_inclusive():
    m = error_metrics([25.0, 25.0000001])
    assert m["acc_25km"] == 0.5


def test_distance_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        distance_metrics([0, 0], [0], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="pred_lat.*index 1"):
        distance_metrics([0, np.nan], [0, 0], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="empty"):
        distance_metrics([], [], [], [])
    with pytest.raises(ValueError, match="negative"):
        error_metrics([1.0, -2.0])


def test_topk_accuracy():
    probs = np.array([
        [0.7, 0.2, 0.1],   # true 0: top1
        [0.5, 0.3, 0.2],   # true 2: only top3
        [0.1, 0.6, 0.3],   # true 2: top2
        [0.4, 0.4, 0.2],   # true 1: tie with class 0 -> not top1 (ties count against), top2
    ])
    true = np.array([0, 2, 2, 1])
    r = topk_accuracy(probs, true, ks=(1, 2, 3))
    assert r == {"top1": 0.25, "top2": 0.75, "top3": 1.0}
    assert topk_accuracy(probs, np.array([0, -1, -1, -1]), ks=(3,)) == {"top3": 0.25}


def test_topk_uniform_scores_get_no_credit():
    assert topk_accuracy(np.full((5, 10), 0.1), np.arange(5), ks=(1, 5)) == {"top1": 0.0, "top5": 0.0}
    # k beyond the number of classes: every known row is correct.
    assert topk_accuracy(np.full((2, 3), 1 / 3), np.array([0, -1]), ks=(5,)) == {"top5": 0.5}


def test_topk_rejects_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        topk_accuracy(np.ones((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        topk_accuracy(np.ones(3), np.array([0]))
    with pytest.raises(ValueError, match="integers"):
        topk_accuracy(np.ones((1, 3)), np.array([0.0]))
    with pytest.raises(ValueError, match="k must be"):
        topk_accuracy(np.ones((1, 3)), np.array([0]), ks=(0,))


def test_accuracy_excludes_unknown_true_labels():
    pred = ["US", "FR", "DE", "NA", None, "IT"]
    true = ["US", "DE", "", "NA", "BR", np.nan]
    r = accuracy(pred, true)
    # Known true rows: US (right), DE (wrong), NA (right: Namibia is not "missing"), BR (None pred: wrong).
    assert r == {"accuracy": 0.5, "n": 4, "n_excluded": 2}
    empty = accuracy(["US"], ["unknown"])
    assert math.isnan(empty["accuracy"]) and empty["n"] == 0 and empty["n_excluded"] == 1
    with pytest.raises(ValueError, match="differ in length"):
        accuracy(["US"], [])


def test_summarize_folds():
    folds = [
        {"median_km": 100.0, "acc_25km": 0.2, "name": "a", "model": {"top1": 0.1}},
        {"median_km": 300.0, "acc_25km": 0.4, "name": "b", "model": {"top1": 0.3}, "extra": 5},
    ]
    s = summarize_folds(folds)
    assert s["median_km"] == {"mean": 200.0, "std": 100.0, "n_folds": 2}  # ddof=0
    assert s["acc_25km"]["mean"] == pytest.approx(0.3)
    assert s["acc_25km"]["std"] == pytest.approx(0.1)
    assert s["model"]["top1"]["mean"] == pytest.approx(0.2)
    assert s["extra"] == {"mean": 5.0, "std": 0.0, "n_folds": 1}
    assert "name" not in s
    with pytest.raises(ValueError):
        summarize_folds([])


def test_per_group_metrics():
    errors = np.array([10.0, 30.0, 1000.0, 5.0, 800.0])
    labels = ["FR", "FR", "US", "DE", None]
    g = per_group_metrics(errors, labels)
    assert list(g) == ["FR", "(unknown)", "DE", "US"]  # largest first, then by label
    assert g["FR"]["n"] == 2
    assert g["FR"]["median_km"] == pytest.approx(20.0)
    assert g["FR"]["acc_25km"] == 0.5
    assert g["FR"]["acc_750km"] == 1.0
    assert g["US"]["acc_750km"] == 0.0
    assert sum(v["n"] for v in g.values()) == errors.size
    with pytest.raises(ValueError, match="differ in length"):
        per_group_metrics(errors, labels[:2])
