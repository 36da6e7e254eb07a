"""Map files: evaluation maps, and the CLI's locate --map/--map-dir and cells --map."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geospot.cli import main
from geospot.testing import make_fixture_dataset
from geospot.viz.evalmaps import country_accuracy, write_eval_maps


def test_write_eval_maps_from_arrays_and_dataframe(tmp_path):
    true_lat, true_lon = np.array([45.8, 48.1, -33.9, 40.7]), np.array([16.0, 11.6, 151.2, -74.0])
    pred_lat, pred_lon = np.array([45.5, 50.0, -37.8, 34.0]), np.array([15.9, 8.7, 145.0, -118.2])
    cc = {"true_cc": ["HR", "DE", "AU", "US"], "pred_cc": ["HR", "DE", "AU", "US"]}
    written = write_eval_maps({"true_lat": true_lat, "true_lon": true_lon, "pred_lat": pred_lat,
                               "pred_lon": pred_lon, **cc}, tmp_path / "a")
    assert written == {"error map": "error_map.png", "country accuracy map": "country_accuracy_map.png"}
    for name in written.values():
        with Image.open(tmp_path / "a" / name) as img:
            assert img.size[0] >= 600
    df = pd.DataFrame({"true_lat": true_lat, "true_lon": true_lon, "pred_lat": pred_lat, "pred_lon": pred_lon})
    assert set(write_eval_maps(df, tmp_path / "b").values()) == set(written.values())  # countries geocoded offline
    with pytest.raises(ValueError, match="pred_lon"):
        write_eval_maps({"true_lat": true_lat, "true_lon": true_lon, "pred_lat": pred_lat}, tmp_path / "c")


def test_country_accuracy_counts_per_true_country():
    stats = country_accuracy(["HR", "HR", "HR", "DE", ""], ["HR", "SI", "HR", "AT", "FR"])
    assert stats == {"HR": (3, pytest.approx(2 / 3)), "DE": (1, 0.0)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from geospot.encoders import create_encoder
    from geospot.geo.cells import build_cells
    from geospot.models.checkpoint import GeoModel
    from geospot.models.head import GeoCellHead
    from geospot.data.manifest import read_manifest

    root = tmp_path_factory.mktemp("mapcli")
    manifest_path = make_fixture_dataset(root / "data", n_locations=6, views=2, size=64, seed=3)
    manifest = read_manifest(manifest_path)
    cells = build_cells(manifest.lat, manifest.lon, scheme="grid", cell_km=2000.0)
    enc = create_encoder("tiny", pretrained=False)
    torch.manual_seed(0)
    model = GeoModel("tiny", enc.preprocess.to_dict(), GeoCellHead(enc.embed_dim, len(cells)), cells,
                     train_config={"normalize": True})
    return {"manifest": manifest_path, "paths": manifest.paths, "model": model.save(root / "model")}


def test_locate_map_writes_one_png(setup, tmp_path, capsys):
    out = tmp_path / "m.png"
    assert main(["locate", setup["paths"][0], "--model", str(setup["model"]), "--map", str(out)]) == 0
    assert "map:" in capsys.readouterr().err
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 500


def test_locate_map_dir_one_png_per_answer_and_errors_get_none(setup, tmp_path, capsys):
    paths = setup["paths"][:3]
    code = main(["locate", *paths, str(tmp_path / "missing.jpg"), "--model", str(setup["model"]),
                 "--map-dir", str(tmp_path / "maps"), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and "missing.jpg" in captured.out
    assert len(list((tmp_path / "maps").glob("*.map.png"))) == 3  # same stems in two folders: distinct names


def test_locate_map_refuses_many_photos_with_one_file(setup, tmp_path, capsys):
    assert main(["locate", *setup["paths"][:2], "--model", str(setup["model"]), "--map", str(tmp_path / "m.png")]) == 2
    assert "--map-dir" in capsys.readouterr().err
    assert main(["locate", *setup["paths"][:2], "--model", str(setup["model"]), "--same-place",
                 "--map", str(tmp_path / "m.png")]) == 0


def test_cells_map(setup, tmp_path, capsys):
    out = tmp_path / "cells.png"
    assert main(["cells", str(setup["manifest"]), "--out", str(tmp_path / "c"), "--scheme", "grid",
                 "--cell-km", "1500", "--map", str(out)]) == 0
    assert "map ->" in capsys.readouterr().out and out.is_file()
