"""The NumPy prediction model gives the torch head's probabilities and refuses what GeoModel refuses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_checkpoint import embeddings, make_model

from geospot.models.checkpoint import CheckpointError, GeoModel
from geospot.models.numpy_model import erf, gelu, load_numpy_model


@pytest.mark.parametrize("hidden", [0, 6])
def test_same_probabilities_as_the_torch_head(tmp_path, hidden):
    out = make_model(hidden=hidden).save(tmp_path / "m")
    torch_model, np_model = GeoModel.load(out), load_numpy_model(out)
    emb = embeddings(n=9) * 3.0
    np.testing.assert_allclose(np_model.predict_proba(emb), torch_model.predict_proba(emb), rtol=1e-5, atol=1e-6)
    assert np_model.cells.hash() == torch_model.cells.hash() and np_model.mask == torch_model.mask
    assert np_model.preprocess == torch_model.preprocess and not np_model.fine_tuned
    assert np_model.encoder_state is None


def test_erf_and_gelu_match_torch():
    x = np.linspace(-8, 8, 4001).astype(np.float32)
    np.testing.assert_allclose(erf(x), torch.erf(torch.from_numpy(x)).numpy(), atol=2e-7)
    np.testing.assert_allclose(gelu(x), torch.nn.GELU()(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_damaged_heads_are_refused_with_the_file_named(tmp_path):
    out = make_model(hidden=0).save(tmp_path / "m")
    state = load_file(str(out / "head.safetensors"))
    state["out.weight"][0, 0] = float("nan")
    save_file(state, str(out / "head.safetensors"))
    with pytest.raises(CheckpointError, match="head.safetensors: non-finite"):
        load_numpy_model(out)
    save_file({"out.weight": state["out.weight"][:, :3].contiguous(), "out.bias": state["out.bias"]},
              str(out / "head.safetensors"))
    with pytest.raises(CheckpointError, match="config.json implies"):
        load_numpy_model(out)
    out = make_model(hidden=0).save(tmp_path / "m2")
    config = json.loads((out / "config.json").read_text())
    config["cells"]["hash"] = "0" * 64
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cells.json: cell table hash"):
        load_numpy_model(out)
    with pytest.raises(CheckpointError, match="not found"):
        load_numpy_model(tmp_path / "nowhere")
