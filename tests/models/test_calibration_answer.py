"""Calibration (temperature, prior weight, kernel, radius scales) and the estimate registry."""
import numpy as np
import pytest

from geospot.geo.cells import build_cells
from geospot.models.answer import ESTIMATES, AnswerContext, register_estimate
from geospot.models.calibration import (
    Calibration, FoldPredictions, calibrate_probs, fit_calibration, fit_radius_scales, log_likelihood,
)
from geospot.models.distribution import cell_prior, support_from_places
from geospot.geo.distance import haversine_km


def _world(seed=0, n=400):
    rng = np.random.default_rng(seed)
    centres = np.array([[45.0, 16.0], [40.0, -100.0], [-25.0, 135.0], [9.0, 8.0]])
    which = rng.integers(0, 4, n)
    lat = centres[which, 0] + rng.normal(0, 1.5, n)
    lon = centres[which, 1] + rng.normal(0, 1.5, n)
    cells = build_cells(lat, lon, scheme="s2", min_per_cell=5, max_per_cell=60)
    return lat, lon, cells


def _overconfident_fold(seed, wrong=0.4):
    """A head that puts 97% on one cell, the wrong one 40% of the time."""
    lat, lon, cells = _world(seed)
    rng = np.random.default_rng(seed + 1)
    truth = cells.assign(lat, lon, nearest=True)
    guess = np.where(rng.random(len(lat)) < wrong, rng.integers(0, len(cells), len(lat)), truth)
    probs = np.full((len(lat), len(cells)), 0.03 / (len(cells) - 1))
    probs[np.arange(len(lat)), guess] = 0.97
    sup = support_from_places(cells, lat, lon)
    return FoldPredictions(probs, cell_prior(cells), sup, lat, lon, cells)


def test_calibrate_probs_temperature_and_prior():
    p = np.array([[0.7, 0.2, 0.1]])
    assert np.allclose(calibrate_probs(p, 1.0), p)
    flat = calibrate_probs(p, 1e3)
    assert np.allclose(flat, 1 / 3, atol=1e-3)
    prior = np.array([0.0, 0.0, 1.0])
    mixed = calibrate_probs(p, 1.0, 0.5, prior)
    assert np.allclose(mixed, 0.5 * p + 0.5 * prior)


def test_fit_softens_an_overconfident_head_and_raises_likelihood():
    folds = [_overconfident_fold(s) for s in range(3)]
    cal = fit_calibration(folds)
    assert cal.temperature > 1.0 or cal.prior_weight > 0.05
    assert log_likelihood(folds, cal).mean() > log_likelihood(folds, Calibration()).mean()


def test_radius_scales_give_nominal_coverage_out_of_fold():
    folds = [_overconfident_fold(s) for s in range(3)]
    cal = fit_calibration(folds)
    cal.radius_scale = fit_radius_scales(folds, cal, ["local_mean"])
    cover = {"50": [], "90": []}
    for f in folds:
        ans = AnswerContext(f.cells, f.support, cal, prior=f.prior).answer(f.probs, estimate="local_mean")
        err = haversine_km(ans["lat"], ans["lon"], f.true_lat, f.true_lon)
        cover["50"].append((err <= ans["radius_km"][:, 0]).mean())
        cover["90"].append((err <= ans["radius_km"][:, 1]).mean())
    assert 0.4 <= np.mean(cover["50"]) <= 0.6
    assert 0.85 <= np.mean(cover["90"]) <= 0.95
    assert cal.scales_for("max_geoscore", (0.5, 0.9)).tolist() == cal.scales_for("local_mean", (0.5, 0.9)).tolist()


def test_calibration_round_trips_and_rejects_garbage():
    cal = Calibration(2.0, 0.1, 40.0, "test", {"local_mean": {"50": 1.5, "90": 2.0}})
    assert Calibration.from_dict(cal.to_dict()) == cal
    for bad in ({"temperature": -1}, {"prior_weight": 2}, {"kernel_km": float("nan")}, {"bogus": 1},
                {"radius_scale": {"local_mean": {"50": -1}}}):
        with pytest.raises(ValueError):
            Calibration.from_dict(bad)


