"""Districts through the CLI: a model trained on places in two cities answers with districts and
`eval` reports district accuracy (generated photos, `tiny` encoder)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from geospot.cli import main
from geospot.testing import make_fixture_dataset

# Central Paris and Honolulu (a few km across): one 100 km grid cell each, most of whose places lie in
# one GeoNames district, so the cells allow districts.
REGIONS = [(48.857, 2.345, 2.0), (21.305, -157.855, 2.0)]
TRAIN = ["--encoder", "tiny", "--epochs", "10", "--quiet", "--scheme", "grid", "--cell-km", "100"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("districts")
    dataset = make_fixture_dataset(root / "data", n_locations=20, views=2, size=32, seed=1, regions=REGIONS)
    out = root / "m"
    assert main(["train", str(dataset), "--split", "train", "--out", str(out)] + TRAIN) == 0
    return dataset, out


def test_locate_json_carries_districts(model, capsys):
    dataset, out = model
    df = pd.read_csv(dataset)
    photos = [str(dataset.parent / p) for p in df["path"].iloc[:2]]
    assert main(["locate", *photos, "--model", str(out), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert json.loads((out / "hierarchy.json").read_text())["format_version"] == 2
    for answer in answers:
        districts = answer["districts"]
        assert districts and {"code", "name", "region", "country_code", "prob"} == set(districts[0])
        probs = [d["prob"] for d in districts]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert {d["code"] for d in districts} <= {"FR/Ile-de-France/Paris", "US/Hawaii/Honolulu County"}
    assert main(["locate", photos[0], "--model", str(out)]) == 0
    assert "  districts: " in capsys.readouterr().out


def test_eval_reports_district_accuracy(model, tmp_path, capsys):
    dataset, out = model
    assert main(["eval", str(out), str(dataset), "--split", "test", "--quiet", "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "district accuracy (admin-2, over the " in text and "answers list districts for 100% of them" in text
    hier = json.loads((tmp_path / "r" / "report.json").read_text())["admin"]["hierarchy"]
    assert hier["n_district"] > 0 and 0 <= hier["district_acc"] <= 1 and hier["district_listed"] == 1.0
    # City accuracy of the hierarchy (shares from the model's training places) beside the point's, with intervals.
    assert "city accuracy (OSV-5M, the nearest GeoNames place): hierarchy " in text and "hierarchy n/a" not in text
    for level in ("country", "region", "district", "city"):
        lo, hi = hier[f"{level}_acc_ci"]
        assert 0 <= lo <= hier[f"{level}_acc"] <= hi <= 1
    assert 0 <= hier["city_listed"] <= 1
