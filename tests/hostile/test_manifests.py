"""Manifests: boolean coordinates, repeated header columns - refused with one line, in every verb."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_util import cli, error_lines


@pytest.fixture
def bool_parquet(tmp_path, photo):
    path = tmp_path / "bool.parquet"
    pd.DataFrame({"path": [str(photo)] * 3, "lat": [True, False, True], "lon": [10.0, 11.0, 12.0]}).to_parquet(path)
    return path


@pytest.fixture
def dup_csv(tmp_path, photo):
    path = tmp_path / "dup.csv"
    path.write_text(f"path,lat,lon,lat\n{photo},45.0,16.0,-33.0\n", encoding="utf-8")
    return path


@pytest.fixture
def dup_parquet(tmp_path, photo):
    path = tmp_path / "dup.parquet"
    table = pa.table([pa.array([str(photo)]), pa.array([45.0]), pa.array([16.0]), pa.array([-33.0])],
                     names=["path", "lat", "lon", "lat"])
    pq.write_table(table, path)
    return path


def test_library_refuses_boolean_coordinates(bool_parquet):
    from geospot.data.manifest import ManifestError, read_manifest

    with pytest.raises(ManifestError, match="true/false"):
        read_manifest(bool_parquet)


def test_boolean_text_coordinate_is_named(tmp_path, photo):
    from geospot.data.manifest import ManifestError, read_manifest

    m = tmp_path / "t.csv"
    m.write_text(f"path,lat,lon\n{photo},true,16.0\n{photo},45.0,16.0\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"row 2: lat 'true' is a boolean"):
        read_manifest(m)


@pytest.mark.parametrize("fixture", ["dup_csv", "dup_parquet"])
def test_library_refuses_repeated_columns(request, fixture):
    from geospot.data.manifest import ManifestError, read_manifest

    with pytest.raises(ManifestError, match="column 'lat' appears more than once"):
        read_manifest(request.getfixturevalue(fixture))


@pytest.mark.parametrize("fixture", ["bool_parquet", "dup_csv", "dup_parquet"])
@pytest.mark.parametrize("verb", ["embed", "train", "cells", "cv", "eval"])
def test_every_verb_gives_one_line(request, fixture, verb, model_dir, tmp_path, capsys):
    manifest = request.getfixturevalue(fixture)
    argv = {
        "embed": ["embed", manifest, "--encoder", "tiny", "--quiet", "--cache", tmp_path / "c"],
        "train": ["train", manifest, "--out", tmp_path / "m", "--encoder", "tiny", "--quiet"],
        "cells": ["cells", manifest, "--out", tmp_path / "cells"],
        "cv": ["cv", manifest, "--encoder", "tiny", "--quiet"],
        "eval": ["eval", model_dir, manifest, "--quiet"],
    }[verb]
    r = cli(capsys, *argv)
    assert r.code == 2
    lines = error_lines(r.err)
    assert len(lines) == 1 and manifest.name in lines[0], r.err
    assert not (tmp_path / "m").exists()


def test_manifest_of_a_fifo_or_folder_is_one_line(tmp_path, capsys):
    r = cli(capsys, "embed", tmp_path, "--encoder", "tiny")
    assert r.code == 2 and "is a directory" in r.err and len(error_lines(r.err)) == 1


def test_ten_places_do_not_silently_make_a_one_cell_model(tmp_path, capsys):
    from geospot.testing import make_fixture_dataset

    # ten places around Zagreb: one S2 cell holds them all (>= min-per-cell 8, < max-per-cell 60)
    ten = make_fixture_dataset(tmp_path / "ten", n_locations=10, views=1, size=16, seed=1,
                               regions=[(45.8, 16.0, 50.0)])
    for argv in (["cells", ten, "--out", tmp_path / "cells"],
                 ["train", ten, "--out", tmp_path / "m", "--encoder", "tiny", "--quiet"]):
        r = cli(capsys, *argv)
        assert r.code == 2
        lines = error_lines(r.err)
        assert len(lines) == 1 and "only 1 geocell from 10 places" in lines[0] and "--min-per-cell" in lines[0]
    assert not (tmp_path / "m").exists() and not (tmp_path / "cells").exists()
