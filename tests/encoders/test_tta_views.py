"""Test-time views (`Preprocess.views`): the crops, their mean embedding, and the cache keys."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geospot.encoders.cache import EmbeddingCache, cache_settings
from geospot.encoders.embed import embed_paths, prepare_image
from geospot.encoders.preprocess import Preprocess
from geospot.encoders.runtime import EncoderRuntime

# Identity normalisation: the views' values are the pixels themselves.
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def runtime():
    return EncoderRuntime("tiny", backend="onnx")


def test_views_are_the_corners_centre_and_mirrors_at_the_right_offsets():
    img = _image(40, 30)  # resize 30 -> no resampling: the crops are plain slices of the pixels
    px = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)  # [3, 30, 40]
    pre = Preprocess(size=20, resize=30, interpolation="nearest", **RAW)
    crop = {"tl": px[:, :20, :20], "tr": px[:, :20, 20:], "bl": px[:, 10:, :20], "br": px[:, 10:, 20:],
            "c": px[:, 5:25, 10:30]}
    five = [crop[k] for k in ("tl", "tr", "bl", "br", "c")]
    np.testing.assert_allclose(pre.with_views("center").all_views(img), [crop["c"]], atol=1e-3)
    np.testing.assert_allclose(pre.with_views("flip").all_views(img), [crop["c"], crop["c"][:, :, ::-1]], atol=1e-3)
    np.testing.assert_allclose(pre.with_views("five").all_views(img), five, atol=1e-3)
    np.testing.assert_allclose(pre.with_views("ten").all_views(img), five + [c[:, :, ::-1] for c in five], atol=1e-3)
    for views, n in (("center", 1), ("flip", 2), ("five", 5), ("ten", 10)):
        out = pre.with_views(views).all_views(img)
        assert out.shape == (n, 3, 20, 20) and out.dtype == np.float32 and out.flags.c_contiguous
        assert pre.with_views(views).n_views == n
        # __call__ is always the centre view, [3, S, S]
        np.testing.assert_array_equal(pre.with_views(views)(img), out[4 if views in ("five", "ten") else 0])


def test_views_of_resized_and_extreme_aspect_images_have_the_right_size():
    pre = Preprocess(size=24, resize=28, views="ten")
    for w, h in ((100, 60), (60, 100), (28, 28), (3000, 2), (2, 3000), (5, 7)):
        out = pre.all_views(_image(w, h))
        assert out.shape == (10, 3, 24, 24) and np.isfinite(out).all()
    # an extreme strip's corners come from its two ends
    strip = np.zeros((2, 3000, 3), np.uint8)
    strip[:, :1500] = 255
    five = Preprocess(size=24, resize=28, views="five", **RAW).all_views(Image.fromarray(strip))
    assert five[0].min() > 250 and five[1].max() < 5, "tl from the white left end, tr from the black right end"


def test_centre_only_is_unchanged_and_not_recorded():
    pre = Preprocess(size=24, resize=28)
    img = _image(61, 45, seed=3)
    assert pre.views == "center" and "views" not in pre.to_dict()
    assert set(pre.to_dict()) == {"size", "resize", "mean", "std", "interpolation"}
    np.testing.assert_array_equal(pre(img), pre.all_views(img)[0])
    flip = pre.with_views("flip")
    assert flip.to_dict()["views"] == "flip" and Preprocess.from_dict(flip.to_dict()) == flip
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="unknown views 'sideways'"):
        Preprocess(size=24, resize=28, views="sideways")


def test_flip_embedding_is_the_mean_of_the_image_and_its_mirror(runtime, tmp_path):
    img = _image(64, 64, seed=1)  # tiny's input size: no crop, so mirroring the file = mirroring the view
    img.save(tmp_path / "a.png")
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirror.png")
    _image(90, 70, seed=2).save(tmp_path / "b.png")
    paths = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "missing.png"]
    centre = embed_paths(paths, runtime, runtime.preprocess, progress=False, workers=0)
    flip = embed_paths(paths, runtime, runtime.preprocess.with_views("flip"), progress=False, batch_size=2)
    assert flip.embeddings.shape == (3, runtime.embed_dim) and list(flip.ok) == [True, True, False]
    mirror = runtime.embed(prepare_image(tmp_path / "mirror.png", runtime.preprocess)[None])[0]
    np.testing.assert_allclose(flip.embeddings[0], (centre.embeddings[0] + mirror) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(flip.embeddings[0], centre.embeddings[0], atol=1e-4), "the mirror changed something"
    # "five": one decode per photo, five crops through the encoder, batches counted in photos
    seen = []

    class Counting:
        name, weights_id, embed_dim = runtime.name, runtime.weights_id, runtime.embed_dim

        def embed(self, batch):
            seen.append(len(batch))
            return runtime.embed(batch)

    five = embed_paths(paths[:2], Counting(), runtime.preprocess.with_views("five"), progress=False, batch_size=2)
    assert seen == [10] and five.ok.all()
    views = runtime.preprocess.with_views("five").all_views(Image.open(tmp_path / "b.png"))
    np.testing.assert_allclose(five.embeddings[1], runtime.embed(views).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_cache_keys_differ_between_views_and_centre_keeps_its_old_key(runtime, tmp_path):
    def folder(pre):
        return EmbeddingCache(tmp_path, cache_settings(runtime, pre, None)).dir.name

    names = {v: folder(runtime.preprocess.with_views(v)) for v in ("center", "flip", "five", "ten")}
    assert len(set(names.values())) == 4
    # the folder `tiny` embeddings had before test-time views existed (geospot 0.1)
    assert names["center"] == "v2-db6e89bfa4e97b85"
    assert cache_settings(runtime, runtime.preprocess, None)["preprocess"] == {
        "size": 64, "resize": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear"}
    # a cached flip run is reused by a second flip run and never by a centre run
    _image(80, 64).save(tmp_path / "p.png")
    p = [tmp_path / "p.png"]
    first = embed_paths(p, runtime, runtime.preprocess.with_views("flip"), cache_dir=tmp_path / "c", progress=False)
    again = embed_paths(p, runtime, runtime.preprocess.with_views("flip"), cache_dir=tmp_path / "c", progress=False)
    centre = embed_paths(p, runtime, runtime.preprocess, cache_dir=tmp_path / "c", progress=False)
    assert (first.computed, again.reused, centre.computed) == (1, 1, 1)
    np.testing.assert_array_equal(first.embeddings, again.embeddings)


def test_the_full_frame_keeps_the_whole_of_a_square_photo_and_crops_only_the_long_side():
    pre = Preprocess(size=20, resize=30, interpolation="nearest", **RAW).with_views("full")
    square = _image(20, 20)  # already the input size: the view is the photo itself
    np.testing.assert_allclose(pre(square), np.asarray(square, np.float32).transpose(2, 0, 1), atol=1e-3)
    wide = _image(40, 20, seed=1)  # shorter side already 20: only the long side is centre-cropped
    np.testing.assert_allclose(pre.all_views(wide), [np.asarray(wide, np.float32).transpose(2, 0, 1)[:, :, 10:30]],
                               atol=1e-3)
    assert pre.n_views == 1 and pre.to_dict()["views"] == "full"
    assert Preprocess.from_dict(pre.to_dict()) == pre
    # the ImageNet crop of the same photo drops a margin: a different view
    assert not np.allclose(pre.with_views("center")(square), pre(square))


def test_the_full_frame_has_its_own_cache_and_embeds_like_its_pixels(runtime, tmp_path):
    path = tmp_path / "p.png"
    _image(64, 48, seed=2).save(path)
    full = runtime.preprocess.with_views("full")
    assert cache_settings(runtime, full, None) != cache_settings(runtime, runtime.preprocess, None)
    res = embed_paths([path], runtime, full, batch_size=2, progress=False)
    expected = runtime.embed(prepare_image(path, full)[None])
    np.testing.assert_allclose(res.embeddings, expected, rtol=1e-5, atol=1e-6)
