"""Auxiliary heads (PIGEON's multi-task targets): labels, joint training, weight 0 changes nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geospot.geo.driving import LEFT_HAND_TRAFFIC, driving_side
from geospot.models.aux import AuxTarget, build_targets, month_labels, parse_aux
from geospot.train.fit import TrainConfig, train_head, train_head_aux

# Cities on both sides of the road and across the antimeridian (Fiji, Samoa drive left; Tonga too).
CITIES = np.array([[51.5, -0.1], [35.7, 139.7], [-33.9, 151.2], [48.9, 2.35], [40.7, -74.0], [-23.5, -46.6],
                   [-18.1, 178.4], [-13.8, -171.8], [64.1, -21.9]])
D = 16


def _data(n_per=30, seed=0):
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(1).normal(size=(len(CITIES), D))
    y = np.repeat(np.arange(len(CITIES)), n_per)
    emb = (protos[y] + 0.5 * rng.normal(size=(len(y), D))).astype(np.float32)
    lat = np.clip(CITIES[y, 0] + rng.normal(0, 0.02, len(y)), -90, 90)
    lon = (CITIES[y, 1] + rng.normal(0, 0.02, len(y)) + 180) % 360 - 180
    return emb, lat, lon


def _cells(lat, lon):
    from geospot.geo.cells import build_cells

    return build_cells(lat, lon, "s2", min_per_cell=5, max_per_cell=40)


def test_driving_side_table():
    assert {"GB", "JP", "AU", "IN", "ZA", "FJ", "WS", "TO"} <= LEFT_HAND_TRAFFIC
    assert not {"US", "FR", "DE", "BR", "CN", "NG", "HR", "IS"} & LEFT_HAND_TRAFFIC
    assert driving_side(["GB", "US", "", "TO"]).tolist() == ["left", "right", "", "left"]


def test_months_and_options():
    assert month_labels(["2021-12", "2019-03-04", "2020-07-01T10:00:00", "n/a", None, "2021-13"]).tolist() == \
        ["12", "03", "07", "", "", ""]
    assert parse_aux("country,driving_side", 0.3) == {"country": 0.3, "driving_side": 0.3}
    assert parse_aux("country=0.5,month", 0.1) == {"country": 0.5, "month": 0.1}
    for bad in ("weather", "country=-1", "country=x"):
        with pytest.raises(ValueError):
            parse_aux(bad)


def test_targets_from_coordinates():
    emb, lat, lon = _data(n_per=2)
    country, side = build_targets({"country": 0.2, "driving_side": 0.2}, lat, lon)
    names = np.asarray(country.classes)[country.labels]
    assert names[0] == "GB" and names[-1] == "IS" and names[12] == "FJ"  # Fiji near the antimeridian
    assert np.asarray(side.classes)[side.labels][[0, 2, 4, 6, 8, 12, 14]].tolist() == \
        ["left", "left", "left", "right", "right", "left", "left"]
    with pytest.raises(ValueError, match="month.*date column"):
        build_targets({"month": 0.2}, lat, lon)
    with pytest.raises(ValueError, match="1 known class"):
        build_targets({"driving_side": 0.2}, lat[:2], lon[:2])  # London only: every row drives on the left


@pytest.mark.parametrize("hidden", [0, 32])
def test_weight_zero_leaves_the_geocell_head_unchanged(hidden):
    emb, lat, lon = _data()
    cells = _cells(lat, lon)
    cfg = TrainConfig(hidden=hidden, epochs=6, lr=2e-2, batch_size=32, dropout=0.2)
    plain, _ = train_head(emb, lat, lon, cells, cfg, progress=False)
    aux = build_targets({"country": 0.0, "driving_side": 0.0}, lat, lon)
    head, heads, hist = train_head_aux(emb, lat, lon, cells, cfg, aux=aux, progress=False)
    for k, v in plain.state_dict().items():
        assert torch.equal(v, head.state_dict()[k]), k
    # ... and the auxiliary heads still learned their targets
    assert hist["aux_train_acc"]["driving_side"] > 0.9 and hist["aux_train_acc"]["country"] > 0.9
    if hidden:  # a positive weight reaches the shared hidden layer
        aux_w = build_targets({"country": 1.0}, lat, lon)
        changed, _, _ = train_head_aux(emb, lat, lon, cells, cfg, aux=aux_w, progress=False)
        assert not torch.equal(changed.hidden_layer.weight, plain.hidden_layer.weight)


def test_unknown_labels_are_ignored():
    emb, lat, lon = _data()
    cells = _cells(lat, lon)
    labels = np.where(np.arange(len(lat)) % 2 == 0, (lat > 0).astype(np.int64), -1)
    labels[:] = -1  # no known label at all: the head stays at zero, training still runs
    aux = [AuxTarget("month", labels, ["01", "02"], 0.5)]
    _, heads, _ = train_head_aux(emb, lat, lon, cells, TrainConfig(hidden=8, epochs=2), aux=aux, progress=False)
    assert np.all(heads.weights["month.weight"] == 0)
