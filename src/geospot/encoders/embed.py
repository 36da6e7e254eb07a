"""Embed many image files: decoding overlapped with inference, a resumable on-disk cache.

`embed_paths` decodes images in a thread pool (Pillow and NumPy release the GIL
while decoding, resizing and normalising) while the main thread runs the
encoder on the previous batch, so on a CPU the encoder rarely waits for JPEGs.

With `cache_dir`, results are written in shards of `shard_size` rows
(`shard-K.safetensors` with embeddings + ok flags, `shard-K.json` with the
errors and a hash of the shard's paths) inside a sub-folder named after a
fingerprint of everything that determines the numbers: encoder name and weights,
preprocessing, mask, the list of paths and the shard size. An interrupted run
resumes from the finished shards; a run with different settings gets its own
sub-folder, so results never mix. Batches never straddle a shard boundary, so
a resumed run computes exactly what an uninterrupted one would.
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

FORMAT_VERSION = 1
_STALE_TMP_S = 3600.0  # temp files older than this are leftovers of a killed run


class Runtime(Protocol):
    """What `embed_paths` needs from an encoder runtime (see `EncoderRuntime`)."""

    name: str
    weights_id: str
    embed_dim: int

    def embed(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class EmbeddingResult:
    """Embeddings of N paths: `embeddings` [N, D] float32 (zero rows where `ok` is False),
    `ok` [N] bool, `errors` {row index: "path: reason"} for the rows that failed."""

    embeddings: np.ndarray
    ok: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ok)

    @property
    def n_failed(self) -> int:
        """Number of images that could not be embedded."""
        return int((~self.ok).sum())


def _sha256(text: str) -> str:
    # surrogateescape: a non-UTF-8 file name (kept by Python as surrogates) hashes as its bytes
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _paths_hash(paths: Sequence[str]) -> str:
    return _sha256("\0".join(paths))


def _files_hash(paths: Sequence[str]) -> str:
    """Paths plus each file's size and modification time: a shard whose files
    were rewritten in place is recomputed instead of served stale."""
    parts = []
    for p in paths:
        try:
            st = os.stat(p)
            parts.append(f"{p}\t{st.st_size}\t{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}\tmissing")
    return _sha256("\0".join(parts))


def _mask_dict(mask: Any) -> dict | None:
    # An empty mask paints nothing: it must share the cache of "no mask".
    if mask is None or not mask:
        return None
    return mask.to_dict()


def embedding_fingerprint(paths: Sequence[str], runtime: Runtime, preprocess: Any, mask: Any, shard_size: int) -> dict:
    """Everything that determines the cached numbers (paths must already be absolute)."""
    return {
        "format": FORMAT_VERSION,
        "encoder": runtime.name,
        "weights_id": runtime.weights_id,
        "embed_dim": int(runtime.embed_dim),
        "preprocess": preprocess.to_dict(),
        "mask": _mask_dict(mask),
        "n": len(paths),
        "paths_sha256": _paths_hash(paths),
        "shard_size": int(shard_size),
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # readers see the old file or the complete new one
    finally:
        tmp.unlink(missing_ok=True)


class ShardStore:
    """The shards of one fingerprint, in `root/<fingerprint hash>/`."""

    def __init__(self, root: str | os.PathLike, fingerprint: dict) -> None:
        key = _sha256(json.dumps(fingerprint, sort_keys=True))[:16]
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        index = self.dir / "index.json"
        stored = self._read_index(index)
        if stored is not None:
            if stored != fingerprint:
                raise RuntimeError(f"{index}: cache belongs to other settings ({stored}); refusing to mix with {fingerprint}")
        else:
            _atomic_write(index, json.dumps({"fingerprint": fingerprint}, indent=1, sort_keys=True).encode())
        self._remove_stale_tmp()

    def _read_index(self, index: Path):
        """The stored fingerprint, or None when absent; a damaged index empties the folder (it is a cache)."""
        if not index.is_file():
            return None
        from geospot.models.validate import read_json_bounded

        try:
            stored = read_json_bounded(index)
            if isinstance(stored, dict) and "fingerprint" in stored:
                return stored["fingerprint"]
            reason = "no fingerprint"
        except (OSError, ValueError) as exc:
            reason = str(exc)
        print(f"geospot: {index}: corrupt cache index ({reason}); recomputing this cache", file=sys.stderr)
        for f in list(self.dir.glob("shard-*")) + [index]:
            f.unlink(missing_ok=True)
        return None

    def _remove_stale_tmp(self) -> None:
        now = time.time()
        for tmp in self.dir.glob("*.tmp-*"):
            try:
                if now - tmp.stat().st_mtime > _STALE_TMP_S:
                    tmp.unlink()
            except OSError:
                pass  # another process finished or removed it

    def _files(self, k: int) -> tuple[Path, Path]:
        return self.dir / f"shard-{k:05d}.safetensors", self.dir / f"shard-{k:05d}.json"

    def load(self, k: int, start: int, stop: int, paths_sha256: str, dim: int):
        """(embeddings, ok, errors) of a finished shard, or None when absent or unusable."""
        from safetensors.numpy import load

        tensors_file, meta_file = self._files(k)
        if not meta_file.is_file():  # written last: its presence marks a finished shard
            return None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            tensors = load(tensors_file.read_bytes())
            emb, ok = tensors["embeddings"], tensors["ok"].astype(bool)
            if meta["rows"] != [start, stop] or meta["paths_sha256"] != paths_sha256:
                raise ValueError("rows or paths differ from this run")
            if emb.shape != (stop - start, dim) or emb.dtype != np.float32 or ok.shape != (stop - start,):
                raise ValueError(f"unexpected arrays {emb.shape} {emb.dtype} / {ok.shape}")
            errors = {int(i): str(msg) for i, msg in meta["errors"].items()}
        except Exception as exc:  # noqa: BLE001 - a damaged shard is recomputed, never trusted
            print(f"geospot: {meta_file}: unusable cached shard ({exc}); recomputing it", file=sys.stderr)
            return None
        return emb, ok, errors

    def save(self, k: int, start: int, stop: int, paths_sha256: str, emb: np.ndarray, ok: np.ndarray, errors: dict[int, str]) -> None:
        """Write shard k atomically: tensors first, then the JSON that marks it finished."""
        from safetensors.numpy import save

        tensors_file, meta_file = self._files(k)
        data = save({"embeddings": np.ascontiguousarray(emb, dtype=np.float32), "ok": ok.astype(np.uint8)})
        _atomic_write(tensors_file, data)
        meta = {"rows": [start, stop], "paths_sha256": paths_sha256, "errors": {str(i): m for i, m in sorted(errors.items())}}
        _atomic_write(meta_file, json.dumps(meta, indent=1).encode())


def auto_workers(runtime: Any) -> int:
    """Decoding threads that keep `runtime` busy without starving it of cores.

    Measured with efficientnet-lite0 on 256 px JPEGs (benchmarks/bench_embed.py):
    one core decodes and preprocesses ~350 img/s while ONNX Runtime on two cores
    embeds ~70 img/s, so on a CPU one decoder per four cores keeps up; on 2 cores a
    second decoder only competes with ORT (pipeline/bare-ORT ratio 0.89-1.00 with
    1 worker, 0.84-0.90 with 2). A GPU embeds ~1000 img/s: decoding is then the
    bottleneck, so most cores decode.
    """
    from geospot.encoders.runtime import usable_cpus

    cpus = usable_cpus()
    device = getattr(runtime, "device", None)
    if getattr(device, "type", None) == "cuda" and getattr(runtime, "backend", None) == "torch":
        return max(1, min(8, cpus - 1))
    return max(1, cpus // 4)


def prepare_image(path: str | os.PathLike, preprocess: Any, mask: Any = None) -> np.ndarray:
    """Decode (`open_image`), mask and preprocess one file -> float32 [3, S, S]; raises `ImageError`.

    Use this wherever images are embedded (training, evaluation, prediction) so
    they all see identical pixels.
    """
    from geospot.data.images import open_image

    # min_side lets the JPEG decoder downscale big photos by DCT scaling (several
    # times faster), never below the size that preprocessing resizes to anyway.
    img = open_image(path, min_side=getattr(preprocess, "resize", None))
    if mask is not None:
        img = mask.apply(img)
    return preprocess(img)


class _Loader:
    """Decode + mask + preprocess images in worker threads, `window` items ahead, in order."""

    def __init__(self, paths: Sequence[str], preprocess: Any, mask: Any, workers: int, window: int) -> None:
        self._paths, self._preprocess, self._mask = paths, preprocess, mask
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="geospot-decode") if workers > 0 else None
        self._window = window
        self._queue: collections.deque[Future] = collections.deque()
        self._rows: Iterator[int] = iter(())

    def load(self, i: int) -> tuple[np.ndarray | None, str | None]:
        """(preprocessed image, None) or (None, "path: reason")."""
        path = self._paths[i]
        try:
            return prepare_image(path, self._preprocess, self._mask), None
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
            reason = getattr(exc, "reason", None) or (
                "not enough memory to decode and preprocess the image" if isinstance(exc, MemoryError)
                else f"{type(exc).__name__}: {exc}")
            return None, f"{path}: {reason}"

    def start(self, rows: Iterable[int]) -> None:
        self._rows = iter(rows)
        if self._pool is not None:
            self._fill()

    def _fill(self) -> None:
        while len(self._queue) < self._window:
            i = next(self._rows, None)
            if i is None:
                return
            self._queue.append(self._pool.submit(lambda i=i: (i, *self.load(i))))

    def next(self) -> tuple[int, np.ndarray | None, str | None]:
        if self._pool is None:
            i = next(self._rows)
            return (i, *self.load(i))
        item = self._queue.popleft().result()
        self._fill()
        return item

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.clear()


def embed_paths(
    paths: Sequence[str | os.PathLike],
    runtime: Runtime,
    preprocess: Any,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    workers: int | None = 2,
    shard_size: int = 1024,
    mask: Any = None,
    progress: bool = True,
) -> EmbeddingResult:
    """Embed image files with `runtime`; bad files get ok=False, a zero row and an error.

    - `preprocess`: PIL image -> float32 [3, S, S] (usually `runtime.preprocess`).
    - `mask`: optional `geospot.data.masks.Mask`, applied to each decoded image first.
    - `cache_dir`: resumable shard cache (see the module docstring); None = no cache.
    - `workers`: decoding threads (0 = decode in the calling thread, no overlap;
      None = `auto_workers(runtime)`, tuned for the backend and the core count).
    Memory: the [N, D] result plus about two batches of decoded images.
    """
    if workers is None:
        workers = auto_workers(runtime)
    if batch_size < 1 or shard_size < 1 or workers < 0:
        raise ValueError(f"need batch_size >= 1, shard_size >= 1, workers >= 0 (got {batch_size}, {shard_size}, {workers})")
    abs_paths = [os.path.abspath(os.fspath(p)) for p in paths]
    n, dim = len(abs_paths), int(runtime.embed_dim)
    embeddings = np.zeros((n, dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    shards = [(k, k * shard_size, min(n, (k + 1) * shard_size)) for k in range(math.ceil(n / shard_size))]
    shard_hash = {k: _files_hash(abs_paths[a:b]) for k, a, b in shards}

    store = None
    if cache_dir is not None:
        store = ShardStore(cache_dir, embedding_fingerprint(abs_paths, runtime, preprocess, mask, shard_size))
    pending = []
    for k, start, stop in shards:
        cached = store.load(k, start, stop, shard_hash[k], dim) if store else None
        if cached is None:
            pending.append((k, start, stop))
            continue
        embeddings[start:stop], ok[start:stop] = cached[0], cached[1]
        errors.update(cached[2])

    from tqdm import tqdm

    done = n - sum(stop - start for _, start, stop in pending)
    bar = tqdm(total=n, initial=done, desc=f"embed {runtime.name}", unit="img", file=sys.stderr, disable=not progress)
    loader = _Loader(abs_paths, preprocess, mask, workers, window=2 * batch_size)
    loader.start(i for _, start, stop in pending for i in range(start, stop))
    try:
        for k, start, stop in pending:
            shard_errors: dict[int, str] = {}
            for b0 in range(start, stop, batch_size):  # batches never straddle shards
                rows, arrays = [], []
                for _ in range(min(batch_size, stop - b0)):
                    i, arr, err = loader.next()
                    if err is None:
                        rows.append(i)
                        arrays.append(arr)
                    else:
                        shard_errors[i] = err
                if arrays:
                    out = runtime.embed(np.stack(arrays))
                    if out.shape != (len(rows), dim):
                        raise RuntimeError(f"{runtime.name} returned {out.shape} for a batch of {len(rows)}; expected D={dim}")
                    embeddings[rows] = out
                    ok[rows] = True
                bar.update(min(batch_size, stop - b0))
            errors.update(shard_errors)
            if store is not None:
                store.save(k, start, stop, shard_hash[k], embeddings[start:stop], ok[start:stop], shard_errors)
    finally:
        loader.close()
        bar.close()
    return EmbeddingResult(embeddings=embeddings, ok=ok, errors=dict(sorted(errors.items())))
