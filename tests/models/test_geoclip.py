"""GeoCLIP port: our networks against the `geoclip` package's own modules, offline; safe conversion; gallery cache."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch

from geospot.models.geoclip import weights as gw
from geospot.models.geoclip.model import GeoClipModel, gallery_embeddings
from geospot.models.geoclip.network import GeoClipLocationEncoder, image_head

from geoclip_reference import module, package_dir


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The installed package's weights, converted once for this module."""
    dest = tmp_path_factory.mktemp("geoclip") / gw.WEIGHTS_FILE
    gw.convert_installed_package(dest=dest, package_dir=package_dir())
    return gw.load_weights(dest)


def _edge_coordinates(n: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=g) * 180 - 90
    lon = torch.rand(n, generator=g) * 360 - 180
    fixed = torch.tensor([[90.0, 0.0], [-90.0, 0.0], [0.0, 180.0], [0.0, -180.0], [65.0, 179.99], [65.0, -179.99],
                          [0.0, 0.0], [-33.86, 151.21]])
    return torch.cat([torch.stack([lat, lon], 1), fixed])


def test_location_encoder_matches_the_package(converted):
    reference = module("location_encoder").LocationEncoder(from_pretrained=True).eval()  # loads its own .pth
    ours = GeoClipLocationEncoder()
    ours.load_state_dict({k[9:]: v for k, v in converted.items() if k.startswith("location.")}, strict=True)
    x = _edge_coordinates()
    with torch.no_grad():
        expected, actual = reference(x), ours.eval()(x)
    assert expected.abs().max() > 0.01 and not torch.allclose(expected[0], expected[1], atol=1e-3)  # a real signal
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # the normalised embeddings (what the gallery search uses) agree to 1e-5 as well
    n = torch.nn.functional.normalize
    torch.testing.assert_close(n(actual, dim=1), n(expected, dim=1), rtol=1e-5, atol=1e-5)
    print("max abs difference", float((actual - expected).abs().max()))
    proj = module("location_encoder").equal_earth_projection(x)
    from geospot.models.geoclip.network import equal_earth_projection

    torch.testing.assert_close(equal_earth_projection(x), proj, rtol=0, atol=1e-6)


def test_image_head_and_logits_match_the_package(converted, tmp_path):
    """The package's ImageEncoder.forward and GeoCLIP.forward, on a tiny random CLIP with a 768-d projection."""
    transformers = pytest.importorskip("transformers")
    from torch import nn

    from geospot.encoders.clip import load_clip_folder
    from geospot.models.geoclip.network import assemble_image_encoder

    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        projection_dim=768,
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=28, patch_size=14))
    clip = transformers.CLIPModel(config).eval()
    clip.save_pretrained(tmp_path)
    ref_image = module("image_encoder").ImageEncoder.__new__(module("image_encoder").ImageEncoder)
    nn.Module.__init__(ref_image)
    ref_image.CLIP = clip
    ref_image.mlp = nn.Sequential(nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 512))
    ref_image.mlp.load_state_dict(torch.load(package_dir() / gw.PACKAGE_FILES["image_head"], weights_only=True))
    GeoCLIP = module("GeoCLIP").GeoCLIP
    reference = GeoCLIP.__new__(GeoCLIP)
    nn.Module.__init__(reference)
    reference.image_encoder = ref_image
    reference.location_encoder = module("location_encoder").LocationEncoder(from_pretrained=True)
    reference.logit_scale = nn.Parameter(torch.load(package_dir() / gw.PACKAGE_FILES["logit_scale"], weights_only=True))
    reference.eval()

    head = {k[11:]: v for k, v in converted.items() if k.startswith("image_head.")}
    ours = assemble_image_encoder(load_clip_folder(tmp_path, "geoclip"), head)
    x = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    gallery = converted["gallery"][:1000]
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref_image(x), rtol=1e-5, atol=1e-5)
        expected = reference(x, gallery)
    model = GeoClipModel(converted, gallery=gallery.numpy().astype(np.float64), cache=False, progress=False)
    actual = torch.from_numpy(model.logits(ours(x).detach().numpy()))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)  # logits are x exp(3.68) ~ 40
    assert torch.equal(actual.topk(5).indices, expected.topk(5).indices)
    probs = model.predict_proba(ours(x).detach().numpy())
    np.testing.assert_allclose(probs, expected.softmax(-1).numpy(), atol=1e-6)


