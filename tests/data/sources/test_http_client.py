"""The collectors' HTTP layer against a local server: retries, backoff,
Retry-After, timeouts, truncated bodies, budget, rate limit and redaction."""
from __future__ import annotations

import email.utils
import logging
import socket
import time

import pytest
from fake_api import Pano

from geospot.data.sources.http import (
    Budget, BudgetExhausted, Cancelled, HttpClient, HttpError, RateLimiter, RetryPolicy, _retry_after_s, redact,
)

TRANSPORTS = ["urllib", "urllib3"]


def _meta_url(api, key=None) -> str:
    return f"{api.streetview_url}/metadata?location=1.0,2.0&radius=50&key={key or api.key}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retries_500_then_succeeds(api, make_client, transport):
    api.inject("metadata", "500", times=2)
    client = make_client(transport=transport)
    resp = client.get(_meta_url(api))
    assert resp.status == 200 and resp.json()["status"] == "ZERO_RESULTS"
    assert api.count("metadata") == 3 and client.requests == 3 and client.retries == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gives_up_after_max_retries_with_redacted_error(api, make_client, transport):
    api.inject("metadata", "500", times=None)
    client = make_client(transport=transport, retries=2, secrets=(api.key,))
    with pytest.raises(HttpError) as info:
        client.get(_meta_url(api))
    assert api.count("metadata") == 3
    err = info.value
    assert err.status == 500 and "gave up after 3 attempts" in str(err)
    # The server echoed the URL (with the key) in its body: nothing of it may leak.
    for text in (str(err), err.url, err.body, repr(err.args)):
        assert api.key not in text
    assert "REDACTED" in err.url


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_honours_retry_after(api, make_client, transport):
    api.inject("metadata", "429", times=1, arg=0.3)
    client = HttpClient(timeout_s=1, retry=RetryPolicy(max_retries=2, base_delay_s=20.0), transport=transport)
    t0 = time.monotonic()
    assert client.get(_meta_url(api)).status == 200
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 5.0  # waited Retry-After, not the 10-20 s exponential delay


def test_retry_after_parsing_and_policy():
    assert _retry_after_s("2") == 2.0 and _retry_after_s(None) is None and _retry_after_s("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= _retry_after_s(future) <= 31
    assert _retry_after_s(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0, max_retry_after_s=60.0)
    for attempt in range(6):
        cap = min(8.0, 2.0 ** attempt)
        assert cap / 2 <= policy.delay(attempt) <= cap
    assert policy.delay(0, retry_after_s=500) == 60.0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timeout_is_retried_then_reported(api, make_client, transport):
    api.inject("metadata", "timeout", times=1, arg=0.6)
    client = make_client(transport=transport, timeout_s=0.15)
    assert client.get(_meta_url(api)).status == 200 and client.retries == 1
    api.inject("metadata", "timeout", times=None, arg=0.6)
    with pytest.raises(HttpError, match="timed out"):
        make_client(transport=transport, timeout_s=0.15, retries=1).get(_meta_url(api))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_truncated_body_is_retried(api, make_client, transport):
    api.panos.append(Pano("P1", 1.0, 2.0))
    url = f"{api.streetview_url}?pano=P1&size=32x32&heading=0&key={api.key}"
    api.inject("image", "truncate", times=1)
    client = make_client(transport=transport)
    resp = client.get(url)
    assert resp.status == 200 and len(resp.body) == int(resp.headers["content-length"])
    assert client.retries == 1
    api.inject("image", "truncate", times=None)
    with pytest.raises(HttpError, match="incomplete|truncated|connection"):
        make_client(transport=transport, retries=1).get(url)


def test_connection_refused_is_an_http_error(make_client):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HttpError, match="connection error") as info:
        make_client(retries=1).get(f"http://127.0.0.1:{port}/x?key=SECRETKEY123")
    assert info.value.status is None and "SECRETKEY123" not in str(info.value)


def test_4xx_is_returned_not_retried(api, make_client):
    api.inject("metadata", "404", times=None)
    client = make_client()
    assert client.get(_meta_url(api)).status == 404 and client.requests == 1


def test_budget_counts_every_request_including_retries(api, make_client):
    api.inject("metadata", "500", times=None)
    client = make_client(budget=3, retries=10)
    with pytest.raises(BudgetExhausted, match="budget of 3 requests exhausted"):
        client.get(_meta_url(api))
    assert api.count("metadata") == 3 and client.budget.used == 3
    assert client.budget.remaining() == 0
    with pytest.raises(ValueError):
        Budget(-1)


def test_cancel_stops_backoff_and_new_requests(api):
    api.inject("metadata", "500", times=None)
    client = HttpClient(timeout_s=1, retry=RetryPolicy(max_retries=5, base_delay_s=30.0))
    import threading

    threading.Timer(0.2, client.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        client.get(_meta_url(api))
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(Cancelled):
        client.get(_meta_url(api))


def test_rate_limiter_spaces_requests(api, make_client):
    client = make_client(rate_per_s=25)
    t0 = time.monotonic()
    for _ in range(6):
        client.get(_meta_url(api))
    assert time.monotonic() - t0 >= 5 / 25 - 0.01
    assert RateLimiter(None).acquire() == 0.0


def test_redact_removes_every_credential_form():
    key, token = "AIzaSyA-secret_KEY123", "MLY|4242|abcdefghijklmnop"
    texts = [
        f"https://maps.googleapis.com/maps/api/streetview?pano=x&key={key}&signature=abc-_=",
        f"GET /images?access_token={token}&bbox=1,2,3,4",
        f"headers {{'Authorization': 'OAuth {token}'}}",
        f'{{"authorization": "OAuth {token}", "key": "{key}"}}',
        f"Authorization: Bearer {token}",
        f"the key {key} was echoed",
    ]
    for text in texts:
        out = redact(text, (key, token))
        assert key not in out and token not in out and "abc-_=" not in out, out
        assert "REDACTED" in out
    # Pattern-based redaction works without knowing the secret, too.
    assert "zzz" not in redact("x?key=zzz&y=1") and "y=1" in redact("x?key=zzz&y=1")
    assert "tok9999999" not in redact("Authorization: OAuth tok9999999")


def test_third_party_http_logs_are_redacted(api, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(transport="urllib3", secrets=(api.key,))
    client.get(_meta_url(api))
    assert "GET /maps/api/streetview/metadata" in caplog.text  # urllib3 did log the request ...
    assert api.key not in caplog.text  # ... without the key
