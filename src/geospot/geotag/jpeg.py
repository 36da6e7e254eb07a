"""Lossless GPS writes into JPEG files: only the EXIF APP1 segment changes.

A JPEG is SOI, marker segments (APPn, DQT, SOF, DHT, ...), then SOS and the
entropy-coded pixel data. We parse the segments up to SOS, edit (or insert) the
one APP1 segment that starts with "Exif\\0\\0" and splice it back: every other
byte of the file, pixel data included, is copied unchanged. The change is
described by (offset, old segment, new segment), which is all the undo log
needs to restore the original bytes exactly.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from geospot.geotag.fix import GpsFix
from geospot.geotag.tiffedit import ExifError, TiffBlock, add_gps, new_tiff_with_gps

EXIF_HEADER = b"Exif\x00\x00"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
MAX_SEGMENT_PAYLOAD = 65535 - 2  # the 16-bit length field counts itself
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))  # TEM, RST0-7: markers without a length


class JpegError(ValueError):
    """A JPEG we will not edit (not a JPEG, truncated headers, EXIF too big)."""


@dataclass(frozen=True)
class Segment:
    marker: int
    start: int  # offset of the 0xFF byte
    end: int  # offset just past the segment

    def payload(self, data: bytes) -> bytes:
        return data[self.start + 4:self.end]


@dataclass(frozen=True)
class Splice:
    """Replace data[offset:offset+len(old)] with new (old == b'' for an insertion)."""

    offset: int
    old: bytes
    new: bytes

    def apply(self, data: bytes) -> bytes:
        if data[self.offset:self.offset + len(self.old)] != self.old:
            raise JpegError("file does not hold the expected segment at the logged offset")
        return data[:self.offset] + self.new + data[self.offset + len(self.old):]

    def revert(self, data: bytes) -> bytes:
        if data[self.offset:self.offset + len(self.new)] != self.new:
            raise JpegError("file does not hold the segment geospot wrote at the logged offset")
        return data[:self.offset] + self.old + data[self.offset + len(self.new):]


def is_jpeg(head: bytes) -> bool:
    return head[:3] == b"\xff\xd8\xff"


def segments(data: bytes) -> list[Segment]:
    """Marker segments from SOI up to and including SOS (pixel data is not parsed)."""
    if not is_jpeg(data):
        raise JpegError("not a JPEG (no SOI marker)")
    out = [Segment(0xD8, 0, 2)]
    pos = 2
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise JpegError(f"broken JPEG header: expected a marker at byte {pos}")
        start = pos
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            raise JpegError("JPEG ends inside its headers")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            out.append(Segment(marker, start, pos))
            continue
        if marker == 0xD9:
            raise JpegError("JPEG ends (EOI) before any image data")
        if pos + 2 > len(data):
            raise JpegError("JPEG ends inside its headers")
        length = struct.unpack_from(">H", data, pos)[0]
        if length < 2 or pos + length > len(data):
            raise JpegError(f"JPEG segment 0xFF{marker:02X} at byte {start} runs past the end of the file")
        pos += length
        out.append(Segment(marker, start, pos))
        if marker == 0xDA:  # SOS: what follows is entropy-coded data
            return out


def exif_segment(data: bytes, segs: list[Segment] | None = None) -> Segment | None:
    """The first APP1 segment holding EXIF (the one readers use), or None."""
    for seg in segs if segs is not None else segments(data):
        if seg.marker == 0xE1 and seg.payload(data).startswith(EXIF_HEADER):
            return seg
    return None


def read_exif_gps(data: bytes) -> dict | None:
    """GPS position in the JPEG's EXIF ({'lat', 'lon', 'radius_m', 'method'}) or None."""
    try:
        seg = exif_segment(data)
    except JpegError:  # broken headers: no readable position (and no write will be attempted)
        return None
    if seg is None:
        return None
    try:
        return TiffBlock(seg.payload(data)[len(EXIF_HEADER):]).read_gps()
    except ExifError:
        return None


def xmp_packets(data: bytes) -> list[bytes]:
    """Embedded XMP packets (APP1 'http://ns.adobe.com/xap/1.0/')."""
    return [s.payload(data)[len(XMP_HEADER):] for s in segments(data)
            if s.marker == 0xE1 and s.payload(data).startswith(XMP_HEADER)]


def _app1(payload: bytes) -> bytes:
    if len(payload) > MAX_SEGMENT_PAYLOAD:
        raise JpegError(
            f"EXIF would grow to {len(payload) + 2} bytes, over the 64 KB APP1 limit (use --sidecar)")
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def gps_splice(data: bytes, fix: GpsFix) -> Splice:
    """The one change that writes `fix` into this JPEG's EXIF (nothing else moves)."""
    segs = segments(data)
    seg = exif_segment(data, segs)
    if seg is not None:
        try:
            tiff = add_gps(seg.payload(data)[len(EXIF_HEADER):], fix)
        except (ExifError, struct.error) as exc:
            raise JpegError(f"EXIF block cannot be edited safely: {exc}") from None
        return Splice(seg.start, data[seg.start:seg.end], _app1(EXIF_HEADER + tiff))
    # no EXIF: a new APP1 right after SOI, or after the JFIF APP0 segments (JFIF wants APP0 first)
    at = 2
    for s in segs[1:]:
        if s.marker != 0xE0:
            break
        at = s.end
    return Splice(at, b"", _app1(EXIF_HEADER + new_tiff_with_gps(fix)))
