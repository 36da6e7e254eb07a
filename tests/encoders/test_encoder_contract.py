"""The contract every registered encoder keeps (docs/design.md, `geospot.encoders`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import geospot.encoders
from geospot.encoders import create_encoder, list_encoders, register_encoder
from geospot.encoders.base import Encoder, Preprocess

ENCODERS = list_encoders()
# Encoders registered as `large` (the CLIP family) are too heavy for this per-encoder
# sweep and need downloaded weights; tests/encoders/test_clip.py covers them with tiny configs.
CONTRACT_ENCODERS = [n for n in ENCODERS if not geospot.encoders.encoder_is_large(n)]


@pytest.fixture(scope="module", params=CONTRACT_ENCODERS)
def encoder(request) -> Encoder:
    return create_encoder(request.param)


def _batch(encoder: Encoder, n: int = 2, seed: int = 0) -> torch.Tensor:
    s = encoder.input_size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_registry_has_the_builtin_encoders():
    assert {"efficientnet-lite0", "efficientnet-lite2", "tiny"} <= set(ENCODERS)
    assert ENCODERS == sorted(ENCODERS)


def test_unknown_encoder_error_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        create_encoder("resnet-9000")
    assert "resnet-9000" in str(info.value)
    for name in ENCODERS:
        assert name in str(info.value)


def test_register_encoder_refuses_a_second_factory_for_a_name():
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("tiny")(lambda pretrained=True: None)


def test_attributes(encoder):
    assert encoder.name in ENCODERS
    assert isinstance(encoder.embed_dim, int) and encoder.embed_dim > 0
    assert isinstance(encoder.preprocess, Preprocess)
    assert encoder.input_size == encoder.preprocess.size
    assert not encoder.training, "create_encoder returns eval mode"
    assert isinstance(encoder.weights_id, str) and len(encoder.weights_id) >= 8


def test_preprocess_gives_normalised_float32_chw(encoder):
    rng = np.random.default_rng(0)
    s = encoder.input_size
    for w, h in [(3 * s // 2, s), (s, 2 * s), (s // 3, s // 2)]:  # landscape, portrait, smaller than the input
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        x = encoder.preprocess(img)
        assert x.shape == (3, s, s) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
        assert np.isfinite(x).all()
    # grey/alpha images are converted to RGB
    assert encoder.preprocess(Image.new("L", (s, s), 128)).shape == (3, s, s)
    assert encoder.preprocess(Image.new("RGBA", (s, s), (1, 2, 3, 4))).shape == (3, s, s)


@pytest.fixture(scope="module")
def passes(encoder):
    """The expensive part, run once per encoder: features with gradients, and a plain forward."""
    x = _batch(encoder)
    # Only what `--unfreeze 2` trains requires grad, as in fine-tuning: backward stops there (fast).
    tail_params = {id(p) for m in encoder.tail_modules(2) for p in m.parameters()}
    for p in encoder.parameters():
        p.requires_grad_(id(p) in tail_params)
    fmap = encoder.forward_features(x)
    pooled = encoder.forward_head(fmap)
    pooled.sum().backward()  # reaches the blocks: what Grad-CAM and fine-tuning rely on
    grads = {id(p): p.grad is not None and bool(p.grad.abs().sum() > 0) for p in encoder.parameters()}
    encoder.zero_grad(set_to_none=True)
    encoder.requires_grad_(True)
    with torch.no_grad():
        emb = encoder(x)
    return x, fmap.detach(), pooled.detach(), emb, grads


def test_forward_is_head_of_features_and_deterministic(encoder, passes):
    x, fmap, pooled, emb, _ = passes
    assert fmap.ndim == 4 and fmap.shape[0] == 2
    assert emb.shape == (2, encoder.embed_dim) and emb.dtype == torch.float32
    # two separate passes over the same input agree exactly: forward == head(features), deterministic
    assert torch.equal(emb, pooled)
    if encoder.pools_feature_map:
        assert fmap.shape[1] == encoder.embed_dim
        torch.testing.assert_close(emb, fmap.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)


def test_two_instances_have_identical_weights(encoder):
    other = create_encoder(encoder.name)
    assert other.weights_id == encoder.weights_id
    for (ka, a), (kb, b) in zip(other.state_dict().items(), encoder.state_dict().items()):
        assert ka == kb and torch.equal(a, b)


def test_weights_id_follows_the_weights(encoder):
    other = create_encoder(encoder.name)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert other.weights_id != encoder.weights_id


def test_wrong_input_size_is_a_clear_error(encoder):
    s = encoder.input_size
    with pytest.raises(ValueError, match=rf"\[B, 3, {s}, {s}\]"):
        encoder(torch.zeros(1, 3, s + 8, s + 8))


def test_blocks_and_tail_modules(encoder, passes):
    blocks = list(encoder.blocks)
    assert len(blocks) >= 2 and all(isinstance(b, torch.nn.Module) for b in blocks)
    assert all(any(True for _ in b.parameters()) for b in blocks)
    tail = encoder.tail_modules(2)
    assert tail[:2] == blocks[-2:]
    assert encoder.tail_modules(0) == encoder.head_modules()
    with pytest.raises(ValueError, match="cannot unfreeze"):
        encoder.tail_modules(len(blocks) + 1)
    grads = passes[-1]
    for module in tail:  # everything `--unfreeze 2` trains receives a gradient from the embedding
        assert any(grads[id(p)] for p in module.parameters())


def test_batch_independence_in_eval_mode():
    encoder = create_encoder("tiny")
    x = _batch(encoder, n=3)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x[:1]), encoder(x)[:1], rtol=1e-5, atol=1e-6)


def test_tiny_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_encoder("tiny", pretrained=False)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert a.weights_id == create_encoder("tiny").weights_id
    assert a.embed_dim == 32 and a.input_size == 64


def test_preprocess_round_trips_and_validates():
    pp = Preprocess(size=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Preprocess.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError):
        Preprocess(size=224, resize=200)
    with pytest.raises(ValueError):
        Preprocess(size=8, resize=8, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown Preprocess fields"):
        Preprocess.from_dict({**pp.to_dict(), "colour": "red"})


def test_preprocess_resizes_crops_and_normalises_exactly():
    # a 40x20 image: left half black, right half white; resize shorter side 20 -> 10, crop 10 centre
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, 20:] = 255
    pp = Preprocess(size=10, resize=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = pp(Image.fromarray(arr))
    assert x.shape == (3, 10, 10)
    # the centre crop of the 20x10 resized image covers columns 5..14: black then white
    np.testing.assert_allclose(x[:, :, :4], -1.0, atol=1e-6)
    np.testing.assert_allclose(x[:, :, 6:], 1.0, atol=1e-6)
