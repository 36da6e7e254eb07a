"""The web app's API: the locate --json schema, per-file errors, limits, temp files, concurrency."""
from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from geospot.serve.app import STATIC, create_app
from geospot.serve.uploads import Limits


@pytest.fixture(scope="module")
def client(predictor):
    return TestClient(create_app(predictor=predictor))


def _files(paths):
    return [("photos", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]


def _expected(predictor, paths, **kwargs):
    """What `geospot locate --json` gives for the same files, with the names the server reports."""
    out = []
    for r in predictor.predict(paths, **kwargs):
        d = r.to_dict()
        d["path"] = Path(d["path"]).name
        if "paths" in d:
            d["paths"] = [Path(p).name for p in d["paths"]]
        out.append(d)
    return out


def test_locate_returns_exactly_the_locate_json_schema(client, predictor, photos):
    paths = photos.paths[:2]
    resp = client.post("/api/locate", files=_files(paths))
    assert resp.status_code == 200
    body = resp.json()
    assert body == _expected(predictor, paths)
    assert set(body[0]) == {"path", "paths", "lat", "lon", "country", "country_code", "region", "city",
                            "radius_km", "top_cells", "estimates", "estimate", "within_km", "countries", "regions", "districts"}


def test_same_place_gives_one_answer_for_all_photos(client, predictor, photos):
    paths = photos.paths[:3]
    body = client.post("/api/locate", files=_files(paths), data={"same_place": "true"}).json()
    assert len(body) == 1 and body[0]["paths"] == [Path(p).name for p in paths]
    assert body == _expected(predictor, paths, same_place=True)


def test_bad_files_get_the_cli_errors_and_the_rest_is_answered(client, predictor, photos, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    empty = ("photos", ("empty.jpg", b"", "image/jpeg"))
    resp = client.post("/api/locate", files=_files([photos.paths[0], bad]) + [empty])
    body = resp.json()
    assert resp.status_code == 200 and len(body) == 3
    assert body[0]["path"] == Path(photos.paths[0]).name and "lat" in body[0]
    cli_error = predictor.predict([str(bad)])[0].error
    assert body[1] == {"path": "notes.jpg", "error": cli_error}
    assert body[2] == {"path": "empty.jpg", "error": "empty file"}
    assert "geospot-serve" not in json.dumps(body)  # temporary names never leak


def test_request_errors(client, photos):
    r = client.post("/api/locate", data={"same_place": "true"})
    assert r.status_code == 400 and "photos" in r.json()["detail"]
    r = client.post("/api/locate", files=_files(photos.paths[:1]), data={"top_k": "0"})
    assert r.status_code == 400 and "top_k" in r.json()["detail"]


def test_limits_size_pixels_count_and_body(predictor, photos, tmp_path):
    limits = Limits(max_files=3, max_file_bytes=40_000, max_pixels=100 * 100)
    client = TestClient(create_app(predictor=predictor, limits=limits))
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200), (10, 120, 30)).save(big)  # small file, too many pixels
    huge = ("photos", ("huge.jpg", os.urandom(50_000), "image/jpeg"))
    body = client.post("/api/locate", files=_files([photos.paths[0], big]) + [huge]).json()
    assert "lat" in body[0]
    assert body[1]["path"] == "big.png" and "over the server's limit" in body[1]["error"]
    assert body[2]["path"] == "huge.jpg" and "larger than the server's limit" in body[2]["error"]
    r = client.post("/api/locate", files=_files(photos.paths[:4]))
    assert r.status_code == 400 and "limit is 3" in r.json()["detail"]
    r = client.post("/api/locate", content=b"x" * (limits.max_request_bytes + 10),
                    headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413


def test_uploads_live_only_in_a_temp_folder_deleted_after_the_answer(client, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []
    import geospot.serve.uploads as uploads

    real_save = uploads.save_upload

    def spy(stream, filename, index, folder, limits):
        up = real_save(stream, filename, index, folder, limits)
        seen.append((folder, up.path))
        return up

    monkeypatch.setattr("geospot.serve.app.save_upload", spy)
    name = f"../../escape-{uuid.uuid4().hex}.jpg"
    files = [("photos", (name, Path(photos.paths[0]).read_bytes(), "image/jpeg"))]
    body = client.post("/api/locate", files=files).json()
    assert body[0]["path"] == Path(name).name  # the folder part of a sent name is dropped
    folder, path = seen[0]
    assert Path(folder).parent == tmp_path and Path(path).parent == Path(folder)
    assert not Path(folder).exists()
    assert not list(tmp_path.glob("escape-*")) and not list(tmp_path.parent.glob("escape-*"))


def test_details_give_the_page_what_it_draws(client, predictor, photos):
    body = client.post("/api/locate/details", files=_files(photos.paths[:1]), data={"gradcam": "true"}).json()
    r = body["results"][0]
    assert r["answer"] == _expected(predictor, photos.paths[:1])[0]
    assert len(r["probs"]) == len(predictor.model.cells) and abs(sum(r["probs"]) - 1) < 1e-3
    assert r["circles"]["50"]["type"] == "MultiLineString" and r["circles"]["90"]["type"] == "MultiLineString"
    (south, west), (north, east) = r["bounds"]
    assert south < r["answer"]["lat"] < north and west < r["answer"]["lon"] < east
    assert r["gradcam"].startswith("data:image/png;base64,")


def test_page_layers_and_scripts_are_all_served_locally(client, predictor):
    html = client.get("/").text
    assert "<div id=\"map\"" in html
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(ref.startswith("/static/") for ref in refs)
    for ref in refs:
        assert client.get(ref).status_code == 200
    js = (STATIC / "app.js").read_text()
    assert not re.search(r"https?://", js), "the page must not reach the network"
    assert (STATIC / "vendor" / "leaflet" / "LICENSE").is_file()
    cells = client.get("/api/cells.geojson").json()
    assert len(cells["features"]) == len(predictor.model.cells)
    land = client.get("/api/basemap.geojson").json()
    assert len(land["features"]) > 100
    info = client.get("/api/info").json()
    assert info["cells"] == len(predictor.model.cells) and info["limits"]["max_files"] == 32


def test_sixteen_concurrent_requests_all_answer_correctly(live_server, predictor, photos):
    paths = photos.paths[:16]
    expected = [_expected(predictor, [p])[0] for p in paths]  # one photo per request, as the server sees them
    assert len({json.dumps(e["top_cells"]) for e in expected}) > 4  # the photos get different answers

    def post(path):
        boundary = uuid.uuid4().hex
        data = Path(path).read_bytes()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"{Path(path).name}\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"{live_server.url}/api/locate", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, paths))
    for want, answer in zip(expected, answers):
        assert answer == [want]
