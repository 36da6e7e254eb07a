"""The per-photo embedding cache: reuse across subsets/supersets/orders, kill-resume, rewritten
files, settings that never mix, concurrent writers, torn tails and compaction."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geospot.data.masks import parse_mask
from geospot.encoders.cache import KEY_BYTES, EmbeddingCache, cache_settings, photo_key
from geospot.encoders.embed import embed_paths
from geospot.encoders.runtime import EncoderRuntime
from geospot.testing import UNREADABLE_BAD_FILES, make_bad_files

from test_embed_paths import Counting, _images


@pytest.fixture
def runtime():
    return EncoderRuntime("tiny", backend="onnx")


def _run(paths, runtime, cache, **kw):
    kw.setdefault("batch_size", 3)
    preprocess = getattr(runtime, "inner", runtime).preprocess
    return embed_paths(paths, runtime, preprocess, cache_dir=cache, progress=False, **kw)


def test_any_subset_superset_or_order_reuses_what_is_cached(runtime, tmp_path):
    paths = _images(tmp_path / "img", 16)
    cache = tmp_path / "cache"
    reference = _run(paths, runtime, None)
    first = _run(paths[:10], runtime, cache)
    assert (first.reused, first.computed) == (0, 10)

    counting = Counting(runtime)
    superset = list(reversed(paths))  # every cached photo plus 6 new ones, in another order
    again = _run(superset, counting, cache)
    assert counting.rows == 6 and (again.reused, again.computed) == (10, 6)
    np.testing.assert_allclose(again.embeddings, reference.embeddings[::-1], rtol=1e-5, atol=1e-6)

    counting = Counting(runtime)
    subset = [paths[i] for i in (15, 3, 7, 0)]
    sub = _run(subset, counting, cache)
    assert counting.calls == 0 and sub.reused == 4
    np.testing.assert_array_equal(sub.embeddings, again.embeddings[[0, 12, 8, 15]])


def test_bad_files_are_reported_every_run_and_good_ones_reused(runtime, tmp_path, capsys):
    good = _images(tmp_path / "good", 6)
    bad_files = make_bad_files(tmp_path / "bad")
    paths = good[:3] + [bad_files[sorted(UNREADABLE_BAD_FILES)[0]], tmp_path / "missing.jpg"] + good[3:]
    first = embed_paths(paths, runtime, runtime.preprocess, cache_dir=tmp_path / "c", batch_size=4, progress=True)
    assert "reused 0, embedding 8" in capsys.readouterr().err
    counting = Counting(runtime)
    again = embed_paths(paths, counting, runtime.preprocess, cache_dir=tmp_path / "c", batch_size=4, progress=True)
    assert "reused 6, embedding 2" in capsys.readouterr().err
    assert counting.calls == 0 and sorted(again.errors) == [3, 4] == sorted(first.errors)
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    assert np.array_equal(first.ok, again.ok)


def test_a_killed_run_loses_at_most_one_batch_and_resumes_exactly(runtime, tmp_path):
    paths = _images(tmp_path / "img", 14)
    cache = tmp_path / "cache"
    reference = _run(paths, runtime, None)
    with pytest.raises(KeyboardInterrupt):
        _run(paths, Counting(runtime, fail_after=3), cache)  # dies in the 4th batch of 3
    resumed = Counting(runtime)
    result = _run(paths, resumed, cache)
    assert resumed.rows == 14 - 9 and result.reused == 9
    np.testing.assert_allclose(result.embeddings, reference.embeddings, rtol=1e-5, atol=1e-6)
    assert result.ok.all()


def test_settings_never_mix(runtime, tmp_path):
    paths = _images(tmp_path / "img", 5)
    cache = tmp_path / "cache"
    plain = _run(paths, runtime, cache)
    masked = _run(paths, runtime, cache, mask=parse_mask("box:0,0,1,1+fill:black"))  # blanks everything
    assert len(list(cache.iterdir())) == 2
    assert np.allclose(masked.embeddings, masked.embeddings[0], rtol=0, atol=1e-6)
    assert not np.allclose(plain.embeddings, masked.embeddings)
    # an empty mask is no mask: same folder, nothing computed
    none = _run(paths, Counting(runtime, fail_after=0), cache, mask=parse_mask("none"))
    np.testing.assert_array_equal(none.embeddings, plain.embeddings)
    # a folder whose settings belong to other settings is refused, never mixed
    folder = EmbeddingCache(cache, cache_settings(runtime, runtime.preprocess, None)).dir
    meta = folder / "settings.json"
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), weights_id="someone-else")))
    with pytest.raises(RuntimeError, match="refusing to mix"):
        _run(paths, runtime, cache)


def test_torn_tails_and_foreign_files_are_harmless(runtime, tmp_path):
    paths = _images(tmp_path / "img", 6)
    cache = tmp_path / "cache"
    first = _run(paths, runtime, cache)
    (segment,) = EmbeddingCache(cache, cache_settings(runtime, runtime.preprocess, None)).dir.glob("seg-*.keys")
    with open(segment, "ab") as fh:  # a writer killed mid-record
        fh.write(b"\x01" * (KEY_BYTES // 2))
    with open(segment.with_suffix(".f32"), "ab") as fh:
        fh.write(b"\x02" * 10)
    again = _run(paths, Counting(runtime, fail_after=0), cache)
    np.testing.assert_array_equal(first.embeddings, again.embeddings)


def test_photo_keys_follow_content_identity(tmp_path):
    a = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(a)
    key = photo_key(a)
    assert len(key) == KEY_BYTES and photo_key(str(a)) == key
    assert photo_key(tmp_path / "missing.jpg") is None
    os.utime(a, ns=(0, os.stat(a).st_mtime_ns + 1))
    assert photo_key(a) != key
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/gps-\xe9.jpg"))  # not valid UTF-8
    Image.new("RGB", (8, 8)).save(odd)
    assert len(photo_key(odd)) == KEY_BYTES


def test_compaction_merges_finished_segments_and_skips_live_ones(runtime, tmp_path):
    paths = _images(tmp_path / "img", 8)
    cache_dir = tmp_path / "cache"
    for i in range(4):  # four runs, four segments
        _run(paths[2 * i : 2 * i + 2], runtime, cache_dir)
    cache = EmbeddingCache(cache_dir, cache_settings(runtime, runtime.preprocess, None))
    live = cache.writer()  # a writer still running elsewhere
    live.append([b"\x07" * KEY_BYTES], np.zeros((1, runtime.embed_dim), np.float32))
    assert len(list(cache.dir.glob("seg-*.keys"))) == 5
    assert cache.compact(max_segments=2)
    assert live.keys_path.exists() and len(list(cache.dir.glob("seg-*.keys"))) == 2
    live.close()
    again = _run(paths, Counting(runtime, fail_after=0), cache_dir)
    np.testing.assert_allclose(again.embeddings, _run(paths, runtime, None).embeddings, rtol=1e-5, atol=1e-6)


_WORKER = textwrap.dedent("""
    import sys, time
    from geospot.encoders.embed import embed_paths
    from geospot.encoders.onnx_runtime import OnnxRuntime

    class Slow:  # interleave the two writers batch by batch
        def __init__(self, inner):
            self.inner, self.name, self.weights_id, self.embed_dim = inner, inner.name, inner.weights_id, inner.embed_dim
        def embed(self, batch):
            time.sleep(0.05)
            return self.inner.embed(batch)

    rt = OnnxRuntime.pretrained("tiny")
    paths = sys.argv[2:]
    res = embed_paths(paths, Slow(rt), rt.preprocess, cache_dir=sys.argv[1], batch_size=2, workers=0, progress=False)
    assert res.ok.all(), res.errors
    print(res.reused, res.computed)
""")


def test_two_processes_embedding_overlapping_lists_at_once(runtime, tmp_path):
    paths = [str(p) for p in _images(tmp_path / "img", 20)]
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(cache), *chunk], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for chunk in (paths[:14], paths[6:][::-1])]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "torch" not in err
    counting = Counting(runtime)
    result = _run(paths, counting, cache)
    assert counting.calls == 0 and result.reused == 20
    np.testing.assert_allclose(result.embeddings, _run(paths, runtime, None).embeddings, rtol=1e-5, atol=1e-6)
