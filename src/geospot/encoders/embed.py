"""Embed many image files: decoding overlapped with inference, a per-photo on-disk cache.

`embed_paths` decodes images in a thread pool (Pillow and NumPy release the GIL
while decoding, resizing and normalising) while the main thread runs the
encoder on the previous batch, so on a CPU the encoder rarely waits for JPEGs.

With `cache_dir`, every photo's embedding is cached under a key of its own
(path, size, mtime, inode; see `geospot.encoders.cache`) in a folder named after
the encoder, its weights, the preprocessing and the mask. Any subset, superset
or reordering of a list of photos reuses what is cached; new rows are appended
after every batch, so an interrupted run loses at most one batch and a rerun
continues. Several processes may embed into one cache at once.
"""
from __future__ import annotations

import collections
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

from geospot.encoders.cache import EmbeddingCache, cache_settings, photo_key


class Runtime(Protocol):
    """What `embed_paths` needs from an encoder runtime (see `EncoderRuntime`)."""

    name: str
    weights_id: str
    embed_dim: int

    def embed(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class EmbeddingResult:
    """Embeddings of N paths: `embeddings` [N, D] float32 (zero rows where `ok` is False),
    `ok` [N] bool, `errors` {row index: "path: reason"} for the rows that failed;
    `reused` rows came from the cache, `computed` rows were embedded now."""

    embeddings: np.ndarray
    ok: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)
    reused: int = 0
    computed: int = 0

    def __len__(self) -> int:
        return len(self.ok)

    @property
    def n_failed(self) -> int:
        """Number of images that could not be embedded."""
        return int((~self.ok).sum())


def auto_workers(runtime: Any) -> int:
    """Decoding threads that keep `runtime` busy without starving it of cores.

    Measured with efficientnet-lite0 on 256 px JPEGs (benchmarks/bench_embed.py):
    one core decodes and preprocesses ~350 img/s while ONNX Runtime on two cores
    embeds ~70 img/s, so on a CPU one decoder per four cores keeps up; on 2 cores a
    second decoder only competes with ORT (pipeline/bare-ORT ratio 0.89-1.00 with
    1 worker, 0.84-0.90 with 2). A GPU embeds ~1000 img/s: decoding is then the
    bottleneck, so most cores decode.
    """
    from geospot.encoders.onnx_runtime import usable_cpus

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
    return preprocess(_decoded(path, preprocess, mask))


def prepare_views(path: str | os.PathLike, preprocess: Any, mask: Any = None) -> np.ndarray:
    """Like `prepare_image`, but every test-time view of the photo: float32 [V, 3, S, S].

    One decode per photo whatever V; a preprocess without views (any callable
    giving [3, S, S]) yields V = 1."""
    if getattr(preprocess, "n_views", 1) == 1:  # the centre crop alone: the one path every caller shares
        return prepare_image(path, preprocess, mask)[None]
    return preprocess.all_views(_decoded(path, preprocess, mask))


def _decoded(path: str | os.PathLike, preprocess: Any, mask: Any = None):
    """The decoded (`open_image`), masked photo that preprocessing crops."""
    from geospot.data.images import open_image

    # min_side lets the JPEG decoder downscale big photos by DCT scaling (several
    # times faster), never below the size that preprocessing resizes to anyway.
    img = open_image(path, min_side=getattr(preprocess, "resize", None))
    return mask.apply(img) if mask is not None else img


class _Loader:
    """Decode + mask + preprocess images in worker threads, `window` items ahead, in order."""

    def __init__(self, paths: Sequence[str], preprocess: Any, mask: Any, workers: int, window: int) -> None:
        self._paths, self._preprocess, self._mask = paths, preprocess, mask
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="geospot-decode") if workers > 0 else None
        self._window = window
        self._queue: collections.deque[Future] = collections.deque()
        self._rows: Iterator[int] = iter(())

    def load(self, i: int) -> tuple[np.ndarray | None, str | None]:
        """(preprocessed views [V, 3, S, S], None) or (None, "path: reason")."""
        path = self._paths[i]
        try:
            return prepare_views(path, self._preprocess, self._mask), None
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


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, name: str, enabled: bool):
    if not enabled:  # tqdm costs ~0.1 s to import: a one-photo `locate` does without
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"embed {name}", unit="img", file=sys.stderr)


