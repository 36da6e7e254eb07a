"""The generated fixtures: deterministic, well-formed, and learnable."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from geospot.data.images import open_image
from geospot.data.manifest import read_manifest
from geospot.testing import DEFAULT_REGIONS, UNREADABLE_BAD_FILES, make_bad_files, make_fixture_dataset

_R_KM = 6371.0088


def _haversine_km(lat1, lon1, lat2, lon2):
    # local copy so this test checks the fixture, not geospot.geo
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(np.subtract(lon2, lon1)) / 2) ** 2
    return 2 * _R_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def _spherical_mean(lat, lon):
    lat_r, lon_r = np.radians(lat), np.radians(lon)
    x, y, z = (np.cos(lat_r) * np.cos(lon_r)).sum(), (np.cos(lat_r) * np.sin(lon_r)).sum(), np.sin(lat_r).sum()
    return np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))


def _nearest_region(lat, lon, regions):
    centres = np.array([(r[0], r[1]) for r in regions])
    d = _haversine_km(lat[:, None], lon[:, None], centres[None, :, 0], centres[None, :, 1])
    return d.argmin(axis=1), d.min(axis=1)


def test_manifest_shape_splits_and_coordinates(tmp_path):
    path = make_fixture_dataset(tmp_path, n_locations=30, views=3, size=32, seed=1)
    assert path == tmp_path / "manifest.csv"
    raw = pd.read_csv(path)
    assert list(raw.columns) == ["path", "lat", "lon", "location_id", "view", "split"]
    assert len(raw) == 90 and raw["location_id"].nunique() == 30
    assert all(sorted(v) == [0, 1, 2] for _, v in raw.groupby("location_id")["view"])
    # one split and one position per location: views of a place never straddle train/test
    per_loc = raw.groupby("location_id").agg(splits=("split", "nunique"), lats=("lat", "nunique"))
    assert (per_loc["splits"] == 1).all() and (per_loc["lats"] == 1).all()
    regions = list(DEFAULT_REGIONS.values())
    region, dist_km = _nearest_region(raw["lat"].to_numpy(), raw["lon"].to_numpy(), regions)
    spread = np.array([regions[r][2] for r in region])
    assert np.all(dist_km <= spread + 1.0)
    assert set(region) == set(range(len(regions)))  # every region used
    for r in range(len(regions)):
        assert set(raw.loc[region == r, "split"]) == {"train", "test"}  # each region tested
    m = read_manifest(path)  # valid for geospot's own reader, files included
    assert len(m) == 90
    img = open_image(m.paths[0])
    assert img.size == (32, 32) and img.mode == "RGB"


def test_deterministic_from_seed(tmp_path):
    a = make_fixture_dataset(tmp_path / "a", n_locations=10, views=2, seed=3)
    b = make_fixture_dataset(tmp_path / "b", n_locations=10, views=2, seed=3)
    c = make_fixture_dataset(tmp_path / "c", n_locations=10, views=2, seed=4)
    assert a.read_text() == b.read_text() != c.read_text()
    for rel in pd.read_csv(a)["path"]:
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes()


def test_custom_regions_and_argument_checks(tmp_path):
    regions = [(64.1, -21.9, 50.0), (-33.9, 18.4, 50.0)]  # Reykjavik, Cape Town
    raw = pd.read_csv(make_fixture_dataset(tmp_path, n_locations=8, views=1, regions=regions))
    region, dist_km = _nearest_region(raw["lat"].to_numpy(), raw["lon"].to_numpy(), regions)
    assert np.bincount(region).tolist() == [4, 4] and dist_km.max() <= 51.0
    with pytest.raises(ValueError, match="bad region"):
        make_fixture_dataset(tmp_path / "x", regions=[(95.0, 0.0, 10.0)])
    with pytest.raises(ValueError, match="n_locations"):
        make_fixture_dataset(tmp_path / "y", n_locations=0)
    with pytest.raises(ValueError, match="size"):
        make_fixture_dataset(tmp_path / "z", size=8)


def test_random_tiny_encoder_and_linear_head_beat_the_medoid(tmp_path):
    """The point of the fixture: a learnable, location-dependent signal on held-out places."""
    from geospot.encoders import create_encoder

    m = read_manifest(make_fixture_dataset(tmp_path, n_locations=60, views=4, size=64, seed=0))
    encoder = create_encoder("tiny", pretrained=False)
    batch = torch.from_numpy(np.stack([encoder.preprocess(open_image(p)) for p in m.paths]))
    with torch.no_grad():
        emb = encoder(batch).numpy().astype(np.float64)
    lat, lon = m.lat, m.lon
    train = np.array(m.df["split"] == "train", dtype=bool)
    test = ~train
    classes, _ = _nearest_region(lat, lon, list(DEFAULT_REGIONS.values()))

    # linear head (ridge regression onto one-hot regions, closed form: fast and exact),
    # fitted on the train locations only, with a bias column
    mu, sd = emb[train].mean(0), emb[train].std(0) + 1e-6
    x = np.hstack([(emb - mu) / sd, np.ones((len(emb), 1))])
    targets = np.eye(len(DEFAULT_REGIONS))[classes]
    w = np.linalg.solve(x[train].T @ x[train] + 1.0 * np.eye(x.shape[1]), x[train].T @ targets[train])
    pred = (x @ w).argmax(1)

    # predict each class's (spherical) mean training position; baseline: the training medoid
    centre = {c: _spherical_mean(lat[train & (classes == c)], lon[train & (classes == c)]) for c in set(classes)}
    pred_lat = np.array([centre[c][0] for c in pred[test]])
    pred_lon = np.array([centre[c][1] for c in pred[test]])
    model_km = _haversine_km(pred_lat, pred_lon, lat[test], lon[test])
    tl, tn = lat[train], lon[train]
    medoid = np.argmin(_haversine_km(tl[:, None], tn[:, None], tl[None, :], tn[None, :]).sum(1))
    medoid_km = _haversine_km(tl[medoid], tn[medoid], lat[test], lon[test])
    assert (pred[test] == classes[test]).mean() >= 0.9
    assert np.median(model_km) < 0.25 * np.median(medoid_km)


def test_make_bad_files_writes_every_case(tmp_path):
    files = make_bad_files(tmp_path / "bad")
    expected = {"zero_byte", "truncated_jpeg", "text_as_jpg", "cmyk_jpeg", "palette_transparent_png",
                "png_16bit", "rgba_png", "grayscale_jpeg", "exif_rotated_jpeg", "bomb_png"}
    assert expected <= set(files) and UNREADABLE_BAD_FILES <= set(files)
    assert all(p.is_file() and p.parent == tmp_path / "bad" for p in files.values())
    assert files["zero_byte"].stat().st_size == 0
    assert files["bomb_png"].stat().st_size < 1000  # tiny file, huge declared size
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == sorted(p.name for p in files.values())
