"""Fixtures of the collector tests: a local fake API and fast HTTP clients."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fake_api.py beside this file

from fake_api import FakeApi  # noqa: E402

from geospot.data.sources.http import Budget, HttpClient, RetryPolicy  # noqa: E402


@pytest.fixture
def api():
    with FakeApi() as server:
        yield server


@pytest.fixture
def make_client():
    """HttpClient factory with tiny timeouts and backoff, so that retries cost milliseconds."""

    def make(budget: int | None = None, retries: int = 3, timeout_s: float = 0.5, transport: str = "auto",
             rate_per_s: float | None = None, **kw) -> HttpClient:
        return HttpClient(timeout_s=timeout_s, retry=RetryPolicy(max_retries=retries, base_delay_s=0.005,
                                                                 max_delay_s=0.02),
                          budget=Budget(budget), transport=transport, rate_per_s=rate_per_s, **kw)

    return make
