"""Image manifests: which photo was taken where.

A manifest is a CSV or Parquet table with one row per image:

- required: `path` (relative to the manifest's folder, or absolute), `lat`, `lon`
  (WGS84 degrees);
- optional: `location_id` (all views of one place share it; defaults to the
  path, i.e. each row its own location), `view` / `heading`, `split`; any other
  column is kept as it is.

`read_manifest` validates everything and collects EVERY problem (with the line
number in the file) before raising one `ManifestError`, or, with
`on_error="drop"`, returns the valid rows and keeps the problems in
`manifest.problems`.
"""
from __future__ import annotations

import csv
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

try:  # pandas' own list of missing-value spellings ("NA", "null", "nan", ...)
    from pandas._libs.parsers import STR_NA_VALUES
except ImportError:  # private module moved: the documented defaults
    STR_NA_VALUES = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}

__all__ = ["Manifest", "ManifestError", "Problem", "read_manifest", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("path", "lat", "lon")
# Columns read as raw text so that nothing is lost or reinterpreted ("007", "NA", "1e3").
_TEXT_COLUMNS = ("path", "lat", "lon", "location_id", "split")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# Lines shown by str(ManifestError); all problems stay available in `.problems`.
_MAX_LINES_SHOWN = 100


@dataclass(frozen=True)
class Problem:
    """One validation problem.

    `row` is the line number in the file (header = line 1; Parquet: 1-based row
    + 1; records: 1-based record number + 1, as if written to CSV), or None for
    problems with the file as a whole. `column` is None when no single column is at fault.
    """

    row: int | None
    column: str | None
    message: str
    source: str | None = None  # the manifest file (as given), or "records"

    def format(self, source: str | None = None) -> str:
        """`"<source> row <row>: <message>"`, e.g. `manifest.csv row 7: lat 123.0 outside [-90, 90]`."""
        src = source or self.source or "manifest"
        where = f"{src} row {self.row}" if self.row is not None else src
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        return self.format()


class ManifestError(ValueError):
    """A manifest with problems; `str()` lists them one per line, `.problems` holds all."""

    def __init__(self, problems: Sequence[Problem], source: str | os.PathLike | None = None):
        self.source = str(source) if source is not None else "manifest"
        self.problems = [p if p.source else replace(p, source=self.source) for p in problems]
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [p.format(self.source) for p in self.problems[:_MAX_LINES_SHOWN]]
        hidden = len(self.problems) - len(lines)
        if hidden > 0:
            lines.append(f"... and {hidden} more problems (all are in ManifestError.problems)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self):
        return (type(self), (self.problems, self.source))


def _column_hint(missing: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(missing, [str(c) for c in columns], n=1, cutoff=0.5)
    aliases = {"lat": ("latitude", "y"), "lon": ("longitude", "lng", "long", "x"),
               "path": ("file", "filename", "image", "image_path", "img")}
    for c in columns:
        if str(c).strip().lower() in aliases.get(missing, ()):
            close = [str(c)]
    return f" (did you mean {close[0]!r}? rename it to {missing!r})" if close else ""


def _read_table(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """Read CSV/TSV/Parquet; return the frame and each row's line number in the file."""
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        names = [str(n) for n in pq.read_schema(path).names]
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:  # which of two `lat` columns is meant? never guess
            raise ManifestError([Problem(1, c, f"column {c!r} appears more than once") for c in repeated], str(path))
        df = pd.read_parquet(path)
        df.columns = [str(c) for c in df.columns]
        return df, list(range(2, len(df) + 2))
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    header = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig").columns
    with open(path, newline="", encoding="utf-8-sig") as fh:  # pandas renames a repeated `lat` to `lat.1`
        raw = [c.strip() for c in next(csv.reader(fh, delimiter=sep), [])]
    repeated = sorted({c for c in raw if raw.count(c) > 1})
    if repeated:
        raise ManifestError([Problem(1, c, f"column {c!r} appears more than once in the header") for c in repeated],
                            str(path))
    text = [c for c in header if c in _TEXT_COLUMNS]
    # Known columns stay raw text (empty stays "", "NA" stays "NA"); the others get
    # pandas' usual type inference and missing-value handling, "kept as they are".
    df = pd.read_csv(
        path,
        sep=sep,
        encoding="utf-8-sig",
        dtype={c: str for c in text},
        keep_default_na=False,
        na_values={c: sorted(STR_NA_VALUES) for c in header if c not in _TEXT_COLUMNS},
        skip_blank_lines=False,  # blank lines keep their place so row numbers are line numbers
    )
    lines = np.arange(2, len(df) + 2)
    blank = np.ones(len(df), dtype=bool)
    for c in df.columns:
        col = df[c]
        blank &= (col.astype(str).str.strip() == "").to_numpy() if c in text else col.isna().to_numpy()
    if blank.any():
        df = df.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
        # A blank line turned integer columns into floats; give them back their type.
        for c in df.columns:
            if c not in text and df[c].dtype.kind == "f" and df[c].notna().all() and (df[c] % 1 == 0).all():
                df[c] = df[c].astype(np.int64)
    return df, [int(x) for x in lines]


def _field_count_problems(path: Path) -> list[Problem]:
    """Every line whose number of fields differs from the header's (pandas stops at the first)."""
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    problems = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, [])
        for fields in reader:
            if fields and len(fields) != len(header):
                problems.append(Problem(reader.line_num, None,
                                        f"expected {len(header)} fields like the header, found {len(fields)}"))
    return problems


def _as_text(values: pd.Series, missing: str = "") -> list[str]:
    """Column values as stripped strings, whatever their stored type (Parquet keeps types).

    None/NA become '' (absent); a float NaN becomes `missing` ('nan' for coordinates,
    so that the message says NaN rather than empty).
    """
    if isinstance(values.dtype, pd.StringDtype):  # CSV text columns: vectorised
        return values.fillna("").str.strip().tolist()
    out = []
    for v in values.tolist():
        if v is None or v is pd.NA or v is pd.NaT:
            out.append("")
        elif isinstance(v, float) and np.isnan(v):
            out.append(missing)
        else:
            out.append(str(v).strip())
    return out


def _coordinates(values: pd.Series, name: str, lo: float, hi: float,
                 lines: Sequence[int]) -> tuple[np.ndarray, list[Problem]]:
    """Parse one coordinate column; invalid entries become NaN, each with a Problem."""
    if values.dtype.kind == "b" or str(values.dtype) == "boolean":
        # true/false would silently read as 0/1 degrees: refuse the column
        return np.full(len(values), np.nan), [Problem(None, name, f"column {name!r} holds true/false values, "
                                                                  "not degrees")]
    if values.dtype.kind in "iuf":
        parsed = values.to_numpy(dtype=np.float64, copy=True)
    else:
        parsed = np.array(pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
        if values.dtype == object:  # a Parquet object column may mix booleans in: never 0/1 degrees
            is_bool = np.fromiter((isinstance(v, (bool, np.bool_)) for v in values.tolist()), bool, len(values))
            parsed[is_bool] = -np.inf  # out of range: the slow path below names each row
    with np.errstate(invalid="ignore"):
        suspect = ~((parsed >= lo) & (parsed <= hi))
    problems = []
    if suspect.any():
        texts = _as_text(values.iloc[np.flatnonzero(suspect)], "nan")
        for i, text in zip(np.flatnonzero(suspect), texts):
            parsed[i], msg = _parse_coordinate(text, name, lo, hi)  # Python's float() has the last word
            if msg:
                problems.append(Problem(lines[i], name, msg))
    return parsed, problems


def _parse_coordinate(raw: str, name: str, lo: float, hi: float) -> tuple[float, str | None]:
    if raw == "":
        return np.nan, f"{name} is empty"
    if raw.lower() in ("true", "false"):
        return np.nan, f"{name} {raw!r} is a boolean, not degrees"
    try:
        value = float(raw)
    except ValueError:
        return np.nan, f"{name} {raw!r} is not a number"
    if np.isnan(value):
        return np.nan, f"{name} is NaN"
    if not (lo <= value <= hi):
        return np.nan, f"{name} {value!r} outside [{lo:g}, {hi:g}]"
    return value, None


def _file_problem(path: str) -> str | None:
    """Cheap readability check: exists, is a file, non-empty, readable (no decoding)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if "#" in path:  # a photo inside a tar/zip shard (ARCHIVE.tar#NAME)
            from geospot.data.archives import member_problem

            return member_problem(path)
        return f"file not found: {path}"
    except PermissionError:
        return f"permission denied: {path}"
    except OSError as exc:
        return f"cannot access {path}: {exc.strerror or exc}"
    if os.path.isdir(path):
        return f"is a directory, not a file: {path}"
    if st.st_size == 0:
        return f"empty file (0 bytes): {path}"
    if not os.access(path, os.R_OK):
        return f"file not readable (permission denied): {path}"
    return None


def _validate(df: pd.DataFrame, lines: Sequence[int], root: Path, check_files: bool,
              source: str) -> tuple[pd.DataFrame, list[Problem], np.ndarray]:
    """Normalise the known columns and collect every problem; return (frame, problems, ok mask)."""
    problems: list[Problem] = []
    duplicated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if duplicated:  # which of two `lat` columns is meant? never guess
        raise ManifestError([Problem(1, c, f"column {c!r} appears more than once in the header") for c in duplicated],
                            source)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise ManifestError(
            [Problem(1, c, f"missing required column {c!r}{_column_hint(c, list(df.columns))}; columns found: {found}")
             for c in missing],
            source,
        )
    n = len(df)
    ok = np.ones(n, dtype=bool)
    # Vectorised parsing; only the rare bad rows go through the slow path for their message.
    lat, lat_problems = _coordinates(df["lat"], "lat", -90.0, 90.0, lines)
    lon, lon_problems = _coordinates(df["lon"], "lon", -180.0, 180.0, lines)
    problems += lat_problems + lon_problems
    ok &= ~np.isnan(lat) & ~np.isnan(lon)
    root_str = str(root)
    abs_paths = []
    for i, raw in enumerate(_as_text(df["path"])):
        if raw == "":
            problems.append(Problem(lines[i], "path", "path is empty"))
            ok[i] = False
            abs_paths.append("")
            continue
        if raw.startswith("~"):
            raw = os.path.expanduser(raw)
        abs_paths.append(os.path.normpath(os.path.join(root_str, raw)))  # join keeps absolute paths

    if check_files:
        n_missing = 0
        for i in range(n):
            if abs_paths[i] == "":
                continue
            msg = _file_problem(abs_paths[i])
            if msg:
                problems.append(Problem(lines[i], "path", msg))
                ok[i] = False
                n_missing += msg.startswith("file not found")
        if n and n_missing > n // 2:
            problems.append(Problem(None, "path", f"{n_missing} of {n} files not found; relative paths "
                                                  f"resolve against {root} - is that the images' folder?"))

    # Duplicates: the same image at the same place listed twice. (The same image at two
    # slightly different coordinates is allowed: real datasets re-capture panoramas.)
    key = pd.DataFrame({"path": abs_paths, "lat": lat, "lon": lon})
    candidates = key["path"].ne("").to_numpy() & ~np.isnan(lat) & ~np.isnan(lon)
    candidates &= key.duplicated(keep=False).to_numpy()
    first_seen: dict[tuple[str, float, float], int] = {}
    for i in np.flatnonzero(candidates):
        j = first_seen.setdefault((abs_paths[i], float(lat[i]), float(lon[i])), i)
        if j != i:
            problems.append(Problem(lines[i], "path", f"duplicate of row {lines[j]} (same path, lat and lon)"))
            ok[i] = False

    out = df.copy()
    out["path"] = abs_paths
    out["lat"] = lat
    out["lon"] = lon
    if "location_id" in out.columns:
        ids = _as_text(out["location_id"])
        out["location_id"] = [loc if loc else path for loc, path in zip(ids, abs_paths)]
    else:
        out["location_id"] = abs_paths
    if "split" in out.columns:
        out["split"] = _as_text(out["split"])
    order = ["path", "lat", "lon", "location_id"] + [c for c in out.columns if c not in
                                                      ("path", "lat", "lon", "location_id")]
    out = out[order]
    problems = [replace(p, source=source) for p in problems]
    problems.sort(key=lambda p: (p.row if p.row is not None else 1 << 62, p.column or ""))
    return out, problems, ok


class Manifest:
    """A validated table of images and where they were taken.

    `df` columns: `path` (absolute), `lat`, `lon` (float64 degrees), `location_id`
    (str), then the file's other columns. `source` is the file it came from (or
    None), `root` the folder relative paths were resolved against, `row_numbers`
    each row's line in the source, `problems` the problems of dropped rows.
    """

    def __init__(self, df: pd.DataFrame, source: Path | None = None, root: Path | None = None,
                 row_numbers: Sequence[int] | None = None, problems: Sequence[Problem] = ()):
        self.df = df.reset_index(drop=True)
        self.source = Path(source) if source is not None else None
        self.root = Path(root) if root is not None else (self.source.parent if self.source else Path.cwd())
        self.row_numbers = (np.asarray(row_numbers, dtype=np.int64) if row_numbers is not None
                            else np.arange(2, len(self.df) + 2, dtype=np.int64))
        self.problems = list(problems)

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return (f"Manifest({len(self)} images, {self.df['location_id'].nunique()} locations{where}"
                f"{f', {len(self.problems)} problems dropped' if self.problems else ''})")

    @property
    def paths(self) -> list[str]:
        """Absolute image paths."""
        return self.df["path"].tolist()

    @property
    def lat(self) -> np.ndarray:
        """Latitudes in degrees, float64."""
        return self.df["lat"].to_numpy(dtype=np.float64)

    @property
    def lon(self) -> np.ndarray:
        """Longitudes in degrees, float64."""
        return self.df["lon"].to_numpy(dtype=np.float64)

    @property
    def groups(self) -> np.ndarray:
        """Location ids (one per row; views of one place share it) for grouped splits."""
        return self.df["location_id"].to_numpy(dtype=object)

    def subset(self, idx) -> Manifest:
        """Rows selected by integer indices, a boolean mask or a slice, as a new Manifest."""
        if isinstance(idx, slice):
            positions = np.arange(len(self))[idx]
        else:
            positions = np.asarray(idx)
            if positions.dtype == bool:
                if positions.shape != (len(self),):
                    raise IndexError(f"boolean mask of shape {positions.shape} for {len(self)} rows")
                positions = np.flatnonzero(positions)
            positions = positions.astype(np.int64, copy=False)
        return Manifest(self.df.iloc[positions], self.source, self.root, self.row_numbers[positions], self.problems)

    @classmethod
    def from_records(cls, records: Iterable[Mapping] | pd.DataFrame, root: str | os.PathLike | None = None,
                     check_files: bool = False, on_error: str = "raise") -> Manifest:
        """Build a manifest from dicts (or a DataFrame) with at least path, lat, lon.

        Relative paths resolve against `root` (default: the current folder).
        Problems name rows as the line they would have in a CSV (record i -> row i + 2).
        """
        df = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
        root_path = Path(os.path.abspath(root if root is not None else os.getcwd()))
        lines = list(range(2, len(df) + 2))
        return _finish(df, lines, root_path, check_files, on_error, source=None, label="records")

    def write(self, path: str | os.PathLike) -> Path:
        """Write as CSV (or Parquet for .parquet/.pq); paths become relative to the output
        folder when the image lies inside it, absolute otherwise. Returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        folder = os.path.abspath(out.parent)
        df = self.df.copy()
        rel = []
        for p in df["path"].tolist():
            p = os.path.abspath(p)
            inside = p.startswith(folder.rstrip(os.sep) + os.sep)
            rel.append(Path(os.path.relpath(p, folder)).as_posix() if inside else p)
        df["path"] = rel
        # location_id defaults to the absolute path; keep ids portable when they are paths.
        df["location_id"] = [r if loc == p else loc for loc, p, r in
                             zip(df["location_id"].tolist(), self.df["path"].tolist(), rel)]
        if out.suffix.lower() in _PARQUET_SUFFIXES:
            df.to_parquet(out, index=False)
        else:
            # default float formatting is round-trip exact (repr), unlike a fixed format
            df.to_csv(out, index=False, sep="\t" if out.suffix.lower() in (".tsv", ".tab") else ",")
        return out


def _finish(df: pd.DataFrame, lines: Sequence[int], root: Path, check_files: bool, on_error: str,
            source: Path | None, label: str) -> Manifest:
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    out, problems, ok = _validate(df, lines, root, check_files, label)
    if problems and on_error == "raise":
        raise ManifestError(problems, label)
    keep = np.flatnonzero(ok)
    return Manifest(out.iloc[keep], source, root, np.asarray(lines, dtype=np.int64)[keep], problems)


def read_manifest(path: str | os.PathLike, check_files: bool = True, on_error: str = "raise") -> Manifest:
    """Read and validate a CSV (TSV) or Parquet manifest.

    Relative image paths resolve against the manifest's folder. Every problem is
    collected first; `on_error="raise"` raises one `ManifestError` listing all of
    them, `on_error="drop"` returns the valid rows with the problems in
    `manifest.problems` (a missing required column always raises).
    `check_files=False` skips the per-file checks (exists, non-empty, readable).
    Tar/zip shards, a pattern naming them or a `.shards.json` descriptor are read
    by `geospot.data.shards.read_shards` (virtual paths `ARCHIVE#MEMBER`).
    """
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    from geospot.data.shards import is_shard_spec, read_shards

    if is_shard_spec(path):  # tar/zip shards (pattern or .shards.json) are manifests too
        return read_shards(path, check_files=check_files, on_error=on_error)
    src = Path(path)
    label = str(path)
    if not src.exists():
        raise ManifestError([Problem(None, None, "manifest file not found")], label)
    if src.is_dir():
        raise ManifestError([Problem(None, None, "is a directory, not a manifest file")], label)
    try:
        df, lines = _read_table(src)
    except ManifestError:
        raise
    except pd.errors.EmptyDataError:
        raise ManifestError([Problem(None, None, "empty file (no header)")], label) from None
    except pd.errors.ParserError as exc:
        problems = _field_count_problems(src) or [Problem(None, None, f"cannot parse as a table: {exc}".strip())]
        raise ManifestError(problems, label) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError([Problem(None, None, f"cannot read: {exc}")], label) from None
    # The folder the manifest is seen in (not the target of a symlink) anchors relative paths.
    src_abs = Path(os.path.abspath(src))
    return _finish(df, lines, src_abs.parent, check_files, on_error, source=src_abs, label=label)
