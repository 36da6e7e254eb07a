"""Fast inference for encoders: eager torch (GPU) or a cached ONNX Runtime session (CPU).

On CPU, ONNX Runtime with full graph optimisation (BN folding, fused
conv+ReLU) is several times faster than eager torch. The ONNX file is exported
once per (encoder, weights) and cached at `$GEOSPOT_CACHE/onnx/<name>-<weights
hash>.onnx`; a fine-tuned encoder gets its own file because the hash covers its
weights. Every fresh export is checked against torch before it enters the cache,
and its sha256 is recorded beside it: a cached file whose content differs from
the record is never used but exported again (see `geospot.encoders.onnx_runtime`,
which also runs verified exports without torch).
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import uuid
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from geospot.encoders import create_encoder
from geospot.encoders.base import Encoder, Preprocess
from geospot.encoders.onnx_runtime import (
    PRECISIONS,
    OnnxRecordMissing,
    OnnxVerificationError,
    checked_batch,
    make_session,
    micro_batch_for,
    onnx_path,
    pretrained_weights_id,
    read_verified,
    run_session,
    usable_cpus,  # noqa: F401 - re-exported (older callers import it from here)
    write_alias,
    write_record,
)

OPSET = 17
VERIFY_RTOL = 1e-4
BACKENDS = ("auto", "torch", "onnx")


class OnnxMismatchError(RuntimeError):
    """The exported ONNX graph does not reproduce the torch encoder."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda'")
    return resolved


@contextlib.contextmanager
def _full_fp32() -> Iterator[None]:
    """No TF32 in cuDNN convolutions (on by default on Ampere+): GPU embeddings then match
    the CPU/ONNX ones to ~1e-6 instead of ~2e-3, so caches and models stay interchangeable."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (scale-aware; robust to near-zero entries)."""
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    diff = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    return diff / max(scale, 1e-12)


