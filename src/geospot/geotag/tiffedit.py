"""A minimal TIFF/EXIF IFD editor that adds a GPS IFD without moving any existing byte.

Why our own: general EXIF writers (piexif, Pillow) re-serialise the whole
block, which moves MakerNotes whose internal offsets are absolute, silently
corrupting them (and Pillow drops tags it cannot type). Here the original TIFF
block is kept byte for byte and only *appended to*:

- a new GPS IFD goes at the end of the block (word aligned);
- if IFD0 already points to a GPS IFD, that 4-byte pointer is patched in place
  (the old GPS IFD stays behind, unreferenced);
- otherwise a copy of IFD0 with one more entry (GPSInfo) is appended and the
  header's 4-byte IFD0 offset is patched. IFD0's out-of-line values stay where
  they are: their offsets are absolute, so the copy still points at them.

So the only bytes that change in the old block are 4 (one pointer), and
everything the camera wrote, MakerNote included, keeps its offset.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from geospot.geotag.fix import GpsFix, from_dms_rationals, to_dms_rationals

GPS_IFD_TAG = 0x8825
# bytes per value of each TIFF field type (1 BYTE .. 13 IFD)
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 1, 2, 3, 4, 5, 7, 10
# GPS tags geospot sets (others already in a GPS IFD are carried over)
GPS_VERSION, LAT_REF, LAT, LON_REF, LON, MAP_DATUM, PROCESSING_METHOD, H_ERROR = 0, 1, 2, 3, 4, 0x12, 0x1B, 0x1F
OURS = {GPS_VERSION, LAT_REF, LAT, LON_REF, LON, MAP_DATUM, PROCESSING_METHOD, H_ERROR}
_ASCII_PREFIX = b"ASCII\x00\x00\x00"  # EXIF character code of an UNDEFINED text tag


class ExifError(ValueError):
    """An EXIF/TIFF block we will not edit (malformed offsets, unknown byte order)."""


@dataclass(frozen=True)
class Entry:
    tag: int
    type: int
    count: int
    field: bytes  # the 4-byte value-or-offset field, in the block's byte order


class TiffBlock:
    """Read-only view of a TIFF block (the payload of an EXIF APP1 after 'Exif\\0\\0')."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        if len(self.data) < 8:
            raise ExifError("EXIF block shorter than a TIFF header")
        order = self.data[:2]
        if order == b"II":
            self.e = "<"
        elif order == b"MM":
            self.e = ">"
        else:
            raise ExifError(f"unknown TIFF byte order {order!r}")
        if self._u16(2) != 42:
            raise ExifError("TIFF header magic is not 42")
        self.ifd0_offset = self._u32(4)
        self.ifd0, self.ifd0_next = self.read_ifd(self.ifd0_offset)

    def _u16(self, off: int) -> int:
        return struct.unpack_from(self.e + "H", self.data, off)[0]

    def _u32(self, off: int) -> int:
        return struct.unpack_from(self.e + "I", self.data, off)[0]

    def read_ifd(self, offset: int) -> tuple[list[Entry], int]:
        """Entries and next-IFD offset of the IFD at `offset` (bounds checked)."""
        if offset < 8 or offset + 2 > len(self.data):
            raise ExifError(f"IFD offset {offset} outside the {len(self.data)}-byte EXIF block")
        n = self._u16(offset)
        end = offset + 2 + 12 * n + 4
        if end > len(self.data):
            raise ExifError(f"IFD at {offset} with {n} entries runs past the EXIF block")
        entries = []
        for i in range(n):
            p = offset + 2 + 12 * i
            tag, typ, count = struct.unpack_from(self.e + "HHI", self.data, p)
            entries.append(Entry(tag, typ, count, self.data[p + 8:p + 12]))
        return entries, self._u32(end - 4)

    def value(self, entry: Entry) -> bytes:
        """The raw value bytes of an entry (inline or out of line)."""
        size = TYPE_SIZES.get(entry.type, 1) * entry.count
        if size <= 4:
            return entry.field[:size]
        off = struct.unpack(self.e + "I", entry.field)[0]
        if off + size > len(self.data):
            raise ExifError(f"tag 0x{entry.tag:04x} value runs past the EXIF block")
        return self.data[off:off + size]

    def gps_entry_index(self) -> int | None:
        for i, entry in enumerate(self.ifd0):
            if entry.tag == GPS_IFD_TAG:
                return i
        return None

    def gps_entries(self) -> list[Entry]:
        """The GPS IFD's entries ([] when there is none)."""
        i = self.gps_entry_index()
        if i is None:
            return []
        off = struct.unpack(self.e + "I", self.ifd0[i].field)[0]
        return self.read_ifd(off)[0]

    def _rationals(self, entry: Entry) -> list[tuple[int, int]]:
        raw = self.value(entry)
        fmt = self.e + ("ii" if entry.type == SRATIONAL else "II")  # some phones write signed rationals
        return [struct.unpack_from(fmt, raw, 8 * k) for k in range(entry.count)]

    def _text(self, entry: Entry) -> str:
        raw = self.value(entry)
        if entry.type == UNDEFINED and raw[:8] in (_ASCII_PREFIX, b"\x00" * 8):
            raw = raw[8:]
        return raw.split(b"\x00", 1)[0].decode("latin-1").strip()

    def read_gps(self) -> dict | None:
        """{'lat', 'lon', 'radius_m', 'method'} from the GPS IFD, or None without a usable position."""
        try:
            tags = {e.tag: e for e in self.gps_entries()}
            if LAT not in tags or LON not in tags or {tags[LAT].type, tags[LON].type} - {RATIONAL, SRATIONAL}:
                return None
            lat_ref = self._text(tags[LAT_REF]) if LAT_REF in tags else "N"
            lon_ref = self._text(tags[LON_REF]) if LON_REF in tags else "E"
            lat = from_dms_rationals(self._rationals(tags[LAT])[:3], lat_ref)
            lon = from_dms_rationals(self._rationals(tags[LON])[:3], lon_ref)
            radius = None
            if H_ERROR in tags and tags[H_ERROR].type in (RATIONAL, SRATIONAL):
                num, den = self._rationals(tags[H_ERROR])[0]
                radius = num / den if den else None
            method = self._text(tags[PROCESSING_METHOD]) if PROCESSING_METHOD in tags else ""
        except (ExifError, struct.error, UnicodeDecodeError):
            return None
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return None
        return {"lat": lat, "lon": lon, "radius_m": radius, "method": method}


