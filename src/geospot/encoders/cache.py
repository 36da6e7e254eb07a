"""A per-photo embedding cache: any subset, superset or reordering of photos reuses what was embedded.

Layout under the cache root (e.g. `$GEOSPOT_CACHE/embeddings`)::

    v2-<settings hash>/          one folder per (encoder, weights, preprocessing, mask)
        settings.json            what the numbers depend on (checked on open: never mixed)
        seg-<pid>-<rand>.keys    append-only: 16-byte photo keys, one per row
        seg-<pid>-<rand>.f32     append-only: float32 rows [D], same order as the keys

A photo's key is a 16-byte BLAKE2b digest of its absolute path, size,
modification time (ns) and inode: a file rewritten in place gets a new key and
is embedded again. Each writer (process, rank, thread) appends to segment
files of its own, so concurrent writers never touch the same file and need no
lock; rows go to `.f32` before their keys go to `.keys`, so a row is only
visible once its numbers are on disk, and a kill loses at most the batch being
written. Readers take `min(keys, rows)` complete records of each segment, which
makes torn tails harmless. Duplicate keys (two writers embedding one photo) are
fine: either copy is used.

Many small segments are merged (`compact`) once there are more than
`MAX_SEGMENTS`: segments still open by a writer hold an flock and are skipped.
Loading reads the key files (16 bytes per photo), looks keys up with a sorted
search and gathers rows from memory-mapped `.f32` files: ~10 ms per 10k photos.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT_VERSION = 2
KEY_BYTES = 16
MAX_SEGMENTS = 32

try:  # POSIX: compaction skips segments whose writer still holds them
    import fcntl
except ImportError:  # pragma: no cover - Windows: never compact
    fcntl = None


def photo_key(path: str | os.PathLike) -> bytes | None:
    """16-byte identity of a file's current content (path, size, mtime_ns, inode); None if it cannot be stat'ed."""
    path = os.path.abspath(os.fspath(path))
    target = path
    if "#" in path and not os.path.exists(path):  # a photo inside a tar/zip shard: ARCHIVE#MEMBER
        from geospot.data.archives import split_virtual

        parts = split_virtual(path)
        if parts is not None:
            target = parts[0]  # the archive's identity stands for its members' (the path names the member)
    try:
        st = os.stat(target)
    except (OSError, ValueError):
        return None
    # surrogateescape: names that are not valid UTF-8 (e.g. b"gps-\xe9.jpg") still get a stable key
    ident = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(ident, digest_size=KEY_BYTES).digest()


def cache_settings(runtime: Any, preprocess: Any, mask: Any) -> dict:
    """Everything besides the photo that determines its embedding."""
    return {
        "format": FORMAT_VERSION,
        "encoder": runtime.name,
        "weights_id": runtime.weights_id,
        "embed_dim": int(runtime.embed_dim),
        "preprocess": preprocess.to_dict(),
        # An empty mask paints nothing: it shares the cache of "no mask".
        "mask": mask.to_dict() if mask is not None and mask else None,
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _split_keys(raw: bytes) -> np.ndarray:
    """Keys as uint64 pairs [M, 2] (sortable; the pair is the full 16-byte key)."""
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


class EmbeddingCache:
    """The cached embeddings of one settings dict (see `cache_settings`) under `root`."""

    def __init__(self, root: str | os.PathLike, settings: dict) -> None:
        self.settings = settings
        self.dim = int(settings["embed_dim"])
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"v{FORMAT_VERSION}-{key}"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise RuntimeError(f"{root}: embedding cache folder cannot be created ({exc})") from exc
        meta = self.dir / "settings.json"
        if meta.is_file():
            try:
                stored = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                stored = None  # damaged: rewritten below (the folder name already pins the settings)
            if not isinstance(stored, dict):
                stored = None
            if stored is not None and stored != settings:
                raise RuntimeError(f"{meta}: cache belongs to other settings ({stored}); refusing to mix with {settings}")
            if stored is not None:
                return
        _atomic_write(meta, json.dumps(settings, indent=1, sort_keys=True).encode())

    # ------------------------------------------------------------------ reading
    def _segments(self) -> list[tuple[Path, np.ndarray, Path]]:
        """(keys file, keys [M, 2], rows file) of every segment, complete records only."""
        for _attempt in range(3):
            out, vanished = [], False
            for keys_file in sorted(self.dir.glob("seg-*.keys")):
                rows_file = keys_file.with_suffix(".f32")
                try:
                    raw = keys_file.read_bytes()
                    n_rows = rows_file.stat().st_size // (4 * self.dim)
                except FileNotFoundError:  # merged away by a concurrent compaction: list again
                    vanished = True
                    break
                n = min(len(raw) // KEY_BYTES, n_rows)
                if n:
                    out.append((keys_file, _split_keys(raw[: n * KEY_BYTES]), rows_file))
            if not vanished:
                return out
        return out

    def lookup(self, keys: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """(found [N] bool, embeddings [found.sum(), D] float32 in the order of the found rows)."""
        for _attempt in range(2):
            try:
                return self._lookup(keys)
            except FileNotFoundError:  # a segment merged away between listing and reading it
                continue
        return self._lookup(keys)

    def _lookup(self, keys: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        n = len(keys)
        found = np.zeros(n, dtype=bool)
        present = [i for i, k in enumerate(keys) if k is not None]
        segments = self._segments()
        if not present or not segments:
            return found, np.zeros((0, self.dim), np.float32)
        want = _split_keys(b"".join(keys[i] for i in present))
        have = np.concatenate([s[1] for s in segments])
        seg_of = np.concatenate([np.full(len(s[1]), j, np.int64) for j, s in enumerate(segments)])
        row_of = np.concatenate([np.arange(len(s[1]), dtype=np.int64) for s in segments])
        order = np.lexsort((have[:, 1], have[:, 0]))
        have = have[order]
        # Search on the first 64 bits, then confirm the second half (a collision there is a miss).
        pos = np.searchsorted(have[:, 0], want[:, 0])
        pos_c = np.minimum(pos, len(have) - 1)
        hit = (have[pos_c, 0] == want[:, 0]) & (have[pos_c, 1] == want[:, 1])
        idx = order[pos_c[hit]]
        rows = np.empty((int(hit.sum()), self.dim), dtype=np.float32)
        for j in np.unique(seg_of[idx]):
            sel = seg_of[idx] == j
            n_rows = len(segments[j][1])
            data = np.memmap(segments[j][2], dtype=np.float32, mode="r", shape=(n_rows, self.dim))
            rows[sel] = data[row_of[idx[sel]]]
            del data
        found[np.asarray(present)[hit]] = True
        return found, rows

    def __len__(self) -> int:
        """Number of cached rows (duplicates included)."""
        return sum(len(s[1]) for s in self._segments())

    # ------------------------------------------------------------------ writing
    def writer(self) -> "SegmentWriter":
        """A new append-only segment owned by the caller (one per process/rank/thread)."""
        return SegmentWriter(self)

    def compact(self, max_segments: int = MAX_SEGMENTS) -> bool:
        """Merge finished segments into one when there are more than `max_segments`.

        Returns True when it merged. Skips (False) when another process is
        compacting or when flock is unavailable; segments a writer still holds
        are left alone."""
        if fcntl is None:
            return False
        segments = sorted(self.dir.glob("seg-*.keys"))
        if len(segments) <= max_segments:
            return False
        with open(self.dir / "compact.lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            held, keys, rows = [], [], []
            try:
                for keys_file in segments:
                    fh = open(keys_file, "rb")
                    try:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer is alive
                    except OSError:
                        fh.close()
                        continue
                    held.append((fh, keys_file))
                    raw = fh.read()
                    rows_file = keys_file.with_suffix(".f32")
                    data = np.fromfile(rows_file, dtype=np.float32) if rows_file.exists() else np.zeros(0, np.float32)
                    m = min(len(raw) // KEY_BYTES, data.size // self.dim)
                    keys.append(raw[: m * KEY_BYTES])
                    rows.append(data[: m * self.dim])
                if len(held) < 2:
                    return False
                merged = self.writer()
                with merged:
                    merged.append_raw(b"".join(keys), np.concatenate(rows))
                for _, keys_file in held:  # keys first: a reader never sees keys without rows
                    keys_file.unlink(missing_ok=True)
                    keys_file.with_suffix(".f32").unlink(missing_ok=True)
            finally:
                for fh, _ in held:
                    fh.close()
        return True


class SegmentWriter:
    """Appends (key, embedding) rows to a segment of its own; use as a context manager."""

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache
        stem = f"seg-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.keys_path = cache.dir / f"{stem}.keys"
        self.rows_path = cache.dir / f"{stem}.f32"
        self._rows = open(self.rows_path, "ab")
        self._keys = open(self.keys_path, "ab")
        if fcntl is not None:
            fcntl.flock(self._keys, fcntl.LOCK_EX)  # compaction leaves a live segment alone
        self.count = 0

    def append(self, keys: Sequence[bytes], embeddings: np.ndarray) -> None:
        """Append rows; `keys[i]` (16 bytes, from `photo_key`) identifies `embeddings[i]`."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape != (len(keys), self.cache.dim):
            raise ValueError(f"expected embeddings [{len(keys)}, {self.cache.dim}], got {list(emb.shape)}")
        if any(k is None or len(k) != KEY_BYTES for k in keys):
            raise ValueError("every key must be 16 bytes (see photo_key)")
        self.append_raw(b"".join(keys), emb.reshape(-1))

    def append_raw(self, keys: bytes, flat_rows: np.ndarray) -> None:
        if not keys:
            return
        self._rows.write(np.ascontiguousarray(flat_rows, dtype=np.float32).tobytes())
        self._rows.flush()  # rows reach the OS before the keys that make them visible
        self._keys.write(keys)
        self._keys.flush()
        self.count += len(keys) // KEY_BYTES

    def close(self) -> None:
        if self._keys.closed:
            return
        for fh in (self._rows, self._keys):
            try:
                os.fsync(fh.fileno())
            except OSError:
                pass
            fh.close()
        if self.count == 0:  # nothing written: leave no empty segment behind
            self.keys_path.unlink(missing_ok=True)
            self.rows_path.unlink(missing_ok=True)

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
