"""Leak-proof splits: no group straddles, folds balanced, spatial neighbours together."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geospot.data.splits import (
    fold_labels,
    group_fold_assignment,
    group_kfold,
    group_split,
    grid_block_ids,
    spatial_block_ids,
    spatial_block_kfold,
    spatial_block_split,
    split_labels,
    write_split,
)


def _groups(n_groups=60, seed=1):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, n_groups)
    return np.repeat([f"loc{i}" for i in range(n_groups)], sizes)


def test_group_kfold_no_group_straddles_and_covers_every_row():
    groups = _groups()
    folds = group_kfold(groups, n_splits=5, seed=3)
    assert len(folds) == 5
    seen = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(seen), np.arange(len(groups)))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(groups)
    sizes = [len(te) for _, te in folds]
    # Greedy largest-first packing: folds differ by at most the largest group (8 rows).
    assert max(sizes) - min(sizes) <= 8


def test_group_kfold_is_seeded():
    groups = _groups()
    a = group_fold_assignment(groups, 4, seed=0)
    assert np.array_equal(a, group_fold_assignment(groups, 4, seed=0))
    assert not np.array_equal(a, group_fold_assignment(groups, 4, seed=1))


def test_group_kfold_errors():
    with pytest.raises(ValueError, match="only 3 groups"):
        group_kfold(["a", "b", "c", "c"], n_splits=4)
    with pytest.raises(ValueError, match="n_splits"):
        group_kfold(["a", "b"], n_splits=1)
    with pytest.raises(ValueError, match="no group"):
        group_kfold(pd.Series(["a", None, "b"]), n_splits=2)


def test_group_split_fraction_and_disjoint():
    groups = _groups(200)
    train, test = group_split(groups, 0.2, seed=5)
    assert not set(groups[train]) & set(groups[test])
    assert len(train) + len(test) == len(groups)
    assert abs(len(test) / len(groups) - 0.2) < 0.02
    with pytest.raises(ValueError, match="test_fraction"):
        group_split(groups, 1.0)
    with pytest.raises(ValueError, match="at least 2 groups"):
        group_split(["x", "x"], 0.5)


def test_group_split_keeps_both_sides_nonempty():
    train, test = group_split(["a"] * 10 + ["b"], 0.01)
    assert len(train) and len(test)


def test_grid_blocks_are_about_cell_km_wide_everywhere():
    # Two points 5 km apart share a 100 km block far more often than not; 300 km apart never do.
    rng = np.random.default_rng(0)
    lat = rng.uniform(-70, 70, 2000)
    lon = rng.uniform(-179, 179, 2000)
    near_lon = lon + np.degrees(5.0 / 6371.0088 / np.cos(np.radians(lat)))
    far_lon = lon + np.degrees(300.0 / 6371.0088 / np.cos(np.radians(lat)))
    near_lon = (near_lon + 180) % 360 - 180
    far_lon = (far_lon + 180) % 360 - 180
    b = grid_block_ids(lat, lon, 100.0)
    assert (b == grid_block_ids(lat, near_lon, 100.0)).mean() > 0.9
    assert (b != grid_block_ids(lat, far_lon, 100.0)).all()


def test_spatial_split_keeps_clusters_together():
    # 40 clusters of panoramas within ~200 m of each other, spread over Europe.
    rng = np.random.default_rng(2)
    centres = np.column_stack([rng.uniform(36, 60, 40), rng.uniform(-8, 30, 40)])
    cluster = np.repeat(np.arange(40), 10)
    lat = centres[cluster, 0] + rng.normal(0, 0.001, len(cluster))
    lon = centres[cluster, 1] + rng.normal(0, 0.001, len(cluster))
    train, test = spatial_block_split(lat, lon, 0.25, cell_km=50, groups=cluster, seed=0)
    assert not set(cluster[train]) & set(cluster[test])
    assert len(train) + len(test) == len(lat)
    for tr, te in spatial_block_kfold(lat, lon, 4, level=6, seed=0):
        blocks = spatial_block_ids(lat, lon, level=6)
        assert not set(blocks[tr]) & set(blocks[te])


def test_spatial_buffer_drops_train_rows_near_test():
    # A line of points 1 km apart: blocks of 20 km; a 3 km buffer removes the
    # train rows next to every test block edge.
    lat = np.zeros(400)
    lon = np.degrees(np.arange(400) * 1.0 / 6371.0088)
    train, test = spatial_block_split(lat, lon, 0.3, cell_km=20, seed=1, buffer_km=3.0)
    from scipy.spatial.distance import cdist

    d_km = cdist(lon[train, None], lon[test, None]).min(axis=1) * np.radians(1) * 6371.0088
    assert d_km.min() > 3.0 - 1e-6
    assert len(train) + len(test) < len(lat)


def test_spatial_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="invalid coordinates"):
        spatial_block_ids([0.0, 95.0], [0.0, 0.0], cell_km=10)


def test_labels_and_write_split(tmp_path):
    df = pd.DataFrame({"path": [f"{i}.jpg" for i in range(6)], "lat": 0.0, "lon": 0.0, "location_id": list("aabbcc")})
    train, test = group_split(df["location_id"], 0.34, seed=0)
    labels = split_labels(len(df), train, test)
    out = write_split(df, labels, tmp_path / "m.csv")
    back = pd.read_csv(out)
    assert set(back["split"]) == {"train", "test"}
    assert back.groupby("location_id")["split"].nunique().max() == 1
    folds = fold_labels(len(df), group_kfold(df["location_id"], 3))
    back = pd.read_csv(write_split(df, folds, tmp_path / "f.csv"))
    assert sorted(back["fold"].unique()) == [0, 1, 2]
    with pytest.raises(ValueError, match="rows"):
        write_split(df, labels[:3], tmp_path / "x.csv")


def test_level_blocks_are_s2_cells():
    from geospot.geo.cells import s2

    rng = np.random.default_rng(4)
    lat, lon = rng.uniform(-80, 80, 500), rng.uniform(-180, 180, 500)
    expected = s2.cell_parent(s2.latlon_to_leaf_id(lat, lon), 8)
    assert np.array_equal(spatial_block_ids(lat, lon, level=8), expected)


def test_write_split_through_a_manifest_keeps_relative_paths(tmp_path):
    from geospot.data.manifest import read_manifest

    (tmp_path / "imgs").mkdir()
    pd.DataFrame({"path": [f"imgs/{i}.jpg" for i in range(4)], "lat": [1.0, 1.0, 2.0, 2.0], "lon": 0.0,
                  "location_id": list("aabb")}).to_csv(tmp_path / "m.csv", index=False)
    m = read_manifest(tmp_path / "m.csv", check_files=False)
    out = write_split(m, np.array(["train", "train", "test", "test"], dtype=object), tmp_path / "s.csv")
    back = pd.read_csv(out)
    assert back["path"].tolist()[0] == "imgs/0.jpg" and back["split"].tolist() == ["train", "train", "test", "test"]


def test_cli_split(tmp_path, capsys):
    from geospot.cli import main

    rng = np.random.default_rng(0)
    n_loc = 30
    df = pd.DataFrame({
        "path": [f"{k}_{v}.jpg" for k in range(n_loc) for v in range(4)],
        "lat": np.repeat(rng.uniform(40, 50, n_loc), 4), "lon": np.repeat(rng.uniform(0, 20, n_loc), 4),
        "location_id": np.repeat([f"loc{k}" for k in range(n_loc)], 4),
    })
    df.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "s.csv"
    assert main(["data", "split", str(tmp_path / "m.csv"), "--test-fraction", "0.25", "--out", str(out)]) == 0
    s = pd.read_csv(out)
    assert s.groupby("location_id")["split"].nunique().max() == 1 and (s["split"] == "test").mean() > 0.15
    assert main(["data", "split", str(tmp_path / "m.csv"), "--folds", "3", "--out", str(out)]) == 0
    assert sorted(pd.read_csv(out)["fold"].unique()) == [0, 1, 2]
    assert main(["data", "split", str(tmp_path / "m.csv"), "--by", "spatial", "--level", "6",
                 "--test-fraction", "0.3", "--buffer-km", "20", "--out", str(out)]) == 0
    s = pd.read_csv(out)
    assert set(s["split"]) <= {"train", "test", "excluded"} and s.groupby("location_id")["split"].nunique().max() == 1
    capsys.readouterr()
    assert main(["data", "split", str(tmp_path / "m.csv"), "--folds", "3", "--buffer-km", "5", "--out", str(out)]) == 2
    assert "--buffer-km needs --by spatial" in capsys.readouterr().err
    assert main(["data", "split", str(tmp_path / "m.csv"), "--by", "spatial", "--folds", "3", "--out", str(out)]) == 2
