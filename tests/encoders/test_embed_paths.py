"""embed_paths: correct rows, bad files reported, decoding overlapped (the cache: test_embedding_cache.py)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geospot.encoders.embed import EmbeddingResult, embed_paths, prepare_image
from geospot.encoders.runtime import EncoderRuntime, relative_error
from geospot.testing import UNREADABLE_BAD_FILES, make_bad_files


class Counting:
    """A runtime wrapper counting batches/rows; optionally interrupted after `fail_after` batches."""

    def __init__(self, inner, fail_after: int | None = None, on_embed=None):
        self.inner, self.fail_after, self.on_embed = inner, fail_after, on_embed
        self.name, self.weights_id, self.embed_dim = inner.name, inner.weights_id, inner.embed_dim
        self.calls = self.rows = 0

    def embed(self, batch):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        if self.on_embed:
            self.on_embed(self)
        self.calls += 1
        self.rows += len(batch)
        return self.inner.embed(batch)


@pytest.fixture
def runtime():
    return EncoderRuntime("tiny", backend="onnx")


def _images(directory, n: int, seed: int = 0) -> list:
    """n small photos-like files of varied sizes, modes and formats."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(48, 160)), int(rng.integers(48, 160))
        ramp = np.linspace(0, 255, w)[None, :, None] * rng.random(3)[None, None, :]
        arr = np.clip(ramp + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        if i % 5 == 3:
            img = img.convert("L")
        path = directory / (f"img{i:03d}.png" if i % 4 == 1 else f"img{i:03d}.jpg")
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def mixed(tmp_path):
    """Good images with unreadable files and a missing path mixed in; returns (paths, bad indices)."""
    good = _images(tmp_path / "good", 20)
    bad_files = make_bad_files(tmp_path / "bad")
    bad = [bad_files[name] for name in sorted(UNREADABLE_BAD_FILES)] + [tmp_path / "missing.jpg"]
    paths, bad_idx = list(good), []
    for j, path in enumerate(bad):
        at = 2 + 4 * j
        paths.insert(at, path)
        bad_idx.append(at)
    return paths, sorted(bad_idx)


def test_rows_match_the_encoder_and_bad_files_are_reported(runtime, mixed):
    paths, bad_idx = mixed
    result = embed_paths(paths, runtime, runtime.preprocess, batch_size=4, progress=False)
    assert isinstance(result, EmbeddingResult) and len(result) == len(paths)
    assert result.embeddings.shape == (len(paths), runtime.embed_dim) and result.embeddings.dtype == np.float32
    assert sorted(result.errors) == bad_idx and result.n_failed == len(bad_idx)
    assert not result.ok[bad_idx].any() and result.ok.sum() == len(paths) - len(bad_idx)
    assert not result.embeddings[bad_idx].any(), "failed rows are zero"
    for i in bad_idx:
        message = result.errors[i]
        assert message.startswith(f"{paths[i]}: ") and len(message) > len(str(paths[i])) + 5
    assert "file not found" in result.errors[bad_idx[-1]]
    good = [i for i in range(len(paths)) if i not in bad_idx]
    expected = runtime.embed(np.stack([prepare_image(paths[i], runtime.preprocess) for i in good]))
    assert relative_error(result.embeddings[good], expected) <= 1e-5


def test_same_numbers_whatever_the_worker_count(runtime, mixed):
    paths, _ = mixed
    a = embed_paths(paths, runtime, runtime.preprocess, batch_size=4, workers=0, progress=False)
    b = embed_paths(paths, runtime, runtime.preprocess, batch_size=4, workers=3, progress=False)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.errors == b.errors and np.array_equal(a.ok, b.ok)
    c = embed_paths([str(p) for p in paths], runtime, runtime.preprocess, batch_size=7, progress=False)
    assert relative_error(c.embeddings, a.embeddings) <= 1e-5 and c.errors == a.errors


def test_decoding_stays_a_bounded_window_ahead(runtime, tmp_path):
    paths = _images(tmp_path, 40)
    decoded = []

    def preprocess(img):
        decoded.append(1)
        return runtime.preprocess(img)

    preprocess.resize = runtime.preprocess.resize
    preprocess.to_dict = runtime.preprocess.to_dict

    def check(counting):
        # decoded but not yet embedded: at most the prefetch window (2 batches) plus this batch
        assert len(decoded) - counting.rows <= 3 * 4

    counting = Counting(runtime, on_embed=check)
    embed_paths(paths, counting, preprocess, batch_size=4, workers=2, progress=False)
    assert counting.rows == 40


def test_progress_goes_to_stderr_and_nothing_to_stdout(runtime, tmp_path, capsys):
    paths = _images(tmp_path, 3)
    embed_paths(paths, runtime, runtime.preprocess, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "embed tiny" in err


def test_empty_input_and_bad_arguments(runtime):
    result = embed_paths([], runtime, runtime.preprocess, progress=False)
    assert result.embeddings.shape == (0, 32) and result.ok.shape == (0,) and result.errors == {}
    with pytest.raises(ValueError, match="batch_size"):
        embed_paths([], runtime, runtime.preprocess, batch_size=0)


@pytest.mark.realdata
def test_real_street_view_images(shared_data, runtime):
    import pandas as pd

    root = shared_data / "streetview-global"
    paths = [root / p for p in pd.read_csv(root / "manifest.csv")["path"][:12]]
    result = embed_paths(paths, runtime, runtime.preprocess, batch_size=5, progress=False)
    assert result.ok.all() and result.errors == {}
    assert np.isfinite(result.embeddings).all() and (np.linalg.norm(result.embeddings, axis=1) > 0).all()
    assert len({row.tobytes() for row in result.embeddings}) == len(paths)


def test_auto_workers(runtime, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import torch

    from geospot.encoders import embed as embed_mod
    from geospot.encoders import onnx_runtime as runtime_mod

    monkeypatch.setattr(runtime_mod, "usable_cpus", lambda: 2)
    assert embed_mod.auto_workers(runtime) == 1  # 2 cores: one decoder, ORT gets the rest
    monkeypatch.setattr(runtime_mod, "usable_cpus", lambda: 16)
    assert embed_mod.auto_workers(runtime) == 4
    gpu = SimpleNamespace(backend="torch", device=torch.device("cuda"))
    assert embed_mod.auto_workers(gpu) == 8  # a GPU waits on decoding: use most cores
    paths = _images(tmp_path, 3)
    result = embed_paths(paths, runtime, runtime.preprocess, workers=None, progress=False)
    assert result.ok.all()


def test_a_file_rewritten_in_place_is_embedded_again(tmp_path):
    import os

    import numpy as np
    from PIL import Image

    from geospot.encoders import create_encoder
    from geospot.encoders.embed import embed_paths
    from geospot.encoders.runtime import EncoderRuntime

    enc = create_encoder("tiny")
    runtime = EncoderRuntime("tiny", backend="torch", device="cpu", encoder=enc)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), (40 * i, 10, 200)).save(p)
        paths.append(str(p))
    first = embed_paths(paths, runtime, enc.preprocess, cache_dir=tmp_path / "cache", progress=False)
    Image.new("RGB", (64, 64), (250, 250, 0)).save(paths[1])
    os.utime(paths[1], ns=(os.stat(paths[1]).st_atime_ns, os.stat(paths[1]).st_mtime_ns + 10**9))
    second = embed_paths(paths, runtime, enc.preprocess, cache_dir=tmp_path / "cache", progress=False)
    fresh = embed_paths(paths, runtime, enc.preprocess, cache_dir=None, progress=False)
    assert not np.allclose(first.embeddings[1], second.embeddings[1])
    assert second.reused == 2 and second.computed == 1
    # batch composition differs (2 reused + 1 new vs 3 at once): equal up to float rounding
    np.testing.assert_allclose(second.embeddings, fresh.embeddings, rtol=1e-5, atol=1e-6)
