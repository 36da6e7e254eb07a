"""Albums (PlaNet): photos of one trip inform each other. Torch-free parts: features, NumPy
inference, the stored format, and the simple baseline of averaging probabilities.

An album is a list of photos in time order; they need not share one place (a
road trip, a city break). The album model is a small transformer over the
album, on top of a frozen base model. Per photo it sees the L2-normalised
embedding, the base head's cell probabilities and time features; attention
between photos carries learned biases that fall with the time gap and the
step distance between them (photos minutes apart are usually close; a day
apart, not). Its answer per photo is

    logits_i = log(w0 p_i + w1 sum_{j != i} a_ij p_j + w2 base(sum_j b_ij e_j) + eps) [+ delta_i]

with ``p`` the base probabilities and ``e`` the embeddings: the photo's own
answer, the neighbours' opinion (attention ``a`` over the *other* photos), and
the base head's answer for an attention-weighted mean embedding of the album
(``b`` over all photos, itself included: same-place fusion, generalised). The
gate ``w`` (a softmax over the three, per photo) and both attentions are
learned from the photos' time gaps, order, embedding similarity and the base's
probabilities and confidence. With ``w2 = 1`` and uniform ``b`` it is embedding
averaging (``locate --same-place``); with ``w1`` and uniform ``a``,
probability averaging. An album of one photo gets the single-photo answer.
``delta_i`` is an optional learned correction (off by default: it memorises the
training photos). (A product of experts, ``log p_i + g log ctx``, measured
worse: one photo of a neighbouring town vetoes the right cell.)

Stored beside the base model (optional): ``album.json`` (shapes, the cells'
hash, training summary) + ``album.safetensors`` (weights; tensor names shared
with `geospot.models.album_net.AlbumNet`). ``load_album(model_dir, ...)``
returns None when a model has none.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

ALBUM_JSON = "album.json"
ALBUM_WEIGHTS = "album.safetensors"
FORMAT = "geospot-album"
FORMAT_VERSION = 1
N_TIME = 5  # has_time, log1p(gap to previous h), log1p(gap to next h), position in album, log(album length)
N_FEAT = N_TIME + 2  # + the base's confidence: top probability, entropy / log(cells)
EPS = 1e-6
_LN_EPS = 1e-5
_MAX_PHOTOS = 1024  # attention is quadratic in the album length: longer albums are refused with a clear line


class AlbumError(ValueError):
    """An album model or album input that cannot be used; the message names the file or argument."""


def time_features(hours: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[B, L, N_TIME]`` float32 from capture times in hours ``[B, L]`` (NaN: unknown) and the valid ``mask``.

    Gaps are to the previous / next *timed* photo of the album (0 where there is none);
    photos must be in time order (unknown times anywhere)."""
    hours = np.asarray(hours, np.float64)
    mask = np.asarray(mask, bool)
    b, n = mask.shape
    out = np.zeros((b, n, N_TIME), np.float32)
    for r in range(b):
        idx = np.flatnonzero(mask[r])
        if not idx.size:
            continue
        length = idx.size
        out[r, idx, 3] = np.arange(length) / max(length - 1, 1)
        out[r, idx, 4] = math.log(length) / math.log(64.0)
        t = hours[r, idx]
        timed = idx[np.isfinite(t)]
        tt = hours[r, timed]
        out[r, timed, 0] = 1.0
        if timed.size > 1:
            gaps = np.log1p(np.abs(np.diff(tt)))
            out[r, timed[1:], 1] = gaps
            out[r, timed[:-1], 2] = gaps
    return out


def photo_features(hours, mask, probs) -> np.ndarray:
    """``[B, L, N_FEAT]``: `time_features` and the base's confidence (top probability, normalised entropy)."""
    p = np.asarray(probs, np.float64)
    ent = -(p * np.log(np.maximum(p, 1e-12))).sum(-1) / math.log(max(p.shape[-1], 2))
    conf = np.stack([p.max(-1), ent], -1) * np.asarray(mask, bool)[..., None]
    return np.concatenate([time_features(hours, mask), conf.astype(np.float32)], -1)