class _EmbeddingGraph(nn.Module):
    """What gets exported: images in, pooled embeddings out."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put every submodule in eval mode, then restore each one's flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def export_onnx(encoder: Encoder, path: Path) -> None:
    """Export `encoder` in eval mode to `path` atomically, with a dynamic batch axis, verified."""
    if any(p.device.type != "cpu" for p in encoder.parameters()):
        encoder = copy.deepcopy(encoder).cpu()  # the caller's model stays where it is
    size = encoder.input_size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    # Eval mode matters: tracing a module left in training mode would update the
    # BatchNorm running statistics with the dummy input.
    with _eval_mode(encoder):
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter is the one that needs no extra packages; its
                # deprecation and constant-folding notices are noise for users.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _EmbeddingGraph(encoder).eval(),
                    (torch.zeros(1, 3, size, size),),
                    str(tmp),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=["images"],
                    output_names=["embeddings"],
                    dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
                    do_constant_folding=True,
                )
            verify_onnx(encoder, tmp)
            os.replace(tmp, path)  # atomic: concurrent readers see the old file or the new one
        finally:
            tmp.unlink(missing_ok=True)


def verify_onnx(encoder: Encoder, path: Path, batch: int = 2, seed: int = 0) -> float:
    """Run a random batch through torch (eval mode) and ORT; raise `OnnxMismatchError` beyond 1e-4 relative."""
    size = encoder.input_size
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    device = next(encoder.parameters()).device
    with torch.inference_mode(), _eval_mode(encoder):
        expected = encoder(torch.from_numpy(x).to(device)).float().cpu().numpy()
    actual = make_session(path).run(None, {"images": x})[0]
    err = relative_error(actual, expected)
    if actual.shape != expected.shape or not err <= VERIFY_RTOL:
        raise OnnxMismatchError(
            f"{path}: ONNX export of {encoder.name} does not match torch "
            f"(shape {actual.shape} vs {expected.shape}, relative error {err:.2e} > {VERIFY_RTOL:.0e})"
        )
    return err


class EncoderRuntime:
    """Batched embedding with the fastest available backend.

    `backend`: "auto" (torch on CUDA when available, else ONNX), "torch" (eager on
    `device`) or "onnx" (ONNX Runtime). Pass `encoder` to run fine-tuned weights
    instead of the registered pretrained ones. `precision="int8"` (ONNX only)
    runs the quantised export made by `geospot encoders --quantize NAME`.
    """

    def __init__(self, name: str, backend: str = "auto", device: str = "auto", encoder: Encoder | None = None,
                 precision: str = "fp32") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if encoder is None:
            encoder = create_encoder(name)
        elif encoder.name != name:
            raise ValueError(f"encoder instance is {encoder.name!r} but the runtime was asked for {name!r}")
        self.name = name
        self.device = resolve_device(device)
        if backend == "auto":
            backend = "torch" if self.device.type == "cuda" else "onnx"
        if precision != "fp32" and backend != "onnx":
            raise ValueError(f"precision {precision!r} needs the ONNX backend (got backend {backend!r})")
        self.backend = backend
        self.precision = precision
        self.embed_dim = encoder.embed_dim
        self.preprocess: Preprocess = encoder.preprocess
        self.weights_id = encoder.weights_id
        # Untouched pretrained weights (see create_encoder): the torch-free path may find this export.
        self._pristine = getattr(encoder, "pristine_weights_id", None) == self.weights_id
        self.onnx_path: Path | None = None
        self._session = None
        self._encoder: Encoder | None = None
        if backend == "onnx":
            self._session = self._onnx_session(encoder)
            if precision != "fp32":
                self.weights_id = f"{self.weights_id}-{precision}"  # embedding caches never mix precisions
        else:
            # A private copy: moving to the device or to eval mode must not touch the caller's model.
            self._encoder = copy.deepcopy(encoder).to(self.device).eval()

    @property
    def input_size(self) -> int:
        """Side length S of the [B, 3, S, S] batches `embed` takes."""
        return self.preprocess.size

    def _onnx_session(self, encoder: Encoder):
        import onnxruntime as ort

        path = onnx_path(self.name, self.weights_id)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        data = None
        try:
            data, _ = read_verified(path)
        except OnnxVerificationError as exc:
            print(f"geospot: {exc}; exporting again", file=sys.stderr)
        except OnnxRecordMissing:
            if path.is_file():
                print(f"geospot: {path}: no export record (an older geospot made it); exporting again", file=sys.stderr)
        if data is None:
            print(f"geospot: exporting {self.name} to {path} (once)", file=sys.stderr)
            export_onnx(encoder, path)
            write_record(path, encoder=self.name, weights_id=self.weights_id, embed_dim=self.embed_dim,
                         preprocess=self.preprocess.to_dict())
            data, _ = read_verified(path)
        if self._pristine and hasattr(encoder, "weights_sources"):
            try:
                current = pretrained_weights_id(self.name) == self.weights_id
            except OnnxRecordMissing:
                current = False
            if not current:
                write_alias(self.name, self.weights_id, getattr(encoder, "weights_sources", ()))
        if self.precision != "fp32":
            path = onnx_path(self.name, self.weights_id, self.precision)
            try:
                data, _ = read_verified(path)
            except OnnxRecordMissing:
                raise OnnxRecordMissing(f"{path}: no {self.precision} export of {self.name}; make it once with "
                                        f"`geospot encoders --quantize {self.name} --calibration PHOTOS`") from None
        self.onnx_path = path
        self.micro_batch = micro_batch_for(providers)
        return make_session(data, providers)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """float32 [B, 3, S, S] (the output of `preprocess`, stacked) -> float32 [B, D] embeddings."""
        batch = checked_batch(batch, self.name, self.input_size)
        if batch.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if self._session is not None:
            return run_session(self._session, batch, self.micro_batch)
        with torch.inference_mode(), _full_fp32():
            out = self._encoder(torch.from_numpy(batch).to(self.device, non_blocking=True))
        return out.float().cpu().numpy()
