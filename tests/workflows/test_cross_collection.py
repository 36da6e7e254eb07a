"""Cross-collection evaluation, calibrated training, leak-proof eval, and the answer schema,
end to end on generated collections with the `tiny` encoder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geospot.cli import main
from geospot.testing import make_fixture_dataset

TRAIN = ["--encoder", "tiny", "--epochs", "8", "--quiet", "--min-per-cell", "2", "--max-per-cell", "12"]


@pytest.fixture(scope="module")
def collections(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("collections")
    return [make_fixture_dataset(root / f"c{i}", n_locations=24, views=2, size=48, seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def model(collections, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    args = ["train", *[f"c{i}={p}" for i, p in enumerate(collections)], "--out", str(out)] + TRAIN
    assert main(args) == 0
    return out


def test_train_on_collections_calibrates_leave_one_collection_out(model):
    config = json.loads((model / "config.json").read_text())
    cal = config["calibration"]
    assert "leave-one-collection-out (3 collections" in cal["fitted_on"]
    assert cal["temperature"] > 0 and 0 <= cal["prior_weight"] <= 1 and cal["kernel_km"] > 0
    assert set(cal["radius_scale"]["local_mean"]) == {"50", "90"}
    assert (model / "support.safetensors").is_file()


def test_locate_answers_carry_confidence_and_never_a_zero_radius(collections, model, capsys):
    photos = pd.read_csv(collections[0])["path"].head(4).map(lambda p: str(collections[0].parent / p)).tolist()
    assert main(["locate", *photos, "--model", str(model), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    for a in answers:
        assert a["estimate"] == "local_mean"
        assert set(a["estimates"]) >= {"top_cell", "top_k_mean", "local_mean", "max_geoscore", "min_distance"}
        assert a["radius_km"]["50"] > 0 and a["radius_km"]["90"] >= a["radius_km"]["50"]
        assert set(a["within_km"]) == {"25", "200", "750"}
        assert a["within_km"]["25"] <= a["within_km"]["200"] <= a["within_km"]["750"] <= 1
    assert main(["locate", photos[0], "--model", str(model), "--estimate", "max_geoscore", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["estimate"] == "max_geoscore"


def test_cv_by_collection_prints_a_row_per_collection_with_baselines(collections, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["cv", *[f"c{i}={p}" for i, p in enumerate(collections)], "--fuse", "none", "--out", str(out)] + TRAIN
    assert main(args) == 0
    text = capsys.readouterr().out
    for name in ("c0", "c1", "c2"):
        assert f"\n{name} " in text
    assert "baseline: training medoid" in text and "the medoid" in text
    report = json.loads((out / "report.json").read_text())
    assert [f["fold"] for f in report["folds"]] == ["c0", "c1", "c2"]
    for f in report["folds"]:
        m = f["methods"][report["main_method"]]
        lo, hi = m["ci"]["geoscore"]
        assert lo <= m["geoscore"] <= hi
        assert 0 <= f["calibration"]["coverage_90"] <= 1
        assert 0 <= f["unfamiliar"] <= f["n_test_places"]  # the familiarity gate, fitted on the inner folds
    assert report["main_method"] == "geospot: local_mean, max_geoscore if unfamiliar"
    table = pd.read_csv(out / "predictions.csv")
    assert {"path", "true_lat", "lat", "error_km", "radius50_km", "radius90_km", "p_within_25km", "fold"} <= set(table)
    assert (table["radius50_km"] > 0).all()


def test_eval_refuses_test_places_in_the_training_manifest(collections, model, tmp_path, capsys):
    m = collections[0]
    # the README's command: --train is the same file; --split test makes the baselines train on the rest
    assert main(["eval", str(model), str(m), "--split", "test", "--train", str(m), "--out", str(tmp_path / "e")]
                + ["--quiet"]) == 0
    out = capsys.readouterr()
    assert "whose split is not 'test'" in out.err
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["overlap"]["same_id"] == 0 and report["overlap"]["nearby"] == 0
    assert (tmp_path / "e" / "predictions.csv").is_file() and (tmp_path / "e" / "reliability.png").is_file()
    # the same rows on both sides: refused with one line
    code = main(["eval", str(model), str(m), "--split", "test", "--train", str(m), "--train-split", "test",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "training places too" in err and "Traceback" not in err


def test_combine_names_collections_and_prefixes_places(collections):
    from geospot.data.combine import collection_name, combine, parse_named
    from geospot.data.manifest import read_manifest

    assert parse_named("hr=data/x.csv") == ("hr", "data/x.csv")
    assert parse_named("data/x.csv") == (None, "data/x.csv")
    assert collection_name("/d/streetview-croatia/manifest.csv") == "streetview-croatia"
    parts = [(f"c{i}", read_manifest(p)) for i, p in enumerate(collections)]
    m = combine(parts)
    assert sorted(set(m.df["collection"])) == ["c0", "c1", "c2"]
    assert all(g.startswith(c + "/") for g, c in zip(m.groups, m.df["collection"]))
    with pytest.raises(ValueError, match="collection name"):
        combine(parts[:1] + parts[:1])


def _with_threshold(model: Path, tmp_path: Path, threshold: float) -> Path:
    """A copy of `model` whose familiarity threshold is `threshold` (1: every photo unfamiliar)."""
    import shutil

    out = tmp_path / f"m{threshold}"
    shutil.copytree(model, out)
    config = json.loads((out / "config.json").read_text())
    config["familiarity"]["threshold"] = threshold
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_training_fits_a_familiarity_gate_out_of_fold(model):
    config = json.loads((model / "config.json").read_text())
    fam = config["familiarity"]
    assert fam["file"] == "familiarity.safetensors" and (model / fam["file"]).is_file()
    assert "leave-one-collection-out (3 collections" in fam["fitted_on"]
    assert -1 <= fam["threshold"] <= 1 and fam["quantile"] == 0.01 and fam["fallback"] == "max_geoscore"
    # the fallback's answers carry radii fitted for it
    assert set(config["calibration"]["radius_scale"]) == {"local_mean", "max_geoscore"}


def test_familiarity_quantile_option(collections, tmp_path, capsys):
    base = ["train", *[f"c{i}={p}" for i, p in enumerate(collections[:2])]] + TRAIN
    assert main(base + ["--out", str(tmp_path / "off"), "--familiarity-quantile", "0"]) == 0
    config = json.loads((tmp_path / "off" / "config.json").read_text())
    assert "familiarity" not in config and not (tmp_path / "off" / "familiarity.safetensors").exists()
    assert list(config["calibration"]["radius_scale"]) == ["local_mean"]
    assert main(base + ["--out", str(tmp_path / "wide"), "--familiarity-quantile", "0.2"]) == 0
    assert json.loads((tmp_path / "wide" / "config.json").read_text())["familiarity"]["quantile"] == 0.2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(base + ["--out", str(tmp_path / "bad"), "--familiarity-quantile", "0.7"])
    assert exc.value.code == 2
    assert "--familiarity-quantile: must be <= 0.5, got 0.7" in capsys.readouterr().err


def test_unfamiliar_photos_answer_with_the_fallback_unless_an_estimate_is_picked(collections, model, tmp_path, capsys):
    photo = str(collections[0].parent / pd.read_csv(collections[0])["path"][0])
    strict = _with_threshold(model, tmp_path, 1.0)
    assert main(["locate", photo, "--model", str(strict), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)[0]
    assert a["unfamiliar"] is True and a["estimate"] == "max_geoscore"
    assert (a["lat"], a["lon"]) == (a["estimates"]["max_geoscore"]["lat"], a["estimates"]["max_geoscore"]["lon"])
    assert a["familiarity"] < 1.0
    assert main(["locate", photo, "--model", str(strict)]) == 0
    assert "unlike the training photos (familiarity" in capsys.readouterr().out
    assert main(["locate", photo, "--model", str(strict), "--estimate", "local_mean", "--json"]) == 0
    picked = json.loads(capsys.readouterr().out)[0]
    assert picked["estimate"] == "local_mean" and "familiarity" not in picked
    assert main(["locate", photo, "--model", str(_with_threshold(model, tmp_path, -1.0)), "--json"]) == 0
    lenient = json.loads(capsys.readouterr().out)[0]
    assert lenient["unfamiliar"] is False and lenient["estimate"] == "local_mean"


def test_eval_scores_the_gate_as_locate_answers(collections, model, tmp_path, capsys):
    strict = _with_threshold(model, tmp_path, 1.0)
    out = tmp_path / "e"
    assert main(["eval", str(strict), str(collections[1]), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    main_name = report["main_method"]
    assert main_name == "geospot: local_mean, max_geoscore if unfamiliar"
    # every photo unfamiliar: the gated method is max_geoscore, and each estimate is still scored alone
    assert report["methods"][main_name]["geoscore"] == pytest.approx(
        report["methods"]["geospot: max_geoscore"]["geoscore"])
    assert "geospot: local_mean" in report["methods"]
    table = pd.read_csv(out / "predictions.csv")
    assert set(table["estimate"]) == {"max_geoscore"}
    assert any(f"{len(table)} of {len(table)} places looked unlike the training photos" in note
               for note in report["notes"])
    # probabilities fused per place: the gate reads each place's mean embedding, one flag per place
    assert main(["eval", str(strict), str(collections[1]), "--fuse", "probs", "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    fused = json.loads((tmp_path / "p" / "report.json").read_text())
    assert fused["main_method"] == main_name and fused["dataset"]["n_places"] == len(table)
