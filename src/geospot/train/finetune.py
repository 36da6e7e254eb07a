"""End-to-end fine-tuning: the last N encoder blocks and the geocell head, trained on images.

The frozen path (`geospot.train.fit.train_head`) learns a head on cached
embeddings. `finetune` continues from such a model and also trains the last
``unfreeze`` blocks of the encoder (plus its head conv/BN, `Encoder.tail_modules`)
on augmented images, with the same losses (haversine label smoothing or CE) and
the same validation metric (GeoScore of the local top-k mean estimate).

- Frozen parts stay in eval mode: their BatchNorm statistics do not move.
- Augmentation (PIL/NumPy, no torchvision): random resized crops (area scale
  0.6-1.0 of the photo, aspect 3/4-4/3) resized to the encoder's input size and
  brightness/contrast/saturation jitter. Horizontal flips are OFF by default:
  the side of the road people drive on and the direction of text are clues.
- Images go through `open_image`, then the model's mask, then augmentation or
  `preprocess`, in a small thread pool (PIL decodes without the GIL); no
  torch DataLoader and no worker processes.
- Every epoch is checkpointed into ``run_dir`` (``finetune-state.json`` +
  ``finetune-epochNNNN.safetensors``: weights, optimizer moments, RNG state).
  Calling `finetune` again with the same arguments resumes after the last
  completed epoch, and gives the same weights as an uninterrupted run: shuffles
  and augmentations are drawn from ``(seed, epoch, row)``, and the torch RNG
  (dropout, stochastic depth) is restored from the checkpoint
  (`geospot.train.finetune_state`).
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from geospot.data.images import ImageError, open_image
from geospot.train.config import DEFAULT_TAU_KM
from geospot.train.finetune_state import (  # noqa: F401 (STATE_FILE: where a run's state lives, re-exported)
    STATE_FILE, _fingerprint, _load_checkpoint, _save_checkpoint, resume_state,
)

__all__ = [
    "FinetuneConfig",
    "augment",
    "build_encoder",
    "finetune",
    "iter_image_batches",
    "model_mask",
    "model_preprocess",
    "resolve_device",
    "with_head",
]

LOSSES = ("haversine", "ce")


@dataclass
class FinetuneConfig:
    """Hyper-parameters of :func:`finetune` (stored in the model's ``train_config["finetune"]``).

    ``unfreeze``: encoder blocks trained (counted from the end; 0 = head only, on
    images). ``lr_head``/``lr_encoder``: AdamW learning rates, cosine-decayed per
    epoch. ``crop_scale``/``crop_ratio``: random-resized-crop area fraction and
    aspect range (``crop_scale=(1, 1)`` and ``jitter=0`` disable augmentation).
    ``jitter``: brightness, contrast and saturation factors drawn from
    ``[1 - jitter, 1 + jitter]``. ``hflip``: random horizontal flips (off: driving
    side and text direction are location clues). ``mask``: a ``Mask.to_dict()``
    (None = the model's own mask). ``workers``: image-decoding threads.
    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
    """

    unfreeze: int = 2
    epochs: int = 5
    lr_head: float = 1e-3
    lr_encoder: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    hflip: bool = False
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: float = 0.2
    mask: dict | None = None
    loss: str = "haversine"
    tau_km: float = DEFAULT_TAU_KM
    class_weighting: str = "none"
    estimate_top_k: int = 5
    seed: int = 0
    device: str = "auto"
    workers: int = 2

    def __post_init__(self) -> None:
        self.crop_scale = tuple(float(v) for v in self.crop_scale)  # JSON gives lists
        self.crop_ratio = tuple(float(v) for v in self.crop_ratio)
        problems = []
        for name in ("unfreeze", "epochs", "batch_size", "estimate_top_k", "workers", "seed"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                problems.append(f"{name} must be an integer, got {v!r}")
        if not problems:
            if self.unfreeze < 0 or self.seed < 0:
                problems.append("unfreeze and seed must be >= 0")
            if min(self.epochs, self.batch_size, self.estimate_top_k, self.workers) < 1:
                problems.append("epochs, batch_size, estimate_top_k and workers must be >= 1")
        for name in ("lr_head", "lr_encoder", "weight_decay", "tau_km", "jitter"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                problems.append(f"{name} must be a finite number >= 0, got {v!r}")
        if self.tau_km <= 0 or self.jitter >= 1:
            problems.append(f"tau_km must be > 0 and jitter < 1 (got {self.tau_km}, {self.jitter})")
        lo, hi = (self.crop_scale + (0.0, 0.0))[:2]
        if len(self.crop_scale) != 2 or not 0 < lo <= hi <= 1:
            problems.append(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {self.crop_scale}")
        if len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            problems.append(f"crop_ratio must be (lo, hi) with 0 < lo <= hi, got {self.crop_ratio}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.class_weighting not in ("none", "inv_sqrt"):
            problems.append(f"class_weighting must be 'none' or 'inv_sqrt', got {self.class_weighting!r}")
        if self.mask is not None and not isinstance(self.mask, dict):
            problems.append(f"mask must be a Mask.to_dict() dict or None, got {type(self.mask).__name__}")
        if problems:
            raise ValueError("FinetuneConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        d = asdict(self)
        d["crop_scale"], d["crop_ratio"] = list(self.crop_scale), list(self.crop_ratio)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinetuneConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"FinetuneConfig: unknown key(s) {unknown}")
        return cls(**d)


# ---------------------------------------------------------------------------- building blocks


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_encoder(model, pretrained: bool = True):
    """The model's encoder (``create_encoder``) with its fine-tuned weights loaded when it has them."""
    from geospot.encoders import create_encoder

    encoder = create_encoder(model.encoder_name, pretrained=pretrained)
    if getattr(model, "encoder_state", None):
        encoder.load_state_dict(model.encoder_state)
    return encoder.eval()


def model_mask(model, override: dict | None = None):
    """The `Mask` a model applies to every image (``override`` dict wins), or None for no mask."""
    from geospot.data.masks import Mask

    spec = override if override is not None else getattr(model, "mask", None)
    if spec is None:
        return None
    mask = spec if isinstance(spec, Mask) else Mask.from_dict(spec)
    return None if mask.is_empty else mask


def model_preprocess(model, encoder):
    """The preprocessing recorded in the model (authoritative), else the encoder's default."""
    from geospot.encoders.base import Preprocess

    recorded = getattr(model, "preprocess", None)
    if isinstance(recorded, Preprocess):
        return recorded
    return Preprocess.from_dict(recorded) if recorded else encoder.preprocess


def normalise_image(img: Image.Image, preprocess) -> np.ndarray:
    """An image already at the input size -> float32 [3, S, S] with the preprocess mean/std."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    mean = np.asarray(preprocess.mean, dtype=np.float32) * 255.0
    std = np.asarray(preprocess.std, dtype=np.float32) * 255.0
    return np.ascontiguousarray(((arr - mean) / std).transpose(2, 0, 1))


def augment(img: Image.Image, size: int, rng: np.random.Generator, config: FinetuneConfig) -> Image.Image:
    """Random resized crop to ``size x size``, colour jitter and (only if enabled) a horizontal flip."""
    w, h = img.size
    area = float(w * h)
    lo_r, hi_r = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    box = None
    for _ in range(10):  # torchvision's recipe: rejection-sample a crop that fits
        target = area * rng.uniform(*config.crop_scale)
        ratio = math.exp(rng.uniform(lo_r, hi_r))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (x0, y0, x0 + cw, y0 + ch)
            break
    if box is None:  # fall back to the largest central square
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    if config.jitter > 0:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            out = enhancer(out).enhance(float(rng.uniform(1.0 - config.jitter, 1.0 + config.jitter)))
    if config.hflip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def iter_loaded(
    batches: Sequence[Sequence[Any]],
    load: Callable[[Any], np.ndarray],
    workers: int = 2,
    prefetch: int = 2,
) -> Iterator[tuple[list[int], np.ndarray | None, dict[int, str]]]:
    """Load each batch of keys with a thread pool, ``prefetch`` batches ahead of the consumer.

    Yields ``(indices, array [b, ...] or None, errors)`` per batch: ``indices`` are the
    positions within the batch of the keys that loaded, ``errors`` maps those that failed
    (`ImageError`, ``OSError``, ``ValueError``) to the reason. Order is preserved, so
    results do not depend on thread timing.
    """
    def safe(key):
        try:
            return load(key), None
        except ImageError as exc:
            return None, exc.reason
        except (OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="geospot-load") as pool:
        pending: deque = deque()
        it = iter(batches)

        def submit_next() -> None:
            keys = next(it, None)
            if keys is not None:
                pending.append([pool.submit(safe, k) for k in keys])

        for _ in range(max(1, prefetch)):
            submit_next()
        while pending:
            futures = pending.popleft()
            submit_next()
            ok, arrays, errors = [], [], {}
            for i, fut in enumerate(futures):
                arr, reason = fut.result()
                if reason is None:
                    ok.append(i)
                    arrays.append(arr)
                else:
                    errors[i] = reason
            yield ok, (np.stack(arrays) if arrays else None), errors


def iter_image_batches(
    items: Sequence[Any],
    load: Callable[[Any], np.ndarray],
    batch_size: int,
    workers: int = 2,
    prefetch: int = 2,
) -> Iterator[tuple[list[int], np.ndarray | None, dict[int, str]]]:
    """`iter_loaded` over ``items`` in batches of ``batch_size``: yields ``(positions, array
    or None, errors)`` with ``positions`` (and the keys of ``errors``) indexing ``items``."""
    starts = range(0, len(items), batch_size)
    batches = [range(s, min(s + batch_size, len(items))) for s in starts]
    loaded = iter_loaded(batches, lambda pos: load(items[pos]), workers, prefetch)
    for positions, (ok, arr, errors) in zip(batches, loaded):
        yield [positions[i] for i in ok], arr, {positions[i]: r for i, r in errors.items()}


def _row_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    # One independent stream per (seed, epoch, row): augmentation is reproducible on resume
    # and independent of the order in which threads finish.
    return np.random.default_rng([seed, epoch, row])


# ---------------------------------------------------------------------------- training


def trainable_parts(model, config, device):
    """(encoder, its unfrozen tail, a copy of the head, the model with that head, AdamW over both):
    the set-up shared by one-process and distributed fine-tuning."""
    encoder = build_encoder(model).to(device)
    tail = _trainable(encoder, config.unfreeze)
    head = copy.deepcopy(model.head).to(device)
    work = with_head(model, head)
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder_params = [p for m in tail for p in m.parameters()]
    for p in list(encoder_params) + list(head.parameters()):
        p.requires_grad_(True)
    groups = [{"params": list(head.parameters()), "lr": config.lr_head}]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": config.lr_encoder})
    return encoder, tail, head, work, torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def _trainable(encoder, unfreeze: int) -> list[torch.nn.Module]:
    blocks = list(encoder.blocks)
    if unfreeze > len(blocks):
        raise ValueError(f"{encoder.name} has {len(blocks)} blocks; cannot unfreeze {unfreeze}")
    return encoder.tail_modules(unfreeze) if unfreeze > 0 else []


def _set_modes(encoder, tail: list[torch.nn.Module], head, training: bool) -> None:
    encoder.eval()  # frozen BatchNorm keeps its running statistics
    for m in tail:
        m.train(training)
    head.train(training)


def with_head(model, head):
    """A shallow copy of ``model`` predicting with ``head``: its ``logits`` applies the model's
    embedding normalisation exactly as the frozen path and prediction do."""
    work = copy.copy(model)
    work.head = head
    return work


def _evaluate(model, encoder, df, preprocess, mask, config, device) -> dict[str, Any]:
    """Validation metrics of the current weights on un-augmented images."""
    from geospot.eval.metrics import distance_metrics, topk_accuracy
    from geospot.models.estimate import point_estimates

    def load(row: int) -> np.ndarray:
        img = open_image(df["path"].iat[row])
        return preprocess(mask.apply(img) if mask is not None else img)

    probs, rows, errors = [], [], {}
    _set_modes(encoder, [], model.head, training=False)
    with torch.no_grad():
        for pos, x, errs in iter_image_batches(range(len(df)), load, config.batch_size, config.workers):
            errors.update(errs)
            if x is None:
                continue
            logits = model.logits(encoder(torch.from_numpy(x).to(device)))
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            rows.extend(pos)
    if not rows:
        raise ValueError("validation: none of the validation images could be read")
    p = np.concatenate(probs)
    lat, lon = df["lat"].to_numpy()[rows], df["lon"].to_numpy()[rows]
    est = point_estimates(p, model.cells.centroid_lat, model.cells.centroid_lon, top_k=config.estimate_top_k)
    out = distance_metrics(est["local_lat"], est["local_lon"], lat, lon)
    out.update(topk_accuracy(p, np.asarray(model.cells.assign(lat, lon), dtype=np.int64), ks=(1, 5)))
    out["n_failed"] = len(errors)
    return out


def finetune(
    model,
    train_manifest,
    config: FinetuneConfig | dict | None = None,
    run_dir: str | os.PathLike = "finetune.run",
    val_manifest=None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
):
    """Fine-tune ``model``'s last ``config.unfreeze`` encoder blocks and head end to end; return a new `GeoModel`.

    ``model``: a trained `GeoModel` (its head is the starting point; it is not
    modified). ``train_manifest``/``val_manifest``: `Manifest` objects or paths.
    ``run_dir``: checkpoints; rerunning with the same arguments resumes after the
    last completed epoch (a different model/data/config there is an error).
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is
    written (1-based epoch). Unreadable images are reported once on stderr and
    skipped. The returned model carries ``encoder_state`` (the full fine-tuned
    encoder), the trained head, the mask used, ``train_config["finetune"]`` and
    ``metrics["finetune"]`` (per-epoch history; validation metrics when given).
    """
    from geospot.data.manifest import read_manifest
    from geospot.train.fit import class_weights
    from geospot.train.losses import haversine_smoothing_targets, soft_cross_entropy

    if config is None:
        config = FinetuneConfig()
    elif isinstance(config, dict):
        config = FinetuneConfig.from_dict(config)
    t0 = time.perf_counter()
    train = train_manifest if hasattr(train_manifest, "df") else read_manifest(train_manifest)
    val = None if val_manifest is None else (val_manifest if hasattr(val_manifest, "df") else read_manifest(val_manifest))
    df = train.df.reset_index(drop=True)
    if len(df) == 0:
        raise ValueError("finetune: the training manifest is empty")
    device = resolve_device(config.device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    encoder, tail, head, work, optimizer = trainable_parts(model, config, device)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    mask = model_mask(model, config.mask)
    preprocess = model_preprocess(model, encoder)
    cells = model.cells
    lat_all, lon_all = df["lat"].to_numpy(np.float64), df["lon"].to_numpy(np.float64)
    labels = np.asarray(cells.assign(lat_all, lon_all, nearest=True), dtype=np.int64)
    cell_lat = torch.as_tensor(np.asarray(cells.centroid_lat, dtype=np.float64), device=device)
    cell_lon = torch.as_tensor(np.asarray(cells.centroid_lon, dtype=np.float64), device=device)
    cw = torch.as_tensor(class_weights(labels, len(cells), config.class_weighting), device=device)

    fingerprint = _fingerprint(model, df, config)
    state = _load_checkpoint(run_dir, fingerprint)
    torch.manual_seed(config.seed)
    history, bad_rows, start_epoch = resume_state(run_dir, state, encoder, head, optimizer)
    if state is not None:
        print(f"finetune: resuming {run_dir} after epoch {state['epoch']}/{config.epochs}", file=sys.stderr)

    def load_train(item: tuple[int, int]) -> np.ndarray:
        row, epoch = item
        img = open_image(df["path"].iat[row])
        if mask is not None:
            img = mask.apply(img)
        return normalise_image(augment(img, preprocess.size, _row_rng(config.seed, epoch, row), config), preprocess)

    for epoch in range(start_epoch, config.epochs + 1):
        factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))  # cosine, per epoch
        for g, lr in zip(optimizer.param_groups, base_lrs):
            g["lr"] = lr * factor
        order = np.random.default_rng([config.seed, epoch]).permutation(len(df))
        order = np.asarray([r for r in order if str(r) not in bad_rows])
        items = [(int(r), epoch) for r in order]
        _set_modes(encoder, tail, head, training=True)
        total, seen, t_epoch = 0.0, 0, time.perf_counter()
        for pos, x, errors in iter_image_batches(items, load_train, config.batch_size, config.workers):
            for p, reason in errors.items():
                row = items[p][0]
                bad_rows[str(row)] = reason
                print(f"finetune: skipping {df['path'].iat[row]}: {reason}", file=sys.stderr)
            if x is None or len(pos) < 2:  # BatchNorm in train mode needs more than one sample
                continue
            rows = order[pos]
            xb = torch.from_numpy(x).to(device)
            logits = work.logits(encoder(xb))
            if config.loss == "haversine":
                lat_b = torch.as_tensor(lat_all[rows], device=device)
                lon_b = torch.as_tensor(lon_all[rows], device=device)
                targets = haversine_smoothing_targets(cell_lat, cell_lon, lat_b, lon_b, config.tau_km)
                sw = cw[torch.as_tensor(labels[rows], device=device)] if config.class_weighting != "none" else None
                loss = soft_cross_entropy(logits, targets.to(logits.dtype), sample_weight=sw)
            else:
                weight = cw.to(logits.dtype) if config.class_weighting != "none" else None
                loss = F.cross_entropy(logits, torch.as_tensor(labels[rows], device=device), weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(pos)
            seen += len(pos)
        if seen == 0:
            raise ValueError("finetune: no training batch could be loaded (see the errors above)")
        record: dict[str, Any] = {"epoch": epoch, "train_loss": total / seen, "n_train": seen,
                                  "lr_head": optimizer.param_groups[0]["lr"],
                                  "seconds": round(time.perf_counter() - t_epoch, 3)}
        if val is not None:
            metrics = _evaluate(work, encoder, val.df.reset_index(drop=True), preprocess, mask, config, device)
            record.update({f"val_{k}": v for k, v in metrics.items()})
        history.append(record)
        _save_checkpoint(run_dir, epoch, encoder, head, optimizer, fingerprint, history, bad_rows)
        if progress:
            val_txt = f", val GeoScore {record['val_geoscore']:.0f}" if "val_geoscore" in record else ""
            print(f"finetune: epoch {epoch}/{config.epochs} loss {record['train_loss']:.4f}{val_txt} "
                  f"({record['seconds']:.0f} s)", file=sys.stderr)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    if state is not None and start_epoch > config.epochs:
        print(f"finetune: {run_dir} already holds all {config.epochs} epochs", file=sys.stderr)
    return _result_model(model, encoder, head, mask, config, history, bad_rows, time.perf_counter() - t0)


def _result_model(model, encoder, head, mask, config, history, bad_rows, seconds: float):
    from geospot.models.checkpoint import GeoModel

    for p in list(encoder.parameters()) + list(head.parameters()):
        p.requires_grad_(False)
    encoder.eval()
    head.eval()
    train_config = dict(model.train_config or {})
    train_config["finetune"] = config.to_dict()
    metrics = dict(model.metrics or {})
    last = history[-1] if history else {}
    metrics["finetune"] = {
        "history": history,
        "val": {k[len("val_"):]: v for k, v in last.items() if k.startswith("val_")},
        "n_skipped_images": len(bad_rows),
        "seconds": round(seconds, 3),
    }
    return GeoModel(
        encoder_name=model.encoder_name,
        preprocess=model_preprocess(model, encoder).to_dict(),
        head=head.cpu(),
        cells=model.cells,
        train_config=train_config,
        metrics=metrics,
        mask=mask.to_dict() if mask is not None else None,
        encoder_state={k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
        normalize=model.normalize,
    )
