"""A store-trained model gets `train_calibrated`'s calibration: equal to the in-memory path on the same data.

Both fold schemes (leave-one-collection-out from the store's `collection` column, and
group K-fold by place) are compared with dropout 0, where streamed heads equal in-memory
heads; a cap on the kept predictions samples the held-out rows and says so.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from geospot.encoders.store import EmbeddingStore
from geospot.train.calibrate_stream import calibrate_streaming, familiarity_streaming
from geospot.train.config import TrainConfig
from geospot.workflows.training import scaled_estimates, train_calibrated

CFG = TrainConfig(epochs=3, dropout=0.0, batch_size=64, lr=3e-3)
CELLS = {"scheme": "s2", "min_per_cell": 3, "max_per_cell": 20}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Rows:
    def __init__(self, df):
        self.df = df

    def __len__(self):
        return len(self.df)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(1)
    n, d = 300, 16
    lat, lon = rng.uniform(-60, 60, n // 2).repeat(2), rng.uniform(-170, 170, n // 2).repeat(2)
    emb = rng.normal(size=(n, d)) + np.c_[lat / 15, lon / 30, np.zeros((n, d - 2))]
    df = pd.DataFrame({"path": [f"/x/{i}.jpg" for i in range(n)], "lat": lat, "lon": lon,
                       "location_id": [f"p{i // 2}" for i in range(n)],
                       "collection": np.array(["flickr", "streets", "mapillary"])[(np.arange(n) // 2) % 3]})
    st = EmbeddingStore.create(tmp_path_factory.mktemp("st") / "emb", _Rows(df), d, {"encoder": "tiny"})
    ok = np.ones(n, bool)
    ok[7] = False  # a failed image: not a training row
    st.write(0, emb, ok)
    st.finish({7: "/x/7.jpg: broken"})
    return EmbeddingStore.open(st.root)


def _in_memory(st, rows, collections):
    emb = np.asarray(st.emb, np.float32)[rows]  # the same float16-rounded values
    return train_calibrated(emb, st.lat[rows], st.lon[rows], st.groups[rows], collections=collections, config=CFG,
                            cell_params=CELLS, progress=False)


@pytest.mark.parametrize("by_collection", [True, False])
def test_streamed_calibration_equals_in_memory(store, by_collection):
    rows = np.flatnonzero(np.asarray(store.ok))
    cols = store.index["collection"].astype(str).to_numpy() if by_collection else None
    trained = _in_memory(store, rows, None if cols is None else cols[rows])
    ref = trained.calibration
    # as `geospot scale train` does: the familiarity gate first, then radii for its fallback too
    fam = familiarity_streaming(store.emb, store.groups, rows, CFG.seed, collections=cols)
    assert fam.fitted_on == trained.familiarity.fitted_on
    assert fam.threshold == pytest.approx(trained.familiarity.threshold, abs=1e-5)
    np.testing.assert_allclose(fam.mean, trained.familiarity.mean, atol=1e-5)
    got, how = calibrate_streaming(store.emb, store.lat, store.lon, store.groups, rows, CFG, collections=cols,
                                   cell_params=CELLS, estimates=tuple(scaled_estimates(None, fam)))
    assert how.startswith("leave-one-collection-out" if by_collection else "group 5-fold")
    assert got.fitted_on == ref.fitted_on and "sample" not in got.fitted_on
    for name in ("temperature", "prior_weight", "kernel_km"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-4, abs=1e-6), name
    assert got.radius_scale.keys() == ref.radius_scale.keys() == {"local_mean", "max_geoscore"}
    for est, levels in ref.radius_scale.items():
        for level, v in levels.items():
            assert got.radius_scale[est][level] == pytest.approx(v, rel=1e-4), (est, level)


def test_prediction_cap_samples_held_out_rows(store):
    rows = np.flatnonzero(np.asarray(store.ok))
    got, _ = calibrate_streaming(store.emb, store.lat, store.lon, store.groups, rows, CFG, max_rows=100,
                                  cell_params=CELLS)
    kept = int(re.search(r"a sample of (\d+) held-out rows", got.fitted_on).group(1))
    assert 90 <= kept <= 100  # the cap, spread over the folds in proportion (rounded down)
    assert 0.05 < got.temperature < 20
