"""Near-duplicate images: perceptual hashes, fast Hamming search, split leaks.

- `phash`: 32x32 greyscale -> 2-D DCT -> the 64 lowest-frequency AC
  coefficients (zig-zag order, DC skipped) compared with their median -> 64 bits.
  Robust to re-encoding, resizing and mild colour changes.
- `dhash`: 9x8 greyscale, one bit per horizontal gradient sign -> 64 bits.
- `hamming`: vectorised popcount of XORed `uint64` hashes.
- `near_duplicate_pairs`: every pair within `max_distance` bits without an
  all-pairs matrix (multi-index hashing: the 64 bits are cut into 4 bands of
  16; by pigeonhole two hashes within `d` bits agree within `d // 4` bits on at
  least one band, so only hashes sharing a nearby band value are compared).
- `hash_images`: hash a list of files (decoded with `open_image`; failures
  listed, not dropped); `find_duplicates`: pairs for a manifest with the split
  leaks (pairs straddling train/test) flagged.
"""
from __future__ import annotations

import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dctn

__all__ = [
    "HashResult",
    "dhash",
    "find_duplicates",
    "hamming",
    "hash_images",
    "near_duplicate_pairs",
    "phash",
    "popcount64",
    "read_hashes",
    "write_hashes",
]

_N_BANDS = 4
_BAND_BITS = 16
_KEYS_PER_STEP = 1 << 20


def _bits_to_uint64(bits: np.ndarray) -> np.uint64:
    """64 booleans (most significant first) -> one uint64."""
    return np.packbits(bits.astype(np.uint8)).view(">u8")[0].astype(np.uint64)


# Zig-zag order of the top-left 9x9 DCT block: by total frequency, then row. The
# first entry is the DC term (mean brightness), which carries no structure.
_ZIGZAG = sorted(itertools.product(range(9), range(9)), key=lambda uv: (uv[0] + uv[1], uv[0]))[1:65]
_ZZ_ROWS = np.array([u for u, _ in _ZIGZAG])
_ZZ_COLS = np.array([v for _, v in _ZIGZAG])


