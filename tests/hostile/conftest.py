"""The hostile-input suite: every input an attacker, a flaky disk or a careless
server can hand geospot, regenerated here (no files checked in).

Every case asserts the same contract: no traceback, one clear line naming the
input and the reason, the rest of the batch answered, and bounded memory.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from geospot.testing import make_fixture_dataset

    return make_fixture_dataset(tmp_path_factory.mktemp("hostile-data"), n_locations=15, views=1, size=32, seed=3)


@pytest.fixture(scope="session")
def model_dir(dataset, tmp_path_factory) -> Path:
    """A trained `tiny` model (two epochs: the suite tests failure paths, not accuracy)."""
    from geospot.data.manifest import read_manifest
    from geospot.pipeline import fit, save_model
    from geospot.train.config import TrainConfig

    root = tmp_path_factory.mktemp("hostile-model")
    out = root / "m"
    model = fit(read_manifest(dataset), encoder="tiny", cell_params={"scheme": "s2", "min_per_cell": 1,
                                                                      "max_per_cell": 4, "max_level": 20},
                config=TrainConfig(epochs=2), backend="torch", device="cpu", progress=False,
                cache_dir=root / "cache")
    save_model(model, out)
    return out


@pytest.fixture(scope="session")
def photo(dataset) -> Path:
    return dataset.parent / "images" / "loc0000" / "0.jpg"