def test_conversion_holds_every_tensor_and_the_gallery(converted):
    assert converted["gallery"].shape == (100_000, 2)
    assert float(converted["logit_scale"]) == pytest.approx(3.681, abs=1e-3)
    assert sum(k.startswith("location.") for k in converted) == 27 and sum(k.startswith("image_head.") for k in converted) == 4


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [{"w": _Exploit()}, {"w": "a string"}, [torch.zeros(2)]])
def test_pickles_other_than_plain_tensors_are_refused(payload):
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(gw.UnsafeCheckpoint):
        gw.read_pth(buf.getvalue(), "evil.pth")


def test_legacy_non_zip_pickle_is_refused():
    import pickle

    with pytest.raises(gw.UnsafeCheckpoint, match="legacy"):
        gw.read_pth(pickle.dumps({"w": 1}), "old.pth")


def test_plain_tensor_dict_round_trips():
    buf = io.BytesIO()
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(1)}
    torch.save(state, buf)
    out = gw.read_pth(buf.getvalue(), "ok.pth")
    assert set(out) == {"a", "b"} and torch.equal(out["a"], state["a"])
    buf = io.BytesIO()
    module_state = torch.nn.Linear(3, 2).state_dict()  # an OrderedDict with _metadata (pickled with BUILD)
    torch.save(module_state, buf)
    out = gw.read_pth(buf.getvalue(), "module.pth")
    assert set(out) == {"weight", "bias"} and torch.equal(out["weight"], module_state["weight"])


def _random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    enc = GeoClipLocationEncoder()
    state = {f"location.{k}": torch.randn(v.shape, generator=g) * 0.05 for k, v in enc.state_dict().items()}
    state |= {f"image_head.{k}": torch.randn(v.shape, generator=g) * 0.05 for k, v in image_head().state_dict().items()}
    state["logit_scale"] = torch.tensor(3.0)
    state["gallery"] = torch.tensor([[48.85, 2.35], [40.71, -74.0], [-33.86, 151.2]])
    return state


def test_gallery_embeddings_are_cached_and_keyed_by_weights_and_gallery(monkeypatch):
    from geospot.models.geoclip import model as gm

    w = _random_weights()
    latlon = np.array([[48.85, 2.35], [40.71, -74.0], [0.0, 180.0]])
    first = gallery_embeddings(w, latlon, progress=False)
    assert first.shape == (3, 512) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    calls = []
    real = gm.encode_locations
    monkeypatch.setattr(gm, "encode_locations", lambda *a, **k: calls.append(1) or real(*a, **k))
    np.testing.assert_array_equal(gallery_embeddings(w, latlon, progress=False), first)
    assert not calls, "a second call must read the cache"
    gallery_embeddings(w, latlon[:2], progress=False)
    gallery_embeddings(_random_weights(seed=1), latlon, progress=False)
    assert len(calls) == 2, "another gallery or other weights must not reuse the cache"


def test_custom_gallery_csv_and_bad_rows(tmp_path):
    good = tmp_path / "places.csv"
    good.write_text("name,latitude,longitude\nparis,48.85,2.35\nsydney,-33.86,151.2\n")
    model = GeoClipModel(_random_weights(), gallery=good, cache=False, progress=False)
    assert len(model.cells) == 2 and model.cells.ids == ["places:0", "places:1"]
    assert model.cells.assign([-33.0], [150.0]).tolist() == [1]
    bad = tmp_path / "bad.csv"
    bad.write_text("lat,lon\n1,2\n95,0\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 3: .* outside"):
        GeoClipModel(_random_weights(), gallery=bad, cache=False, progress=False)
    (tmp_path / "nocols.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="lat and lon columns"):
        GeoClipModel(_random_weights(), gallery=tmp_path / "nocols.csv", cache=False, progress=False)
