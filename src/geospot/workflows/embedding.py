"""Embedding manifests (through the on-disk cache) and the helpers every workflow shares."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from geospot.data.manifest import Manifest
from geospot.encoders import DEFAULT_ENCODER  # noqa: F401 - re-exported for the workflows
from geospot.encoders.preprocess import DEFAULT_VIEWS


def cache_root() -> Path:
    """Where embeddings and ONNX exports are cached (`$GEOSPOT_CACHE`, default ~/.cache/geospot)."""
    return Path(os.environ.get("GEOSPOT_CACHE", Path.home() / ".cache" / "geospot"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def embed_manifest(
    manifest: Manifest,
    encoder: str = DEFAULT_ENCODER,
    *,
    mask=None,
    encoder_state: dict | None = None,
    cache_dir: str | Path | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    views: str = DEFAULT_VIEWS,
):
    """Embed every image of a manifest (cached, resumable). Returns an `EmbeddingResult`.

    Failed images are kept as rows with `ok=False` and a per-file reason, so
    row indices always match the manifest. `workers=None` picks the number of
    decoding threads for the runtime (1 on 2 CPU cores, more beside a GPU).
    `views`: the frame and test-time views ("full", the default: the whole photo;
    "center": ImageNet's centre crop; "flip", "five", "ten": crops averaged per photo;
    see `Preprocess.all_views`); each has its own cache.
    """
    from geospot.encoders import create_encoder
    from geospot.encoders.embed import embed_paths
    from geospot.encoders.runtime import EncoderRuntime

    enc = create_encoder(encoder, pretrained=True)
    if encoder_state is not None:
        enc.load_state_dict(encoder_state)
    runtime = EncoderRuntime(encoder, backend=backend, device=device, encoder=enc)
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "embeddings"
    return embed_paths(
        list(manifest.paths),
        runtime,
        enc.preprocess.with_views(views),
        cache_dir=cache,
        batch_size=batch_size,
        workers=workers,
        mask=mask,
        progress=progress,
    )


def report_failures(result, manifest: Manifest, what: str) -> None:
    n_bad = int((~result.ok).sum())
    if n_bad:
        log(f"{what}: {n_bad} of {len(manifest)} images could not be used:")
        for i, reason in list(sorted(result.errors.items()))[:20]:
            log(f"  {reason}")
        if n_bad > 20:
            log(f"  ... and {n_bad - 20} more")


def l2_normalize(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)


def embeddings_or_compute(manifest, embeddings, encoder, mask, cache_dir, backend, device, progress, what,
                          encoder_state=None, views=DEFAULT_VIEWS):
    """``(emb [N, D], ok [N])`` for a manifest: given embeddings (an `EmbeddingResult` or an
    array), or computed through the cache."""
    if embeddings is None:
        embeddings = embed_manifest(
            manifest, encoder, mask=mask, encoder_state=encoder_state, cache_dir=cache_dir, backend=backend,
            device=device, progress=progress, views=views,
        )
    if hasattr(embeddings, "embeddings"):
        report_failures(embeddings, manifest, what)
        emb, ok = embeddings.embeddings, np.asarray(embeddings.ok, bool)
    else:
        emb = np.asarray(embeddings, np.float32)
        ok = np.ones(len(emb), bool)
    if len(emb) != len(manifest):
        raise ValueError(f"{len(emb)} embeddings for {len(manifest)} manifest rows")
    if not ok.any():
        raise ValueError(f"no usable images in the {what} manifest {manifest.source}")
    return emb, ok


def collections_of(manifest: Manifest, column: str | None) -> np.ndarray | None:
    """The values of a grouping column (e.g. ``collection``) as strings, or None."""
    if column is None:
        return None
    if column not in manifest.df.columns:
        raise ValueError(f"{manifest.source}: no column {column!r} to group by "
                         f"(columns: {', '.join(map(str, manifest.df.columns))})")
    return manifest.df[column].astype(str).to_numpy()
