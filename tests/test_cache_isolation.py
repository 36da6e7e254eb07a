"""The test suite never writes into the user's cache, even from module-scoped fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cache_seen_by_module_fixture() -> str | None:
    # Module-scoped fixtures (e.g. a fine-tuned model and its audit) run before any
    # function-scoped fixture: they must already see the test cache.
    return os.environ.get("GEOSPOT_CACHE")


def test_module_fixtures_see_the_test_cache(cache_seen_by_module_fixture, tmp_path_factory):
    assert cache_seen_by_module_fixture is not None
    assert Path(cache_seen_by_module_fixture) == tmp_path_factory.getbasetemp() / "geospot-cache"
    assert Path(cache_seen_by_module_fixture) != Path.home() / ".cache" / "geospot"
