"""Mapillary collection against the local fake Graph API."""
from __future__ import annotations

import csv
import logging
import math

import pytest
from fake_api import MlyImage

from geospot.data.sources.collect import MANIFEST, collect
from geospot.data.sources.mapillary import MapillarySource

M_PER_DEG = 111_195.0


def offset(lat, lon, north_m, east_m):
    return lat + north_m / M_PER_DEG, lon + east_m / (M_PER_DEG * math.cos(math.radians(lat)))


def rows(out):
    with open(out / MANIFEST, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cluster(api, lat, lon, prefix: int):
    """Images around a point: 10 m, 30 m, 80 m away (inside 100 m) and one 127 m away
    (inside the search box's corner, outside the radius)."""
    specs = [(10, 0, 45.5), (0, 30, 100.0), (-80, 0, 359.0), (90, 90, 10.0)]
    for k, (n, e, compass) in enumerate(specs):
        ilat, ilon = offset(lat, lon, n, e)
        raw_lat, raw_lon = offset(ilat, ilon, 50, 0)  # GPS 50 m off; computed_geometry is right
        api.mly.append(MlyImage(str(prefix + k), ilat, ilon, compass=compass,
                                captured_at_ms=1561718400000 + 1000 * k, sequence=f"seq{prefix // 100}",
                                raw_lat=raw_lat, raw_lon=raw_lon))


def test_nearest_unseen_images_with_computed_geometry(api, make_client, tmp_path):
    cluster(api, 45.0, 15.0, 100)
    cluster(api, 46.0, 16.0, 200)
    pts = [("c1", 45.0, 15.0)] * 4 + [("c2", 46.0, 16.0)] * 2 + [("c3", 0.0, 0.0)]
    out = tmp_path / "mly"
    summary = collect(MapillarySource(make_client(), api.token, base_url=api.url), pts, out, per_cell=4,
                      concurrency=1, progress=False)
    table = rows(out)
    by_cell = {}
    for r in table:
        by_cell.setdefault(r["cell"], []).append(r["source_id"])
    # Nearest first, never twice; the image 127 m away is out of the radius.
    assert by_cell == {"c1": ["100", "101", "102"], "c2": ["200", "201"]}
    assert summary.duplicates == 1 and summary.empty == 1 and summary.cells_short == 3
    images = {im.image_id: im for im in api.mly}
    for r in table:
        im = images[r["source_id"]]
        assert (float(r["lat"]), float(r["lon"])) == pytest.approx((im.lat, im.lon), abs=1e-7)  # computed
        assert float(r["heading"]) == pytest.approx(im.compass)
        assert r["location_id"] == im.sequence and r["copyright"].startswith("Mapillary")
        assert r["path"].endswith(f"/{im.image_id}.jpg") and (out / r["path"]).is_file()
    assert table[0]["capture_date"] == "2019-06-28T10:40:00Z"
    searches = [(q, h) for e, q, h in api.requests if e == "search"]
    assert all(h.get("authorization") == f"OAuth {api.token}" and "access_token" not in q for q, h in searches)
    q = searches[0][0]
    assert q["fields"] == "id,computed_geometry,geometry,compass_angle,captured_at,sequence,thumb_1024_url"
    lon0, lat0, lon1, lat1 = (float(v) for v in q["bbox"].split(","))
    assert lon0 < 15.0 < lon1 and lat0 < 45.0 < lat1 and (lat1 - lat0) * M_PER_DEG == pytest.approx(200, rel=0.01)
    thumbs = [h for e, _, h in api.requests if e == "thumb"]
    assert len(thumbs) == 5 and all("authorization" not in h for h in thumbs)  # no token on the CDN


def test_query_token_style_and_no_token_anywhere(api, make_client, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    cluster(api, 45.0, 15.0, 100)
    api.inject("search", "500", times=2)  # error bodies echo the URL with the token
    api.inject("thumb", "404", times=1)
    pts = [("c1", 45.0, 15.0)] * 4
    out = tmp_path / "mly"
    summary = collect(MapillarySource(make_client(), api.token, base_url=api.url, auth="query"), pts, out,
                      per_cell=2, concurrency=1, progress=True)
    assert summary.locations_new == 2 and summary.errors == 1
    assert all(q.get("access_token") == api.token for e, q, _ in api.requests if e == "search")
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, "\n".join(summary.lines())):
        assert api.token not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert api.token.encode() not in path.read_bytes()


def test_invalid_token_stops_with_a_redacted_message(api, make_client, tmp_path):
    cluster(api, 45.0, 15.0, 100)
    bad = "MLY|1|not-the-token-xyz"
    summary = collect(MapillarySource(make_client(), bad, base_url=api.url), [("c1", 45.0, 15.0)], tmp_path / "m",
                      per_cell=1, progress=False)
    assert summary.stop_kind == "fatal" and "access token" in summary.stop_reason
    assert bad not in summary.stop_reason and "not-the-token" not in summary.stop_reason


def test_graph_api_throttling_is_retried(api, make_client, tmp_path):
    cluster(api, 45.0, 15.0, 100)
    api.inject("search", "throttle", times=2)
    api.inject("search", "429", times=1, arg=0.01)
    summary = collect(MapillarySource(make_client(), api.token, base_url=api.url), [("c1", 45.0, 15.0)],
                      tmp_path / "m", per_cell=1, progress=False)
    assert summary.locations_new == 1 and summary.retries == 3 and summary.stop_reason is None


def test_bad_parameters_are_refused(make_client):
    with pytest.raises(ValueError, match="token"):
        MapillarySource(make_client(), "")
    with pytest.raises(ValueError, match="radius"):
        MapillarySource(make_client(), "t0123", radius_m=0)
    with pytest.raises(ValueError, match="auth"):
        MapillarySource(make_client(), "t0123", auth="cookie")
