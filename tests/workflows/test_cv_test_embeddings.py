"""`cross_validate(test_embeddings=...)`: models train on one set of embeddings and answer the
held-out photos from another (the int8 encoder's), which is how `bench_int8.py --loco`
measures a full-precision model used with the quantised encoder."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geospot.data.manifest import Manifest
from geospot.geo.distance import latlon_to_xyz
from geospot.train.config import TrainConfig
from geospot.workflows.crossval import cross_validate

CELLS = {"min_per_cell": 2, "max_per_cell": 12}
CONFIG = TrainConfig(epochs=4, val_fraction=0.0)


@pytest.fixture(scope="module")
def data():
    """Three collections of places on three continents; embeddings that encode the place."""
    rng = np.random.default_rng(0)
    rows, emb = [], []
    proj = rng.normal(size=(3, 32))
    for c, (lat0, lon0) in enumerate([(48.0, 10.0), (40.0, -100.0), (-25.0, 135.0)]):
        for i in range(20):
            lat, lon = lat0 + rng.uniform(-12, 12), lon0 + rng.uniform(-20, 20)
            for v in range(2):
                rows.append({"path": f"c{c}/{i}_{v}.jpg", "lat": lat, "lon": lon, "location_id": f"c{c}-{i}",
                             "collection": f"c{c}"})
                emb.append(latlon_to_xyz(lat, lon) @ proj * 3 + rng.normal(scale=0.3, size=32))
    return Manifest(pd.DataFrame(rows)), np.asarray(emb, np.float32)


def _cv(manifest, emb, **kw):
    return cross_validate(manifest, group_by="collection", encoder="tiny", cell_params=CELLS, config=CONFIG,
                          fuse="none", embeddings=emb, countries=False, progress=False, **kw)


@pytest.fixture(scope="module")
def base(data):
    return _cv(*data)


def _main_scores(report):
    main = report["main_method"]
    return [f["methods"][main]["geoscore"] for f in report["folds"]]


def test_the_same_test_embeddings_change_nothing(data, base):
    manifest, emb = data
    assert _main_scores(_cv(manifest, emb, test_embeddings=emb.copy())) == _main_scores(base)


def test_models_train_on_the_embeddings_and_answer_from_the_test_embeddings(data, base):
    manifest, emb = data
    noise = np.random.default_rng(1).normal(size=emb.shape).astype(np.float32)
    swapped = _cv(manifest, emb, test_embeddings=noise)
    # training saw the same embeddings: the same cells and calibration in every fold
    for a, b in zip(base["folds"], swapped["folds"]):
        assert a["n_cells"] == b["n_cells"] and a["calibration_fit"] == b["calibration_fit"]
    # the held-out photos were answered from noise: the model's scores change, the medoid's do not
    assert _main_scores(swapped) != _main_scores(base)
    medoid = [f["methods"]["baseline: training medoid"]["geoscore"] for f in base["folds"]]
    assert medoid == [f["methods"]["baseline: training medoid"]["geoscore"] for f in swapped["folds"]]


def test_test_embeddings_of_another_shape_are_refused(data):
    manifest, emb = data
    with pytest.raises(ValueError, match="test embeddings have shape"):
        _cv(manifest, emb, test_embeddings=emb[:, :16])


def test_a_photo_the_test_encoder_could_not_read_is_left_out_of_both(data, base):
    from types import SimpleNamespace

    manifest, emb = data
    ok = np.ones(len(emb), bool)
    ok[[0, 5]] = False
    report = _cv(manifest, emb, test_embeddings=SimpleNamespace(embeddings=emb, ok=ok, errors={}))
    assert report["dataset"]["n_images"] == base["dataset"]["n_images"] - 2
