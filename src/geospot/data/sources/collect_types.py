"""What the collectors' engine (`geospot.data.sources.collect`) and its sources share: the output
folder's file names, the source API (`Source`, `Location`, `View`) and the errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from geospot.data.sources.http import HttpClient

MANIFEST = "manifest.csv"
JOURNAL = "attempts.jsonl"
SETTINGS = "collect.json"
IMAGES = "images"
TMP = ".tmp"
LOCK = ".lock"
MANIFEST_COLUMNS = ("path", "lat", "lon", "location_id", "heading", "capture_date", "cell", "source_id", "copyright")


# ---------------------------------------------------------------- source API
class FatalSourceError(Exception):
    """The API refuses every further request (denied key, exhausted quota,
    invalid parameters): the run stops. Messages are redacted."""


class LocationError(Exception):
    """One attempt failed (no image, undecodable image, bad response); the run
    goes on and a rerun retries that point."""


@dataclass(frozen=True)
class View:
    """One image of a location. ``url`` may hold a credential: never stored."""

    name: str  # file stem, unique within the collection
    heading_deg: float | None
    url: str


@dataclass
class Location:
    """A place with imagery, as the API reports it (not the sampled point)."""

    source_id: str  # deduplication key: pano id / image id
    location_id: str  # grouping key for splits: pano id / sequence id
    lat: float
    lon: float
    capture_date: str = ""
    copyright: str = ""
    views: list[View] = field(default_factory=list)


class Source(Protocol):
    """What a collector provides to the engine."""

    name: str
    client: HttpClient
    views_per_location: int  # images per location
    requests_per_lookup: int  # requests one lookup costs

    def identity(self) -> dict:
        """Settings that define the collection (checked when resuming)."""

    def lookup(self, lat_deg: float, lon_deg: float) -> list[Location]:
        """Candidates near the point, best first (empty: no imagery)."""

    def fetch(self, view: View) -> bytes:
        """The image bytes of one view."""


class CollectError(Exception):
    """Bad input or an output folder that cannot be resumed."""
