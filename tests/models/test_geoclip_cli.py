"""`geospot locate/eval --model geoclip` end to end with a tiny random CLIP tower saved locally (offline)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from geospot.cli import main
from geospot.encoders.clip import ClipVisionSpec, random_clip
from geospot.models.geoclip.network import GeoClipLocationEncoder, image_head
from geospot.models.geoclip.weights import weights_path
from geospot.testing import make_fixture_dataset

TINY_L14 = ClipVisionSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          image_size=32, patch_size=8, projection_dim=768)


def _random_geoclip_weights(path, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    state = {f"location.{k}": torch.randn(v.shape, generator=g) * (3.0 if k.endswith("rff.b") else 0.05)
             for k, v in GeoClipLocationEncoder().state_dict().items()}
    state |= {f"image_head.{k}": torch.randn(v.shape, generator=g) * 0.05 for k, v in image_head().state_dict().items()}
    state["logit_scale"] = torch.tensor(3.68)
    state["gallery"] = torch.tensor([[48.85, 2.35], [40.71, -74.0], [-33.86, 151.2], [35.68, 139.69]])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


@pytest.fixture()
def geoclip_home(tmp_path, monkeypatch):
    """A cache holding (random) converted GeoCLIP weights and a tiny tower in GEOSPOT_WEIGHTS_CLIP_VIT_L14."""
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path / "cache"))
    _random_geoclip_weights(weights_path())
    tower = tmp_path / "tower"
    tower.mkdir()
    model = random_clip(TINY_L14, seed=4)
    (tower / "config.json").write_text(json.dumps({"architectures": ["CLIPVisionModelWithProjection"],
                                                   **asdict(TINY_L14)}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tower / "model.safetensors"))
    monkeypatch.setenv("GEOSPOT_WEIGHTS_CLIP_VIT_L14", str(tower))
    manifest = make_fixture_dataset(tmp_path / "data", n_locations=10, views=2, size=48)
    return tmp_path, manifest


def test_locate_geoclip_json_matches_a_direct_computation(geoclip_home, capsys):
    from geospot.encoders import create_encoder
    from geospot.encoders.embed import prepare_image
    from geospot.models.geoclip.model import GeoClipModel

    tmp, manifest = geoclip_home
    df = pd.read_csv(manifest)
    photos = [str(manifest.parent / p) for p in df["path"].iloc[:3]]
    broken = tmp / "broken.jpg"
    broken.write_bytes(b"not an image")
    code = main(["locate", *photos, str(broken), "--model", "geoclip", "--json", "--top-k", "3", "--backend", "torch"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # the broken file fails, the batch carries on
    assert [r["path"] for r in out] == photos + [str(broken)] and "error" in out[-1]
    good = out[:3]
    assert set(good[0]) == {"path", "paths", "lat", "lon", "country", "country_code", "region", "city", "radius_km",
                            "top_cells", "estimates", "estimate", "within_km", "countries", "regions", "districts"}
    # the same answer computed by hand: encoder -> normalised embedding -> gallery softmax
    enc = create_encoder("geoclip")
    model = GeoClipModel(progress=False)
    for r, path in zip(good, photos):
        x = torch.from_numpy(prepare_image(path, enc.preprocess))[None]
        probs = model.predict_proba(enc(x).detach().numpy())[0]
        top = np.argsort(-probs)[:3]
        assert [c["id"] for c in r["top_cells"]] == [f"geoclip-100k:{i}" for i in top]
        np.testing.assert_allclose([c["prob"] for c in r["top_cells"]], probs[top], atol=2e-6)
        assert r["radius_km"]["50"] <= r["radius_km"]["90"]


def test_locate_geoclip_with_a_custom_gallery_and_same_place(geoclip_home, capsys):
    tmp, manifest = geoclip_home
    gallery = tmp / "mine.csv"
    gallery.write_text("lat,lon\n" + "\n".join(f"{la},{lo}" for la, lo in [(10, 20), (-45, 170), (60, -150), (0, 0)]))
    photos = [str(manifest.parent / p) for p in pd.read_csv(manifest)["path"].iloc[:2]]
    assert main(["locate", *photos, "--model", "geoclip", "--gallery", str(gallery), "--json", "--same-place",
                 "--backend", "torch"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["paths"] == photos and all(c["id"].startswith("mine:") for c in r["top_cells"])
    assert len(r["top_cells"]) == 4 and abs(sum(c["prob"] for c in r["top_cells"]) - 1) < 1e-5


def test_predictor_load_by_name(geoclip_home):
    from geospot.predict import Prediction, Predictor

    _, manifest = geoclip_home
    predictor = Predictor.load("geoclip", backend="torch", geocode=False)
    (p,) = predictor.predict([manifest.parent / pd.read_csv(manifest)["path"].iloc[0]], top_k=2)
    assert isinstance(p, Prediction) and len(p.top_cells) == 2 and p.country == ""
    h = predictor.hypotheses(np.ones((2, 512), np.float32))
    assert h["probs"].shape == (2, 4) and np.allclose(h["probs"].sum(1), 1) and h["lat"].shape == (4,)


def test_eval_geoclip_like_our_models(geoclip_home, capsys):
    tmp, manifest = geoclip_home
    assert main(["eval", "geoclip", str(manifest), "--split", "test", "--train", str(manifest), "--quiet",
                 "--backend", "torch", "--out", str(tmp / "report")]) == 0
    table = capsys.readouterr().out
    assert "geospot" in table and "baseline: training medoid" in table
    report = json.loads((tmp / "report" / "report.json").read_text())
    assert report["model"]["encoder"] == "geoclip" and report["model"]["cells"]["scheme"] == "gallery"


def test_without_the_tower_locate_fails_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GEOSPOT_WEIGHTS_CLIP_VIT_L14", raising=False)
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (90, 120, 200)).save(photo)
    manifest = make_fixture_dataset(tmp_path / "data", n_locations=2, views=1, size=32)
    for argv in (["locate", str(photo), "--model", "geoclip"], ["eval", "geoclip", str(manifest)]):
        assert main(argv) == 2  # a setup error (see docs/errors.md)
        message = capsys.readouterr().err.strip()
        assert message.startswith("error: ") and "\n" not in message
        assert "geospot models --download geoclip" in message or "pip install --no-deps geoclip" in message


def test_geoclip_encoder_exports_to_onnx(geoclip_home):
    from geospot.encoders import create_encoder
    from geospot.encoders.runtime import EncoderRuntime

    enc = create_encoder("geoclip")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    onnx = EncoderRuntime("geoclip", backend="onnx", encoder=enc).embed(x)
    with torch.no_grad():
        np.testing.assert_allclose(onnx, enc(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    assert onnx.shape == (2, 512)
