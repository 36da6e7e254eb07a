"""Manifests: reading, validation (every problem, with line numbers), writing, subsets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geospot.data import manifest as manifest_mod
from geospot.data.manifest import Manifest, ManifestError, Problem, read_manifest


def _touch(path: Path, data: bytes = b"\xff\xd8jpeg-ish") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_valid_csv_with_defaults_and_extra_columns(tmp_path):
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        _touch(tmp_path / "images" / name)
    absolute = _touch(tmp_path / "elsewhere" / "d.jpg")
    csv = _write(tmp_path / "manifest.csv",
                 "path,lat,lon,view,split,score,location_id\n"
                 "images/a.jpg, 45.5 ,1.625e1,0,train,0.5,007\n"  # spaces and exponents are fine
                 "images/b.jpg,-33.9,151.2,1,test,1.5,007\n"
                 "images/sub/c.jpg,0,-180,2,train,2.5,\n"
                 f"{absolute},90,180,3,train,3.5,x\n")
    m = read_manifest(csv)
    assert len(m) == 4
    assert list(m.df.columns[:4]) == ["path", "lat", "lon", "location_id"]
    assert m.paths[0] == str(tmp_path / "images" / "a.jpg")
    assert m.paths[3] == str(absolute)  # absolute paths kept
    assert all(os.path.isabs(p) for p in m.paths)
    assert m.lat.dtype == np.float64 and m.lon.dtype == np.float64
    np.testing.assert_array_equal(m.lat, [45.5, -33.9, 0.0, 90.0])
    np.testing.assert_array_equal(m.lon, [16.25, 151.2, -180.0, 180.0])
    # ids stay text ("007", not 7); an empty id falls back to the path
    assert list(m.groups) == ["007", "007", m.paths[2], "x"]
    # extra columns kept as they are, with their types
    assert m.df["view"].tolist() == [0, 1, 2, 3] and m.df["view"].dtype == np.int64
    assert m.df["score"].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert m.df["split"].tolist() == ["train", "test", "train", "train"]
    assert m.problems == []
    assert m.row_numbers.tolist() == [2, 3, 4, 5]


def test_location_id_defaults_to_path(tmp_path):
    _touch(tmp_path / "x.jpg")
    _touch(tmp_path / "y.jpg")
    m = read_manifest(_write(tmp_path / "m.csv", "path,lat,lon\nx.jpg,1,2\ny.jpg,3,4\n"))
    assert list(m.groups) == m.paths


def test_collects_every_problem_with_line_numbers(tmp_path):
    for name in ("ok1.jpg", "ok2.jpg", "badlat.jpg", "badlon.jpg", "text.jpg", "empty_lon.jpg", "nan.jpg", "dup.jpg"):
        _touch(tmp_path / name)
    _touch(tmp_path / "zero.jpg", b"")
    (tmp_path / "folder.jpg").mkdir()
    csv = _write(tmp_path / "manifest.csv", "\n".join([
        "path,lat,lon",           # line 1
        "ok1.jpg,10,20",          # 2
        "missing.jpg,10,20",      # 3 file not found
        "badlat.jpg,-91,20",      # 4 lat out of range
        "badlon.jpg,10,180.5",    # 5 lon out of range
        "text.jpg,north,20",      # 6 not a number
        "ok2.jpg,123.0,-500",     # 7 lat and lon out of range (two problems)
        "empty_lon.jpg,10,",      # 8 empty lon
        "nan.jpg,nan,20",         # 9 NaN
        "zero.jpg,1,2",           # 10 empty file
        "folder.jpg,1,2",         # 11 directory
        "dup.jpg,5,6",            # 12
        "dup.jpg,5,6",            # 13 duplicate of 12
        ",5,6",                   # 14 empty path
    ]) + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(csv)
    err = info.value
    found = {(p.row, p.column) for p in err.problems}
    assert found == {(3, "path"), (4, "lat"), (5, "lon"), (6, "lat"), (7, "lat"), (7, "lon"), (8, "lon"),
                     (9, "lat"), (10, "path"), (11, "path"), (13, "path"), (14, "path")}
    lines = str(err).splitlines()
    assert len(lines) == len(err.problems) == 12
    assert f"{csv} row 7: lat 123.0 outside [-90, 90]" in lines
    assert f"{csv} row 7: lon -500.0 outside [-180, 180]" in lines
    text = str(err)
    assert "row 3: file not found" in text and "row 6: lat 'north' is not a number" in text
    assert "row 8: lon is empty" in text and "row 9: lat is NaN" in text
    assert "row 10: empty file (0 bytes)" in text and "row 11: is a directory" in text
    assert "row 13: duplicate of row 12" in text and "row 14: path is empty" in text
    assert all(isinstance(p, Problem) and str(p).startswith(str(csv)) for p in err.problems)


def test_drop_keeps_valid_rows_and_problems(tmp_path):
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "b.jpg")
    csv = _write(tmp_path / "m.csv", "path,lat,lon\na.jpg,1,2\nmissing.jpg,1,2\nb.jpg,95,2\nb.jpg,3,4\na.jpg,1,2\n")
    m = read_manifest(csv, on_error="drop")
    assert m.paths == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert m.row_numbers.tolist() == [2, 5]
    assert [(p.row, p.column) for p in m.problems] == [(3, "path"), (4, "lat"), (6, "path")]
    with pytest.raises(ValueError, match="on_error"):
        read_manifest(csv, on_error="ignore")


def test_check_files_false_skips_file_checks(tmp_path):
    csv = _write(tmp_path / "m.csv", "path,lat,lon\nnot/there.jpg,1,2\n")
    with pytest.raises(ManifestError, match="file not found"):
        read_manifest(csv)
    m = read_manifest(csv, check_files=False)
    assert m.paths == [str(tmp_path / "not" / "there.jpg")]


def test_unreadable_file_is_reported(tmp_path, monkeypatch):
    locked = _touch(tmp_path / "locked.jpg")
    _touch(tmp_path / "open.jpg")
    real_access = os.access
    # Tests may run as root, where chmod cannot make a file unreadable: fake the answer.
    monkeypatch.setattr(manifest_mod.os, "access",
                        lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    csv = _write(tmp_path / "m.csv", "path,lat,lon\nopen.jpg,1,2\nlocked.jpg,1,2\n")
    with pytest.raises(ManifestError, match=r"row 3: file not readable"):
        read_manifest(csv)


def test_many_missing_files_hint_at_the_root(tmp_path):
    rows = "".join(f"img{i}.jpg,1,{i}\n" for i in range(4))
    with pytest.raises(ManifestError, match="relative paths resolve against"):
        read_manifest(_write(tmp_path / "m.csv", "path,lat,lon\n" + rows))


def test_missing_columns_are_all_listed_with_hints(tmp_path):
    csv = _write(tmp_path / "m.csv", "file,latitude,elevation\na.jpg,1,2\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, on_error="drop")  # no rows can be saved without the columns
    problems = info.value.problems
    assert [(p.row, p.column) for p in problems] == [(1, "path"), (1, "lat"), (1, "lon")]
    text = str(info.value)
    assert "missing required column 'lat' (did you mean 'latitude'?" in text
    assert "missing required column 'path' (did you mean 'file'?" in text
    assert "columns found: file, latitude, elevation" in text


def test_blank_lines_keep_line_numbers_and_types(tmp_path):
    _touch(tmp_path / "a.jpg")
    csv = _write(tmp_path / "m.csv", "path,lat,lon,view\na.jpg,1,2,0\n\nmissing.jpg,1,2,1\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(csv)
    assert [p.row for p in info.value.problems] == [4]
    m = read_manifest(csv, check_files=False)
    assert len(m) == 2 and m.df["view"].dtype == np.int64 and m.row_numbers.tolist() == [2, 4]


def test_rows_with_wrong_field_counts_all_reported(tmp_path):
    csv = _write(tmp_path / "m.csv", "path,lat,lon\na.jpg,1,2\nb.jpg,1,2,3\nc.jpg,1,2\nd.jpg,1,2,3,4\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, check_files=False)
    assert [p.row for p in info.value.problems] == [3, 5]
    assert "expected 3 fields like the header, found 4" in str(info.value)


def test_manifest_file_problems(tmp_path):
    with pytest.raises(ManifestError, match="manifest file not found"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="directory"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="empty file"):
        read_manifest(_write(tmp_path / "empty.csv", ""))


def test_header_only_manifest_is_empty(tmp_path):
    m = read_manifest(_write(tmp_path / "m.csv", "path,lat,lon\n"))
    assert len(m) == 0 and m.lat.shape == (0,)


def test_error_text_is_capped_but_problems_are_complete(tmp_path):
    rows = "".join(f"x{i}.jpg,100,0\n" for i in range(150))
    with pytest.raises(ManifestError) as info:
        read_manifest(_write(tmp_path / "m.csv", "path,lat,lon\n" + rows), check_files=False)
    assert len(info.value.problems) == 150
    lines = str(info.value).splitlines()
    assert len(lines) == 101 and "50 more problems" in lines[-1]


def test_parquet_read_and_row_numbers(tmp_path):
    _touch(tmp_path / "a.jpg")
    df = pd.DataFrame({"path": ["a.jpg", "a.jpg", "missing.jpg"], "lat": [1.0, float("nan"), 2.0],
                       "lon": [2.0, 3.0, 4.0], "view": [0, 1, 2]})
    path = tmp_path / "m.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert [(p.row, p.column) for p in info.value.problems] == [(3, "lat"), (4, "path")]
    assert "lat is NaN" in str(info.value)
    m = read_manifest(path, on_error="drop")
    assert m.paths == [str(tmp_path / "a.jpg")] and m.df["view"].tolist() == [0]


@pytest.mark.parametrize("name", ["out/manifest.csv", "out/manifest.parquet"])
def test_write_round_trip_with_relative_paths(tmp_path, name):
    inside = _touch(tmp_path / "out" / "images" / "a.jpg")
    outside = _touch(tmp_path / "other" / "b.jpg")
    m = Manifest.from_records([
        {"path": str(inside), "lat": 43.46744833333334, "lon": 11.885126666663888, "note": "x"},
        {"path": "other/b.jpg", "lat": -77.03288189999999, "lon": 0.1, "note": "y"},
    ], root=tmp_path, check_files=True)
    out = m.write(tmp_path / name)
    raw = pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out)
    assert raw["path"].tolist() == ["images/a.jpg", str(outside)]  # relative inside, absolute outside
    back = read_manifest(out)
    assert back.paths == m.paths
    np.testing.assert_array_equal(back.lat, m.lat)  # exact: no precision lost in the text
    np.testing.assert_array_equal(back.lon, m.lon)
    assert back.df["note"].tolist() == ["x", "y"]
    # default ids (the paths) are written portably and still group the same rows
    assert len(set(back.groups)) == 2


def test_from_records_validates_and_labels_rows(tmp_path):
    with pytest.raises(ManifestError) as info:
        Manifest.from_records([{"path": "a.jpg", "lat": 1, "lon": 2}, {"path": "b.jpg", "lat": 91, "lon": 2}],
                              root=tmp_path)
    assert str(info.value) == "records row 3: lat 91.0 outside [-90, 90]"
    m = Manifest.from_records(pd.DataFrame({"path": ["a.jpg"], "lat": [1], "lon": [2]}), root=tmp_path)
    assert m.paths == [str(tmp_path / "a.jpg")]


def test_subset_by_indices_mask_and_slice(tmp_path):
    recs = [{"path": f"{i}.jpg", "lat": float(i), "lon": float(-i), "location_id": f"L{i // 2}"} for i in range(6)]
    m = Manifest.from_records(recs, root=tmp_path)
    s = m.subset([4, 1])
    assert s.lat.tolist() == [4.0, 1.0] and list(s.groups) == ["L2", "L0"] and s.row_numbers.tolist() == [6, 3]
    assert m.subset(np.array([True, False] * 3)).lat.tolist() == [0.0, 2.0, 4.0]
    assert m.subset(slice(1, 3)).lon.tolist() == [-1.0, -2.0]
    assert len(m) == 6 and isinstance(s, Manifest) and s.root == m.root
    with pytest.raises(IndexError):
        m.subset(np.array([True, False]))


@pytest.mark.realdata
@pytest.mark.parametrize("folder, rows, locations, extra", [
    ("streetview-global", 6136, None, ["view", "split"]),
    ("streetview-croatia", 800, 200, ["heading"]),
    ("streetview-sample", 156, 156, []),
])
def test_real_manifests_load(shared_data, folder, rows, locations, extra):
    m = read_manifest(shared_data / folder / "manifest.csv")
    assert len(m) == rows and m.problems == []
    assert all(c in m.df.columns for c in extra)
    assert np.all(np.abs(m.lat) <= 90) and np.all(np.abs(m.lon) <= 180)
    assert Path(m.paths[0]).is_file()
    if locations is not None:
        assert len(set(m.groups)) == locations
    else:
        assert 1500 <= len(set(m.groups)) <= 1534
        assert set(m.df["split"]) == {"train", "test"}