def _grey(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.convert("L").resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def phash(img: Image.Image) -> np.uint64:
    """64-bit DCT perceptual hash of an image."""
    coeffs = dctn(_grey(img, (32, 32)), type=2, norm="ortho")
    low = coeffs[_ZZ_ROWS, _ZZ_COLS]
    return _bits_to_uint64(low > np.median(low))


def dhash(img: Image.Image) -> np.uint64:
    """64-bit difference hash: is each pixel brighter than its right neighbour (9x8 grid)."""
    px = _grey(img, (9, 8))
    return _bits_to_uint64((px[:, :-1] > px[:, 1:]).ravel())


# ---------------------------------------------------------------- Hamming distance

_M1, _M2, _M4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of every uint64 (SWAR bit tricks; `np.bitwise_count` when available)."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0: one hardware popcount per element
        return np.bitwise_count(x).astype(np.int64)
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return ((x * _H01) >> np.uint64(56)).astype(np.int64)


def hamming(a, b) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    return popcount64(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


def _masks_up_to(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit mask with at most `radius` bits set (0 first)."""
    out = [0]
    for r in range(1, radius + 1):
        for combo in itertools.combinations(range(bits), r):
            out.append(sum(1 << b for b in combo))
    return np.array(out, dtype=np.int64)


def near_duplicate_pairs(hashes, max_distance: int = 4, chunk_pairs: int = 2_000_000) -> pd.DataFrame:
    """All pairs `i < j` with `hamming(hashes[i], hashes[j]) <= max_distance`.

    Returns a DataFrame `(i, j, distance)` sorted by `(i, j)`. Memory stays near
    `chunk_pairs` candidate pairs at a time (no N x N matrix); exact duplicates
    in large numbers are still reported in full (they are all true pairs).
    """
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    if not 0 <= max_distance <= 64:
        raise ValueError(f"max_distance must be within 0..64 bits, got {max_distance}")
    n = len(h)
    found: list[np.ndarray] = []
    if n < 2:
        return pd.DataFrame({"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "distance": np.zeros(0, np.int64)})
    radius = max_distance // _N_BANDS
    masks = _masks_up_to(_BAND_BITS, radius)
    # Items per step so that one step looks up about _KEYS_PER_STEP (item, mask) keys at once.
    step = max(1, _KEYS_PER_STEP // len(masks))
    for band in range(_N_BANDS):
        values = ((h >> np.uint64(band * _BAND_BITS)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(values, kind="stable")
        # Bucket b holds order[bucket_start[b]:bucket_start[b + 1]] (a counting sort's offsets).
        bucket_start = np.concatenate([[0], np.cumsum(np.bincount(values, minlength=1 << _BAND_BITS))])
        for s in range(0, n, step):
            e = min(n, s + step)
            # Items i whose band, flipped by a mask, equals item j's band: candidates (i, j).
            keys = (values[s:e, None] ^ masks[None, :]).ravel()
            items = np.repeat(np.arange(s, e), len(masks))
            lo = bucket_start[keys]
            counts = bucket_start[keys + 1] - lo
            _collect_pairs(h, items, lo, counts, order, max_distance, chunk_pairs, found)
    if found:
        pairs = np.unique(np.concatenate(found), axis=0)
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
    return pd.DataFrame({"i": pairs[:, 0], "j": pairs[:, 1], "distance": hamming(h[pairs[:, 0]], h[pairs[:, 1]])})


def _collect_pairs(h, items, lo, counts, order, max_distance, chunk_pairs, found) -> None:
    """Expand (item, bucket range) into candidate pairs, about `chunk_pairs` at a time,
    and keep those within `max_distance` bits."""
    cum = np.cumsum(counts)
    m = len(items)
    start = 0
    while start < m:
        done = int(cum[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, done + chunk_pairs, side="right")))
        c = counts[start:stop]
        total = int(c.sum())
        if total:
            i = np.repeat(items[start:stop], c)
            offsets = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            j = order[np.repeat(lo[start:stop], c) + offsets]
            keep = i < j
            i, j = i[keep], j[keep]
            ok = hamming(h[i], h[j]) <= max_distance
            if ok.any():
                found.append(np.stack([i[ok], j[ok]], axis=1))
        start = stop


# ---------------------------------------------------------------- hashing files


@dataclass
class HashResult:
    """Hashes of a list of files; `ok[k]` is False (and `errors[k]` says why) when
    file `k` could not be decoded, in which case its hashes are 0 and meaningless."""

    paths: list[str]
    phash: np.ndarray
    dhash: np.ndarray
    ok: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "path": self.paths,
            "phash": [f"{int(v):016x}" if good else "" for v, good in zip(self.phash, self.ok)],
            "dhash": [f"{int(v):016x}" if good else "" for v, good in zip(self.dhash, self.ok)],
            "error": [self.errors.get(k, "") for k in range(len(self.paths))],
        })


def _hash_one(path: str) -> tuple[int, int, str | None]:
    from geospot.data.images import ImageError, open_image

    try:
        # Hashes need 32x32 pixels: let big JPEGs decode at a reduced DCT scale.
        img = open_image(path, min_side=64)
    except ImageError as exc:
        return 0, 0, exc.reason
    except Exception as exc:  # never lose a batch to one file
        return 0, 0, f"{type(exc).__name__}: {exc}"
    try:
        return int(phash(img)), int(dhash(img)), None
    finally:
        img.close()


def hash_images(paths, workers: int = 2, progress: bool = True) -> HashResult:
    """pHash and dHash of every file (threads: Pillow releases the GIL while decoding)."""
    from tqdm import tqdm

    paths = [str(p) for p in paths]
    ph = np.zeros(len(paths), dtype=np.uint64)
    dh = np.zeros(len(paths), dtype=np.uint64)
    ok = np.zeros(len(paths), dtype=bool)
    errors: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(_hash_one, paths)
        for k, (p_hash, d_hash, err) in enumerate(tqdm(results, total=len(paths), desc="hashing",
                                                        unit="img", file=sys.stderr, disable=not progress)):
            if err is None:
                ph[k], dh[k], ok[k] = p_hash, d_hash, True
            else:
                errors[k] = err
    return HashResult(paths, ph, dh, ok, errors)


def write_hashes(result: HashResult, out: str | os.PathLike) -> Path:
    """Hashes as CSV (`path,phash,dhash,error`, hex), reusable with `read_hashes`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_frame().to_csv(out, index=False)
    return out


def read_hashes(path: str | os.PathLike) -> HashResult:
    """Read hashes written by `write_hashes`; rows with an error stay not-ok."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"path", "phash", "dhash"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a hash file (missing columns {sorted(missing)})")
    ok = (df["phash"] != "") & (df["dhash"] != "")
    ph = np.zeros(len(df), dtype=np.uint64)
    dh = np.zeros(len(df), dtype=np.uint64)
    errors = {}
    for k, (p, d, good) in enumerate(zip(df["phash"], df["dhash"], ok)):
        if not good:
            errors[k] = df["error"].iat[k] if "error" in df.columns and df["error"].iat[k] else "no hash"
            continue
        try:
            ph[k], dh[k] = int(p, 16), int(d, 16)
        except ValueError:
            ok.iat[k] = False
            errors[k] = f"line {k + 2}: bad hash value {p!r}/{d!r}"
    return HashResult(df["path"].tolist(), ph, dh, ok.to_numpy(), errors)


# ---------------------------------------------------------------- dataset level


def find_duplicates(
    hashes: HashResult,
    max_distance: int = 4,
    method: str = "phash",
    dhash_max_distance: int | None = None,
    split=None,
    lat=None,
    lon=None,
    location_id=None,
) -> pd.DataFrame:
    """Near-duplicate pairs among the decodable files of `hashes`.

    `method`: `"phash"`, `"dhash"`, or `"both"` (candidates by pHash within
    `max_distance`, kept only when dHash is within `dhash_max_distance`, default
    the same). Optional per-file `split` labels add `split_a/split_b` and
    `straddles` (different splits, i.e. a train/test leak); `lat/lon` add the
    great-circle `distance_km` between the two labels (a near-duplicate far away
    is a label error); `location_id` adds `same_location`.
    Columns: `a, b, path_a, path_b, phash_distance, dhash_distance, ...`.
    """
    if method not in ("phash", "dhash", "both"):
        raise ValueError(f"method must be phash, dhash or both, got {method!r}")
    idx = np.flatnonzero(hashes.ok)
    primary = hashes.dhash if method == "dhash" else hashes.phash
    pairs = near_duplicate_pairs(primary[idx], max_distance)
    a, b = idx[pairs["i"].to_numpy()], idx[pairs["j"].to_numpy()]
    out = pd.DataFrame({
        "a": a, "b": b,
        "path_a": [hashes.paths[k] for k in a], "path_b": [hashes.paths[k] for k in b],
        "phash_distance": hamming(hashes.phash[a], hashes.phash[b]),
        "dhash_distance": hamming(hashes.dhash[a], hashes.dhash[b]),
    })
    if method == "both":
        limit = max_distance if dhash_max_distance is None else dhash_max_distance
        out = out[out["dhash_distance"] <= limit].reset_index(drop=True)
        a, b = out["a"].to_numpy(), out["b"].to_numpy()
    if split is not None:
        split = np.asarray(split, dtype=object)
        out["split_a"], out["split_b"] = split[a], split[b]
        out["straddles"] = out["split_a"].astype(str) != out["split_b"].astype(str)
    if location_id is not None:
        loc = np.asarray(location_id, dtype=object)
        out["same_location"] = loc[a] == loc[b]
    if lat is not None and lon is not None:
        from geospot.geo.distance import haversine_km

        lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        out["distance_km"] = haversine_km(lat[a], lon[a], lat[b], lon[b])
    return out
