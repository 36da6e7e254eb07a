"""EncoderRuntime: backends, the ONNX cache (reuse, weights in the key, atomic writes), verification."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from geospot.encoders import create_encoder
from geospot.encoders import runtime as rt_mod
from geospot.encoders.runtime import EncoderRuntime, OnnxMismatchError, relative_error, resolve_device, usable_cpus
from geospot.encoders.tiny import TinyEncoder


def _batch(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    return tmp_path


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("abacus")


def test_auto_backend_is_onnx_on_cpu(cache):
    runtime = EncoderRuntime("tiny", device="cpu")
    assert runtime.backend == "onnx" and runtime.device.type == "cpu"
    assert runtime.embed_dim == 32 and runtime.input_size == 64


def test_bad_arguments_are_clear_errors(cache):
    with pytest.raises(ValueError, match="unknown backend"):
        EncoderRuntime("tiny", backend="tensorflow")
    with pytest.raises(ValueError, match="unknown encoder"):
        EncoderRuntime("no-such-encoder")
    with pytest.raises(ValueError, match="'tiny'"):
        EncoderRuntime("efficientnet-lite0", encoder=create_encoder("tiny"))
    runtime = EncoderRuntime("tiny", backend="torch", device="cpu")
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 64\]"):
        runtime.embed(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 64\]"):
        runtime.embed(np.zeros((3, 64, 64), np.float32))


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_embed_matches_the_encoder(cache, backend):
    encoder = create_encoder("tiny")
    runtime = EncoderRuntime("tiny", backend=backend, device="cpu")
    x = _batch(5)
    out = runtime.embed(x)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(x)).numpy()
    assert out.shape == (5, 32) and out.dtype == np.float32
    assert relative_error(out, expected) <= 1e-4
    assert runtime.embed(x[:0]).shape == (0, 32)
    # float64 and non-contiguous input are accepted and converted
    assert relative_error(runtime.embed(x.astype(np.float64)[:, :, ::1]), expected) <= 1e-4


def test_onnx_export_is_cached_and_reused(cache, monkeypatch):
    first = EncoderRuntime("tiny", backend="onnx")
    path = first.onnx_path
    assert path.parent == cache / "onnx" and path.name == f"tiny-{create_encoder('tiny').weights_id}.onnx"
    assert path.is_file() and not list(path.parent.glob("*.tmp-*"))
    stamp = path.stat().st_mtime_ns

    def must_not_export(*args, **kwargs):
        raise AssertionError("a cached export must be reused")

    monkeypatch.setattr(rt_mod, "export_onnx", must_not_export)
    second = EncoderRuntime("tiny", backend="onnx")
    assert second.onnx_path == path and path.stat().st_mtime_ns == stamp
    x = _batch()
    np.testing.assert_array_equal(first.embed(x), second.embed(x))


def test_an_unloadable_cached_file_is_exported_again(cache):
    path = EncoderRuntime("tiny", backend="onnx").onnx_path
    path.write_bytes(b"garbage")
    runtime = EncoderRuntime("tiny", backend="onnx")
    assert path.stat().st_size > 1000
    assert runtime.embed(_batch()).shape == (3, 32)


def test_fine_tuned_weights_get_their_own_export(cache):
    base = EncoderRuntime("tiny", backend="onnx")
    tuned = create_encoder("tiny")
    tuned.train()  # the caller's mode must survive the export
    with torch.no_grad():
        tuned.blocks[-1][0].weight.mul_(1.5)
    running_mean = tuned.blocks[0][1].running_mean.clone()
    runtime = EncoderRuntime("tiny", backend="onnx", encoder=tuned)
    assert runtime.onnx_path != base.onnx_path and runtime.weights_id == tuned.weights_id
    assert tuned.training and all(m.training for m in tuned.modules())
    # tracing must not have updated BatchNorm statistics (a module in training mode would)
    assert torch.equal(tuned.blocks[0][1].running_mean, running_mean)
    x = _batch()
    tuned.eval()
    with torch.no_grad():
        expected = tuned(torch.from_numpy(x)).numpy()
    assert relative_error(runtime.embed(x), expected) <= 1e-4
    assert relative_error(base.embed(x), expected) > 1e-2


def test_torch_backend_does_not_touch_the_callers_model(cache):
    encoder = create_encoder("tiny").train()
    runtime = EncoderRuntime("tiny", backend="torch", device="cpu", encoder=encoder)
    runtime.embed(_batch())
    assert encoder.training


class _TraceDifferent(TinyEncoder):
    """An encoder whose traced graph differs from eager torch: export verification must catch it."""

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        pooled = super().forward_head(fmap)
        return pooled * 2 if torch.jit.is_tracing() else pooled


def test_an_export_that_differs_from_torch_is_refused(cache):
    with pytest.raises(OnnxMismatchError, match="does not match torch"):
        EncoderRuntime("tiny", backend="onnx", encoder=_TraceDifferent())
    leftovers = os.listdir(cache / "onnx")
    assert leftovers == [], f"a refused export must not enter the cache: {leftovers}"


def test_session_settings(cache):
    runtime = EncoderRuntime("tiny", backend="onnx")
    opts = runtime._session.get_session_options()
    import onnxruntime as ort

    assert opts.intra_op_num_threads == usable_cpus() >= 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_backend_on_cuda_matches_onnx_in_full_fp32(cache):
    gpu = EncoderRuntime("efficientnet-lite0")
    assert gpu.backend == "torch" and gpu.device.type == "cuda"
    cpu = EncoderRuntime("efficientnet-lite0", backend="onnx")
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    # TF32 convolutions would be ~2e-3 off; the runtime turns them off for interchangeable embeddings
    assert relative_error(gpu.embed(x), cpu.embed(x)) <= 1e-4
    assert torch.backends.cudnn.allow_tf32  # the global setting is restored


def test_cpu_micro_batches_give_the_full_batch_answer(cache):
    from geospot.encoders.onnx_runtime import CPU_MICRO_BATCH, run_session

    runtime = EncoderRuntime("tiny", backend="onnx")
    assert runtime.micro_batch == CPU_MICRO_BATCH
    x = _batch(5)
    whole = run_session(runtime._session, x, None)
    assert relative_error(run_session(runtime._session, x, 2), whole) <= 1e-5
    assert relative_error(runtime.embed(x), whole) <= 1e-5