def _pack_entries(e: str, entries: list[Entry], next_offset: int) -> bytes:
    body = struct.pack(e + "H", len(entries))
    for entry in entries:
        body += struct.pack(e + "HHI", entry.tag, entry.type, entry.count) + entry.field
    return body + struct.pack(e + "I", next_offset)


def _insert_sorted(entries: list[Entry], new: Entry) -> list[Entry]:
    """Insert before the first larger tag: ascending stays ascending (as TIFF wants), and a
    camera's unsorted IFD keeps its own order (readers that take the first duplicate agree)."""
    at = next((i for i, x in enumerate(entries) if x.tag > new.tag), len(entries))
    return entries[:at] + [new] + entries[at:]


def _gps_values(fix: GpsFix, e: str) -> list[tuple[int, int, int, bytes]]:
    """(tag, type, count, value bytes) of the GPS tags geospot writes."""
    def rationals(pairs) -> bytes:
        return b"".join(struct.pack(e + "II", n, d) for n, d in pairs)

    values = [
        (GPS_VERSION, BYTE, 4, bytes([2, 3, 0, 0])),
        (LAT_REF, ASCII, 2, fix.lat_ref.encode() + b"\x00"),
        (LAT, RATIONAL, 3, rationals(to_dms_rationals(fix.lat))),
        (LON_REF, ASCII, 2, fix.lon_ref.encode() + b"\x00"),
        (LON, RATIONAL, 3, rationals(to_dms_rationals(fix.lon))),
        (MAP_DATUM, ASCII, 7, b"WGS-84\x00"),
    ]
    if fix.method:
        text = _ASCII_PREFIX + fix.method.encode("ascii", "replace")
        values.append((PROCESSING_METHOD, UNDEFINED, len(text), text))
    if fix.radius_m is not None:
        values.append((H_ERROR, RATIONAL, 1, rationals([(min(round(fix.radius_m), 2**32 - 1), 1)])))
    return values


def build_gps_ifd(fix: GpsFix, e: str, at: int, keep: list[Entry] = ()) -> bytes:
    """A GPS IFD placed at absolute offset `at`, its out-of-line values right after it.

    `keep`: entries of an existing GPS IFD to carry over (altitude, timestamps...):
    their fields are copied verbatim, so their out-of-line values stay valid."""
    values = _gps_values(fix, e)
    carried = [k for k in keep if k.tag not in OURS]
    n = len(values) + len(carried)
    data_at = at + 2 + 12 * n + 4
    entries, blob = list(carried), b""
    for tag, typ, count, raw in values:
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field = struct.pack(e + "I", data_at + len(blob))
            blob += raw + (b"\x00" if len(raw) % 2 else b"")  # keep values word aligned
        entries.append(Entry(tag, typ, count, field))
    return _pack_entries(e, sorted(entries, key=lambda x: x.tag), 0) + blob


def add_gps(tiff: bytes, fix: GpsFix) -> bytes:
    """The TIFF block with a GPS IFD for `fix`; every existing byte kept except one 4-byte pointer."""
    block = TiffBlock(tiff)
    e = block.e
    out = bytearray(tiff)
    if len(out) % 2:
        out += b"\x00"
    keep = block.gps_entries() if block.gps_entry_index() is not None else []
    gps_at = len(out)
    out += build_gps_ifd(fix, e, gps_at, keep)
    i = block.gps_entry_index()
    if i is not None:
        # patch the existing GPSInfo entry in place: type LONG, count 1, new offset
        p = block.ifd0_offset + 2 + 12 * i
        struct.pack_into(e + "HHI", out, p, GPS_IFD_TAG, LONG, 1)
        struct.pack_into(e + "I", out, p + 8, gps_at)
    else:
        if len(out) % 2:
            out += b"\x00"
        ifd0_at = len(out)
        pointer = Entry(GPS_IFD_TAG, LONG, 1, struct.pack(e + "I", gps_at))
        out += _pack_entries(e, _insert_sorted(block.ifd0, pointer), block.ifd0_next)
        struct.pack_into(e + "I", out, 4, ifd0_at)
    return bytes(out)


def new_tiff_with_gps(fix: GpsFix) -> bytes:
    """A fresh big-endian TIFF block holding only IFD0 -> GPS IFD (for a JPEG without EXIF)."""
    e = ">"
    ifd0 = 8
    gps_at = ifd0 + 2 + 12 + 4
    head = b"MM" + struct.pack(">HI", 42, ifd0)
    pointer = Entry(GPS_IFD_TAG, LONG, 1, struct.pack(e + "I", gps_at))
    return head + _pack_entries(e, [pointer], 0) + build_gps_ifd(fix, e, gps_at)
