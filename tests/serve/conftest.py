"""Fixtures for the web app: a tiny model, photos, and a live server on a free port."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the web app needs the 'serve' extra (pip install '.[serve]')")
pytest.importorskip("multipart", reason="the web app needs python-multipart (the 'serve' extra)")

from geospot.testing import make_fixture_dataset  # noqa: E402


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Generated fixture photos (64 px JPEGs of places on five continents) and their manifest."""
    from geospot.data.manifest import read_manifest

    root = tmp_path_factory.mktemp("serve-photos")
    manifest = read_manifest(make_fixture_dataset(root, n_locations=16, views=1, size=64, seed=5))
    return manifest


@pytest.fixture(scope="session")
def predictor(photos, tmp_path_factory):
    """A Predictor on the seeded `tiny` encoder with a grid-cell head (untrained, deterministic)."""
    from geospot.encoders import create_encoder
    from geospot.geo.cells import build_cells
    from geospot.models.checkpoint import GeoModel
    from geospot.models.head import GeoCellHead
    from geospot.predict import Predictor

    cells = build_cells(photos.lat, photos.lon, scheme="grid", cell_km=1500.0)
    enc = create_encoder("tiny", pretrained=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = GeoCellHead(enc.embed_dim, len(cells))
    model = GeoModel("tiny", enc.preprocess.to_dict(), head, cells, train_config={"normalize": True})
    model_dir = model.save(tmp_path_factory.mktemp("serve-model") / "m")
    return Predictor.load(model_dir, geocode=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an app in a background thread on 127.0.0.1:<free port>."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server_class():
    """`LiveServer`, for tests that serve their own app."""
    return LiveServer


@pytest.fixture(scope="session")
def live_server(predictor):
    from geospot.serve.app import create_app

    with LiveServer(create_app(predictor=predictor)) as server:
        yield server
