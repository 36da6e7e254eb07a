"""The familiarity gate: its fit on out-of-fold photos, storage in a model directory, and
answers that switch to the fallback estimate for unfamiliar rows only."""
from __future__ import annotations

import json

import numpy as np
import pytest

from geospot.geo.cells import build_cells
from geospot.models.answer import AnswerContext
from geospot.models.calibration import Calibration
from geospot.models.checkpoint import CheckpointError
from geospot.models.familiarity import FAMILIARITY_FILE, Familiarity, fit_familiarity, read_familiarity


def _clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """Embeddings around one direction, as a frozen encoder gives for one kind of photo."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(d)
    centre[0] = 1.0
    return (centre + 0.4 * rng.normal(size=(n, d))).astype(np.float32)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_threshold_is_the_equal_weight_quantile_of_out_of_fold_scores():
    emb = _clustered(300)
    folds = [(np.arange(100, 300), np.arange(0, 100)), (np.arange(0, 100), np.arange(100, 300))]
    fam = fit_familiarity(emb, folds, quantile=0.05, fitted_on="two folds")
    # by hand: each fold's held-out rows against its training mean; the small fold weighs as much
    s = [_unit(emb[te]) @ _unit(_unit(emb[tr]).mean(0)) for tr, te in folds]
    w = np.concatenate([np.full(100, 1 / 100), np.full(200, 1 / 200)])
    x = np.concatenate(s)
    order = np.argsort(x)
    want = x[order][np.searchsorted(np.cumsum(w[order]), 0.05 * w.sum())]
    assert fam.threshold == pytest.approx(want, abs=1e-6)
    assert np.linalg.norm(fam.mean) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(fam.mean, _unit(_unit(emb).mean(0)), atol=1e-5)
    assert fam.fitted_on == "two folds" and fam.fallback == "max_geoscore"
    # about the quantile of photos like the training ones are unfamiliar; an unrelated one is
    assert 0.0 < fam.unfamiliar(_clustered(2000, seed=5)).mean() < 0.12
    other = np.zeros((1, 16), np.float32)
    other[0, 1] = 1.0
    assert fam.unfamiliar(other).all()
    assert fit_familiarity(emb, []) is None


def test_rows_select_what_is_fitted():
    emb = _clustered(200)
    rows = np.arange(50, 200)
    folds = [(np.arange(0, 75), np.arange(75, 150)), (np.arange(75, 150), np.arange(0, 75))]
    a = fit_familiarity(emb, folds, rows=rows)
    b = fit_familiarity(emb[rows], folds)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-6)
    assert a.threshold == pytest.approx(b.threshold, abs=1e-6)


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(threshold=float("nan")), dict(quantile=0.9),
                                 dict(fallback="nowhere"), dict(mean=np.zeros(4, np.float32))])
def test_invalid_familiarity_is_refused(bad):
    kwargs = dict(mean=_unit(np.ones(4, np.float32)), threshold=0.4) | bad
    with pytest.raises(ValueError):
        Familiarity(**kwargs)


def _cells():
    from geospot.models.distribution import support_from_places

    rng = np.random.default_rng(0)
    centres = np.array([[45.0, 16.0], [40.0, -100.0], [-25.0, 135.0]])
    which = rng.integers(0, 3, 300)
    lat, lon = centres[which, 0] + rng.normal(0, 1.5, 300), centres[which, 1] + rng.normal(0, 1.5, 300)
    cells = build_cells(lat, lon, scheme="s2", min_per_cell=5, max_per_cell=60)
    return cells, support_from_places(cells, lat, lon)


def test_answer_switches_only_the_flagged_rows_with_the_fallbacks_own_radii():
    cal = Calibration(radius_scale={"local_mean": {"50": 0.5, "90": 0.8}, "max_geoscore": {"50": 1.5, "90": 1.2}})
    cells, support = _cells()
    ctx = AnswerContext(cells, support, calibration=cal)
    probs = np.random.default_rng(1).dirichlet(np.full(len(cells), 0.3), size=3)
    flag = np.array([False, True, False])
    gated = ctx.answer(probs, fallback=flag)
    plain = ctx.answer(probs)
    hedged = ctx.answer(probs, estimate="max_geoscore")
    for key in ("lat", "lon", "radius_km", "within"):
        np.testing.assert_allclose(gated[key][~flag], plain[key][~flag])
        np.testing.assert_allclose(gated[key][flag], hedged[key][flag])
    assert list(gated["used"]) == ["local_mean", "max_geoscore", "local_mean"]
    assert list(plain["used"]) == ["local_mean"] * 3
    with pytest.raises(ValueError, match="one flag per row"):
        ctx.answer(probs, fallback=[True])


def test_stored_and_read_back(tmp_path):
    fam = Familiarity(_unit(np.arange(1, 9, dtype=np.float32)), 0.42, fitted_on="test")
    fam.save(tmp_path)
    config = {"head": {"embed_dim": 8}, "familiarity": fam.config()}
    back = read_familiarity(tmp_path, config)
    np.testing.assert_allclose(back.mean, fam.mean)
    assert (back.threshold, back.quantile, back.fallback, back.fitted_on) == (0.42, 0.01, "max_geoscore", "test")
    assert read_familiarity(tmp_path, {"head": {"embed_dim": 8}}) is None
    with pytest.raises(CheckpointError, match="shape"):
        read_familiarity(tmp_path, {"head": {"embed_dim": 9}, "familiarity": fam.config()})
    with pytest.raises(CheckpointError, match="bad 'familiarity'"):
        read_familiarity(tmp_path, {"head": {"embed_dim": 8}, "familiarity": fam.config() | {"threshold": "x"}})
    with pytest.raises(CheckpointError, match="'familiarity' must be"):
        read_familiarity(tmp_path, {"head": {"embed_dim": 8}, "familiarity": {"file": "other.bin"}})
    (tmp_path / FAMILIARITY_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_familiarity(tmp_path, config)
    (tmp_path / FAMILIARITY_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read_familiarity(tmp_path, json.loads(json.dumps(config)))
