"""int8 variant: calibrated static quantisation, verified record, kept apart from fp32 in caches."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_embed_paths import _images

from geospot.encoders.embed import embed_paths
from geospot.encoders.onnx_runtime import OnnxRecordMissing, OnnxRuntime, onnx_path, record_path
from geospot.encoders.quantize import quantize_encoder
from geospot.encoders.runtime import EncoderRuntime


def test_int8_encoder_is_close_to_fp32_and_never_shares_its_cache(tmp_path):
    fp32 = EncoderRuntime("tiny", backend="onnx")
    path = onnx_path("tiny", fp32.weights_id, "int8")
    path.unlink(missing_ok=True)
    with pytest.raises(OnnxRecordMissing, match="--quantize tiny"):
        EncoderRuntime("tiny", backend="onnx", precision="int8")
    photos = _images(tmp_path / "img", 24)
    out = quantize_encoder("tiny", photos[:16])
    assert out == path and json.loads(record_path(path).read_text())["precision"] == "int8"

    int8 = OnnxRuntime.pretrained("tiny", "int8")
    assert int8.weights_id == fp32.weights_id + "-int8" and int8.precision == "int8"
    torch_path = EncoderRuntime("tiny", backend="onnx", precision="int8")
    assert torch_path.weights_id == int8.weights_id
    a = embed_paths(photos[16:], fp32, fp32.preprocess, cache_dir=tmp_path / "cache", progress=False)
    b = embed_paths(photos[16:], int8, int8.preprocess, cache_dir=tmp_path / "cache", progress=False)
    assert b.reused == 0 and len(list((tmp_path / "cache").iterdir())) == 2
    cos = (a.embeddings * b.embeddings).sum(1) / np.linalg.norm(a.embeddings, axis=1) / np.linalg.norm(b.embeddings, axis=1)
    assert cos.mean() > 0.95 and not np.array_equal(a.embeddings, b.embeddings)
    with pytest.raises(ValueError, match="precision"):
        EncoderRuntime("tiny", backend="onnx", precision="int4")
