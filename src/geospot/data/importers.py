"""Turn photo folders and public benchmark files into geospot manifests.

Two kinds of input:
- a folder of geotagged photos (JPEG, HEIC/HEIF, TIFF, ...), searched
  recursively, positions read from GPS EXIF (`import_exif_folder`);
- a benchmark's coordinate CSV: Im2GPS / Im2GPS3k, YFCC4k / YFCC26k (the
  GeoEstimation layout), OSV-5M, GeoCLIP, or any CSV with a column mapping
  (`import_csv`).

Nothing is dropped silently: every file or row that cannot be imported is kept
in `ImportResult.rejected` with its reason, and `write_import` writes them to a
side report (CSV) next to the manifest.
"""
from __future__ import annotations

import csv
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "FORMATS",
    "DatasetImportError",
    "ImportResult",
    "PHOTO_EXTENSIONS",
    "import_csv",
    "import_exif_folder",
    "parse_column_map",
    "read_datetime_original",
    "write_import",
]

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".heic", ".heif", ".hif", ".tif", ".tiff", ".png", ".webp"})

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011
_DATETIME = 0x0132  # IFD0 "DateTime" (last modification), the fallback some cameras fill alone


class DatasetImportError(ValueError):
    """An input that cannot be imported at all (unknown format, missing columns, no file)."""


@dataclass
class ImportResult:
    """Imported rows (`records`: dicts with path, lat, lon and extra fields) and the
    rejected inputs (`rejected`: dicts with `path`, `reason`, and `row` for CSVs)."""

    records: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    root: Path | None = None

    def summary(self) -> str:
        return f"{len(self.records)} imported, {len(self.rejected)} rejected"


# ---------------------------------------------------------------- EXIF folders


def read_datetime_original(path: str | os.PathLike) -> str | None:
    """The photo's capture time as ISO 8601 (`YYYY-MM-DDTHH:MM:SS[+HH:MM]`) from
    EXIF DateTimeOriginal (else IFD0 DateTime), or None when absent or malformed."""
    from PIL import Image

    from geospot.data.images import _register_heif  # HEIC needs the opener registered

    _register_heif()
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
            raw = sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
            offset = sub.get(_OFFSET_TIME_ORIGINAL)
    except Exception:
        return None
    return _exif_datetime_to_iso(raw, offset)


def _exif_datetime_to_iso(raw, offset=None) -> str | None:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "ignore")
    if not isinstance(raw, str):
        return None
    raw = raw.strip("\x00 ")
    # EXIF writes "YYYY:MM:DD HH:MM:SS"; cameras without a clock write zeros or blanks.
    try:
        date, time = raw.split(" ", 1)
        y, mo, d = (int(v) for v in date.split(":"))
        h, mi, s = (int(float(v)) for v in time.strip().split(":")[:3])
    except (ValueError, TypeError):
        return None
    if not (1 <= mo <= 12 and 1 <= d <= 31 and y >= 1800 and 0 <= h < 24 and 0 <= mi < 60 and 0 <= s < 61):
        return None
    iso = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    if isinstance(offset, bytes):
        offset = offset.decode("ascii", "ignore")
    if isinstance(offset, str) and len(offset.strip("\x00 ")) == 6 and offset[0] in "+-":
        iso += offset.strip("\x00 ")
    return iso


def _list_files(root: Path, recursive: bool) -> tuple[list[Path], list[dict]]:
    """Regular files, and a rejection (path, reason) for each broken link, FIFO or unreadable folder."""
    from geospot.data.scan import scan_folder

    files, skipped = scan_folder(root, recursive=recursive)
    return [Path(f) for f in files], [{"path": p, "reason": reason} for p, reason in skipped]


def _import_one_photo(path: Path, verify: bool) -> tuple[dict | None, str | None]:
    """(record, None) for a usable geotagged photo, else (None, reason)."""
    from geospot.data.images import ImageError, open_image, read_gps_exif

    try:
        pos = read_gps_exif(path)
    except ImageError as exc:
        return None, exc.reason
    except Exception as exc:  # a reader bug must not stop a batch; report it with the file
        return None, f"cannot read EXIF ({type(exc).__name__}: {exc})"
    if pos is None:
        if verify:  # say so too when the file is broken: the user may want to repair it
            try:
                open_image(path).close()
            except ImageError as exc:
                return None, f"no usable GPS position in EXIF, and the image cannot be decoded: {exc.reason}"
        return None, "no usable GPS position in EXIF"
    if verify:
        try:
            open_image(path).close()
        except ImageError as exc:
            return None, f"has GPS but the image cannot be decoded: {exc.reason}"
    lat, lon = pos
    return {"path": str(path.resolve()), "lat": float(lat), "lon": float(lon),
            "datetime_original": read_datetime_original(path) or ""}, None


