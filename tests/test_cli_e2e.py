"""End to end through the CLI on a generated dataset with the `tiny` encoder:
cells -> embed -> train -> locate -> eval -> cv."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geospot.cli import main
from geospot.testing import make_fixture_dataset

TRAIN = ["--encoder", "tiny", "--epochs", "40", "--quiet", "--min-per-cell", "3", "--max-per-cell", "20"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixture")
    return make_fixture_dataset(root, n_locations=80, views=4, size=64, seed=0)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    assert main(["train", str(dataset), "--split", "train", "--out", str(out)] + TRAIN) == 0
    return out


def test_cells_verb(dataset, tmp_path, capsys):
    assert main(["cells", str(dataset), "--out", str(tmp_path / "cells"), "--min-per-cell", "3"]) == 0
    assert (tmp_path / "cells" / "cells.json").is_file()
    assert "cells from" in capsys.readouterr().out


def test_embed_verb_reports_bad_file_and_fails(dataset, tmp_path, capsys):
    df = pd.read_csv(dataset)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    rows = df.head(6).copy()
    rows["path"] = [str(dataset.parent / p) for p in rows["path"]]
    rows.loc[len(rows)] = [str(bad), 10.0, 10.0, "bad", 0, "train"]
    m = tmp_path / "m.csv"
    rows.to_csv(m, index=False)
    code = main(["embed", str(m), "--encoder", "tiny", "--quiet", "--cache", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 1
    assert "embedded 6 of 7" in captured.out
    assert "broken.jpg" in captured.err


def test_train_writes_checkpoint(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["encoder"]["name"] == "tiny"
    assert (trained / "head.safetensors").is_file()
    assert not list(trained.glob("*.pkl")) and not list(trained.glob("*.pt"))


def test_locate_json_schema_and_errors(dataset, trained, tmp_path, capsys):
    df = pd.read_csv(dataset)
    photo = str(dataset.parent / df["path"].iloc[0])
    broken = tmp_path / "zero.jpg"
    broken.write_bytes(b"")
    code = main(["locate", photo, str(broken), str(tmp_path / "nope.jpg"), "--model", str(trained), "--json",
                 "--top-k", "3"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # some inputs failed, the rest were still answered
    assert len(out) == 3
    ok = out[0]
    assert ok["path"] == photo
    for key in ("lat", "lon", "country", "region", "city", "radius_km", "top_cells"):
        assert key in ok
    assert -90 <= ok["lat"] <= 90 and -180 <= ok["lon"] <= 180
    assert ok["radius_km"]["50"] <= ok["radius_km"]["90"]
    assert len(ok["top_cells"]) == 3
    assert {"id", "prob", "lat", "lon"} <= set(ok["top_cells"][0])
    # Hierarchical answers: country and region probabilities, most probable first, at most the whole mass.
    for level in ("countries", "regions"):
        probs = [c["prob"] for c in ok[level]]
        assert ok[level] and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
    assert {"code", "name", "prob"} <= set(ok["countries"][0]) and len(ok["countries"][0]["code"]) == 2
    assert (Path(trained) / "hierarchy.json").is_file()
    errors = {Path(o["path"]).name: o["error"] for o in out[1:]}
    assert set(errors) == {"zero.jpg", "nope.jpg"}
    assert all(errors.values())


def test_locate_same_place_fuses(dataset, trained, capsys):
    df = pd.read_csv(dataset)
    views = df[df["location_id"] == df["location_id"].iloc[0]]
    paths = [str(dataset.parent / p) for p in views["path"]]
    assert main(["locate", *paths, "--model", str(trained), "--json", "--same-place"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and out[0]["paths"] == paths


def test_locate_readable_output(dataset, trained, capsys):
    df = pd.read_csv(dataset)
    assert main(["locate", str(dataset.parent / df["path"].iloc[0]), "--model", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "top cells:" in out and "within" in out


def test_eval_beats_medoid_and_writes_report(dataset, trained, tmp_path, capsys):
    out_dir = tmp_path / "report"
    assert main(["eval", str(trained), str(dataset), "--split", "test", "--train", str(dataset), "--out",
                 str(out_dir), "--quiet"]) == 0
    report = json.loads((out_dir / "report.json").read_text())
    methods = report["methods"]
    model = methods["geospot: local_mean"]
    medoid = methods["baseline: training medoid"]
    assert "baseline: random training location" in methods
    assert "baseline: article recipe (CE, top cell)" in methods
    # the fixture's images carry a location signal: the model must find it and
    # beat a constant guess by far
    assert model["top1"] >= 0.6
    assert model["median_km"] < medoid["median_km"] / 3
    assert (out_dir / "report.md").is_file() and (out_dir / "error_cdf.png").is_file()
    assert (out_dir / "confusion_country.csv").is_file() and (out_dir / "confusion_country.png").is_file()
    assert (out_dir / "error_map.png").is_file() and (out_dir / "country_accuracy_map.png").is_file()
    assert "error_map.png" in (out_dir / "report.md").read_text()
    assert "median km" in capsys.readouterr().out


def test_cv_groups_and_summarises(dataset, tmp_path, capsys):
    out_dir = tmp_path / "cv"
    assert main(["cv", str(dataset), "--folds", "3", "--out", str(out_dir)] + TRAIN) == 0
    report = json.loads((out_dir / "report.json").read_text())
    assert len(report["folds"]) == 3
    total = sum(f["n_test_places"] for f in report["folds"])
    assert total == pd.read_csv(dataset)["location_id"].nunique()  # every place tested exactly once
    cv = report["cv"]["geospot: local_mean"]["median_km"]
    assert cv["std"] >= 0 and np.isfinite(cv["mean"])
    assert (out_dir / "error_map.png").is_file() and (out_dir / "country_accuracy_map.png").is_file()
    assert "±" in capsys.readouterr().out


def test_eval_without_training_coordinates_uses_cell_baselines(dataset, trained, tmp_path):
    import shutil

    model = tmp_path / "published"
    shutil.copytree(trained, model)
    (model / "train_places.safetensors").unlink()
    out_dir = tmp_path / "report"
    assert main(["eval", str(model), str(dataset), "--split", "test", "--out", str(out_dir), "--quiet"]) == 0
    report = json.loads((out_dir / "report.json").read_text())
    assert "baseline: training medoid" in report["methods"]
    assert any("cell centroids" in n for n in report["notes"])


def test_finetuned_model_is_evaluated_with_its_own_encoder(dataset, trained, tmp_path):
    from geospot.data.manifest import read_manifest
    from geospot.encoders import create_encoder
    from geospot.geo.distance import haversine_km
    from geospot.pipeline import evaluate, load_model, save_model
    from geospot.predict import Predictor

    # a "fine-tuned" model whose encoder differs strongly from the pretrained one
    model = load_model(trained)
    state = create_encoder("tiny").state_dict()
    # flip the sign of every convolution: through the ReLUs this changes the features
    # (and most top cells); BatchNorm statistics stay valid
    model.encoder_state = {k: -v if v.ndim == 4 else v for k, v in state.items()}
    save_model(model, tmp_path / "ft")
    df = pd.read_csv(dataset)
    test = tmp_path / "test.csv"
    df[df["split"] == "test"].assign(path=lambda d: [str(dataset.parent / p) for p in d["path"]]).to_csv(
        test, index=False)
    m = read_manifest(test)
    report = evaluate(load_model(tmp_path / "ft"), m, fuse="none", progress=False, cache_dir=tmp_path / "cache")
    preds = Predictor.load(tmp_path / "ft", geocode=False).predict(m.paths)
    top_lat = [p.top_cells[0]["lat"] for p in preds]
    top_lon = [p.top_cells[0]["lon"] for p in preds]
    expected = haversine_km(top_lat, top_lon, m.lat, m.lon).mean()
    assert report["methods"]["geospot: top_cell"]["mean_km"] == pytest.approx(float(expected), abs=0.5)