def embed_paths(
    paths: Sequence[str | os.PathLike],
    runtime: Runtime,
    preprocess: Any,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    workers: int | None = 2,
    mask: Any = None,
    progress: bool = True,
) -> EmbeddingResult:
    """Embed image files with `runtime`; bad files get ok=False, a zero row and an error.

    - `preprocess`: PIL image -> float32 [3, S, S] (usually `runtime.preprocess`). A `Preprocess`
      with test-time `views` embeds V crops per photo and returns their mean embedding
      (V x the encoder time; `batch_size` counts photos, so a batch holds batch_size x V crops).
    - `mask`: optional `geospot.data.masks.Mask`, applied to each decoded image first.
    - `cache_dir`: per-photo cache (see the module docstring); None = no cache.
      Failed files are not cached: they are tried again on the next run.
    - `workers`: decoding threads (0 = decode in the calling thread, no overlap;
      None = `auto_workers(runtime)`, tuned for the backend and the core count).
    With `progress`, says "reused N, embedding M" on stderr before starting.
    Memory: the [N, D] result plus about two batches of decoded images.
    """
    if workers is None:
        workers = auto_workers(runtime)
    if batch_size < 1 or workers < 0:
        raise ValueError(f"need batch_size >= 1 and workers >= 0 (got {batch_size}, {workers})")
    abs_paths = [os.path.abspath(os.fspath(p)) for p in paths]
    n, dim = len(abs_paths), int(runtime.embed_dim)
    embeddings = np.zeros((n, dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}

    cache = keys = None
    pending = list(range(n))
    if cache_dir is not None and n:
        cache = EmbeddingCache(cache_dir, cache_settings(runtime, preprocess, mask))
        keys = [photo_key(p) for p in abs_paths]
        found, rows = cache.lookup(keys)
        embeddings[found], ok[found] = rows, True
        pending = np.flatnonzero(~found).tolist()
    reused = n - len(pending)
    if progress and cache is not None:
        print(f"embed {runtime.name}: reused {reused}, embedding {len(pending)}", file=sys.stderr, flush=True)

    bar = _progress_bar(n, reused, runtime.name, enabled=progress and bool(pending))
    loader = _Loader(abs_paths, preprocess, mask, workers, window=2 * batch_size)
    loader.start(pending)
    writer = cache.writer() if cache is not None and pending else None
    try:
        for b0 in range(0, len(pending), batch_size):
            rows, arrays = [], []
            for _ in range(min(batch_size, len(pending) - b0)):
                i, arr, err = loader.next()
                if err is None:
                    rows.append(i)
                    arrays.append(arr)
                else:
                    errors[i] = err
            if arrays:
                n_views = arrays[0].shape[0]
                out = runtime.embed(np.concatenate(arrays))
                if out.shape != (len(rows) * n_views, dim):
                    raise RuntimeError(f"{runtime.name} returned {out.shape} for a batch of {len(rows) * n_views}; "
                                       f"expected D={dim}")
                if n_views > 1:  # a photo's embedding is the mean of its views' (PIGEON's multi-crop)
                    out = out.reshape(len(rows), n_views, dim).mean(axis=1, dtype=np.float64).astype(np.float32)
                embeddings[rows] = out
                ok[rows] = True
                if writer is not None:
                    # A file that vanished after its key was taken has no key: not cached.
                    keep = [j for j, i in enumerate(rows) if keys[i] is not None]
                    writer.append([keys[rows[j]] for j in keep], out[keep])
            bar.update(min(batch_size, len(pending) - b0))
    finally:
        loader.close()
        bar.close()
        if writer is not None:
            writer.close()
    if cache is not None and pending:
        cache.compact()
    return EmbeddingResult(embeddings=embeddings, ok=ok, errors=dict(sorted(errors.items())), reused=reused,
                           computed=len(pending) - len(errors))
