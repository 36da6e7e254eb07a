"""train_head: learning, validation split, early stopping, class weights, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geospot.eval.metrics import geoscore
from geospot.geo.cells import s2_table_from_tokens
from geospot.geo.cells import s2 as s2cells
from geospot.geo.distance import haversine_km
from geospot.models.estimate import point_estimates
from geospot.models.head import normalize_embeddings
from geospot.train.fit import TrainConfig, class_weights, holdout_split, train_head

CENTRES = np.array([[48.0, 2.0], [40.0, -74.0], [-33.9, 151.2], [35.7, 139.7], [-23.5, -46.6], [55.7, 37.6]])
D = 16


def make_cells(centres=CENTRES, level=6):
    """One S2 cell (~150 km) around each centre, centroid at the centre."""
    leaf = s2cells.latlon_to_leaf_id(centres[:, 0], centres[:, 1])
    tokens = [s2cells.to_token(c) for c in s2cells.cell_parent(leaf, level).tolist()]
    return s2_table_from_tokens(tokens, centres[:, 0], centres[:, 1], np.ones(len(centres)))


# The table orders cells by S2 id: the cell index of each class's centre.
CELL_OF_CLASS = make_cells().assign(CENTRES[:, 0], CENTRES[:, 1])


def make_data(n_per_class, seed=0, noise=0.6, classes=None):
    """Embeddings = class prototype + noise; coordinates a few km around the class centre."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(123).normal(size=(len(CENTRES), D))
    counts = np.full(len(CENTRES), n_per_class) if np.isscalar(n_per_class) else np.asarray(n_per_class)
    y = np.repeat(np.arange(len(CENTRES)), counts) if classes is None else np.asarray(classes)
    emb = (protos[y] + noise * rng.normal(size=(len(y), D))).astype(np.float32)
    lat = CENTRES[y, 0] + rng.normal(0, 0.05, len(y))
    lon = CENTRES[y, 1] + rng.normal(0, 0.05, len(y))
    return emb, lat, lon, y


def fast(**kw):
    # Small D needs a larger learning rate than the 1e-3 default tuned for D ~ 1000.
    base = dict(epochs=12, lr=5e-2, batch_size=32, patience=4, dropout=0.0, val_fraction=0.1)
    base.update(kw)
    return TrainConfig(**base)


def predict(head, emb):
    with torch.no_grad():
        return torch.softmax(head(normalize_embeddings(torch.as_tensor(emb))), dim=1).numpy()


# ------------------------------------------------------------------ config


def test_config_roundtrip_and_unknown_keys():
    cfg = TrainConfig(loss="ce", tau_km=50.0, hidden=32, class_weighting="inv_sqrt", seed=3)
    d = cfg.to_dict()
    assert d["normalize"] is True and d["loss"] == "ce"
    assert TrainConfig.from_dict(d) == cfg
    assert TrainConfig.from_dict({"epochs": 5}).epochs == 5
    with pytest.raises(ValueError, match="unknown key.*'epoch'"):
        TrainConfig.from_dict({"epoch": 5})


@pytest.mark.parametrize("bad", [dict(loss="mse"), dict(tau_km=0), dict(epochs=0), dict(batch_size=2.5),
                                 dict(val_fraction=1.0), dict(class_weighting="inv"), dict(epochs=True),
                                 dict(dropout=-0.1), dict(lr_schedule="linear")])
