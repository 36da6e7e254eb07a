"""Grad-CAM: which pixels made the model pick a cell?

``gradcam`` follows Selvaraju et al. (2017) on the encoder's last feature map
(``Encoder.forward_features``): the weight of each channel is the spatial mean
of the gradient of the target cell's logit with respect to that channel; the
map is the ReLU of the weighted channel sum, upsampled bilinearly to the input
size and divided by its maximum (so 1 = the most important location, 0 = no
positive evidence).

Frames: heatmaps live in the *preprocessed* frame, the ``S x S`` square the
network sees after ``Preprocess`` (shorter side resized, centre crop). Overlay
them on :func:`to_display_image` of the same tensor, not on the original photo.

ViT-style encoders: an encoder whose ``forward_features`` returns its patch
tokens reshaped to ``[B, C, h, w]`` (the encoder contract) goes through exactly
the same code path. Raw token sequences ``[B, N, C]`` are also accepted: the
leading ``N - h*w`` tokens (class/register tokens) are dropped and the rest is
read as an ``h x w`` grid (``h = w = floor(sqrt(N))``), which is where the
gradient-weighted evidence of a ViT lives.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

__all__ = ["gradcam", "jet_colormap", "mean_heatmap", "overlay", "to_display_image"]


def _token_grid(tokens: torch.Tensor) -> torch.Tensor:
    """[B, N, C] tokens -> [B, C, h, w] patch map (prefix tokens such as [CLS] dropped)."""
    b, n, c = tokens.shape
    side = math.isqrt(n)
    if side == 0:
        raise ValueError(f"token sequence of length {n} holds no patch grid")
    patches = tokens[:, n - side * side:, :]
    return patches.transpose(1, 2).reshape(b, c, side, side)


def _targets(target_cells, logits: torch.Tensor) -> torch.Tensor:
    b, c = logits.shape
    if target_cells is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target_cells, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1 and b != 1:
        t = t.expand(b)
    if t.numel() != b:
        raise ValueError(f"target_cells has {t.numel()} entries for a batch of {b}")
    if bool(((t < 0) | (t >= c)).any()):
        raise ValueError(f"target cell out of range: the model has {c} cells (0..{c - 1}), got {t.tolist()}")
    return t


def _modules_of(head) -> list[nn.Module]:
    """The modules behind ``head``: itself, or the ``.head`` of a bound method such as ``GeoModel.logits``."""
    if isinstance(head, nn.Module):
        return [head]
    owner = getattr(head, "__self__", None)
    inner = getattr(owner, "head", None)
    return [inner] if isinstance(inner, nn.Module) else []


def gradcam(
    encoder: nn.Module,
    head: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor | np.ndarray,
    target_cells: int | Sequence[int] | torch.Tensor | None = None,
) -> np.ndarray:
    """Grad-CAM heatmaps ``[B, S, S]`` in ``[0, 1]`` for a preprocessed batch ``x [B, 3, S, S]``.

    ``head`` maps pooled embeddings to cell logits: a `GeoCellHead`, or better
    ``model.logits`` of a `GeoModel`, which applies the model's embedding
    normalisation exactly as in training and prediction.
    ``target_cells``: one cell index for all images, one per image, or ``None``
    for each image's top-scoring cell. The encoder and head are run in eval mode
    (their previous modes are restored) and their parameters get no gradients.
    """
    x = torch.as_tensor(x)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"gradcam expects a batch [B, 3, S, S], got {list(x.shape)}")
    device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    x = x.to(device=device, dtype=torch.float32)
    modes = [(m, m.training) for m in [encoder, *_modules_of(head)]]
    for module, _ in modes:
        module.eval()
    try:
        # Only d(logit)/d(feature map) is needed, so the backbone runs without a graph.
        with torch.no_grad():
            feats = encoder.forward_features(x)
        feats = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = head(encoder.forward_head(feats))
            target = _targets(target_cells, logits)
            score = logits.gather(1, target[:, None]).sum()
            (grads,) = torch.autograd.grad(score, feats)
    finally:
        for module, was_training in modes:
            module.train(was_training)
    if feats.ndim == 3:
        feats, grads = _token_grid(feats), _token_grid(grads)
    if feats.ndim != 4:
        raise ValueError(f"forward_features must return [B, C, h, w] or [B, N, C], got {list(feats.shape)}")
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * feats).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[:, 0]
        peak = cam.amax(dim=(1, 2), keepdim=True)
        cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
    return cam.clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)


def mean_heatmap(
    encoder: nn.Module,
    head: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor | np.ndarray],
    target_cells: Iterable | None = None,
) -> tuple[np.ndarray, int]:
    """Mean Grad-CAM ``[S, S]`` over preprocessed batches; returns ``(mean, n_images)``.

    Each image's map is normalised to peak 1 before averaging, so every image
    counts equally. ``target_cells`` (optional) yields one target per batch, as
    accepted by :func:`gradcam`. The mean is in the preprocessed frame.
    """
    total: np.ndarray | None = None
    n = 0
    targets = iter(target_cells) if target_cells is not None else None
    for batch in batches:
        cams = gradcam(encoder, head, batch, None if targets is None else next(targets))
        total = cams.sum(axis=0, dtype=np.float64) if total is None else total + cams.sum(axis=0, dtype=np.float64)
        n += cams.shape[0]
    if total is None or n == 0:
        raise ValueError("mean_heatmap: no images")
    return (total / n).astype(np.float32), n


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in ``[0, 1]`` to a jet-like RGB ramp (blue -> cyan -> yellow -> red), uint8 ``[..., 3]``."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.round(np.stack([r, g, b], axis=-1) * 255.0).astype(np.uint8)


def overlay(img: Image.Image | np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a jet-coloured ``heatmap [h, w]`` (values in [0, 1]) over ``img``; returns an RGB image.

    The heatmap is resized bilinearly to the image size; ``alpha`` is the weight
    of the colour layer (0 = image only, 1 = heatmap only).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    base = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    base = base.convert("RGB")
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.ndim != 2:
        raise ValueError(f"heatmap must be 2-D [h, w], got shape {hm.shape}")
    hm = np.nan_to_num(hm, nan=0.0)
    if hm.shape != (base.height, base.width):
        hm = np.asarray(Image.fromarray(hm).resize(base.size, Image.Resampling.BILINEAR))
    colour = jet_colormap(hm).astype(np.float32)
    out = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colour
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def to_display_image(x: torch.Tensor | np.ndarray, preprocess) -> Image.Image:
    """Undo ``preprocess``'s normalisation of one input ``[3, S, S]``: the image the network saw."""
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected one preprocessed image [3, S, S], got shape {arr.shape}")
    mean = np.asarray(preprocess.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocess.std, dtype=np.float32)[:, None, None]
    rgb = (arr * std + mean) * 255.0
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy())
