"""--tta through the CLI: train records the views, locate and eval use them, locate overrides them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geospot.cli import main
from geospot.testing import make_fixture_dataset

TRAIN = ["--encoder", "tiny", "--epochs", "5", "--quiet", "--min-per-cell", "3", "--max-per-cell", "20",
         "--no-calibrate"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_fixture_dataset(tmp_path_factory.mktemp("fixture"), n_locations=24, views=2, size=80, seed=1)


@pytest.fixture(scope="module")
def flip_model(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    assert main(["train", str(dataset), "--out", str(out), "--tta", "flip"] + TRAIN) == 0
    return out


def _probs(capsys, *args) -> list:
    assert main(["locate", *args, "--json"]) == 0
    return [c["prob"] for c in json.loads(capsys.readouterr().out)[0]["top_cells"]]


def test_train_records_the_views_and_locate_uses_them(dataset, flip_model, capsys):
    from geospot.predict import Predictor

    config = json.loads((flip_model / "config.json").read_text())
    assert config["encoder"]["preprocess"]["views"] == "flip"
    predictor = Predictor.load(flip_model)
    assert predictor.preprocess.views == "flip"
    assert Predictor.load(flip_model, views="center").preprocess.views == "center"
    photo = str(dataset.parent / pd.read_csv(dataset)["path"].iloc[0])
    default = _probs(capsys, photo, "--model", str(flip_model))
    flip = _probs(capsys, photo, "--model", str(flip_model), "--tta", "flip")
    none = _probs(capsys, photo, "--model", str(flip_model), "--tta", "none")
    assert default == flip, "the recorded views are the default"
    assert not np.allclose(default, none, atol=1e-6), "--tta none overrides them"


def test_centre_models_record_no_views():
    from geospot.workflows.training import encoder_preprocess

    assert "views" not in encoder_preprocess("tiny") and "views" not in encoder_preprocess("tiny", "center")
    assert encoder_preprocess("tiny", "ten") == dict(encoder_preprocess("tiny"), views="ten")


def test_embed_with_tta_and_bad_values_give_one_line(dataset, tmp_path, capsys):
    assert main(["embed", str(dataset), "--encoder", "tiny", "--quiet", "--tta", "five",
                 "--cache", str(tmp_path / "c")]) == 0
    assert "five TTA" in capsys.readouterr().out
    for verb in (["embed", str(dataset)], ["train", str(dataset), "--out", str(tmp_path / "x")], ["locate", "a.jpg"]):
        with pytest.raises(SystemExit) as exc:
            main([*verb, "--tta", "sideways"])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--tta" in err[0] and "'sideways'" in err[0] and "flip" in err[0], err


def test_eval_embeds_with_the_models_views(dataset, flip_model, tmp_path, capsys):
    assert main(["eval", str(flip_model), str(dataset), "--quiet", "--cache", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    settings = [json.loads(p.read_text()) for p in (tmp_path / "c").glob("*/settings.json")]
    assert [s["preprocess"].get("views") for s in settings] == ["flip"]


def test_the_full_frame_is_the_default_and_crop_or_tta_opt_out(dataset, tmp_path, capsys):
    from types import SimpleNamespace

    from geospot.cli.options import views_of

    def views(**kw):
        return views_of(SimpleNamespace(**{"tta": "none", "frame": None, **kw}))

    assert views() == "full" and views(frame="crop") == "center" and views(tta="five") == "five"
    with pytest.raises(SystemExit, match="--tta five takes crops of the ImageNet frame"):
        views(tta="five", frame="full")
    out = tmp_path / "m"
    assert main(["train", str(dataset), "--out", str(out)] + TRAIN) == 0
    assert json.loads((out / "config.json").read_text())["encoder"]["preprocess"]["views"] == "full"
    from geospot.predict import Predictor

    # `--tta none` on a full-frame model keeps its frame (one view); an explicit TTA overrides it
    assert Predictor.load(out, views="center").preprocess.views == "full"
    assert Predictor.load(out, views="five").preprocess.views == "five"
