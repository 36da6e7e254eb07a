"""Google Street View Static API source for the collector.

For every sample point the metadata endpoint is asked first (free of charge
and quota at Google)::

    {base}/metadata?location=LAT,LNG&radius=R&source=outdoor&key=KEY
    -> {"status": "OK", "pano_id": ..., "location": {"lat": .., "lng": ..},
        "date": "YYYY-MM", "copyright": "© Google"}

and only where the status is ``OK`` one image per heading is fetched::

    {base}?pano=PANO_ID&size=WxH&heading=H&fov=F&pitch=P&return_error_code=true&key=KEY

(``return_error_code=true`` makes a missing image an HTTP error instead of a
grey placeholder). Statuses: ``ZERO_RESULTS``/``NOT_FOUND`` mean no imagery
near the point; ``OVER_QUERY_LIMIT`` and ``UNKNOWN_ERROR`` are retried with
backoff (the first stops the run once retries are spent); ``REQUEST_DENIED``
(bad key, API not enabled) and ``INVALID_REQUEST`` stop the run. An optional
URL-signing secret adds Google's ``signature`` parameter.

The key comes from the caller (the CLI reads ``GOOGLE_MAPS_API_KEY``); it is
registered with the HTTP client as a secret and never appears in messages.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import urllib.parse
from typing import Sequence

from geospot.data.sources.collect_types import FatalSourceError, Location, LocationError, View
from geospot.data.sources.http import HttpClient, HttpError

DEFAULT_BASE_URL = "https://maps.googleapis.com/maps/api/streetview"
DEFAULT_HEADINGS = (0.0, 90.0, 180.0, 270.0)
_NO_IMAGERY = {"ZERO_RESULTS", "NOT_FOUND"}
_RETRY = {"OVER_QUERY_LIMIT", "UNKNOWN_ERROR"}


def sign_url(url: str, secret: str) -> str:
    """Append Google's URL ``signature`` (HMAC-SHA1 of path and query with the
    URL-safe base64 signing secret)."""
    parts = urllib.parse.urlsplit(url)
    try:
        key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except ValueError:
        raise ValueError("the URL signing secret is not URL-safe base64") from None
    digest = hmac.new(key, f"{parts.path}?{parts.query}".encode("utf-8"), hashlib.sha1).digest()
    return f"{url}&signature={base64.urlsafe_b64encode(digest).decode('ascii')}"


def parse_size(text: str) -> tuple[int, int]:
    """``"640x640"`` -> ``(640, 640)``; Google serves at most 640 px a side."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 640x640), got {text!r}") from None
    if not (1 <= w <= 640 and 1 <= h <= 640):
        raise ValueError(f"size {w}x{h} out of range: the Street View Static API serves 1..640 px a side")
    return w, h


