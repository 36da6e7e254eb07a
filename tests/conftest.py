"""Shared test fixtures: generated data, and the real data beside the repo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Real data lives beside the project, never inside it. Tests that need it skip without it.
SHARED_DATA = Path(os.environ.get("GEOSPOT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def _test_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "geospot-cache"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_session(tmp_path_factory):
    # Session-wide first: module- and session-scoped fixtures (a fine-tuned model and its audit)
    # run before any function-scoped fixture, and wrote their embeddings into ~/.cache/geospot.
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOSPOT_CACHE", str(_test_cache(tmp_path_factory)))
    mp.setenv("MPLBACKEND", "Agg")
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Keep ONNX exports and other caches out of the user's home during tests,
    # but share them across tests of one session so each encoder exports once
    # (again per test: a test may change or delete the variable).
    monkeypatch.setenv("GEOSPOT_CACHE", str(_test_cache(tmp_path_factory)))
    monkeypatch.setenv("MPLBACKEND", "Agg")
