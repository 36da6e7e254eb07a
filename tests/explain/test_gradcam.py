"""Grad-CAM maths, target cells, token maps, overlays and means."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from geospot.encoders import create_encoder
from geospot.explain.gradcam import gradcam, jet_colormap, mean_heatmap, overlay, to_display_image
from geospot.models.head import GeoCellHead

S = 16


class IdentityEncoder(nn.Module):
    """forward_features = the input itself (C=3, h=w=S); forward_head = spatial mean."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # gradcam reads the device from the parameters

    def forward_features(self, x):
        return x

    def forward_head(self, fmap):
        return fmap.mean(dim=(2, 3))


class TokenEncoder(IdentityEncoder):
    """ViT-style: a [CLS] token followed by the S*S patch tokens, [B, 1 + S*S, C]."""

    def forward_features(self, x):
        b, c, h, w = x.shape
        patches = x.flatten(2).transpose(1, 2)
        return torch.cat([torch.full((b, 1, c), 7.0), patches], dim=1)

    def forward_head(self, tokens):
        return tokens[:, 1:].mean(dim=1)


def channel_head() -> nn.Linear:
    """Cell 0 scores channel 0, cell 1 scores channel 1."""
    head = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    return head


def two_patch_input() -> torch.Tensor:
    x = torch.zeros(1, 3, S, S)
    x[0, 0, 12:, 12:] = 1.0  # channel 0: bottom-right patch
    x[0, 1, :4, :4] = 2.0  # channel 1: top-left patch, stronger -> top cell
    return x


@pytest.mark.parametrize("encoder_cls", [IdentityEncoder, TokenEncoder])
def test_gradcam_highlights_the_evidence_of_the_target_cell(encoder_cls):
    enc, head, x = encoder_cls(), channel_head(), two_patch_input()
    top = gradcam(enc, head, x)  # top cell = 1 (channel 1 is stronger)
    cell0 = gradcam(enc, head, x, target_cells=0)
    expected0 = (x[0, 0] > 0).numpy().astype(np.float32)
    expected1 = (x[0, 1] > 0).numpy().astype(np.float32)
    np.testing.assert_allclose(cell0[0], expected0, atol=1e-6)
    np.testing.assert_allclose(top[0], expected1, atol=1e-6)
    np.testing.assert_allclose(gradcam(enc, head, x, target_cells=[1])[0], top[0])


def test_gradcam_on_a_real_encoder_shape_range_and_targets():
    enc = create_encoder("tiny", pretrained=False)
    torch.manual_seed(0)
    head = GeoCellHead(enc.embed_dim, 5)
    x = torch.randn(3, 3, 64, 64)
    cams = gradcam(enc, head, x)
    assert cams.shape == (3, 64, 64) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert np.allclose(cams.reshape(3, -1).max(axis=1), 1.0)  # each map is normalised to its peak
    with torch.no_grad():
        top = head(enc(x)).argmax(dim=1)
    np.testing.assert_allclose(gradcam(enc, head, x, target_cells=top), cams)
    others = (top + 1) % 5
    assert not np.allclose(gradcam(enc, head, x, target_cells=others), cams)
    # one cell for the whole batch
    assert gradcam(enc, head, x, target_cells=2).shape == (3, 64, 64)


def test_gradcam_rejects_bad_targets_and_inputs():
    enc, head, x = IdentityEncoder(), channel_head(), two_patch_input()
    with pytest.raises(ValueError, match="out of range"):
        gradcam(enc, head, x, target_cells=2)
    with pytest.raises(ValueError, match="entries for a batch"):
        gradcam(enc, head, torch.cat([x, x]), target_cells=[0, 1, 0])
    with pytest.raises(ValueError, match=r"\[B, 3, S, S\]"):
        gradcam(enc, head, x[0])


def test_gradcam_restores_modes_and_leaves_no_gradients():
    enc = create_encoder("tiny", pretrained=False).train()
    head = GeoCellHead(enc.embed_dim, 4, dropout=0.5).train()
    gradcam(enc, head, torch.randn(2, 3, 64, 64))
    assert enc.training and head.training
    assert all(p.grad is None for p in list(enc.parameters()) + list(head.parameters()))


def test_all_negative_evidence_gives_a_zero_map():
    enc, head = IdentityEncoder(), channel_head()
    x = torch.zeros(1, 3, S, S)
    x[0, 0] = -1.0  # cell 0's channel only counts against it
    assert np.all(gradcam(enc, head, x, target_cells=0) == 0.0)


def test_mean_heatmap_is_the_mean_of_the_maps():
    enc = create_encoder("tiny", pretrained=False)
    torch.manual_seed(1)
    head = GeoCellHead(enc.embed_dim, 3)
    a, b = torch.randn(2, 3, 64, 64), torch.randn(3, 3, 64, 64)
    mean, n = mean_heatmap(enc, head, [a, b.numpy()])
    assert n == 5
    expected = np.concatenate([gradcam(enc, head, a), gradcam(enc, head, b)]).mean(axis=0)
    np.testing.assert_allclose(mean, expected, atol=1e-6)
    with pytest.raises(ValueError, match="no images"):
        mean_heatmap(enc, head, [])


def test_jet_colormap_ends_and_overlay_blending():
    lut = jet_colormap(np.array([0.0, 0.5, 1.0]))
    assert lut.dtype == np.uint8 and lut.shape == (3, 3)
    assert lut[0, 2] > 100 and lut[0, 0] == 0  # low: blue
    assert lut[2, 0] > 100 and lut[2, 2] == 0  # high: red
    img = Image.fromarray(np.full((40, 60, 3), 200, dtype=np.uint8))
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[4:, 4:] = 1.0
    out = overlay(img, heat)
    assert out.size == (60, 40) and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    assert arr[-1, -1, 0] > arr[0, 0, 0]  # hot corner is redder
    np.testing.assert_array_equal(np.asarray(overlay(img, heat, alpha=0.0)), np.asarray(img))
    full = np.asarray(overlay(np.asarray(img), np.ones((40, 60)), alpha=1.0))
    np.testing.assert_array_equal(full, np.broadcast_to(jet_colormap(np.ones(1))[0], full.shape))
    with pytest.raises(ValueError):
        overlay(img, heat, alpha=1.5)
    with pytest.raises(ValueError):
        overlay(img, np.zeros((2, 2, 2)))


def test_to_display_image_undoes_preprocessing():
    enc = create_encoder("tiny", pretrained=False)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    back = to_display_image(torch.from_numpy(enc.preprocess(img)), enc.preprocess)
    assert np.abs(np.asarray(back).astype(int) - np.asarray(img).astype(int)).max() <= 1