def pair_biases(hours: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log1p |t_i - t_j| in hours, 0 where either time is unknown; log1p |i - j| steps)``, both ``[B, L, L]``.

    Steps count valid photos only (padding does not add distance)."""
    hours = np.asarray(hours, np.float64)
    mask = np.asarray(mask, bool)
    t = np.where(mask & np.isfinite(hours), hours, np.nan)
    dt = np.abs(t[:, :, None] - t[:, None, :])
    dt = np.where(np.isfinite(dt), np.log1p(dt), 0.0)
    pos = np.cumsum(mask, axis=1) - 1
    steps = np.log1p(np.abs(pos[:, :, None] - pos[:, None, :]))
    return dt.astype(np.float32), steps.astype(np.float32)


def pad_albums(albums: list[np.ndarray], fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """List of ``[L_i, ...]`` arrays -> padded ``[B, L, ...]`` and the valid mask ``[B, L]``."""
    if not albums:
        raise AlbumError("no albums given")
    n = max(len(a) for a in albums)
    first = np.asarray(albums[0])
    dtype = first.dtype if first.dtype.kind == "f" else np.float64
    out = np.full((len(albums), n) + first.shape[1:], fill, dtype=dtype)
    mask = np.zeros((len(albums), n), bool)
    for i, a in enumerate(albums):
        out[i, :len(a)] = a
        mask[i, :len(a)] = True
    return out, mask


def average_probs(probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The baseline: every photo of an album gets the album's mean probabilities. ``[B, L, C] -> [B, L, C]``."""
    m = np.asarray(mask, np.float64)[..., None]
    mean = (np.asarray(probs, np.float64) * m).sum(1, keepdims=True) / np.maximum(m.sum(1, keepdims=True), 1.0)
    return np.broadcast_to(mean, probs.shape).astype(np.float32) * m.astype(np.float32)


def check_inputs(emb, probs, hours, mask, embed_dim: int, num_cells: int) -> tuple[np.ndarray, ...]:
    """Validate album tensors; `AlbumError` naming the argument otherwise."""
    emb, probs, mask = np.asarray(emb, np.float32), np.asarray(probs, np.float32), np.asarray(mask, bool)
    if mask.ndim != 2:
        raise AlbumError(f"mask must be [albums, photos], got shape {list(mask.shape)}")
    b, n = mask.shape
    if n > _MAX_PHOTOS:
        raise AlbumError(f"an album holds at most {_MAX_PHOTOS} photos, got {n}: split it (e.g. by day)")
    if emb.shape != (b, n, embed_dim):
        raise AlbumError(f"emb must be [{b}, {n}, {embed_dim}], got {list(emb.shape)}")
    if probs.shape != (b, n, num_cells):
        raise AlbumError(f"probs must be [{b}, {n}, {num_cells}] (the base model's cells), got {list(probs.shape)}")
    hours = np.full((b, n), np.nan) if hours is None else np.asarray(hours, np.float64)
    if hours.shape != (b, n):
        raise AlbumError(f"hours must be [{b}, {n}], got {list(hours.shape)}")
    if np.isinf(hours).any():
        raise AlbumError("hours must be finite or NaN (unknown)")
    if not np.isfinite(emb[mask]).all() or not np.isfinite(probs[mask]).all():
        raise AlbumError("emb and probs must be finite")
    return emb, probs, hours, mask


# ---------------------------------------------------------------------- NumPy forward


def _ln(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + _LN_EPS) * w + b


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _gelu(x):
    from geospot.models.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


