"""int8 encoders: static quantisation of a verified ONNX export, calibrated on real photos.

`quantize_encoder(name, photos)` reads the fp32 export of the pretrained
encoder (verified against its record), collects activation ranges on the
given photos through the same decoding and preprocessing as embedding, and
writes `<name>-<weights id>-int8.onnx` (QDQ format, per-channel int8 weights,
uint8 activations) with its own record. `EncoderRuntime(..., precision="int8")`,
`OnnxRuntime.pretrained(name, "int8")` and `geospot locate --precision int8`
use it. It is an option, never the default: the embeddings change a little
(benchmarks/bench_int8.py measures cosine similarity and top-cell agreement).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from geospot.encoders.onnx_runtime import onnx_path, pretrained_weights_id, read_verified, write_record
from geospot.encoders.preprocess import Preprocess

DEFAULT_CALIBRATION = 128


def _calibration_batches(paths: Sequence[str], preprocess: Preprocess, batch_size: int) -> Iterator[np.ndarray]:
    from geospot.encoders.embed import prepare_image

    batch = []
    for p in paths:
        try:
            batch.append(prepare_image(p, preprocess))
        except Exception as exc:  # noqa: BLE001 - a bad calibration photo is skipped, said once
            print(f"geospot: {p}: skipped for calibration ({getattr(exc, 'reason', exc)})", file=sys.stderr)
            continue
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def quantize_onnx(fp32_bytes: bytes, out: Path, batches: Iterator[np.ndarray], reduce_range: bool = True) -> None:
    """Static QDQ quantisation of an ONNX model (bytes) calibrated on `batches`, written to `out` atomically."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {"images": batch}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out.parent) as tmp:  # same disk: atomic replace
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_bytes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # folds and infers shapes first
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        # 7-bit weights: x86 without VNNI multiplies u8 x s8 with a saturating
                        # instruction (VPMADDUBSW); full-range weights overflow it and distort outputs.
                        reduce_range=reduce_range)
        os.replace(dst, out)


def quantize_encoder(name: str, photos: Sequence[str | os.PathLike], limit: int = DEFAULT_CALIBRATION,
                     batch_size: int = 16) -> Path:
    """Write (or rewrite) the int8 export of the pretrained `name`, calibrated on up to `limit` photos."""
    weights_id = pretrained_weights_id(name)  # the fp32 export must exist (EncoderRuntime makes it)
    fp32 = onnx_path(name, weights_id)
    data, record = read_verified(fp32)
    paths = [os.fspath(p) for p in photos][:limit]
    if not paths:
        raise ValueError("int8 calibration needs photos (e.g. a few hundred from your data)")
    out = onnx_path(name, weights_id, "int8")
    quantize_onnx(data, out, _calibration_batches(paths, Preprocess.from_dict(record["preprocess"]), batch_size))
    write_record(out, encoder=name, weights_id=weights_id, embed_dim=record["embed_dim"],
                 preprocess=record["preprocess"], precision="int8", source_sha256=record["sha256"],
                 calibration={"photos": len(paths), "method": "static QDQ, MinMax, per-channel"})
    return out
