"""`geospot train --aux/--refine/--hybrid` through `locate --json` and `eval`, with the tiny encoder:
stored in the model directory, loaded by GeoModel and the torch-free NumpyGeoModel alike."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geospot.cli import main
from geospot.testing import make_fixture_dataset

TRAIN = ["--encoder", "tiny", "--epochs", "6", "--quiet", "--min-per-cell", "3", "--max-per-cell", "20",
         "--no-calibrate"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixture")
    path = make_fixture_dataset(root, n_locations=30, views=2, size=32, seed=1)
    df = pd.read_csv(path)
    df["date"] = [f"2021-{1 + i % 12:02d}" for i in range(len(df))]  # a capture month for the month head
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def model_dir(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    assert main(["train", str(dataset), "--split", "train", "--out", str(out), "--hidden", "16",
                 "--aux", "country,driving_side,month=0.5", "--aux-weight", "0.3", "--refine", "prototypes",
                 "--hybrid"] + TRAIN) == 0
    return out


def test_model_directory_stores_the_methods(model_dir):
    from geospot.models.checkpoint import GeoModel
    from geospot.models.numpy_model import load_numpy_model

    config = json.loads((model_dir / "config.json").read_text())
    heads = {h["name"]: h for h in config["aux"]["heads"]}
    assert heads["country"]["weight"] == 0.3 and heads["month"]["weight"] == 0.5
    assert heads["driving_side"]["classes"] == ["left", "right"]
    assert config["refine"] == {"method": "prototypes", "file": "prototypes.safetensors"}
    assert config["hybrid"] == "hybrid.safetensors"
    for name in ("aux.safetensors", "prototypes.safetensors", "hybrid.safetensors"):
        assert (model_dir / name).is_file()
    torch_model, np_model = GeoModel.load(model_dir), load_numpy_model(model_dir)
    emb = np.random.default_rng(0).normal(size=(3, torch_model.embed_dim)).astype(np.float32)
    a, b = torch_model.predict_aux(emb), np_model.predict_aux(emb)
    assert set(a) == {"country", "driving_side", "month"}
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)
        np.testing.assert_allclose(a[k].sum(1), 1.0, atol=1e-5)


def test_locate_json_reports_aux_and_refined_answer(dataset, model_dir, capsys):
    df = pd.read_csv(dataset)
    photo = str(dataset.parent / df["path"].iloc[0])
    assert main(["locate", photo, "--model", str(model_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert set(out["aux"]["driving_side"]) == {"left", "right"}
    assert abs(sum(out["aux"]["driving_side"].values()) - 1) < 1e-3
    assert len(out["aux"]["month"]) == 5 and "country" in out["aux"]
    assert out["estimate"] == "local_mean+hybrid+prototypes"
    assert out["estimates"]["hybrid+prototypes"] == {"lat": out["lat"], "lon": out["lon"]}


def test_eval_uses_the_refiner_and_reports_admin_accuracy(dataset, model_dir, tmp_path, capsys):
    assert main(["eval", str(model_dir), str(dataset), "--split", "test", "--quiet", "--out",
                 str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "country / region accuracy (OSV-5M" in text and "hierarchy" in text
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["main_method"] == "geospot: local_mean + hybrid+prototypes"
    assert "geospot: local_mean" in report["methods"]
    assert 0 <= report["admin"]["hierarchy"]["country_acc"] <= 1


def test_unfamiliar_photos_keep_the_fallback_instead_of_the_refined_point(dataset, model_dir, tmp_path, capsys):
    import shutil

    from geospot.models.familiarity import Familiarity

    strict = tmp_path / "strict"
    shutil.copytree(model_dir, strict)
    config = json.loads((strict / "config.json").read_text())
    mean = np.ones(config["head"]["embed_dim"], np.float32)
    fam = Familiarity(mean / np.linalg.norm(mean), threshold=1.0)  # every photo unfamiliar
    fam.save(strict)
    config["familiarity"] = fam.config()
    (strict / "config.json").write_text(json.dumps(config))
    photo = str(dataset.parent / pd.read_csv(dataset)["path"].iloc[0])
    assert main(["locate", photo, "--model", str(strict), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert out["unfamiliar"] is True and out["estimate"] == "max_geoscore"
    assert out["estimates"]["max_geoscore"] == {"lat": out["lat"], "lon": out["lon"]}
    assert main(["eval", str(strict), str(dataset), "--split", "test", "--quiet", "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    main_name = report["main_method"]
    assert main_name == "geospot: local_mean, max_geoscore if unfamiliar + hybrid+prototypes"
    assert report["methods"][main_name]["geoscore"] == pytest.approx(
        report["methods"]["geospot: max_geoscore"]["geoscore"])


def test_bad_options_fail_with_one_line(dataset, tmp_path, capsys):
    assert main(["train", str(dataset), "--out", str(tmp_path / "x"), "--aux", "weather"] + TRAIN) == 2
    assert "unknown auxiliary target 'weather'" in capsys.readouterr().err
    assert main(["train", str(dataset), "--out", str(tmp_path / "y"), "--refine", "knn", "--store",
                 str(tmp_path / "store")] + TRAIN) == 2
    assert "do not combine with --store" in capsys.readouterr().err
    assert main(["train", str(dataset), "--out", str(tmp_path / "z"), "--hybrid", "--unfreeze", "1"] + TRAIN) == 2
    assert "do not combine with --unfreeze" in capsys.readouterr().err