class NumpyAlbumModel:
    """The album model in NumPy (the torch-free `locate --album` path); same maths as `AlbumNet`."""

    def __init__(self, meta: dict, weights: dict[str, np.ndarray]) -> None:
        self.meta = meta
        self.embed_dim, self.num_cells = meta["embed_dim"], meta["num_cells"]
        self.d_model, self.n_layers, self.n_heads = meta["d_model"], meta["n_layers"], meta["n_heads"]
        self.cells_hash = meta["cells_hash"]
        self.w = weights

    def logits(self, emb, probs, hours=None, mask=None, base=None) -> np.ndarray:
        """Per-photo cell logits ``[B, L, C]`` (padding rows are 0). ``emb`` [B, L, D], ``probs`` [B, L, C]: the
        base model's for ``emb``; ``base``: the base model (``predict_proba([N, D]) -> [N, C]``)."""
        if base is None:
            raise AlbumError("the album model needs its base model (base=) to answer fused embeddings")
        if mask is None:
            mask = np.ones(np.asarray(emb).shape[:2], bool)
        emb, probs, hours, mask = check_inputs(emb, probs, hours, mask, self.embed_dim, self.num_cells)
        w = self.w
        x = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        sim = x @ x.transpose(0, 2, 1)  # cosine similarity of the photos: the same scene, or not
        dt, steps = pair_biases(hours, mask)
        feats = photo_features(hours, mask, probs)
        h = probs @ w["in_probs.weight"].T + feats @ w["in_feat.weight"].T + w["in_feat.bias"]
        if "in_emb.weight" in w:
            h = h + x @ w["in_emb.weight"].T
        h = _ln(h, w["in_norm.weight"], w["in_norm.bias"])
        key_ok = mask[:, None, None, :]
        b, n, d = h.shape
        hd = d // self.n_heads
        for layer in range(self.n_layers):
            p = f"layers.{layer}."
            y = _ln(h, w[p + "norm1.weight"], w[p + "norm1.bias"])
            qkv = (y @ w[p + "qkv.weight"].T + w[p + "qkv.bias"]).reshape(b, n, 3, self.n_heads, hd)
            q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
            s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
            s = s - _softplus(w[p + "time_slope"])[None, :, None, None] * dt[:, None] \
                - _softplus(w[p + "step_slope"])[None, :, None, None] * steps[:, None] \
                + w[p + "sim_slope"][None, :, None, None] * sim[:, None]
            a = _softmax(np.where(key_ok, s, -1e9))
            o = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
            h = h + o @ w[p + "proj.weight"].T + w[p + "proj.bias"]
            y = _ln(h, w[p + "norm2.weight"], w[p + "norm2.bias"])
            h = h + _gelu(y @ w[p + "ff1.weight"].T + w[p + "ff1.bias"]) @ w[p + "ff2.weight"].T + w[p + "ff2.bias"]
        h = _ln(h, w["out_norm.weight"], w["out_norm.bias"])
        # the neighbours' opinion: attention over the other photos of the album
        s = (h @ w["pool_q.weight"].T) @ (h @ w["pool_k.weight"].T).transpose(0, 2, 1) / np.sqrt(d)
        s = s - _softplus(w["pool_time_slope"][0]) * dt - _softplus(w["pool_step_slope"][0]) * steps \
            + w["pool_sim_slope"][0] * sim
        others = mask[:, None, :] & ~np.eye(n, dtype=bool)[None]
        a = _softmax(np.where(others, s, -1e9)) * others
        ctx = a @ probs
        valid = np.broadcast_to(mask[:, None, :], s.shape)
        fused = (_softmax(np.where(valid, s, -1e9)) * valid) @ x
        fused_p = np.zeros_like(probs)
        fused_p[mask] = base.predict_proba(fused[mask])
        g = h @ w["gate.weight"].T + w["gate.bias"]
        g[..., 1] = np.where(others.any(-1), g[..., 1], -1e9)  # no neighbours, no neighbours' opinion
        mix = _softmax(g)
        q = mix[..., :1] * probs + mix[..., 1:2] * ctx + mix[..., 2:] * fused_p
        out = np.log(q + EPS) + h @ w["out.weight"].T + w["out.bias"]
        return np.where(mask[..., None], out, 0.0).astype(np.float32)

    def predict_proba(self, emb, probs, hours=None, mask=None, base=None) -> np.ndarray:
        """Per-photo cell probabilities ``[B, L, C]`` with the album's context (padding rows 0)."""
        z = self.logits(emb, probs, hours, mask, base).astype(np.float64)
        m = np.ones(z.shape[:2], bool) if mask is None else np.asarray(mask, bool)
        return (_softmax(z) * m[..., None]).astype(np.float32)


