"""A tiny model folder for the geotag CLI tests (seeded `tiny` encoder, untrained head: fast, offline)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    import torch

    from geospot.data.manifest import read_manifest
    from geospot.encoders import create_encoder
    from geospot.geo.cells import build_cells
    from geospot.models.checkpoint import GeoModel
    from geospot.models.head import GeoCellHead
    from geospot.pipeline import save_model
    from geospot.testing import make_fixture_dataset

    root = tmp_path_factory.mktemp("geotag-model")
    man = read_manifest(make_fixture_dataset(root / "data", n_locations=10, views=1, size=32))
    cells = build_cells(man.lat, man.lon, scheme="grid", cell_km=2000.0)
    enc = create_encoder("tiny", pretrained=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = GeoCellHead(enc.embed_dim, len(cells))
    model = GeoModel("tiny", enc.preprocess.to_dict(), head, cells, train_config={"normalize": True})
    return save_model(model, root / "model")
