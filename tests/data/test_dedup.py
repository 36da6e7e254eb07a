"""Perceptual hashes, Hamming search without an all-pairs matrix, split leaks."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFilter

from geospot.cli import main
from geospot.data import dedup
from geospot.data.dedup import (
    dhash,
    find_duplicates,
    hamming,
    hash_images,
    near_duplicate_pairs,
    phash,
    popcount64,
    read_hashes,
    write_hashes,
)


def _scene(seed: int, size=(320, 240)) -> Image.Image:
    """A photo-like image: smooth gradient plus random shapes (distinct per seed)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1)) % 256] * 3, axis=-1)
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        box = [int(x0), int(y0), int(x0 + rng.integers(20, 140)), int(y0 + rng.integers(20, 120))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def _reencode(img: Image.Image, quality=50) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_hash_of_copies_close_of_different_images_far():
    images = [_scene(s) for s in range(12)]
    for img in images[:4]:
        for copy in (_reencode(img, 40), img.resize((160, 120)), img.resize((640, 480)).filter(ImageFilter.GaussianBlur(1))):
            assert hamming(phash(img), phash(copy)) <= 4
            assert hamming(dhash(img), dhash(copy)) <= 6
    ph = np.array([phash(i) for i in images], dtype=np.uint64)
    d = hamming(ph[:, None], ph[None, :])
    off = d[~np.eye(len(images), dtype=bool)]
    assert off.min() > 12  # unrelated images differ in many bits
    assert phash(images[0]).dtype == np.uint64


def test_popcount_matches_python_and_swar_path(monkeypatch):
    x = np.random.default_rng(0).integers(0, 2**63, 500, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    x = np.concatenate([x, np.array([0, 2**64 - 1], dtype=np.uint64)])
    expected = np.array([bin(int(v)).count("1") for v in x])
    assert np.array_equal(popcount64(x), expected)
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # the bit-trick fallback for NumPy < 2
    assert np.array_equal(dedup.popcount64(x), expected)


@pytest.mark.parametrize("threshold", [0, 3, 4, 7, 9])
def test_near_duplicate_pairs_equal_brute_force(threshold):
    rng = np.random.default_rng(threshold)
    n = 1500
    h = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    for k in range(300):  # plant copies 0..11 bits away
        v = h[k]
        for b in rng.choice(64, size=k % 12, replace=False):
            v ^= np.uint64(1) << np.uint64(int(b))
        h[n - 1 - k] = v
    h[10:14] = h[20]  # a clump of exact duplicates
    got = near_duplicate_pairs(h, threshold, chunk_pairs=1000)  # tiny chunks exercise the chunking
    d = hamming(h[:, None], h[None, :])
    i, j = np.nonzero(np.triu(d <= threshold, k=1))
    assert set(zip(got["i"], got["j"])) == set(zip(i, j))
    assert (got["distance"].to_numpy() == d[got["i"], got["j"]]).all()
    assert (got["i"] < got["j"]).all()


def test_near_duplicate_pairs_edge_cases():
    assert len(near_duplicate_pairs(np.zeros(1, np.uint64))) == 0
    assert len(near_duplicate_pairs(np.zeros(3, np.uint64), 0)) == 3
    with pytest.raises(ValueError, match="0..64"):
        near_duplicate_pairs(np.zeros(3, np.uint64), 65)


@pytest.fixture
def image_set(tmp_path):
    """Six scenes, a re-encoded copy of scene 0 and a resized copy of scene 1, one broken file."""
    paths = []
    for s in range(6):
        p = tmp_path / f"scene{s}.jpg"
        _scene(s).save(p, quality=92)
        paths.append(p)
    _reencode(_scene(0), 35).save(tmp_path / "copy0.jpg")
    _scene(1).resize((200, 150)).save(tmp_path / "copy1.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return paths + [tmp_path / "copy0.jpg", tmp_path / "copy1.png", tmp_path / "broken.jpg"]


def test_hash_images_lists_errors_and_finds_straddling_pairs(image_set, tmp_path):
    hashes = hash_images(image_set, progress=False)
    assert hashes.ok.tolist() == [True] * 8 + [False]
    assert "broken.jpg" in hashes.paths[8] and hashes.errors[8]
    split = np.array(["train"] * 6 + ["test", "train", "test"], dtype=object)
    lat = np.array([10.0] * 9)
    lon = np.array([20.0] * 6 + [21.0, 20.0, 20.0])
    pairs = find_duplicates(hashes, 4, split=split, lat=lat, lon=lon)
    found = {(a, b): s for a, b, s in zip(pairs["a"], pairs["b"], pairs["straddles"])}
    assert found == {(0, 6): True, (1, 7): False}
    row = pairs[pairs["a"] == 0].iloc[0]
    assert row["distance_km"] == pytest.approx(109.6, abs=1.0)
    both = find_duplicates(hashes, 4, method="both")
    assert set(zip(both["a"], both["b"])) <= set(found)
    back = read_hashes(write_hashes(hashes, tmp_path / "h.csv"))
    assert np.array_equal(back.phash, hashes.phash) and back.ok.tolist() == hashes.ok.tolist()


def test_cli_dedup_reports_leaks(image_set, tmp_path, capsys):
    good = image_set[:8]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [p.name for p in good], "lat": 45.0, "lon": 15.0,
                  "split": ["train"] * 6 + ["test", "train"]}).to_csv(manifest, index=False)
    out = tmp_path / "pairs.csv"
    hashes = tmp_path / "hashes.csv"
    args = ["data", "dedup", str(manifest), "--out", str(out), "--hashes", str(hashes), "--quiet"]
    assert main(args) == 0
    pairs = pd.read_csv(out)
    assert len(pairs) == 2 and pairs["straddles"].sum() == 1
    assert set(pairs.loc[pairs["straddles"], ["row_a", "row_b"]].iloc[0]) == {2, 8}
    assert "1 straddle split values (leaks)" in capsys.readouterr().err
    assert main(args + ["--fail-on-leak"]) == 1  # second run reuses the hash file
    assert "reusing hashes" in capsys.readouterr().err
    # a folder with a broken file: pairs still written, exit 1 and the file named
    assert main(["data", "dedup", str(tmp_path), "--out", str(tmp_path / "p2.csv"), "--quiet"]) == 1
    assert "broken.jpg" in capsys.readouterr().err
