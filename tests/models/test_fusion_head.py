"""Multi-view fusion and the geocell head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geospot.models.fusion import fuse_embeddings, fuse_probs, group_index
from geospot.models.head import GeoCellHead, normalize_embeddings


def test_group_index_first_appearance_order():
    inverse, n = group_index(["b", "a", "b", "c", "a"])
    assert n == 3
    np.testing.assert_array_equal(inverse, [0, 1, 0, 2, 1])
    assert inverse.dtype == np.int64
    inverse, n = group_index(np.array([7, 7, 3]))
    np.testing.assert_array_equal(inverse, [0, 0, 1])


def test_group_index_missing_group_names_row():
    with pytest.raises(ValueError, match="row 2"):
        group_index(["a", "b", None])


def test_fuse_embeddings_mean_renormalised_unit():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=np.float32)
    out = fuse_embeddings(emb, np.array([0, 0, 1]), 2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, -1.0])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_fuse_embeddings_keeps_scale_of_raw_inputs_and_torch_type():
    emb = torch.tensor([[3.0, 0.0], [0.0, 5.0]])
    out = fuse_embeddings(emb, torch.tensor([0, 0]), 1)
    assert isinstance(out, torch.Tensor)
    # Mean direction (1.5, 2.5), rescaled to the mean input norm 4.
    expected = torch.tensor([1.5, 2.5]) / torch.tensor([1.5, 2.5]).norm() * 4.0
    torch.testing.assert_close(out[0], expected)


def test_fuse_embeddings_cancelling_views_stay_zero():
    out = fuse_embeddings(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([0, 0]), 1)
    np.testing.assert_allclose(out, [[0.0, 0.0]], atol=1e-12)


def test_fuse_probs_mean_rows_sum_to_one():
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0]])
    inverse, n = group_index(["x", "x", "y"])
    out = fuse_probs(probs, inverse, n)
    np.testing.assert_allclose(out, [[0.4, 0.6], [1.0, 0.0]])
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_fusion_input_errors():
    with pytest.raises(ValueError, match="empty group"):
        fuse_probs(np.ones((2, 2)) / 2, np.array([0, 0]), 2)
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        fuse_probs(np.ones((3, 2)) / 2, np.array([0, 0]), 1)
    with pytest.raises(ValueError, match="2-D"):
        fuse_embeddings(np.ones(3), np.array([0, 0, 0]), 1)


@pytest.mark.parametrize("hidden", [0, 16])
def test_head_shapes_and_eval_is_deterministic(hidden):
    torch.manual_seed(0)
    head = GeoCellHead(8, 5, hidden=hidden, dropout=0.5)
    x = torch.randn(4, 8)
    assert head(x).shape == (4, 5)
    head.eval()
    torch.testing.assert_close(head(x), head(x))
    keys = set(head.state_dict())
    assert {"out.weight", "out.bias"} <= keys
    assert ("hidden_layer.weight" in keys) == (hidden > 0)
    assert head.config() == {"embed_dim": 8, "num_cells": 5, "hidden": hidden, "dropout": 0.5}


def test_head_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="num_cells"):
        GeoCellHead(8, 0)
    with pytest.raises(ValueError, match="dropout"):
        GeoCellHead(8, 3, dropout=1.0)
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        GeoCellHead(8, 3)(torch.zeros(2, 7))


def test_normalize_embeddings_sqrt_dim_norm_and_zero_rows():
    out = normalize_embeddings(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.0, 0.0]]) * 2**0.5)
    x = torch.randn(3, 100)
    torch.testing.assert_close(normalize_embeddings(7.0 * x), normalize_embeddings(x))
    torch.testing.assert_close(torch.linalg.vector_norm(normalize_embeddings(x), dim=1), torch.full((3,), 10.0))
