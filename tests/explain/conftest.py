"""Fixtures for the explain tests: a dataset whose only location clue is a planted uploader stamp."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geospot.data.manifest import read_manifest
from geospot.explain.planted import make_stamped_copy
from geospot.testing import make_fixture_dataset

# Four places far apart, each small enough to fall in one grid cell.
NOISE_STD = 6.0
REGIONS = [(48.5, 10.0, 150.0), (39.5, -98.0, 150.0), (-15.0, -55.0, 150.0), (-25.0, 134.0, 150.0)]


def blank_out_images(manifest_path: Path, size: int = 256, seed: int = 0) -> None:
    """Replace every image with a random vertical colour gradient plus faint noise (``size`` px).

    The colours are drawn independently of the place, so nothing about the location
    is left in the pixels; smooth backgrounds (like sky or road) keep the audit's
    flat grey masks from looking alien to the model.
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    for path in read_manifest(manifest_path).paths:
        top, bottom = rng.uniform(118, 138, 3), rng.uniform(118, 138, 3)
        img = (1 - t) * top + t * bottom + rng.normal(0.0, NOISE_STD, (size, size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def fixture_cells(lat, lon):
    from geospot.geo.cells import build_cells

    return build_cells(lat, lon, scheme="grid", cell_km=2000.0)


def tiny_model(cells, hidden: int = 0, dropout: float = 0.0):
    """An untrained GeoModel on the seeded `tiny` encoder."""
    from geospot.encoders import create_encoder
    from geospot.models.checkpoint import GeoModel
    from geospot.models.head import GeoCellHead

    enc = create_encoder("tiny", pretrained=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a reproducible starting head
        head = GeoCellHead(enc.embed_dim, len(cells), hidden=hidden, dropout=dropout)
    return GeoModel("tiny", enc.preprocess.to_dict(), head, cells, train_config={"normalize": True})


@pytest.fixture(scope="session")
def make_tiny_model():
    """The `tiny_model` factory, for tests."""
    return tiny_model


@pytest.fixture(scope="session")
def planted_dataset(tmp_path_factory) -> dict:
    """Fixture places whose images are pure noise plus an uploader stamp tied to the place's cell.

    Returns {"train": manifest path, "test": manifest path, "cells": CellTable}.
    """
    root = tmp_path_factory.mktemp("planted")
    src = make_fixture_dataset(root / "src", n_locations=40, views=3, size=32, seed=1, regions=REGIONS)
    blank_out_images(src)
    full = read_manifest(src)
    cells = fixture_cells(full.lat, full.lon)
    out: dict = {"cells": cells}
    for split in ("train", "test"):
        part = full.subset(np.flatnonzero(full.df["split"].to_numpy() == split))
        out[split] = make_stamped_copy(part, root / split, cells=cells).manifest_path
    return out
