"""Geotag a photo library: write estimated positions into photos that lack them, losslessly and undoably.

- `fix`: the position to write and its exact EXIF/XMP encodings;
- `tiffedit`, `jpeg`: lossless EXIF GPS writes into JPEGs (only the EXIF APP1 segment changes);
- `xmp`: XMP sidecars (`photo.HEIC.xmp`) for everything else;
- `writer`: one verified, logged, atomic write per photo;
- `changelog`: the undo log and `undo`;
- `plan`: which photos need a position, albums, the confidence gate;
- `report`: the review report and the reviewed CSV for `--apply`.

See docs/geotag.md.
"""
from geospot.geotag.changelog import ChangeLog, undo
from geospot.geotag.fix import GpsFix
from geospot.geotag.plan import Proposal, group_photos, plan
from geospot.geotag.writer import existing_gps, write_fix, write_method

__all__ = ["ChangeLog", "GpsFix", "Proposal", "existing_gps", "group_photos", "plan", "undo", "write_fix",
           "write_method"]
