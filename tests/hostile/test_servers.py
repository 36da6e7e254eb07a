"""Servers that misbehave (the local fake API): failures are loud, keys never leak, even cut in half."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from hostile_util import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "sources"))

from fake_api import FakeApi, Pano  # noqa: E402


@pytest.fixture
def api():
    with FakeApi() as server:
        yield server


def _points(path: Path, api) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "lat", "lon"])
        for i in range(3):
            w.writerow(["k0", 30.0, 5.0 + 0.01 * i])
    api.panos.append(Pano("P0", 30.0001, 5.0))
    return path


def _argv(api, points, out):
    return ["data", "streetview", "--points", points, "--out", out, "--per-cell", "1", "--size", "32x32",
            "--base-url", api.streetview_url, "--key-env", "HOSTILE_SV_KEY", "--rate", "0", "--timeout", "2",
            "--retries", "0", "--no-progress"]


def test_every_attempt_failed_is_not_success(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOSTILE_SV_KEY", api.key)
    api.inject("metadata", "500", times=None)  # under the consecutive-error stop: 3 attempts, all failed
    r = cli(capsys, *_argv(api, _points(tmp_path / "p.csv", api), tmp_path / "out"))
    assert r.code == 1, r.out + r.err
    assert "every attempt failed" in r.out and "finished" not in r.out
    assert api.key not in r.out + r.err


def test_warnings_are_clean_lines(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOSTILE_SV_KEY", api.key)
    api.inject("metadata", "500", times=None)
    r = cli(capsys, *_argv(api, _points(tmp_path / "p.csv", api), tmp_path / "out"))
    for line in r.err.splitlines():
        assert not line.lstrip().startswith("File ") and ".py:" not in line, line


@pytest.mark.parametrize("cut_at", [190, 195, 199, 200, 205])
def test_key_echoed_across_the_cut_is_fully_redacted(cut_at):
    from geospot.data.sources.http import HttpClient
    from geospot.data.sources.streetview import _describe

    key = "SV-KEY-0123456789abcdef"
    client = HttpClient(secrets=(key,))
    body = ("x" * (cut_at - 6) + " echo " + key + " tail").encode()
    for text in (client.excerpt(body), client.excerpt(body, 300), _describe(client, body)):
        for n in range(4, len(key) + 1):
            assert key[:n] not in text, (n, text[-40:])


def test_mapillary_error_body_is_redacted_before_the_cut(api, tmp_path, monkeypatch, capsys):
    from geospot.data.sources.http import HttpClient

    token = api.token
    client = HttpClient(secrets=(token,))
    body = ('{"error": "' + "y" * 180 + token + '"}').encode()
    assert token[:6] not in client.excerpt(body)
