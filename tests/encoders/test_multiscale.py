"""`efficientnet-lite0-ms`: lite0's features plus the pooled outputs of its later stages."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geospot.encoders import create_encoder
from geospot.encoders.efficientnet_lite import VARIANTS, EfficientNetLite
from geospot.encoders.multiscale import MID_WEIGHT, MultiScaleLite


@pytest.fixture(scope="module")
def pair():
    """A random-weight multi-scale network and the plain lite0 holding the same weights."""
    torch.manual_seed(0)
    ms = create_encoder("efficientnet-lite0-ms", pretrained=False)
    plain = EfficientNetLite(VARIANTS["efficientnet-lite0"]).eval()
    plain.load_state_dict(ms.state_dict())
    return ms, plain


def _batch(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def test_pools_the_last_block_of_stages_three_to_seven(pair):
    ms, _ = pair
    # lite0's stages have 1, 2, 2, 3, 3, 4, 1 blocks: stage ends at blocks 0, 2, 4, 7, 10, 14, 15
    assert ms.pooled_blocks == (4, 7, 10, 14, 15)
    assert ms.embed_dim == 1280 + 40 + 80 + 112 + 192 + 320 == 2024


def test_embedding_is_unit_final_features_then_weighted_unit_stage_means(pair):
    ms, plain = pair
    x = _batch()
    outs = {}
    hooks = [plain.blocks[i].register_forward_hook(lambda m, a, out, i=i: outs.__setitem__(i, out))
             for i in ms.pooled_blocks]
    with torch.no_grad():
        final = plain(x)
        got = ms(x)
    for h in hooks:
        h.remove()
    mid = torch.cat([outs[i].mean(dim=(2, 3)) for i in ms.pooled_blocks], dim=1)
    want = torch.cat([F.normalize(final, dim=1), MID_WEIGHT * F.normalize(mid, dim=1)], dim=1)
    assert got.shape == (2, 2024)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    norms = got.norm(dim=1)
    torch.testing.assert_close(norms, torch.full((2,), float(np.hypot(1.0, MID_WEIGHT))), rtol=1e-5, atol=1e-6)


def test_weights_id_differs_from_plain_lite0_and_follows_the_mid_weight(pair):
    ms, plain = pair
    assert ms.weights_id != plain.weights_id  # caches and ONNX exports never mix with the plain encoder's
    other = MultiScaleLite(VARIANTS["efficientnet-lite0"], mid_weight=1.0)
    other.load_state_dict(ms.state_dict())
    assert other.weights_id != ms.weights_id
    again = MultiScaleLite(VARIANTS["efficientnet-lite0"])
    again.load_state_dict(ms.state_dict())
    assert again.weights_id == ms.weights_id


def test_forward_head_needs_the_mid_level_features_of_the_same_batch():
    ms = MultiScaleLite(VARIANTS["efficientnet-lite0"]).eval()
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="forward_features call on the same batch"):
            ms.forward_head(torch.zeros(1, 1280, 7, 7))
        fmap = ms.forward_features(_batch(2))
        with pytest.raises(RuntimeError, match="same batch"):
            ms.forward_head(fmap[:1])
        assert ms.forward_head(fmap).shape == (2, 2024)


def test_gradcam_runs_on_the_final_feature_map(pair):
    from geospot.explain.gradcam import gradcam

    ms, _ = pair
    head = torch.nn.Linear(ms.embed_dim, 4)
    maps = gradcam(ms, head, _batch(2))
    assert maps.shape == (2, 224, 224) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
