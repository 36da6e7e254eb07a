"""A position to write (`GpsFix`) and its exact encodings.

Coordinates are quantised once, here, to 1/10000 of an arc second (about 3 mm),
the resolution of the EXIF rationals we write. Everything geospot writes
(EXIF, XMP) and reads back is compared against the quantised value, so
"read back equals written" is an exact check, not a tolerance guess.
"""
from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass

# 1 unit = 1e-4 arc second
_UNITS_PER_DEGREE = 3600 * 10_000
_UNITS_PER_MINUTE = 60 * 10_000
SEC_DENOMINATOR = 10_000


class FixError(ValueError):
    """A position that cannot be written (out of range, not a number)."""


def quantise_deg(value: float) -> float:
    """Round degrees to the grid of the rationals we write (1e-4 arc second)."""
    return round(value * _UNITS_PER_DEGREE) / _UNITS_PER_DEGREE


@dataclass(frozen=True)
class GpsFix:
    """Latitude/longitude (WGS84 degrees), the 90% confidence radius and who estimated it."""

    lat: float
    lon: float
    radius_m: float | None = None  # written as GPSHPositioningError
    method: str = ""  # written as GPSProcessingMethod: the geospot marker

    def __post_init__(self):
        for name in ("lat", "lon"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise FixError(f"{name} {v!r} is not a finite number")
        if not -90.0 <= self.lat <= 90.0:
            raise FixError(f"latitude {self.lat} is outside -90..90")
        if not -180.0 <= self.lon <= 180.0:
            raise FixError(f"longitude {self.lon} is outside -180..180")
        if self.radius_m is not None and (not math.isfinite(self.radius_m) or self.radius_m < 0):
            raise FixError(f"radius {self.radius_m!r} m must be a number >= 0")
        # store the quantised position so every encoding agrees exactly
        object.__setattr__(self, "lat", quantise_deg(float(self.lat)))
        object.__setattr__(self, "lon", quantise_deg(float(self.lon)))

    @property
    def lat_ref(self) -> str:
        return "S" if self.lat < 0 else "N"

    @property
    def lon_ref(self) -> str:
        return "W" if self.lon < 0 else "E"


def to_dms_rationals(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """|value| degrees -> ((deg, 1), (min, 1), (sec * 10000, 10000)), exact on the quantised grid."""
    units = round(abs(value) * _UNITS_PER_DEGREE)
    deg, rem = divmod(units, _UNITS_PER_DEGREE)
    minutes, sec_units = divmod(rem, _UNITS_PER_MINUTE)
    return (deg, 1), (minutes, 1), (sec_units, SEC_DENOMINATOR)


def from_dms_rationals(parts, ref: str | None) -> float | None:
    """((num, den) x 3, 'N'/'S'/'E'/'W') -> signed degrees; None for zero denominators."""
    total = Fraction(0)
    for (num, den), scale in zip(parts, (1, 60, 3600)):
        if den == 0:
            return None
        total += Fraction(num, den * scale)  # exact: a quantised value reads back bit for bit
    return -float(total) if ref in ("S", "W") else float(total)


def to_xmp_coord(value: float, positive: str, negative: str) -> str:
    """XMP's GPSCoordinate "DDD,MM.mmmmmmmK" (degrees, decimal minutes, hemisphere).

    Minutes to 7 decimals (6e-9 degrees) keep the quantised value exactly recoverable."""
    units = round(abs(value) * _UNITS_PER_DEGREE)
    deg, rem = divmod(units, _UNITS_PER_DEGREE)
    minutes = rem / _UNITS_PER_MINUTE
    return f"{deg},{minutes:.7f}{negative if value < 0 else positive}"


def from_xmp_coord(text: str) -> float | None:
    """Parse "DDD,MM.mmK" or "DDD,MM,SSK" (XMP GPSCoordinate); None if malformed."""
    text = text.strip()
    if len(text) < 2 or text[-1].upper() not in "NSEW":
        return None
    ref, body = text[-1].upper(), text[:-1]
    try:
        parts = [float(p) for p in body.split(",")]
    except ValueError:
        return None
    if not 1 <= len(parts) <= 3 or any(not math.isfinite(p) or p < 0 for p in parts):
        return None
    deg = sum(p / s for p, s in zip(parts, (1.0, 60.0, 3600.0)))
    return -deg if ref in "SW" else deg


def same_position(a: tuple[float, float], b: tuple[float, float], tol_deg: float = 1e-7) -> bool:
    """Read-back check: equal up to float rounding of the quantised grid (1e-7 deg ~ 1 cm)."""
    return abs(a[0] - b[0]) <= tol_deg and abs(a[1] - b[1]) <= tol_deg