def weight_shapes(meta: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of an album model and its shape (what `album.safetensors` must hold)."""
    d, c, e, f, h = meta["d_model"], meta["num_cells"], meta["embed_dim"], meta["ff"], meta["n_heads"]
    shapes = {"in_probs.weight": (d, c), "in_feat.weight": (d, N_FEAT), "in_feat.bias": (d,),
              "pool_sim_slope": (1,),
              "in_norm.weight": (d,), "in_norm.bias": (d,), "out_norm.weight": (d,), "out_norm.bias": (d,),
              "pool_q.weight": (d, d), "pool_k.weight": (d, d), "pool_time_slope": (1,), "pool_step_slope": (1,),
              "gate.weight": (3, d), "gate.bias": (3,), "out.weight": (c, d), "out.bias": (c,)}
    for layer in range(meta["n_layers"]):
        p = f"layers.{layer}."
        shapes.update({p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "qkv.weight": (3 * d, d),
                       p + "qkv.bias": (3 * d,), p + "proj.weight": (d, d), p + "proj.bias": (d,),
                       p + "norm2.weight": (d,), p + "norm2.bias": (d,), p + "ff1.weight": (f, d),
                       p + "ff1.bias": (f,), p + "ff2.weight": (d, f), p + "ff2.bias": (d,),
                       p + "time_slope": (h,), p + "step_slope": (h,), p + "sim_slope": (h,)})
    if meta.get("embedding_input"):
        shapes["in_emb.weight"] = (d, e)
    return shapes


def check_meta(meta, where: str) -> dict:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise AlbumError(f"{where}: not a geospot album model (format {found!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AlbumError(f"{where}: format_version {meta.get('format_version')!r}; this geospot reads {FORMAT_VERSION}")
    for key in ("embed_dim", "num_cells", "d_model", "n_layers", "n_heads", "ff"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise AlbumError(f"{where}: '{key}' must be a positive integer, got {v!r}")
    if meta["d_model"] % meta["n_heads"]:
        raise AlbumError(f"{where}: d_model {meta['d_model']} is not a multiple of n_heads {meta['n_heads']}")
    if not isinstance(meta.get("cells_hash"), str):
        raise AlbumError(f"{where}: 'cells_hash' is missing")
    return meta


def load_album(model_dir, cells_hash: str | None = None, num_cells: int | None = None,
               embed_dim: int | None = None) -> NumpyAlbumModel | None:
    """The album model stored in a model directory, or None when it has none; `AlbumError` when it is
    damaged or belongs to other cells (retrain it: `geospot train ... --album-model`)."""
    from geospot.models.validate import read_json_bounded, read_numpy_tensors, shape_problems

    root = Path(model_dir)
    path = root / ALBUM_JSON
    if not path.is_file():
        return None
    try:
        meta = check_meta(read_json_bounded(path), str(path))
    except (OSError, ValueError) as exc:
        raise AlbumError(str(exc)) from None
    if cells_hash is not None and meta["cells_hash"] != cells_hash:
        raise AlbumError(f"{path}: trained for other cells than this model's (cells hash differs); retrain it")
    for key, want in (("num_cells", num_cells), ("embed_dim", embed_dim)):
        if want is not None and meta[key] != want:
            raise AlbumError(f"{path}: '{key}' is {meta[key]} but the model has {want}")
    wpath = root / ALBUM_WEIGHTS
    state = read_numpy_tensors(wpath, "album model weights", AlbumError)
    want_shapes = weight_shapes(meta)
    problems = shape_problems({k: v.shape for k, v in state.items()}, want_shapes, ALBUM_JSON)
    if problems:
        raise AlbumError(f"{wpath}: does not match {ALBUM_JSON}: " + "; ".join(problems))
    weights = {k: np.asarray(v, np.float32) for k, v in state.items()}
    if not all(np.isfinite(v).all() for v in weights.values()):
        raise AlbumError(f"{wpath}: non-finite weights")
    return NumpyAlbumModel(meta, weights)


def write_meta(directory, meta: dict) -> None:
    (Path(directory) / ALBUM_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