def test_every_estimate_answers_and_bayes_falls_back_to_the_prior_when_flat():
    lat, lon, cells = _world(3)
    ctx = AnswerContext(cells, support_from_places(cells, lat, lon))
    flat = np.full((2, len(cells)), 1.0 / len(cells))
    ans = ctx.answer(flat, estimate="max_geoscore")
    assert set(ans["estimates"]) == set(ESTIMATES)
    # with no information the Bayes answer is the same for every photo: the prior's best point
    assert np.allclose(ans["lat"][0], ans["lat"][1]) and np.allclose(ans["lon"][0], ans["lon"][1])
    assert (ans["radius_km"] > 0).all() and (np.diff(ans["radius_km"], axis=1) >= 0).all()
    assert ((ans["within"] >= 0) & (ans["within"] <= 1)).all()
    sharp = np.zeros((1, len(cells)))
    sharp[0, 0] = 1.0
    one = ctx.answer(sharp, estimate="max_geoscore")
    assert haversine_km(one["lat"], one["lon"], cells.centroid_lat[0], cells.centroid_lon[0])[0] < 300


def test_registry_accepts_a_refiner():
    @register_estimate("test_origin")
    def _origin(post, top_k):
        n = post.probs.shape[0]
        return np.zeros(n), np.zeros(n)

    try:
        lat, lon, cells = _world(4)
        ans = AnswerContext(cells).answer(np.full((1, len(cells)), 1.0 / len(cells)), estimate="test_origin")
        assert ans["lat"][0] == 0 and ans["lon"][0] == 0
    finally:
        ESTIMATES.pop("test_origin")


def test_log_prob_cap_bends_monotonically_below_the_cap():
    from geospot.models.calibration import cap_log_probs

    x = np.linspace(-30.0, 0.0, 301)
    y = cap_log_probs(x, -3.0)
    assert np.all(np.diff(y) > 0)  # the order of cells never changes
    assert np.all(y < -3.0)
    assert np.allclose(y[x < -15], x[x < -15], atol=1e-5)  # far below: untouched
    assert cap_log_probs(x, None) is x


def test_cap_stops_a_temperature_from_inventing_certainty_beyond_the_validated_range():
    # out of fold, heads were unsure (raw tops well under 0.3): a sharpening temperature was right there
    rng = np.random.default_rng(0)
    folds = []
    for s in range(3):
        f = _overconfident_fold(s)
        c = f.probs.shape[1]
        logits = rng.normal(0, 0.3, (len(f.true_lat), c))
        truth = f.cells.assign(f.true_lat, f.true_lon, nearest=True)
        logits[np.arange(len(truth)), truth] += 0.6
        p = np.exp(logits)
        f.probs = p / p.sum(1, keepdims=True)
        folds.append(f)
    cal = fit_calibration(folds)
    assert cal.temperature < 1.0
    assert cal.log_prob_cap == pytest.approx(max(np.log(f.probs).max() for f in folds))
    assert np.exp(cal.log_prob_cap) < 0.3
    # a photo unlike anything validated: raw top 0.6 against 0.3
    c = folds[0].probs.shape[1]
    odd = np.full((1, c), 0.1 / (c - 2))
    odd[0, :2] = [0.6, 0.3]
    capped = cal.apply(odd, folds[0].prior)[0]
    uncapped = Calibration(cal.temperature, cal.prior_weight, cal.kernel_km).apply(odd, folds[0].prior)[0]
    assert uncapped[0] > 0.95  # the temperature alone extrapolates to near certainty
    assert capped[0] < 0.8 and capped[0] > capped[1] > capped[2]  # order kept, certainty not invented


def test_log_prob_cap_round_trips_and_is_validated():
    cal = Calibration(0.5, 0.1, 80.0, "x", {"local_mean": {"50": 1.0, "90": 1.2}}, log_prob_cap=-3.2)
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Calibration.from_dict({"temperature": 0.5}).log_prob_cap is None  # older models
    for bad in (1.0, float("nan"), "a", True):
        with pytest.raises(ValueError, match="log_prob_cap"):
            Calibration(log_prob_cap=bad)


def test_radii_never_shrink_with_the_level_even_when_scales_cross():
    f = _overconfident_fold(0)
    flat = np.full_like(f.probs, 1.0 / f.probs.shape[1])  # mass everywhere: raw radii near half the globe
    cal = Calibration(1.0, 0.0, 2000.0, radius_scale={"local_mean": {"50": 1.0, "90": 0.05}})
    ans = AnswerContext(f.cells, f.support, cal, prior=f.prior).answer(flat[:20], levels=(0.5, 0.9))
    assert np.all(ans["radius_km"][:, 1] >= ans["radius_km"][:, 0])
    rev = AnswerContext(f.cells, f.support, cal, prior=f.prior).answer(flat[:20], levels=(0.9, 0.5))
    assert np.all(rev["radius_km"][:, 0] >= rev["radius_km"][:, 1])
