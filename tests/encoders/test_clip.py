"""CLIP-family encoders, tested with tiny random configurations saved in the Hugging Face format."""
from __future__ import annotations

import functools
import http.server
import json
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from geospot.encoders import create_encoder, list_encoders
from geospot.encoders.clip import (
    CLIP_MEAN,
    CLIP_STD,
    ClipVisionSpec,
    WeightsNotAvailable,
    build_clip,
    clip_spec,
    download_weights,
    load_clip_folder,
    random_clip,
    weights_folder,
)
from geospot.encoders.runtime import EncoderRuntime, relative_error

TINY = ClipVisionSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8, projection_dim=16)


def _save_folder(model, folder: Path, clip_model_layout: bool = False) -> Path:
    """Write `model` as a Hugging Face folder; optionally as a full CLIPModel (nested config + text keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = asdict(model.spec)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if clip_model_layout:
        projection_dim = spec.pop("projection_dim")
        config = {"architectures": ["CLIPModel"], "projection_dim": projection_dim,
                  "text_config": {"hidden_size": 8}, "vision_config": spec}
        state |= {"text_model.embeddings.token_embedding.weight": torch.ones(4, 8),
                  "text_projection.weight": torch.ones(projection_dim, 8), "logit_scale": torch.tensor(2.6)}
    else:
        config = {"architectures": ["CLIPVisionModelWithProjection"], **spec}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "model.safetensors"))
    return folder


def _batch(spec: ClipVisionSpec, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(seed))


def test_matches_transformers_clip_vision_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, image_size=32, patch_size=8, projection_dim=16)
    reference = transformers.CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm and class-token parameters, so a mix-up cannot hide
        for name, p in reference.named_parameters():
            if "norm" in name or "class_embedding" in name:
                p.add_(0.1 * torch.randn_like(p))
    reference.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.bin"))
    ours = load_clip_folder(tmp_path, name="tiny-clip")
    x = _batch(ours.spec, n=3)
    with torch.no_grad():
        expected = reference(pixel_values=x).image_embeds
        actual = ours(x)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_clip_model_folder_round_trip_ignores_the_text_tower(tmp_path):
    model = random_clip(TINY, "tiny-clip", seed=3)
    for layout in (False, True):
        loaded = load_clip_folder(_save_folder(model, tmp_path / str(layout), clip_model_layout=layout), "tiny-clip")
        assert loaded.spec == TINY and loaded.weights_id == model.weights_id
        x = _batch(TINY)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_features_grid_head_and_gradients():
    model = random_clip(TINY, "tiny-clip")
    x = _batch(TINY)
    fmap = model.forward_features(x)
    assert fmap.shape == (2, TINY.hidden_size, 4, 4)
    emb = model.forward_head(fmap)
    assert emb.shape == (2, TINY.projection_dim) and model.embed_dim == TINY.projection_dim
    # Grad-CAM's path: a detached grid still gets a spatially varying gradient from the embedding
    grid = fmap.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.forward_head(grid)[:, 0].sum(), grid)
    assert grad.abs().sum() > 0 and grad[0, 0].std() > 0
    with torch.no_grad():
        assert torch.equal(model(x), emb.detach())
    emb.sum().backward()
    for module in model.tail_modules(2):  # everything `--unfreeze 2` trains gets a gradient
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert model.tail_modules(1)[0] is model.blocks[-1]
    with pytest.raises(RuntimeError, match="same batch"):
        model.forward_head(fmap[:1].detach())  # forward() cleared the class token; a mismatch is an error


def test_gradcam_runs_on_a_clip_encoder():
    gradcam = pytest.importorskip("geospot.explain.gradcam").gradcam
    model = random_clip(TINY, "tiny-clip")
    head = torch.nn.Linear(TINY.projection_dim, 5)
    cam = gradcam(model, head, _batch(TINY))
    assert cam.shape == (2, 32, 32) and np.isfinite(cam).all() and cam.max() == pytest.approx(1.0)


def test_onnx_export_matches_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    model = random_clip(TINY, "tiny-clip", seed=1)
    onnx = EncoderRuntime("tiny-clip", backend="onnx", encoder=model)
    eager = EncoderRuntime("tiny-clip", backend="torch", device="cpu", encoder=model)
    x = _batch(TINY, n=3).numpy()  # not the traced batch size: the batch axis is dynamic
    a, b = onnx.embed(x), eager.embed(x)
    assert a.shape == (3, TINY.projection_dim) and relative_error(a, b) <= 1e-4
    assert onnx.onnx_path.is_file()


def test_registry_specs_and_preprocess():
    assert {"clip-vit-b32", "streetclip"} <= set(list_encoders())
    b32, street = clip_spec("clip-vit-b32"), clip_spec("streetclip")
    assert (b32.hidden_size, b32.num_hidden_layers, b32.patch_size, b32.image_size, b32.projection_dim) == (768, 12, 32, 224, 512)
    assert (street.hidden_size, street.num_hidden_layers, street.patch_size, street.image_size, street.projection_dim) == (1024, 24, 14, 336, 768)
    assert street.grid_size == 24
    pp = random_clip(TINY).preprocess
    assert (pp.size, pp.resize, pp.mean, pp.std, pp.interpolation) == (32, 32, CLIP_MEAN, CLIP_STD, "bicubic")
    x = pp(Image.new("RGB", (64, 48), (255, 0, 128)))
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 16, 16], (np.array([1.0, 0.0, 128 / 255]) - CLIP_MEAN) / CLIP_STD, rtol=1e-5)


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = random_clip(TINY, seed=0)
    assert torch.equal(torch.rand(1), before)
    assert a.weights_id == random_clip(TINY, seed=0).weights_id != random_clip(TINY, seed=1).weights_id


def test_missing_weights_error_names_the_folder_and_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    monkeypatch.delenv("GEOSPOT_WEIGHTS_STREETCLIP", raising=False)
    with pytest.raises(WeightsNotAvailable) as info:
        create_encoder("streetclip")
    message = str(info.value)
    assert str(tmp_path / "weights" / "streetclip") in message
    assert "geospot encoders --download streetclip" in message and "GEOSPOT_WEIGHTS_STREETCLIP" in message
    monkeypatch.setenv("GEOSPOT_WEIGHTS_STREETCLIP", str(tmp_path / "mine"))
    assert weights_folder("streetclip") == tmp_path / "mine"


def test_pickled_bin_folder_is_refused(tmp_path):
    model = random_clip(TINY)
    folder = _save_folder(model, tmp_path)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(WeightsNotAvailable, match=r"pytorch_model\.bin.*never loads"):
        load_clip_folder(folder)


def test_weights_that_do_not_match_the_config_are_a_clear_error(tmp_path):
    folder = _save_folder(random_clip(TINY), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match="missing"):
        load_clip_folder(folder)
    (folder / "config.json").write_text(json.dumps({**config, "projection_dim": 8}))
    with pytest.raises(ValueError, match="do not match"):
        load_clip_folder(folder)


def test_pretrained_registered_encoder_checks_the_architecture(tmp_path):
    folder = _save_folder(random_clip(TINY), tmp_path)
    with pytest.raises(ValueError, match="not the clip-vit-b32 architecture"):
        build_clip("clip-vit-b32", pretrained=True, weights_dir=folder)


@pytest.fixture()
def hub(tmp_path):
    """A local HTTP server laid out like huggingface.co/<repo>/resolve/main/<file>; yields (base_url, request log)."""
    root = tmp_path / "hub"
    _save_folder(random_clip(TINY, seed=2), root / "openai" / "clip-vit-base-patch32" / "resolve" / "main")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests, root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_weights_is_atomic_and_cached(tmp_path, hub):
    base_url, requests, root = hub
    dest = tmp_path / "weights"
    assert download_weights("clip-vit-b32", dest=dest, progress=False, base_url=base_url) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]  # no temporary files left
    served = root / "openai" / "clip-vit-base-patch32" / "resolve" / "main" / "model.safetensors"
    assert (dest / "model.safetensors").read_bytes() == served.read_bytes()
    assert load_clip_folder(dest).weights_id == random_clip(TINY, seed=2).weights_id
    n = len(requests)
    download_weights("clip-vit-b32", dest=dest, progress=False, base_url=base_url)
    assert len(requests) == n, "a second call must not download again"


def test_download_failure_leaves_nothing_behind(tmp_path, hub):
    base_url, _, root = hub
    (root / "openai" / "clip-vit-base-patch32" / "resolve" / "main" / "model.safetensors").unlink()
    dest = tmp_path / "weights"
    with pytest.raises(OSError, match="model.safetensors: download failed"):
        download_weights("clip-vit-b32", dest=dest, progress=False, base_url=base_url)
    assert [p.name for p in dest.iterdir()] == ["config.json"]  # only complete files remain


def test_corrupt_download_is_not_kept(tmp_path, hub):
    base_url, _, root = hub
    (root / "openai" / "clip-vit-base-patch32" / "resolve" / "main" / "model.safetensors").write_bytes(b"not safetensors")
    dest = tmp_path / "weights"
    with pytest.raises(ValueError, match="unreadable safetensors"):
        download_weights("clip-vit-b32", dest=dest, progress=False, base_url=base_url)
    assert not any(dest.iterdir())