class StreetViewSource:
    """Street View panoramas: one location per pano id, one view per heading."""

    name = "streetview"
    requests_per_lookup = 1

    def __init__(self, client: HttpClient, key: str, *, headings_deg: Sequence[float] = DEFAULT_HEADINGS,
                 size: tuple[int, int] = (640, 640), fov_deg: float = 90.0, pitch_deg: float = 0.0,
                 radius_m: float = 50.0, outdoor_only: bool = True, base_url: str = DEFAULT_BASE_URL,
                 signing_secret: str | None = None):
        if not key:
            raise ValueError("a Google Maps API key is required")
        if not headings_deg:
            raise ValueError("at least one heading is required")
        for h in headings_deg:
            if not (math.isfinite(h) and 0.0 <= h <= 360.0):
                raise ValueError(f"heading {h} out of range [0, 360]")
        if len(set(headings_deg)) != len(headings_deg):
            raise ValueError(f"headings repeat: {list(headings_deg)}")
        if not 10.0 <= fov_deg <= 120.0:
            raise ValueError(f"fov {fov_deg} out of range: the API accepts 10..120 degrees")
        if not -90.0 <= pitch_deg <= 90.0:
            raise ValueError(f"pitch {pitch_deg} out of range [-90, 90]")
        if not radius_m > 0:
            raise ValueError(f"radius must be > 0 m, got {radius_m}")
        self.client, self._key, self._secret = client, key, signing_secret
        self.client.secrets = tuple({*client.secrets, key, *((signing_secret,) if signing_secret else ())})
        self.headings_deg = tuple(float(h) for h in headings_deg)
        self.size, self.fov_deg, self.pitch_deg = size, float(fov_deg), float(pitch_deg)
        self.radius_m, self.outdoor_only = float(radius_m), outdoor_only
        self.base_url = base_url.rstrip("/")
        self.views_per_location = len(self.headings_deg)

    def identity(self) -> dict:
        return {"headings_deg": list(self.headings_deg), "size": f"{self.size[0]}x{self.size[1]}",
                "fov_deg": self.fov_deg, "pitch_deg": self.pitch_deg, "radius_m": self.radius_m,
                "outdoor_only": self.outdoor_only}

    def _url(self, path: str, params: dict) -> str:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode({**params, 'key': self._key})}"
        return sign_url(url, self._secret) if self._secret else url

    def lookup(self, lat_deg: float, lon_deg: float) -> list[Location]:
        """The pano nearest the point within ``radius_m`` (empty if none)."""
        params = {"location": f"{lat_deg:.7f},{lon_deg:.7f}", "radius": f"{self.radius_m:g}"}
        if self.outdoor_only:
            params["source"] = "outdoor"
        try:
            resp = self.client.get(self._url("/metadata", params), retry_if=_retryable_status)
        except HttpError as exc:
            if "OVER_QUERY_LIMIT" in exc.reason:
                raise FatalSourceError(
                    "Google answers OVER_QUERY_LIMIT: the key's quota or rate limit is spent; "
                    "lower --rate or wait for the quota to reset, then rerun to resume") from None
            raise
        if resp.status in (401, 403):
            raise FatalSourceError(f"HTTP {resp.status} from the metadata endpoint: {_describe(self.client, resp.body)}; "
                                   "check the key and that the Street View Static API is enabled")
        try:
            meta = json.loads(resp.body.decode("utf-8"))
            status = meta["status"]
        except (ValueError, KeyError, TypeError):
            raise LocationError(f"metadata at {lat_deg:.5f},{lon_deg:.5f}: HTTP {resp.status}, "
                                f"not a metadata JSON: {_describe(self.client, resp.body)}") from None
        if status == "OK":
            return [self._location(meta, lat_deg, lon_deg)]
        if status in _NO_IMAGERY:
            return []
        detail = self.client.redact(f"{status}: {meta.get('error_message', '')}".rstrip(": "))
        if status == "REQUEST_DENIED":
            raise FatalSourceError(f"Google denied the request ({detail}); check that the key is valid, "
                                   "billing is set up and the Street View Static API is enabled")
        if status == "INVALID_REQUEST":
            raise FatalSourceError(f"Google rejected the request parameters ({detail})")
        raise LocationError(f"metadata at {lat_deg:.5f},{lon_deg:.5f}: {detail}")

    def _location(self, meta: dict, lat_deg: float, lon_deg: float) -> Location:
        try:
            pano = str(meta["pano_id"])
            lat, lon = float(meta["location"]["lat"]), float(meta["location"]["lng"])
        except (KeyError, TypeError, ValueError):
            raise LocationError(f"metadata at {lat_deg:.5f},{lon_deg:.5f}: status OK without "
                                "pano_id/location") from None
        if not pano or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise LocationError(f"metadata at {lat_deg:.5f},{lon_deg:.5f}: bad pano_id/location")
        w, h = self.size
        views = [View(name=f"{pano}_h{_heading_tag(heading)}", heading_deg=heading,
                      url=self._url("", {"pano": pano, "size": f"{w}x{h}", "heading": f"{heading:g}",
                                         "fov": f"{self.fov_deg:g}", "pitch": f"{self.pitch_deg:g}",
                                         "return_error_code": "true"}))
                 for heading in self.headings_deg]
        return Location(source_id=pano, location_id=pano, lat=lat, lon=lon,
                        capture_date=str(meta.get("date") or ""), copyright=str(meta.get("copyright") or ""),
                        views=views)

    def fetch(self, view: View) -> bytes:
        resp = self.client.get(view.url)
        if resp.status in (401, 403):
            raise FatalSourceError(f"HTTP {resp.status} from the image endpoint: {_describe(self.client, resp.body)}; "
                                   "check the key and that the Street View Static API is enabled")
        if resp.status != 200:
            raise LocationError(f"image {view.name}: HTTP {resp.status}: {_describe(self.client, resp.body)}")
        ctype = resp.headers.get("content-type", "")
        if ctype and not ctype.startswith("image/"):
            raise LocationError(f"image {view.name}: expected an image, got {ctype}: {_describe(self.client, resp.body)}")
        return resp.body


def _heading_tag(heading: float) -> str:
    return f"{int(heading):03d}" if float(heading).is_integer() else f"{heading:g}"


def _retryable_status(resp) -> str | None:
    """Google reports quota/transient trouble inside a 200 JSON body."""
    if resp.status != 200:
        return None
    try:
        status = json.loads(resp.body.decode("utf-8")).get("status")
    except (ValueError, AttributeError):
        return None
    return status if status in _RETRY else None


def _describe(client: HttpClient, body: bytes) -> str:
    """A short, printable, redacted excerpt of an error body."""
    text = body[:65536].decode("utf-8", "replace").strip()
    try:
        data = json.loads(body.decode("utf-8"))
        if isinstance(data, dict):
            text = str(data.get("error_message") or data.get("status") or text)
    except (ValueError, UnicodeDecodeError):
        pass
    # redact the whole text before cutting it: a key echoed across the cut must not half-survive
    text = client.redact(" ".join(text.split()))
    return (text if len(text) <= 200 else text[:200] + "...") or "(empty body)"
