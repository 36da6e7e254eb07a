"""XMP sidecars: GPS for files geospot does not edit in place (HEIC, TIFF, PNG, RAW, or --sidecar).

Naming: `photo.HEIC.xmp` (the full file name plus `.xmp`) by default: what
darktable reads and writes, digiKam's default, and exiftool's `%d%f.%e.xmp`;
it cannot collide between `IMG_1.HEIC` and `IMG_1.JPG`. `--sidecar-name stem`
writes `photo.xmp` instead (Lightroom Classic's convention, for RAW files).

Content: the standard XMP-exif GPS properties (`exif:GPSLatitude` in XMP's
"DDD,MM.mmmmmmmK" form, `exif:GPSLongitude`, `exif:GPSMapDatum`,
`exif:GPSHPositioningError` = the 90% confidence radius in metres) plus
`exif:GPSProcessingMethod` naming geospot, its version and the model: the
marker users (and `geospot geotag --undo`) can find. An existing sidecar is
kept: our properties go into one extra `rdf:Description` (valid RDF, read by
exiftool and photo managers); with --overwrite its old GPS properties are
removed first.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import quoteattr

from geospot.geotag.fix import GpsFix, from_xmp_coord, to_xmp_coord

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
EXIF_NS = "http://ns.adobe.com/exif/1.0/"
_GPS_PROPS = ("GPSVersionID", "GPSLatitude", "GPSLongitude", "GPSMapDatum", "GPSHPositioningError",
              "GPSProcessingMethod", "GPSAltitude", "GPSAltitudeRef", "GPSTimeStamp", "GPSDOP")


class SidecarError(ValueError):
    """A sidecar we will not edit (not XML, no rdf:RDF, GPS we cannot replace)."""


def sidecar_path(photo: str | Path, style: str = "ext") -> Path:
    """`photo.HEIC.xmp` (style 'ext') or `photo.xmp` (style 'stem')."""
    p = Path(photo)
    if style == "ext":
        return p.with_name(p.name + ".xmp")
    if style == "stem":
        return p.with_suffix(".xmp")
    raise ValueError(f"sidecar style must be 'ext' or 'stem', got {style!r}")


def _description(fix: GpsFix) -> str:
    attrs = [
        ("exif:GPSVersionID", "2.3.0.0"),
        ("exif:GPSLatitude", to_xmp_coord(fix.lat, "N", "S")),
        ("exif:GPSLongitude", to_xmp_coord(fix.lon, "E", "W")),
        ("exif:GPSMapDatum", "WGS-84"),
    ]
    if fix.radius_m is not None:
        attrs.append(("exif:GPSHPositioningError", f"{round(fix.radius_m)}/1"))
    if fix.method:
        attrs.append(("exif:GPSProcessingMethod", fix.method))
    lines = "".join(f"\n    {k}={quoteattr(v)}" for k, v in attrs)
    return f'  <rdf:Description rdf:about=""\n    xmlns:exif="{EXIF_NS}"{lines}/>\n'


def new_sidecar(fix: GpsFix) -> str:
    from geospot import __version__

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="geospot {__version__}">\n'
        f' <rdf:RDF xmlns:rdf="{RDF}">\n'
        f"{_description(fix)}"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>\n'
    )


def gps_values(xml: str | bytes) -> list[dict]:
    """Every GPS position in an XMP document: [{'lat', 'lon', 'radius_m', 'method'}, ...].

    Raises SidecarError when it is not XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SidecarError(f"not valid XML ({exc})") from None
    found = []
    for desc in root.iter(f"{{{RDF}}}Description"):
        props = {k.split("}", 1)[1]: v for k, v in desc.attrib.items() if k.startswith(f"{{{EXIF_NS}}}")}
        for child in desc:
            if child.tag.startswith(f"{{{EXIF_NS}}}") and child.text:
                props[child.tag.split("}", 1)[1]] = child.text.strip()
        if "GPSLatitude" not in props and "GPSLongitude" not in props:
            continue
        lat = from_xmp_coord(props.get("GPSLatitude", ""))
        lon = from_xmp_coord(props.get("GPSLongitude", ""))
        radius = None
        if "GPSHPositioningError" in props:
            num, _, den = props["GPSHPositioningError"].partition("/")
            try:
                radius = float(num) / float(den or 1)
            except (ValueError, ZeroDivisionError):
                radius = None
        found.append({"lat": lat, "lon": lon, "radius_m": radius, "method": props.get("GPSProcessingMethod", "")})
    return found


def read_sidecar_gps(path: str | Path) -> dict | None:
    """The first usable GPS position in a sidecar file, or None (no file, no GPS)."""
    p = Path(path)
    if not p.is_file():
        return None
    for v in gps_values(p.read_bytes()):
        if v["lat"] is not None and v["lon"] is not None:
            return v
    return None


def _strip_gps(text: str) -> str:
    """Remove exif:GPS* properties (attribute and element forms) for every prefix bound to XMP-exif."""
    prefixes = set(re.findall(r'xmlns:([\w.-]+)\s*=\s*["\']' + re.escape(EXIF_NS) + r'["\']', text))
    names = "|".join(_GPS_PROPS)
    for pre in prefixes:
        p = re.escape(pre)
        text = re.sub(rf'\s{p}:(?:{names})\s*=\s*("[^"]*"|\'[^\']*\')', "", text)
        text = re.sub(rf"<{p}:({names})\b[^>]*/>", "", text)
        text = re.sub(rf"<{p}:({names})\b[^>]*>.*?</{p}:\1\s*>", "", text, flags=re.S)
    return text


def edited_sidecar(existing: str, fix: GpsFix, replace_gps: bool) -> str:
    """`existing` with our GPS description added (old GPS removed first when `replace_gps`).

    Verified before returning: still XML, and its only GPS position is ours."""
    gps_values(existing)  # raises on non-XML
    text = _strip_gps(existing) if replace_gps else existing
    close = text.rfind("</rdf:RDF>")
    if close < 0:
        raise SidecarError("no rdf:RDF element to add GPS to")
    text = text[:close] + _description(fix) + " " + text[close:]
    values = gps_values(text)
    if len(values) != 1:
        raise SidecarError("it already holds GPS that geospot cannot replace safely")
    return text
