"""Explicit downloads against a local HTTP server (127.0.0.1 only): resume, size/hash checks, offline failure."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile

import pytest
import torch

from geospot.cli import main
from geospot.downloads import DownloadError, RemoteFile, fetch


class _Server:
    """Serves `files` {path: bytes}; honours Range unless `ranges` is False; optional ETag sha256."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True, etag: dict[str, str] | None = None):
        self.files, self.ranges, self.etag, self.requests = files, ranges, etag or {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.path, self.headers.get("Range")))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and outer.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                if self.path in outer.etag:
                    self.send_header("ETag", f'"{outer.etag[self.path]}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                try:
                    self.wfile.write(data[start:])
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on purpose
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


DATA = bytes(range(256)) * 4000  # ~1 MB
SHA = hashlib.sha256(DATA).hexdigest()


def test_fetch_verifies_and_leaves_no_partial_file(tmp_path):
    with _Server({"/f.bin": DATA}) as s:
        out = fetch(RemoteFile(s.url("/f.bin"), size=len(DATA), sha256=SHA), tmp_path / "f.bin", progress=False)
        assert out.read_bytes() == DATA and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
        fetch(RemoteFile(s.url("/f.bin"), size=len(DATA), sha256=SHA), out, progress=False)
        assert len(s.requests) == 1, "a verified file is not fetched again"


def test_fetch_resumes_a_partial_download_with_a_range_request(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA[:300_000])
    with _Server({"/f.bin": DATA}) as s:
        out = fetch(RemoteFile(s.url("/f.bin"), size=len(DATA), sha256=SHA), tmp_path / "f.bin", progress=False)
    assert s.requests == [("/f.bin", "bytes=300000-")]
    assert out.read_bytes() == DATA


def test_fetch_starts_over_when_the_server_ignores_ranges(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)  # not even a prefix of the file
    with _Server({"/f.bin": DATA}, ranges=False) as s:
        out = fetch(RemoteFile(s.url("/f.bin"), sha256=SHA), tmp_path / "f.bin", progress=False)
    assert out.read_bytes() == DATA


def test_hash_mismatch_deletes_the_download(tmp_path):
    with _Server({"/f.bin": DATA}) as s:
        with pytest.raises(DownloadError, match="SHA-256 mismatch"):
            fetch(RemoteFile(s.url("/f.bin"), sha256="0" * 64), tmp_path / "f.bin", progress=False)
        assert not any(tmp_path.iterdir())
        # an ETag carrying a SHA-256 (Hugging Face's large files) is checked too
    with _Server({"/g.bin": DATA}, etag={"/g.bin": "1" * 64}) as s:
        with pytest.raises(DownloadError, match="SHA-256 mismatch"):
            fetch(RemoteFile(s.url("/g.bin")), tmp_path / "g.bin", progress=False)


def test_size_mismatch_is_refused_before_downloading(tmp_path):
    with _Server({"/f.bin": DATA}) as s:
        with pytest.raises(DownloadError, match="expected 5;"):
            fetch(RemoteFile(s.url("/f.bin"), size=5), tmp_path / "f.bin", progress=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_is_one_clear_line(tmp_path):
    with pytest.raises(DownloadError) as info:
        fetch(RemoteFile(f"http://127.0.0.1:{_closed_port()}/f.bin"), tmp_path / "f.bin", progress=False)
    message = str(info.value)
    assert "\n" not in message and "cannot reach 127.0.0.1" in message and "run the same command again" in message


def _fake_geoclip_wheel() -> bytes:
    """A wheel laid out like geoclip 1.3.0's, with random tensors under the package's own key names."""
    g = torch.Generator().manual_seed(0)
    loc = {}
    for i in range(3):
        loc[f"LocEnc{i}.capsule.0.b"] = torch.randn(256, 2, generator=g)
        for j, shape in ((1, (1024, 512)), (3, (1024, 1024)), (5, (1024, 1024))):
            loc[f"LocEnc{i}.capsule.{j}.weight"] = torch.randn(*shape, generator=g) * 0.01
            loc[f"LocEnc{i}.capsule.{j}.bias"] = torch.zeros(shape[0])
        loc[f"LocEnc{i}.head.0.weight"] = torch.randn(512, 1024, generator=g) * 0.01
        loc[f"LocEnc{i}.head.0.bias"] = torch.zeros(512)
    mlp = {"0.weight": torch.randn(768, 768, generator=g), "0.bias": torch.zeros(768),
           "2.weight": torch.randn(512, 768, generator=g), "2.bias": torch.zeros(512)}
    members = {}
    for name, obj in (("location_encoder_weights.pth", loc), ("image_encoder_mlp_weights.pth", mlp),
                      ("logit_scale_weights.pth", torch.tensor(3.5))):
        buf = io.BytesIO()
        torch.save(obj, buf)
        members[f"geoclip/model/weights/{name}"] = buf.getvalue()
    members["geoclip/model/gps_gallery/coordinates_100K.csv"] = b"LAT,LON\n1.5,2.5\n-10,170\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def test_geoclip_download_converts_the_wheel_and_deletes_it(tmp_path, monkeypatch):
    from geospot.models.geoclip import weights as gw

    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    wheel = _fake_geoclip_wheel()
    with _Server({"/geoclip.whl": wheel}) as s:
        path = gw.download_geoclip(progress=False, url=s.url("/geoclip.whl"), size=len(wheel),
                                   sha256=hashlib.sha256(wheel).hexdigest())
    w = gw.load_weights(path)
    assert w["gallery"].tolist() == [[1.5, 2.5], [-10.0, 170.0]] and float(w["logit_scale"]) == 3.5
    assert [p.name for p in path.parent.iterdir()] == [gw.WEIGHTS_FILE]  # no pickle kept


def test_models_lists_licences_and_cache_state_and_fails_offline_in_one_line(tmp_path, monkeypatch, capsys):
    from geospot.models.geoclip import weights as gw

    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"geoclip", "streetclip", "clip-vit-b32", "clip-vit-l14"} <= set(rows)
    assert "NON-COMMERCIAL" in rows["streetclip"]["licence"] and rows["geoclip"]["licence"] == "MIT"
    assert not rows["streetclip"]["cached"]
    monkeypatch.setattr(gw, "installed_package_dir", lambda: None)  # no local package: the wheel is fetched
    monkeypatch.setattr(gw, "WHEEL_URL", f"http://127.0.0.1:{_closed_port()}/geoclip.whl")
    for argv in (["models", "--download", "geoclip"], ["encoders", "--download", "geoclip"]):
        assert main(argv) == 2  # setup error: one line (docs/errors.md)
        message = capsys.readouterr().err.strip()
        assert message.startswith("error: cannot reach 127.0.0.1") and "\n" not in message


def test_models_download_geoclip_fetches_wheel_and_tower_then_lists_it_cached(tmp_path, monkeypatch, capsys):
    from geospot.encoders import clip
    from geospot.models.geoclip import weights as gw

    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GEOSPOT_WEIGHTS_CLIP_VIT_L14", raising=False)
    monkeypatch.setattr(gw, "installed_package_dir", lambda: None)
    spec = clip.ClipVisionSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=28, patch_size=14, projection_dim=768)
    tower = clip.random_clip(spec, seed=1)
    buf = io.BytesIO()
    from safetensors.torch import save

    buf.write(save({k: v.contiguous() for k, v in tower.state_dict().items()}))
    from dataclasses import asdict

    hub = "/openai/clip-vit-large-patch14/resolve/main/"
    wheel = _fake_geoclip_wheel()
    files = {"/geoclip.whl": wheel, hub + "config.json": json.dumps(asdict(spec)).encode(),
             hub + "model.safetensors": buf.getvalue(), hub + "vocab.json": b"{}", hub + "merges.txt": b"#version: 0.2\n"}
    with _Server(files) as s:
        monkeypatch.setattr(gw, "WHEEL_URL", s.url("/geoclip.whl"))
        monkeypatch.setattr(gw, "WHEEL_SIZE", len(wheel))
        monkeypatch.setattr(gw, "WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
        monkeypatch.setattr(clip, "HF_BASE_URL", s.url(""))
        assert main(["models", "--download", "geoclip"]) == 0
        n = len(s.requests)
        assert main(["models", "--download", "geoclip"]) == 0
        assert len(s.requests) == n, "complete downloads are not fetched again"
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["geoclip"]["cached"] and rows["clip-vit-l14"]["cached"] and not rows["clip-vit-b32"]["cached"]
