"""GeoModel save/load: roundtrip, safe overwrite, and a clear CheckpointError for every damage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from geospot.geo.cells import build_cells
from geospot.models.checkpoint import CheckpointError, GeoModel, default_model_dir
from geospot.models.head import GeoCellHead
from geospot.train.fit import TrainConfig

D = 12


def make_model(seed=0, hidden=0, n_points=200, encoder_state=None) -> GeoModel:
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-50, 60, n_points), rng.uniform(-170, 170, n_points)
    cells = build_cells(lat, lon, "s2", min_per_cell=5, max_per_cell=40)
    torch.manual_seed(seed)
    head = GeoCellHead(D, len(cells), hidden=hidden, dropout=0.1)
    return GeoModel(
        encoder_name="efficientnet-lite0",
        preprocess={"size": 224, "resize": 256, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        head=head,
        cells=cells,
        train_config=TrainConfig(hidden=hidden),
        metrics={"val_geoscore": np.float32(1234.5), "curve": np.arange(3), "nan": float("nan")},
        mask={"boxes": [[0.0, 0.9, 1.0, 1.0]], "color": [0, 0, 0]},
        encoder_state=encoder_state,
    )


@pytest.fixture()
def saved(tmp_path) -> tuple[GeoModel, Path]:
    model = make_model()
    return model, model.save(tmp_path / "model")


def embeddings(n=7, seed=1):
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


# ------------------------------------------------------------------ roundtrip


@pytest.mark.parametrize("hidden", [0, 6])
def test_roundtrip_predictions_equal(tmp_path, hidden):
    model = make_model(hidden=hidden)
    out = model.save(tmp_path / "m")
    loaded = GeoModel.load(out)
    emb = embeddings()
    np.testing.assert_array_equal(loaded.predict_proba(emb), model.predict_proba(emb))
    np.testing.assert_array_equal(loaded.predict_proba(torch.from_numpy(emb)), model.predict_proba(emb))
    assert loaded.num_cells == model.num_cells and loaded.embed_dim == D
    assert loaded.cells.hash() == model.cells.hash()
    assert loaded.train_config == TrainConfig(hidden=hidden).to_dict()
    assert loaded.mask == model.mask and loaded.preprocess == model.preprocess
    assert loaded.normalize is True and loaded.encoder_state is None
    # NumPy values are stored as plain JSON; NaN becomes null (valid JSON).
    assert loaded.metrics == {"val_geoscore": 1234.5, "curve": [0, 1, 2], "nan": None}


def test_config_json_contents_and_no_pickle(saved):
    model, out = saved
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "geospot-model" and config["format_version"] == 1
    assert config["encoder"] == {"name": "efficientnet-lite0", "preprocess": model.preprocess, "weights": "pretrained"}
    assert config["head"] == {"embed_dim": D, "num_cells": model.num_cells, "hidden": 0, "dropout": 0.1, "normalize": True}
    assert config["cells"] == {"scheme": "s2", "count": model.num_cells, "hash": model.cells.hash()}
    assert config["train_config"]["normalize"] is True
    assert "geospot_version" in config and config["created"].endswith("+00:00")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cells.json", "cells.safetensors", "config.json", "head.safetensors"]


def test_probabilities_rows_sum_to_one_and_scale_invariant(saved):
    model, _ = saved
    emb = embeddings()
    p = model.predict_proba(emb)
    assert p.shape == (7, model.num_cells) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    # Normalisation happens inside: the embedding's scale does not matter.
    np.testing.assert_allclose(model.predict_proba(emb * 9.0), p, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=rf"\[B, {D}\]"):
        model.predict_proba(np.zeros((2, D + 1), np.float32))


def test_logits_are_differentiable(saved):
    model, _ = saved
    emb = torch.from_numpy(embeddings(2)).requires_grad_(True)
    model.logits(emb)[:, 0].sum().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_encoder_state_roundtrip(tmp_path):
    state = {"blocks.0.weight": torch.randn(4, 3), "bn.running_mean": torch.zeros(4)}
    out = make_model(encoder_state=state).save(tmp_path / "ft")
    assert json.loads((out / "config.json").read_text())["encoder"]["weights"] == "encoder.safetensors"
    loaded = GeoModel.load(out)
    assert set(loaded.encoder_state) == set(state)
    for k, v in state.items():
        assert torch.equal(loaded.encoder_state[k], v)
    (out / "encoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"encoder\.safetensors: missing"):
        GeoModel.load(out)


# ------------------------------------------------------------------ overwrite safety


def test_overwrite_existing_model_dir_is_safe(saved):
    _, out = saved
    other = make_model(seed=5, hidden=4)
    other.save(out)
    loaded = GeoModel.load(out)
    assert loaded.cells.hash() == other.cells.hash() and loaded.head.hidden == 4
    emb = embeddings()
    np.testing.assert_array_equal(loaded.predict_proba(emb), other.predict_proba(emb))
    # No temporary or old directories are left next to it.
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a geospot model directory"):
        make_model().save(target)
    assert (target / "holiday.jpg").read_bytes() == b"not a model"
    make_model().save(tmp_path / "empty_ok")  # a missing or empty directory is fine


def test_failed_save_keeps_previous_model(saved, monkeypatch):
    model, out = saved
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    broken = make_model(seed=3)
    monkeypatch.setattr(broken.cells, "save", lambda d: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        broken.save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]


# ------------------------------------------------------------------ damage -> CheckpointError


def edit_config(out: Path, fn) -> None:
    config = json.loads((out / "config.json").read_text())
    fn(config)
    (out / "config.json").write_text(json.dumps(config))


def test_missing_directory_and_config(tmp_path, saved):
    with pytest.raises(CheckpointError, match="model directory not found"):
        GeoModel.load(tmp_path / "nope")
    _, out = saved
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        GeoModel.load(out)


def test_invalid_json(saved):
    _, out = saved
    (out / "config.json").write_text('{"format": "geospot-model",\n  "head": }')
    with pytest.raises(CheckpointError, match=r"config\.json: invalid JSON at line 2"):
        GeoModel.load(out)


def test_wrong_format_and_newer_version(saved):
    _, out = saved
    edit_config(out, lambda c: c.update(format_version=2))
    with pytest.raises(CheckpointError, match="format_version 2 was written by a newer geospot"):
        GeoModel.load(out)
    edit_config(out, lambda c: c.update(format="something-else", format_version=1))
    with pytest.raises(CheckpointError, match="not a geospot model"):
        GeoModel.load(out)


def test_missing_config_key_is_named(saved):
    _, out = saved
    edit_config(out, lambda c: c["head"].pop("hidden"))
    with pytest.raises(CheckpointError, match=r"'head\.hidden' is missing"):
        GeoModel.load(out)


def test_missing_and_corrupt_head_weights(saved):
    _, out = saved
    data = (out / "head.safetensors").read_bytes()
    (out / "head.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"head\.safetensors: corrupt"):
        GeoModel.load(out)
    (out / "head.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"head\.safetensors: corrupt"):
        GeoModel.load(out)
    (out / "head.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"head\.safetensors: missing"):
        GeoModel.load(out)


def test_shape_mismatch_between_config_and_weights(saved):
    _, out = saved
    edit_config(out, lambda c: c["head"].update(embed_dim=D + 3))
    with pytest.raises(CheckpointError, match=r"head\.safetensors: does not match.*'out\.weight' has shape"):
        GeoModel.load(out)


def test_unexpected_tensor_in_head(saved):
    _, out = saved
    state = load_file(str(out / "head.safetensors"))
    state["hidden_layer.weight"] = torch.zeros(2, D)
    save_file(state, str(out / "head.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected tensor 'hidden_layer.weight'"):
        GeoModel.load(out)


def test_cells_from_another_model_fail_hash_check(tmp_path, saved):
    _, out = saved
    other = make_model(seed=9).save(tmp_path / "other")
    for name in ("cells.json", "cells.safetensors"):
        (out / name).write_bytes((other / name).read_bytes())
    with pytest.raises(CheckpointError, match=r"cells\.json: (cell table hash|holds \d+ cells)"):
        GeoModel.load(out)


def test_cells_hash_mismatch_same_size(saved):
    _, out = saved
    edit_config(out, lambda c: c["cells"].update(hash="0" * 64))
    with pytest.raises(CheckpointError, match="does not match 000000000000"):
        GeoModel.load(out)


def test_missing_and_damaged_cells(saved):
    _, out = saved
    (out / "cells.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"cell table: .*cells\.json"):
        GeoModel.load(out)
    (out / "cells.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"cells\.safetensors: missing"):
        GeoModel.load(out)


def test_constructor_checks_and_default_dir():
    model = make_model()
    with pytest.raises(ValueError, match="cell table has"):
        GeoModel("enc", {}, GeoCellHead(D, model.num_cells + 1), model.cells)
    assert default_model_dir().parts[-3:] == ("geospot", "assets", "default_model")
