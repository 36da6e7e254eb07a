"""Mapillary (Graph API v4) source for the collector.

For every sample point a small box around it is searched::

    {base}/images?fields=id,computed_geometry,geometry,compass_angle,captured_at,
                         sequence,thumb_1024_url
                 &bbox=minLon,minLat,maxLon,maxLat&limit=N
    -> {"data": [{"id": "...", "computed_geometry": {"type": "Point",
                  "coordinates": [lon, lat]}, "compass_angle": 87.5,
                  "captured_at": 1561718400000, "sequence": "...",
                  "thumb_1024_url": "https://..."}, ...]}

and the images within ``radius_m`` are offered nearest first (the engine
takes the first one not yet collected). ``computed_geometry`` (the
SfM-corrected position) is preferred over the raw GPS ``geometry``;
``compass_angle`` becomes ``heading``, ``captured_at`` (ms since the epoch)
an ISO-8601 UTC ``capture_date``, and ``sequence`` the ``location_id`` so
that images of one drive never straddle a train/test split. The thumbnail
is fetched from its (signed, short-lived) CDN URL without the token.

The token (``MAPILLARY_ACCESS_TOKEN``) is sent as ``Authorization: OAuth
TOKEN`` (default) or as the ``access_token`` query parameter; it is registered
with the HTTP client as a secret and never appears in messages.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import urllib.parse

import numpy as np

from geospot.data.sources.collect_types import FatalSourceError, Location, LocationError, View
from geospot.data.sources.http import HttpClient
from geospot.geo.distance import EARTH_RADIUS_KM, haversine_km

DEFAULT_BASE_URL = "https://graph.mapillary.com"
FIELDS = "id,computed_geometry,geometry,compass_angle,captured_at,sequence,thumb_1024_url"
COPYRIGHT = "Mapillary contributors, CC BY-SA 4.0"
# Graph API error codes for throttling (sent with HTTP 400/403, not only 429).
_THROTTLE_CODES = {4, 17, 32, 613}
_AUTH_CODES = {102, 190, 200, 10}


class MapillarySource:
    """Mapillary images: one location per image id, grouped by sequence."""

    name = "mapillary"
    requests_per_lookup = 1
    views_per_location = 1

    def __init__(self, client: HttpClient, token: str, *, radius_m: float = 100.0, limit: int = 50,
                 auth: str = "header", base_url: str = DEFAULT_BASE_URL):
        if not token:
            raise ValueError("a Mapillary access token is required")
        if auth not in ("header", "query"):
            raise ValueError(f"auth must be 'header' or 'query', got {auth!r}")
        if not 0 < radius_m <= 5000:
            raise ValueError(f"radius must be in (0, 5000] m, got {radius_m}")
        if not 1 <= limit <= 2000:
            raise ValueError(f"limit must be in 1..2000, got {limit}")
        self.client, self._token, self.auth = client, token, auth
        self.client.secrets = tuple({*client.secrets, token})
        self.radius_m, self.limit = float(radius_m), int(limit)
        self.base_url = base_url.rstrip("/")

    def identity(self) -> dict:
        return {"radius_m": self.radius_m}

    def search_url(self, lat_deg: float, lon_deg: float) -> str:
        """The Graph API query for a box of half-side ``radius_m`` around the point."""
        dlat = math.degrees(self.radius_m / 1000.0 / EARTH_RADIUS_KM)
        dlon = dlat / max(math.cos(math.radians(lat_deg)), 1e-6)
        bbox = (max(-180.0, lon_deg - dlon), max(-90.0, lat_deg - dlat),
                min(180.0, lon_deg + dlon), min(90.0, lat_deg + dlat))
        params = {"fields": FIELDS, "bbox": ",".join(f"{v:.7f}" for v in bbox), "limit": str(self.limit)}
        if self.auth == "query":
            params["access_token"] = self._token
        return f"{self.base_url}/images?{urllib.parse.urlencode(params, safe=',')}"

    def lookup(self, lat_deg: float, lon_deg: float) -> list[Location]:
        """Images within ``radius_m`` of the point, nearest first."""
        headers = {"Authorization": f"OAuth {self._token}"} if self.auth == "header" else {}
        resp = self.client.get(self.search_url(lat_deg, lon_deg), headers=headers, retry_if=_throttled)
        where = f"search at {lat_deg:.5f},{lon_deg:.5f}"
        try:
            payload = json.loads(resp.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if resp.status in (401, 403) or code in _AUTH_CODES or (
                isinstance(error, dict) and error.get("type") == "OAuthException" and code not in _THROTTLE_CODES):
            message = error.get("message") if isinstance(error, dict) else self.client.excerpt(resp.body)
            raise FatalSourceError(self.client.redact(
                f"Mapillary refused the access token (HTTP {resp.status}: {message}); "
                "check MAPILLARY_ACCESS_TOKEN"))
        if resp.status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            detail = error.get("message") if isinstance(error, dict) else self.client.excerpt(resp.body)
            raise LocationError(self.client.redact(f"{where}: HTTP {resp.status}: {detail}"))
        candidates = [loc for loc in (self._location(item) for item in payload["data"]) if loc is not None]
        if not candidates:
            return []
        dist_km = haversine_km(lat_deg, lon_deg, np.array([c.lat for c in candidates]),
                               np.array([c.lon for c in candidates]))
        order = [i for i in np.argsort(dist_km, kind="stable") if dist_km[i] * 1000.0 <= self.radius_m]
        return [candidates[i] for i in order]

    @staticmethod
    def _location(item: dict) -> Location | None:
        """A Location from one image record, or None when it lacks what we need."""
        if not isinstance(item, dict) or not item.get("id") or not item.get("thumb_1024_url"):
            return None
        lat_lon = _point(item.get("computed_geometry")) or _point(item.get("geometry"))
        if lat_lon is None:
            return None
        image_id = str(item["id"])
        heading = item.get("compass_angle")
        try:
            heading = float(heading) % 360.0 if heading is not None else None
        except (TypeError, ValueError):
            heading = None
        url = str(item["thumb_1024_url"])
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            return None
        return Location(source_id=image_id, location_id=str(item.get("sequence") or image_id),
                        lat=lat_lon[0], lon=lat_lon[1], capture_date=_iso_utc(item.get("captured_at")),
                        copyright=COPYRIGHT, views=[View(name=image_id, heading_deg=heading, url=url)])

    def fetch(self, view: View) -> bytes:
        # The thumbnail lives on a CDN with its own signed URL: never send the token there.
        resp = self.client.get(view.url)
        if resp.status != 200:
            raise LocationError(self.client.redact(f"image {view.name}: HTTP {resp.status} from the thumbnail URL"))
        ctype = resp.headers.get("content-type", "")
        if ctype and not ctype.startswith("image/"):
            raise LocationError(f"image {view.name}: expected an image, got {ctype}")
        return resp.body


def _point(geometry) -> tuple[float, float] | None:
    """``(lat, lon)`` of a GeoJSON Point, or None."""
    try:
        lon, lat = (float(v) for v in geometry["coordinates"][:2])
    except (TypeError, KeyError, ValueError, IndexError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def _iso_utc(ms) -> str:
    """Milliseconds since the epoch -> ``YYYY-MM-DDTHH:MM:SSZ`` ('' if absent)."""
    try:
        when = dt.datetime.fromtimestamp(float(ms) / 1000.0, tz=dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _throttled(resp) -> str | None:
    """Graph API throttling arrives as HTTP 400/403 with an error code."""
    if resp.status == 200:
        return None
    try:
        code = json.loads(resp.body.decode("utf-8"))["error"]["code"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return f"Mapillary rate limit (error code {code})" if code in _THROTTLE_CODES else None