def _utf8_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def import_exif_folder(
    root: str | os.PathLike,
    recursive: bool = True,
    verify: bool = True,
    workers: int = 2,
    progress: bool = True,
) -> ImportResult:
    """Import every geotagged photo under `root`.

    Photos with a GPS position become records (`path`, `lat`, `lon`,
    `datetime_original`); everything else (no GPS, unreadable, not a photo
    type) is listed in `rejected` with the reason. `verify=True` also decodes
    each geotagged photo, so truncated files are caught here.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetImportError(f"{root}: not a folder")
    files, skipped = _list_files(root, recursive)
    result = ImportResult(root=root.resolve())
    result.rejected.extend(skipped)
    photos = []
    for p in files:
        if not _utf8_name(p):  # a manifest is UTF-8 text: such a name could not be written (or read back)
            result.rejected.append({"path": str(p), "reason": "file name is not valid UTF-8; rename the file"})
        elif p.suffix.lower() in PHOTO_EXTENSIONS:
            photos.append(p)
        else:
            result.rejected.append({"path": str(p), "reason": f"not a photo file type ({p.suffix or 'no extension'})"})
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = pool.map(lambda p: _import_one_photo(p, verify), photos)
        for p, (record, reason) in zip(photos, tqdm(outcomes, total=len(photos), desc="reading EXIF",
                                                     unit="file", file=sys.stderr, disable=not progress)):
            if record is None:
                result.rejected.append({"path": str(p), "reason": reason})
            else:
                result.records.append(record)
    result.rejected.sort(key=lambda r: r["path"])
    return result


# ---------------------------------------------------------------- benchmark CSVs


@dataclass(frozen=True)
class CsvFormat:
    """Where a benchmark keeps image ids and coordinates (first matching column wins,
    case-insensitive) and how an image id becomes a file name."""

    name: str
    path: tuple[str, ...]
    lat: tuple[str, ...]
    lon: tuple[str, ...]
    location_id: tuple[str, ...] = ()
    suffix: str = ""  # appended to ids that have no extension (OSV-5M ids are bare numbers)
    description: str = ""


_LAT = ("lat", "latitude", "gps_lat")
_LON = ("lon", "lng", "long", "longitude", "gps_lon", "gps_long")

FORMATS: dict[str, CsvFormat] = {
    "im2gps": CsvFormat("im2gps", ("img_id", "image_id", "img", "image"), _LAT, _LON, suffix=".jpg",
                        description="Im2GPS / Im2GPS3k: IMG_ID,AUTHOR,LAT,LON[,...] (or image_id,author,lat,lon)"),
    "yfcc": CsvFormat("yfcc", ("img_id", "image_id", "photo_id", "id"), _LAT, _LON, suffix=".jpg",
                      description="YFCC4k / YFCC26k / MP-16 (GeoEstimation layout): IMG_ID,AUTHOR,LAT,LON,S3_Label,..."),
    "osv5m": CsvFormat("osv5m", ("id",), _LAT, _LON, suffix=".jpg",
                       description="OSV-5M: id,latitude,longitude,...,country,region,sub-region,city; images/{split}/{id}.jpg"),
    "geoclip": CsvFormat("geoclip", ("img_file", "image_file", "img_path"), _LAT, _LON,
                         description="GeoCLIP: IMG_FILE,LAT,LON"),
}


def parse_column_map(spec: str, required: tuple[str, ...] = ("path", "lat", "lon")) -> dict[str, str]:
    """`"path=IMG,lat=LATITUDE,lon=LNG[,location_id=PLACE]"` -> {geospot field: CSV column}.
    `required`: fields the mapping must name (none when a known format supplies them)."""
    allowed = {"path", "lat", "lon", "location_id", "view", "heading", "split"}
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, column = part.partition("=")
        key, column = key.strip(), column.strip()
        if not sep or not key or not column:
            raise DatasetImportError(f"bad column mapping {part!r}: expected FIELD=COLUMN, e.g. lat=LATITUDE")
        if key not in allowed:
            raise DatasetImportError(f"bad column mapping {part!r}: field must be one of {sorted(allowed)}")
        mapping[key] = column
    missing = set(required) - mapping.keys()
    if missing:
        raise DatasetImportError(f"column mapping {spec!r} lacks {sorted(missing)} (need path, lat and lon)")
    return mapping


def _pick(columns: list[str], candidates: tuple[str, ...], what: str, fmt: str, source: Path) -> str:
    by_lower = {c.lower().strip(): c for c in columns}
    for cand in candidates:
        if cand in by_lower:
            return by_lower[cand]
    raise DatasetImportError(
        f"{source}: no {what} column for format {fmt!r} (looked for {', '.join(candidates)}; "
        f"the file has {', '.join(columns)}); use format 'csv' with --map to name it"
    )


class _ImageFinder:
    """Find an image by its id under a folder: the id as a relative path first, then
    (built once, lazily) an index of every file below the folder by name and stem."""

    def __init__(self, folder: Path | None, suffix: str):
        self.folder = folder
        self.suffix = suffix
        self._by_name: dict[str, Path] | None = None

    def candidates(self, image_id: str) -> list[Path]:
        base = self.folder or Path(".")
        first = base / image_id
        out = [first]
        if self.suffix and not Path(image_id).suffix:
            out.append(base / (image_id + self.suffix))
        return out

    def find(self, image_id: str) -> Path | None:
        for cand in self.candidates(image_id):
            if cand.is_file():
                return cand
        if self.folder is None or not self.folder.is_dir():
            return None
        if self._by_name is None:
            self._by_name = {}
            for p in self.folder.rglob("*"):
                if p.is_file():
                    self._by_name.setdefault(p.name, p)
                    self._by_name.setdefault(p.stem, p)
        name = Path(image_id).name
        return self._by_name.get(name) or self._by_name.get(name + self.suffix if self.suffix else name)


def _default_images_dir(fmt: str, source: Path) -> Path:
    if fmt == "osv5m":  # OSV-5M ships train.csv / test.csv beside images/train, images/test
        return source.parent / "images" / source.stem
    return source.parent


def import_csv(
    source: str | os.PathLike,
    fmt: str = "csv",
    images: str | os.PathLike | None = None,
    column_map: dict[str, str] | str | None = None,
    check_files: bool = True,
) -> ImportResult:
    """Import a benchmark's coordinate table.

    `fmt`: one of `FORMATS` (`im2gps`, `yfcc`, `osv5m`, `geoclip`) or `csv` with
    a `column_map` (`{"path": ..., "lat": ..., "lon": ...}` or the
    `"path=IMG,lat=LAT,lon=LNG"` string). `images`: the image folder (default:
    the CSV's folder; OSV-5M: `images/{split}` beside the CSV, split = file stem).
    Image ids are looked up as relative paths, then by file name anywhere below
    the folder. With `check_files=False` rows are kept even when their image is
    absent (e.g. coordinates now, images later). Every other column is kept.
    """
    source = Path(source)
    if not source.is_file():
        raise DatasetImportError(f"{source}: file not found")
    try:
        df = pd.read_csv(source, dtype=str, keep_default_na=False, skipinitialspace=True, comment=None)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DatasetImportError(f"{source}: cannot parse as CSV ({exc})") from None
    columns = list(df.columns)
    if fmt == "csv":
        if column_map is None:
            raise DatasetImportError("format 'csv' needs a column mapping, e.g. --map path=IMG,lat=LATITUDE,lon=LNG")
        mapping = parse_column_map(column_map) if isinstance(column_map, str) else dict(column_map)
        for key, col in mapping.items():
            if col not in columns:
                raise DatasetImportError(f"{source}: mapped column {col!r} (for {key}) not found; the file has {', '.join(columns)}")
        suffix = ""
    elif fmt in FORMATS:
        spec = FORMATS[fmt]
        mapping = {"path": _pick(columns, spec.path, "image id", fmt, source),
                   "lat": _pick(columns, spec.lat, "latitude", fmt, source),
                   "lon": _pick(columns, spec.lon, "longitude", fmt, source)}
        if column_map:  # e.g. location_id=sequence on top of a known format
            extra = parse_column_map(column_map, required=()) if isinstance(column_map, str) else dict(column_map)
            for key, col in extra.items():
                if col not in columns:
                    raise DatasetImportError(f"{source}: mapped column {col!r} (for {key}) not found; "
                                             f"the file has {', '.join(columns)}")
            mapping.update(extra)
        suffix = spec.suffix
    else:
        raise DatasetImportError(f"unknown format {fmt!r}: choose one of {', '.join([*FORMATS, 'csv'])}")

    images_dir = Path(images) if images is not None else _default_images_dir(fmt, source)
    if images is not None and not images_dir.is_dir():
        raise DatasetImportError(f"{images_dir}: image folder not found")
    finder = _ImageFinder(images_dir, suffix)
    result = ImportResult(root=images_dir.resolve())

    lat = pd.to_numeric(df[mapping["lat"]].str.strip(), errors="coerce").to_numpy(np.float64)
    lon = pd.to_numeric(df[mapping["lon"]].str.strip(), errors="coerce").to_numpy(np.float64)
    ids = df[mapping["path"]].str.strip().to_numpy(dtype=object)
    # Extra columns keep their CSV names; the mapped ones become geospot's fields.
    mapped_columns = set(mapping.values())
    reserved = {"path", "lat", "lon"} | set(mapping)
    extras = [c for c in columns if c not in mapped_columns]
    col_index = {col: j for j, col in enumerate(columns)}
    mapped_extra = [(key, col_index[col]) for key, col in mapping.items() if key not in ("path", "lat", "lon")]
    kept = [(col if col not in reserved else f"{col}_original", col_index[col]) for col in extras]
    lat_j, lon_j = col_index[mapping["lat"]], col_index[mapping["lon"]]
    seen: dict[str, int] = {}
    for i in range(len(df)):
        line = i + 2  # header is line 1
        image_id = ids[i]
        raw_lat, raw_lon = df.iat[i, lat_j], df.iat[i, lon_j]
        problem = None
        if not image_id:
            problem = f"empty image id in column {mapping['path']!r}"
        elif not np.isfinite(lat[i]) or not np.isfinite(lon[i]):
            problem = f"latitude/longitude not numbers ({raw_lat!r}, {raw_lon!r})"
        elif not -90.0 <= lat[i] <= 90.0:
            problem = f"latitude {lat[i]} outside [-90, 90]"
        elif not -180.0 <= lon[i] <= 180.0:
            problem = f"longitude {lon[i]} outside [-180, 180]"
        path = None
        if problem is None:
            found = finder.find(image_id)
            if found is None and check_files:
                tried = " or ".join(str(c) for c in finder.candidates(image_id))
                problem = f"image not found ({tried}, nor by name below {images_dir})"
            path = (found or finder.candidates(image_id)[-1]).resolve()
            if problem is None and str(path) in seen:
                problem = f"duplicate of line {seen[str(path)]} (same image {image_id!r})"
        if problem is not None:
            result.rejected.append({"row": line, "path": image_id, "reason": problem})
            continue
        seen[str(path)] = line
        record = {"path": str(path), "lat": float(lat[i]), "lon": float(lon[i])}
        for key, j in mapped_extra:
            record[key] = df.iat[i, j]
        for name, j in kept:
            record[name] = df.iat[i, j]
        result.records.append(record)
    return result


# ---------------------------------------------------------------- writing


def default_report_path(out: str | os.PathLike) -> Path:
    """Side report of rejected inputs: `manifest.csv` -> `manifest.rejected.csv`."""
    out = Path(out)
    return out.with_name(out.stem + ".rejected.csv")


def write_import(result: ImportResult, out: str | os.PathLike, report: str | os.PathLike | None = None) -> tuple[Path | None, Path]:
    """Write the manifest (when any record was imported) and always the report of rejected
    inputs. Returns `(manifest_path or None, report_path)`."""
    from geospot.data.manifest import Manifest

    out = Path(out)
    report_path = Path(report) if report is not None else default_report_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest_path = None
    if result.records:
        Manifest.from_records(result.records, result.root or out.parent).write(out)
        manifest_path = out
    report_path.parent.mkdir(parents=True, exist_ok=True)
    has_rows = any("row" in r for r in result.rejected)
    fields = ["row", "path", "reason"] if has_rows else ["path", "reason"]
    # backslashreplace: a non-UTF-8 file name is listed as "gps-\udce9.jpg" rather than failing the report
    with open(report_path, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rejected)
    return manifest_path, report_path
