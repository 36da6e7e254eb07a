"""Haversine label smoothing (PIGEON) and the soft cross-entropy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geospot.geo.distance import haversine_km
from geospot.train.losses import haversine_smoothing_targets, soft_cross_entropy

CELL_LAT = torch.tensor([0.0, 0.0, 10.0, -30.0], dtype=torch.float64)
CELL_LON = torch.tensor([0.0, 2.0, 0.0, 100.0], dtype=torch.float64)


def test_targets_equal_hand_computed_row():
    true_lat, true_lon = torch.tensor([0.5]), torch.tensor([0.5])
    q = haversine_smoothing_targets(CELL_LAT, CELL_LON, true_lat, true_lon, tau_km=75.0)
    d = haversine_km(CELL_LAT.numpy(), CELL_LON.numpy(), 0.5, 0.5)
    d_true = d[0]  # the true cell (0, 0) is the nearest centroid
    raw = np.exp(-(d - d_true) / 75.0)
    expected = raw / raw.sum()
    np.testing.assert_allclose(q.numpy()[0], expected, rtol=1e-12, atol=1e-300)
    assert q.dtype == torch.float64


def test_rows_sum_to_one_and_far_cells_vanish_without_nan():
    rng = np.random.default_rng(0)
    lat = torch.as_tensor(rng.uniform(-80, 80, 64))
    lon = torch.as_tensor(rng.uniform(-180, 180, 64))
    for tau in (1e-3, 1.0, 75.0, 1e5):
        q = haversine_smoothing_targets(CELL_LAT.float(), CELL_LON.float(), lat, lon, tau_km=tau)
        assert q.dtype == torch.float32 and q.shape == (64, 4)
        assert torch.isfinite(q).all()
        torch.testing.assert_close(q.sum(dim=1), torch.ones(64), atol=1e-6, rtol=0)


def test_tends_to_one_hot_on_true_cell_as_tau_shrinks():
    true_lat = torch.tensor([0.1, 9.0, -29.0])
    true_lon = torch.tensor([0.2, 0.5, 99.0])
    true_cell = torch.tensor([0, 2, 3])
    previous = torch.zeros(3)
    for tau in (500.0, 50.0, 5.0, 0.05):
        q = haversine_smoothing_targets(CELL_LAT, CELL_LON, true_lat, true_lon, tau_km=tau)
        on_true = q[torch.arange(3), true_cell]
        assert torch.all(on_true >= previous)  # mass concentrates monotonically
        previous = on_true
    torch.testing.assert_close(q, F.one_hot(true_cell, 4).double(), atol=1e-12, rtol=0)


def test_huge_tau_tends_to_uniform_and_bad_tau_rejected():
    q = haversine_smoothing_targets(CELL_LAT, CELL_LON, torch.tensor([0.0]), torch.tensor([0.0]), tau_km=1e12)
    torch.testing.assert_close(q, torch.full((1, 4), 0.25, dtype=torch.float64))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="tau_km"):
            haversine_smoothing_targets(CELL_LAT, CELL_LON, torch.tensor([0.0]), torch.tensor([0.0]), tau_km=bad)


def test_soft_cross_entropy_matches_torch_on_one_hot_and_soft_targets():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(labels, 4).float()), F.cross_entropy(logits, labels))
    soft = torch.softmax(torch.randn(6, 4), dim=1)
    w = torch.tensor([1.0, 2.0, 0.5, 1.5])
    torch.testing.assert_close(soft_cross_entropy(logits, soft, weight=w), F.cross_entropy(logits, soft, weight=w))


def test_soft_cross_entropy_sample_weight_is_weighted_mean():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    per_row = -F.log_softmax(logits, dim=1)[:, 0]
    loss = soft_cross_entropy(logits, targets, sample_weight=torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(loss, (3 * per_row[0] + per_row[1]) / 4)
    with pytest.raises(ValueError, match="sample_weight"):
        soft_cross_entropy(logits, targets, sample_weight=torch.ones(3))
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        soft_cross_entropy(logits, targets[:, :1])


def test_gradient_flows_through_soft_cross_entropy():
    logits = torch.zeros(1, 3, requires_grad=True)
    target = haversine_smoothing_targets(CELL_LAT[:3], CELL_LON[:3], torch.tensor([0.0]), torch.tensor([0.0]), 100.0)
    soft_cross_entropy(logits, target.float()).backward()
    # d loss / d logits = softmax(logits) - target = 1/3 - target.
    torch.testing.assert_close(logits.grad, (1 / 3 - target).float())
