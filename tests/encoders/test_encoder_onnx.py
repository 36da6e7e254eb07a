"""ONNX Runtime reproduces every registered encoder (batch 2, 1e-4 relative)."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.encoders import create_encoder, encoder_is_large, list_encoders
from geospot.encoders.runtime import EncoderRuntime, relative_error


@pytest.mark.slow
# the large CLIP family has no offline weights; test_clip.py exports a tiny one
@pytest.mark.parametrize("name", [n for n in list_encoders() if not encoder_is_large(n)])
def test_onnx_matches_torch(name):
    encoder = create_encoder(name)
    onnx = EncoderRuntime(name, backend="onnx", encoder=encoder)
    eager = EncoderRuntime(name, backend="torch", device="cpu", encoder=encoder)
    s = encoder.input_size
    # a batch size other than the one traced at export proves the batch axis is dynamic
    x = np.random.default_rng(7).standard_normal((2, 3, s, s)).astype(np.float32)
    a, b = onnx.embed(x), eager.embed(x)
    assert a.shape == b.shape == (2, encoder.embed_dim) and a.dtype == np.float32
    assert relative_error(a, b) <= 1e-4
    assert onnx.onnx_path.is_file() and onnx.onnx_path.name == f"{name}-{encoder.weights_id}.onnx"