def test_config_rejects_bad_values(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        TrainConfig(**bad)


# ------------------------------------------------------------------ helpers


def test_class_weights_inv_sqrt_mean_one():
    w = class_weights(np.array([0, 0, 0, 0, 1, 2, 2, 2, 2]), 4, "inv_sqrt")
    # counts 4, 1, 4, 0 -> 1/2, 1, 1/2 (mean 2/3) -> 3/4, 3/2, 3/4; absent class 0.
    np.testing.assert_allclose(w, [0.75, 1.5, 0.75, 0.0])
    np.testing.assert_array_equal(class_weights(np.array([0, 1]), 3, "none"), np.ones(3))


def test_holdout_split_keeps_groups_whole_and_is_seeded():
    groups = np.repeat(np.arange(50), 4)
    tr, va = holdout_split(len(groups), groups, 0.1, seed=0)
    assert len(va) == 20 and len(tr) == 180
    assert not set(groups[tr]) & set(groups[va])
    np.testing.assert_array_equal(va, holdout_split(len(groups), groups, 0.1, seed=0)[1])
    assert not np.array_equal(va, holdout_split(len(groups), groups, 0.1, seed=1)[1])
    # Too few groups for a validation side: everything trains.
    tr, va = holdout_split(12, np.repeat([0, 1, 2], 4), 0.1, seed=0)
    assert len(va) == 0 and len(tr) == 12


# ------------------------------------------------------------------ training


def test_learns_separable_clusters_with_group_holdout():
    emb, lat, lon, y = make_data(40)
    groups = np.arange(len(y)) // 2
    head, hist = train_head(emb, lat, lon, make_cells(), fast(), groups=groups, progress=False)
    assert not head.training
    assert hist["validation"] == "held-out groups" and hist["n_val"] == 24 and hist["n_train"] == 216
    assert len(hist["train_loss"]) == hist["epochs_run"] == len(hist["val_geoscore"])
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert max(hist["val_geoscore"]) > 4500 and hist["val_median_km"][hist["best_epoch"] - 1] < 50
    test_emb, _, _, test_y = make_data(10, seed=1)
    assert (predict(head, test_emb).argmax(axis=1) == CELL_OF_CLASS[test_y]).mean() > 0.95


@pytest.mark.parametrize("kw", [dict(loss="ce"), dict(hidden=8, dropout=0.2, lr_schedule="step")])
def test_other_losses_and_heads_learn(kw):
    emb, lat, lon, y = make_data(30)
    head, hist = train_head(emb, lat, lon, make_cells(), fast(**kw), progress=False)
    assert hist["validation"] == "held-out rows"
    test_emb, _, _, test_y = make_data(10, seed=1)
    assert (predict(head, test_emb).argmax(axis=1) == CELL_OF_CLASS[test_y]).mean() > 0.9


def test_same_seed_identical_weights_other_seed_differs():
    emb, lat, lon, _ = make_data(20)
    cfg = fast(epochs=3, dropout=0.3, hidden=8)
    rng_before = torch.get_rng_state()
    det_before = torch.are_deterministic_algorithms_enabled()
    a, ha = train_head(emb, lat, lon, make_cells(), cfg, progress=False)
    b, hb = train_head(emb, lat, lon, make_cells(), cfg, progress=False)
    c, _ = train_head(emb, lat, lon, make_cells(), fast(epochs=3, dropout=0.3, hidden=8, seed=1), progress=False)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert ha["train_loss"] == hb["train_loss"]
    # The caller's global RNG and determinism setting are left alone.
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.are_deterministic_algorithms_enabled() == det_before


def test_early_stopping_restores_best_epoch():
    cells = make_cells()
    emb, lat, lon, y = make_data(30)
    # The validation set maps each prototype to the *next* class's place, so the
    # better the head learns the training mapping, the worse validation gets.
    v_emb, _, _, v_y = make_data(5, seed=2)
    shifted = (v_y + 1) % len(CENTRES)
    v_lat, v_lon = CENTRES[shifted, 0], CENTRES[shifted, 1]
    cfg = fast(epochs=30, patience=3, lr=3e-3)
    head, hist = train_head(emb, lat, lon, cells, cfg, emb_val=v_emb, lat_val=v_lat, lon_val=v_lon, progress=False)
    scores = hist["val_geoscore"]
    assert hist["validation"] == "given" and hist["stopped_early"]
    assert hist["best_epoch"] == int(np.argmax(scores)) + 1
    assert hist["epochs_run"] == hist["best_epoch"] + cfg.patience < cfg.epochs
    assert scores[-1] < max(scores)
    est = point_estimates(predict(head, v_emb), cells.centroid_lat, cells.centroid_lon, top_k=cfg.estimate_top_k)
    restored = geoscore(haversine_km(est["local_lat"], est["local_lon"], v_lat, v_lon)).mean()
    assert restored == pytest.approx(max(scores), rel=1e-6)


def test_inv_sqrt_weighting_favours_rare_class():
    counts = np.array([60, 60, 60, 60, 60, 3])
    emb, lat, lon, y = make_data(counts, noise=1.5)
    cfg = dict(epochs=6, val_fraction=0.0)
    plain, _ = train_head(emb, lat, lon, make_cells(), fast(class_weighting="none", **cfg), progress=False)
    weighted, _ = train_head(emb, lat, lon, make_cells(), fast(class_weighting="inv_sqrt", **cfg), progress=False)
    rare_emb, _, _, _ = make_data([0, 0, 0, 0, 0, 50], seed=5, noise=1.5)
    rare = CELL_OF_CLASS[5]
    assert predict(weighted, rare_emb)[:, rare].mean() > predict(plain, rare_emb)[:, rare].mean() + 0.05


def test_tiny_data_trains_fixed_epochs_without_validation():
    emb, lat, lon, _ = make_data(1, classes=[0, 1, 2, 3])
    # round(0.1 * 4 rows) = 0 validation rows
    head, hist = train_head(emb, lat, lon, make_cells(), fast(epochs=4, val_fraction=0.1), progress=False)
    assert hist["validation"] == "none" and hist["n_val"] == 0
    assert hist["epochs_run"] == 4 and hist["best_epoch"] == 4 and hist["val_geoscore"] == []
    assert predict(head, emb).shape == (4, 6)


def test_bad_inputs_name_the_row():
    emb, lat, lon, _ = make_data(3)
    cells = make_cells()
    bad_emb = emb.copy()
    bad_emb[4, 2] = np.nan
    with pytest.raises(ValueError, match="emb row 4"):
        train_head(bad_emb, lat, lon, cells, fast(), progress=False)
    bad_lat = lat.copy()
    bad_lat[7] = 95.0
    with pytest.raises(ValueError, match="row 7"):
        train_head(emb, bad_lat, lon, cells, fast(), progress=False)
    with pytest.raises(ValueError, match="for 18 embeddings"):
        train_head(emb, lat[:-1], lon[:-1], cells, fast(), progress=False)
    with pytest.raises(ValueError, match="all of emb_val"):
        train_head(emb, lat, lon, cells, fast(), emb_val=emb, progress=False)
    with pytest.raises(ValueError, match="groups has 2 rows"):
        train_head(emb, lat, lon, cells, fast(), groups=["a", "b"], progress=False)


def test_defaults_hold_out_places_for_early_stopping():
    # The default recipe (chosen leave-one-collection-out, docs/accuracy.md) validates on 10% of the
    # places and keeps the best epoch; val_fraction=0 trains every row for the fixed epochs.
    cfg = TrainConfig()
    assert cfg.val_fraction == pytest.approx(0.1) and cfg.tau_km == pytest.approx(250.0)
    emb, lat, lon, y = make_data(20)
    groups = np.arange(len(y)) // 2  # two photos per place
    kw = dict(epochs=4, lr=5e-2, batch_size=32, dropout=0.0)
    _, hist = train_head(emb, lat, lon, make_cells(), TrainConfig(**kw), groups=groups, progress=False)
    assert hist["validation"] == "held-out groups"
    assert hist["n_val"] == 2 * round(0.1 * len(y) / 2) and hist["n_train"] == len(y) - hist["n_val"]
    assert len(hist["val_geoscore"]) == hist["epochs_run"] and 1 <= hist["best_epoch"] <= hist["epochs_run"]
    _, hist = train_head(emb, lat, lon, make_cells(), TrainConfig(val_fraction=0.0, **kw), groups=groups,
                         progress=False)
    assert hist["validation"] == "none" and hist["n_train"] == len(y) and hist["epochs_run"] == 4
