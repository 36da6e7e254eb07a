"""A local stand-in for the Street View Static API and the Mapillary Graph API.

Serves on 127.0.0.1 (port 0) from a thread and answers in the documented
formats. Used by the collector tests and by benchmarks/bench_collect.py; it
never touches the network.

Street View (base ``{url}/maps/api/streetview``): ``/metadata`` returns the
nearest pano within ``radius`` (``OK``) or ``ZERO_RESULTS``; the image
endpoint returns a JPEG per ``pano``/``heading``. Mapillary: ``/images``
(bbox search) and ``/thumb/<id>.jpg``.

Faults are injected per endpoint (``metadata``, ``image``, ``search``,
``thumb``) with :meth:`FakeApi.inject`; each rule fires ``times`` times
(``None``: forever) for requests whose query matches ``when``. Error bodies
echo the request URL and headers, credentials included, like a careless
server would, so that redaction is really tested.
"""
from __future__ import annotations

import io
import json
import math
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

R_M = 6371008.8


def _dist_m(lat1, lon1, lat2, lon2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * R_M * math.asin(min(1.0, math.sqrt(a)))


def jpeg_bytes(width: int, height: int, seed: int = 0, quality: int = 85) -> bytes:
    """A JPEG with some texture (so its size is realistic, ~15-60 kB at 640 px)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


@dataclass
class Pano:
    pano_id: str
    lat: float
    lon: float
    date: str = "2019-06"


@dataclass
class MlyImage:
    image_id: str
    lat: float
    lon: float
    compass: float = 0.0
    captured_at_ms: int = 1561718400000
    sequence: str = "seq"
    raw_lat: float | None = None  # GPS geometry (computed_geometry is lat/lon)
    raw_lon: float | None = None


@dataclass
class _Rule:
    endpoint: str
    kind: str
    times: int | None
    when: dict = field(default_factory=dict)
    arg: float = 0.0


class FakeApi:
    """The fake server. ``key``/``token``: the accepted credentials."""

    def __init__(self, key: str = "SV-KEY-0123456789abcdef", token: str = "MLY|42|tok0123456789",
                 image_size: tuple[int, int] | None = None, latency_s: float = 0.0):
        self.key, self.token = key, token
        self.panos: list[Pano] = []
        self.mly: list[MlyImage] = []
        self.rules: list[_Rule] = []
        self.requests: list[tuple[str, dict, dict]] = []  # (endpoint, query, headers)
        self.image_hits: Counter = Counter()  # (pano_or_image_id, heading) -> count
        self.image_size = image_size  # None: honour the size parameter
        self.latency_s = latency_s
        # > 0: besides the listed panos, every point has one on a grid of this step (degrees),
        # so that randomly sampled points find imagery (CLI tests, benchmarks).
        self.everywhere_step_deg = 0.0
        self._jpeg_cache: dict[tuple[int, int, int], bytes] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> "FakeApi":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def streetview_url(self) -> str:
        return f"{self.url}/maps/api/streetview"

    # -- configuration ------------------------------------------------------
    def inject(self, endpoint: str, kind: str, times: int | None = 1, arg: float = 0.0, **when) -> None:
        """Make ``endpoint`` misbehave. kinds: 500, 429 (Retry-After=arg), 403,
        404, timeout (sleep arg s), truncate, garbage (200 but not an image),
        and metadata statuses OVER_QUERY_LIMIT, UNKNOWN_ERROR, REQUEST_DENIED,
        INVALID_REQUEST, NOT_FOUND; search errors throttle (code 613), oauth."""
        with self._lock:
            self.rules.append(_Rule(endpoint, kind, times, when, arg))

    def grid_pano(self, lat: float, lon: float) -> Pano:
        step = self.everywhere_step_deg
        glat, glon = round(lat / step) * step, round(lon / step) * step
        return Pano(f"grid:{glat:.5f}:{glon:.5f}", glat, glon)

    def count(self, endpoint: str) -> int:
        with self._lock:
            return sum(1 for e, _, _ in self.requests if e == endpoint)

    def _take_rule(self, endpoint: str, query: dict) -> _Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.endpoint != endpoint or any(query.get(k) != str(v) for k, v in rule.when.items()):
                    continue
                if rule.times is not None:
                    if rule.times <= 0:
                        continue
                    rule.times -= 1
                return rule
        return None

    def _jpeg(self, w: int, h: int, seed: int) -> bytes:
        key = (w, h, seed % 8)
        with self._lock:
            data = self._jpeg_cache.get(key)
        if data is None:
            data = jpeg_bytes(w, h, seed=key[2])
            with self._lock:
                self._jpeg_cache[key] = data
        return data

    # -- HTTP ---------------------------------------------------------------
    def _handler_class(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms each)

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                parts = urllib.parse.urlsplit(self.path)
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = parts.path
                if path == "/maps/api/streetview/metadata":
                    endpoint = "metadata"
                elif path == "/maps/api/streetview":
                    endpoint = "image"
                elif path == "/images":
                    endpoint = "search"
                elif path.startswith("/thumb/"):
                    endpoint = "thumb"
                else:
                    return self._send(404, b"no such endpoint", "text/plain")
                with api._lock:
                    api.requests.append((endpoint, query, headers))
                if api.latency_s:
                    time.sleep(api.latency_s)
                rule = api._take_rule(endpoint, query)
                if rule is not None and self._fault(rule, endpoint, headers):
                    return
                getattr(self, f"_{endpoint}")(query, headers)

            # ---- responses
            def _send(self, status, body: bytes, ctype: str, extra: dict | None = None, length: int | None = None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                if length is not None and length != len(body):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def _json(self, status, obj, extra=None):
                self._send(status, json.dumps(obj).encode(), "application/json; charset=UTF-8", extra)

            def _echo(self, headers) -> str:
                return f"request {self.path} with headers {json.dumps(headers)}"

            def _fault(self, rule: _Rule, endpoint: str, headers: dict) -> bool:
                kind = rule.kind
                if kind == "500":
                    self._send(500, f"internal error; {self._echo(headers)}".encode(), "text/plain")
                elif kind == "429":
                    self._send(429, b"slow down", "text/plain", {"Retry-After": f"{rule.arg:g}"})
                elif kind == "403":
                    self._json(403, {"status": "REQUEST_DENIED", "error_message": self._echo(headers)})
                elif kind == "404":
                    self._send(404, f"not found; {self._echo(headers)}".encode(), "text/plain")
                elif kind == "timeout":
                    time.sleep(rule.arg)
                    self.close_connection = True
                    try:
                        self._send(500, b"too late", "text/plain")
                    except OSError:
                        pass
                elif kind == "truncate":
                    body = api._jpeg(64, 64, 1) if endpoint in ("image", "thumb") else b'{"status": "OK"}'
                    self._send(200, body[: len(body) // 2], "image/jpeg", length=len(body))
                elif kind == "garbage":
                    self._send(200, b"\xff\xd8\xff\xe0 definitely not a whole jpeg", "image/jpeg")
                elif kind == "throttle":
                    self._json(400, {"error": {"message": "Application request limit reached", "code": 613,
                                               "type": "OAuthException"}})
                elif kind == "oauth":
                    self._json(401, {"error": {"message": f"Invalid OAuth access token; {self._echo(headers)}",
                                               "type": "OAuthException", "code": 190}})
                else:  # a metadata status with HTTP 200, as Google sends them
                    self._json(200, {"status": kind, "error_message": f"{kind}; {self._echo(headers)}"})
                return True

            # ---- Street View
            def _key_ok(self, query, headers) -> bool:
                if query.get("key") == api.key:
                    return True
                self._json(200 if self.path.startswith("/maps/api/streetview/metadata") else 403,
                           {"status": "REQUEST_DENIED",
                            "error_message": f"The provided API key is invalid. {self._echo(headers)}"})
                return False

            def _metadata(self, query, headers):
                if not self._key_ok(query, headers):
                    return
                try:
                    lat, lon = (float(v) for v in query["location"].split(","))
                    radius = float(query.get("radius", 50))
                except (KeyError, ValueError):
                    return self._json(200, {"status": "INVALID_REQUEST"})
                best = min(api.panos, key=lambda p: _dist_m(lat, lon, p.lat, p.lon), default=None)
                if best is None and api.everywhere_step_deg:
                    best = api.grid_pano(lat, lon)
                if best is None or _dist_m(lat, lon, best.lat, best.lon) > radius:
                    return self._json(200, {"status": "ZERO_RESULTS"})
                self._json(200, {"copyright": "© Google", "date": best.date,
                                 "location": {"lat": best.lat, "lng": best.lon},
                                 "pano_id": best.pano_id, "status": "OK"})

            def _image(self, query, headers):
                if not self._key_ok(query, headers):
                    return
                pano = query.get("pano")
                if not pano.startswith("grid:") and pano not in {p.pano_id for p in api.panos}:
                    return self._send(404, b"", "text/plain")
                w, h = api.image_size or tuple(int(v) for v in query.get("size", "640x640").split("x"))
                with api._lock:
                    api.image_hits[(pano, query.get("heading"))] += 1
                seed = hash((pano, query.get("heading"))) & 0xFFFF
                self._send(200, api._jpeg(w, h, seed), "image/jpeg")

            # ---- Mapillary
            def _token_ok(self, query, headers) -> bool:
                if headers.get("authorization") == f"OAuth {api.token}" or query.get("access_token") == api.token:
                    return True
                self._json(401, {"error": {"message": f"Invalid OAuth access token; {self._echo(headers)}",
                                           "type": "OAuthException", "code": 190}})
                return False

            def _search(self, query, headers):
                if not self._token_ok(query, headers):
                    return
                lon0, lat0, lon1, lat1 = (float(v) for v in query["bbox"].split(","))
                limit = int(query.get("limit", 2000))
                data = []
                for im in api.mly:
                    if lat0 <= im.lat <= lat1 and lon0 <= im.lon <= lon1:
                        item = {"id": im.image_id, "compass_angle": im.compass, "captured_at": im.captured_at_ms,
                                "sequence": im.sequence, "thumb_1024_url": f"{api.url}/thumb/{im.image_id}.jpg?oh=x",
                                "computed_geometry": {"type": "Point", "coordinates": [im.lon, im.lat]},
                                "geometry": {"type": "Point", "coordinates": [
                                    im.raw_lon if im.raw_lon is not None else im.lon,
                                    im.raw_lat if im.raw_lat is not None else im.lat]}}
                        data.append(item)
                self._json(200, {"data": data[:limit]})

            def _thumb(self, query, headers):
                image_id = self.path.split("/thumb/", 1)[1].split(".jpg", 1)[0]
                if image_id not in {im.image_id for im in api.mly}:
                    return self._send(404, b"", "text/plain")
                with api._lock:
                    api.image_hits[(image_id, None)] += 1
                size = api.image_size or (256, 192)
                self._send(200, api._jpeg(size[0], size[1], int(image_id) if image_id.isdigit() else 0),
                           "image/jpeg")

        return Handler
