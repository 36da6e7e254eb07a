"""Shortcut audit: is the model reading the landscape, or a watermark?

A geolocation model that scores too well may have learned a shortcut: the
photographer's name in a corner, a date stamp, the camera car at the bottom.
`audit` evaluates a model on a test manifest again and again, each time with one
region of every image hidden (`geospot.data.masks.occlusion_masks`: bottom and
top strips, the four corners, the centre and a coarse grid), and compares with
the unmasked score. Landscape evidence is spread over the image, so hiding a
small region costs about its share of the image, or less. A shortcut lives in a
small region, so hiding it costs far more than its share.

For each mask the audit reports cell top-1 accuracy, acc@25/200/750 km and
GeoScore (of the local top-k mean, the estimate geospot reports and the frozen path's
validation metric), their change against the unmasked run, the mask's area
fraction and the **excess drop** = relative GeoScore drop / area fraction. A
mask is flagged as a shortcut when

    area <= max_area  and  relative drop >= min_rel_drop  and  excess drop >= min_excess

(defaults 0.15, 0.2 and 3: hiding at most 15 % of the image, the size of the
bottom/top strips and larger than the 6.25 % corners, loses at least a fifth of
the GeoScore and at least three times its area share).

The audit also computes the mean Grad-CAM over (a sample of) the images and the
share of its mass inside each mask region. Grad-CAM lives in the preprocessed
frame (after the resize and centre crop), so each region is mapped into that
frame first (``view_area``: its share of the network's input); a mass share far
above ``view_area`` means the model looks there.

Every audit mask is added on top of the model's own mask (the model always sees
its trained mask), painted with the model's fill colour.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["DEFAULT_MAX_AREA", "DEFAULT_MIN_EXCESS", "DEFAULT_MIN_REL_DROP", "audit", "audit_table",
           "probs_metrics", "region_in_view", "write_audit_report"]

from geospot.explain.thresholds import DEFAULT_MAX_AREA, DEFAULT_MIN_EXCESS, DEFAULT_MIN_REL_DROP  # noqa: E402
METRIC_KEYS = ("cell_top1", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "geoscore", "median_km")


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(f"audit: {msg}", file=sys.stderr, flush=True)


def _combine(model_mask, audit_mask):
    """The model's mask plus an audit mask, as one `Mask` in the model's fill colour."""
    from geospot.data.masks import Mask

    if model_mask is None:
        return audit_mask
    return Mask(tuple(model_mask.boxes) + tuple(audit_mask.boxes), model_mask.fill)


def probs_metrics(probs: np.ndarray, lat: np.ndarray, lon: np.ndarray, cells, top_k: int = 5) -> dict[str, float]:
    """Per-image scores of cell probabilities ``[N, C]``: ``cell_top1``, ``acc_25km`` .. ``acc_2500km``,
    ``geoscore`` and ``median_km`` of the local top-k mean (the estimate geospot reports and
    validates on: the probability-weighted mean of the top-k cells near the top cell)."""
    from geospot.eval.metrics import distance_metrics, topk_accuracy
    from geospot.models.estimate import point_estimates

    est = point_estimates(probs, cells.centroid_lat, cells.centroid_lon, top_k=top_k)
    dist = distance_metrics(est["local_lat"], est["local_lon"], lat, lon)
    true_idx = np.asarray(cells.assign(lat, lon), dtype=np.int64)
    out = {"cell_top1": topk_accuracy(probs, true_idx, ks=(1,))["top1"]}
    out.update({k: dist[k] for k in ("acc_25km", "acc_200km", "acc_750km", "acc_2500km", "geoscore", "median_km")})
    return out


def region_in_view(mask, width: int, height: int, preprocess) -> np.ndarray:
    """Where ``mask``'s boxes land in the preprocessed frame of a ``width x height`` photo: float32 ``[S, S]`` in {0, 1}.

    Rendered through ``preprocess`` itself (white boxes on black), so it follows
    exactly the resize, crop and outward pixel rounding that real images get.
    """
    from geospot.data.masks import Mask

    canvas = Mask(tuple(mask.boxes), (255, 255, 255)).apply(Image.new("RGB", (width, height)))
    arr = preprocess(canvas)[0] * float(preprocess.std[0]) + float(preprocess.mean[0])
    return (arr > 0.5).astype(np.float32)


def _gradcam_stats(model, manifest, masks: dict, n_images: int, batch_size: int, workers: int,
                   device: str, progress: bool) -> dict[str, Any]:
    """Mean Grad-CAM (top predicted cell) over up to ``n_images`` evenly spaced images, and its mass per mask."""
    from geospot.data.images import open_image
    from geospot.explain.gradcam import gradcam
    from geospot.train.finetune import (build_encoder, iter_image_batches, model_mask, model_preprocess,
                                        resolve_device, with_head)

    dev = resolve_device(device)
    encoder = build_encoder(model).to(dev)
    model = with_head(model, copy.deepcopy(model.head).to(dev))  # the caller's model stays on its device
    preprocess = model_preprocess(model, encoder)
    mask = model_mask(model)
    paths = list(manifest.paths)
    picks = np.unique(np.linspace(0, len(paths) - 1, num=min(n_images, len(paths))).round().astype(int))
    sizes: dict[int, tuple[int, int]] = {}

    def load(pos: int) -> np.ndarray:
        img = open_image(paths[picks[pos]])
        sizes[pos] = img.size
        return preprocess(mask.apply(img) if mask is not None else img)

    region_cache: dict[tuple[str, int, int], np.ndarray] = {}
    total = None
    mass = {name: 0.0 for name in masks}
    view = {name: 0.0 for name in masks}
    examples: list[tuple[np.ndarray, np.ndarray]] = []
    n = 0
    for pos, x, _errors in iter_image_batches(range(len(picks)), load, batch_size, workers):
        if x is None:
            continue
        cams = gradcam(encoder, model.logits, torch.from_numpy(x))
        tops = [None] * len(pos)
        if len(examples) < 4:  # the examples' captions name the top cell and its probability
            with torch.no_grad():
                pr = torch.softmax(model.logits(encoder(torch.from_numpy(x).to(dev))), dim=1).cpu().numpy()
            tops = [(str(model.cells.ids[int(row.argmax())]), float(row.max())) for row in pr]
        for p, cam, xi, top in zip(pos, cams, x, tops):
            w, h = sizes[p]
            for name, m in masks.items():
                key = (name, w, h)
                if key not in region_cache:
                    region_cache[key] = region_in_view(m, w, h, preprocess)
                region = region_cache[key]
                mass[name] += float((cam * region).sum())
                view[name] += float(region.mean())
            if len(examples) < 4:
                examples.append((xi, cam, top, paths[picks[p]]))
        total = cams.sum(axis=0, dtype=np.float64) if total is None else total + cams.sum(axis=0, dtype=np.float64)
        n += len(pos)
    if n == 0 or total is None:
        return {"n_images": 0}
    all_mass = float(total.sum())
    _log(f"Grad-CAM over {n} images", progress)
    return {
        "n_images": n,
        "mean": (total / n).astype(np.float32),
        "mass": {k: (v / all_mass if all_mass > 0 else 0.0) for k, v in mass.items()},
        "view_area": {k: v / n for k, v in view.items()},
        "examples": examples,
        "preprocess": preprocess,
    }


def audit(
    model,
    manifest,
    masks: dict | None = None,
    *,
    grid: int = 3,
    max_area: float = DEFAULT_MAX_AREA,
    min_rel_drop: float = DEFAULT_MIN_REL_DROP,
    min_excess: float = DEFAULT_MIN_EXCESS,
    gradcam_images: int = 128,
    top_k: int | None = None,
    cache_dir: str | Path | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``manifest`` with each region of ``masks`` hidden; flag shortcuts.

    ``model``: a `GeoModel`; ``manifest``: a `Manifest` or a path. ``masks``:
    ``{name: Mask or spec}`` (default ``occlusion_masks(grid)``). Thresholds: see
    the module docstring. ``gradcam_images``: images (evenly spaced over the
    manifest) used for the mean Grad-CAM (0 = skip). ``top_k``: cells in the
    local mean estimate (default: the model's ``estimate_top_k``, else 5).
    Embeddings go through the cached, resumable embedding pipeline
    (``cache_dir``, ``backend``, ``device``). Images that fail to load are left
    out of every run (listed in ``errors``).

    Returns a dict: ``baseline`` metrics, ``masks`` (one entry per mask with
    ``area``, ``metrics``, ``delta``, ``rel_drop``, ``excess_drop``,
    ``gradcam_mass``, ``view_area``, ``flagged``), ``flagged`` (names, worst
    first), ``verdict`` (one sentence), ``gradcam`` (``mean`` heatmap ``[S, S]``
    in the preprocessed frame, ``n_images``) and the settings used.
    """
    from geospot.data.manifest import read_manifest
    from geospot.data.masks import occlusion_masks, parse_mask
    from geospot.pipeline import embed_manifest
    from geospot.train.finetune import model_mask

    for name, value, lo in (("max_area", max_area, 0.0), ("min_rel_drop", min_rel_drop, 0.0), ("min_excess", min_excess, 0.0)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < lo:
            raise ValueError(f"audit: {name} must be a finite number >= {lo}, got {value!r}")
    if not hasattr(manifest, "df"):
        manifest = read_manifest(manifest)
    if len(manifest) == 0:
        raise ValueError("audit: the manifest is empty")
    named = occlusion_masks(grid) if masks is None else {k: parse_mask(v) for k, v in masks.items()}
    if not named or any(m.is_empty for m in named.values()):
        raise ValueError("audit: every audit mask must hide something")
    if top_k is None:
        top_k = int((model.train_config or {}).get("estimate_top_k", 5))
    base_mask = model_mask(model)
    lat, lon = np.asarray(manifest.lat, dtype=np.float64), np.asarray(manifest.lon, dtype=np.float64)

    def run(mask, label: str):
        _log(f"embedding {len(manifest)} images ({label})", progress)
        res = embed_manifest(manifest, model.encoder_name, mask=mask, encoder_state=model.encoder_state,
                             cache_dir=cache_dir, backend=backend, device=device, batch_size=batch_size,
                             workers=workers, progress=progress)
        return np.asarray(res.embeddings, dtype=np.float32), np.asarray(res.ok, dtype=bool), dict(res.errors)

    emb0, ok, errors = run(base_mask, "unmasked")
    runs = {}
    for name, m in named.items():
        emb, ok_m, err_m = run(_combine(base_mask, m), name)
        runs[name] = emb
        ok &= ok_m
        errors.update(err_m)
    if not ok.any():
        raise ValueError(f"audit: none of the {len(manifest)} images of {manifest.source} could be used")
    paths = list(manifest.paths)
    failed = {paths[i]: str(errors.get(i, "could not be embedded")) for i in np.flatnonzero(~ok)}

    baseline = probs_metrics(model.predict_proba(emb0[ok]), lat[ok], lon[ok], model.cells, top_k)
    cam = _gradcam_stats(model, manifest.subset(np.flatnonzero(ok)), named, gradcam_images, batch_size, workers,
                         device, progress) if gradcam_images > 0 else {"n_images": 0}
    g0 = baseline["geoscore"]
    rows = []
    for name, m in named.items():
        met = probs_metrics(model.predict_proba(runs[name][ok]), lat[ok], lon[ok], model.cells, top_k)
        rel_drop = (g0 - met["geoscore"]) / g0 if g0 > 0 else 0.0
        area = float(m.area)
        excess = rel_drop / area if area > 0 else 0.0
        row = {
            "name": name,
            "spec": str(m),
            "area": area,
            "metrics": met,
            "delta": {k: met[k] - baseline[k] for k in METRIC_KEYS},
            "rel_drop": rel_drop,
            "excess_drop": excess,
            # the tolerance absorbs float noise such as 1 - 0.85 = 0.15000000000000002
            "flagged": bool(area <= max_area + 1e-9 and rel_drop >= min_rel_drop and excess >= min_excess),
        }
        if cam.get("n_images"):
            row["gradcam_mass"] = cam["mass"][name]
            row["view_area"] = cam["view_area"][name]
        rows.append(row)

    flagged = sorted((r for r in rows if r["flagged"]), key=lambda r: -r["excess_drop"])
    result = {
        "model": {"encoder": model.encoder_name, "cells": len(model.cells), "mask": model.mask},
        "manifest": str(manifest.source) if getattr(manifest, "source", None) else None,
        "n_images": int(ok.sum()),
        "n_failed": int((~ok).sum()),
        "errors": failed,
        "thresholds": {"max_area": max_area, "min_rel_drop": min_rel_drop, "min_excess": min_excess},
        "top_k": top_k,
        "baseline": baseline,
        "masks": rows,
        "flagged": [r["name"] for r in flagged],
        "verdict": _verdict(flagged, max_area, min_rel_drop, min_excess),
        "gradcam": cam,
    }
    return result


def _verdict(flagged: list[dict], max_area: float, min_rel_drop: float, min_excess: float) -> str:
    if not flagged:
        return (f"No shortcut found: hiding no region of at most {max_area:.0%} of the image cost "
                f"{min_rel_drop:.0%} of the GeoScore and {min_excess:g}x its area share.")
    parts = []
    for r in flagged:
        text = (f"{r['name']} ({r['area']:.1%} of the image): GeoScore -{r['rel_drop']:.0%}, "
                f"{r['excess_drop']:.1f}x its area share")
        if "gradcam_mass" in r:
            text += f"; {r['gradcam_mass']:.0%} of the Grad-CAM mass (vs {r['view_area']:.1%} of the view)"
        parts.append(text)
    return "SHORTCUT SUSPECTED - the model relies on a small region: " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------- report


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _example_caption(result: dict, top, path: str) -> str:
    """``photo.jpg: predicted cell X, p = 12.3%`` for an audit example (``top`` = (cell id, probability))."""
    name = Path(str(path)).name
    return name if top is None else f"{name}: predicted cell {top[0]}, p = {100 * top[1]:.1f}%"


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.1%}" if pct else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}")


def audit_table(result: dict) -> str:
    """The per-mask results as a Markdown table (also what `geospot audit` prints)."""
    has_cam = any("gradcam_mass" in r for r in result["masks"])
    head = ["region", "area", "top-1", "acc@25km", "acc@200km", "acc@750km", "GeoScore", "GeoScore change",
            "excess drop"] + (["Grad-CAM mass", "share of view"] if has_cam else []) + ["flag"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    b = result["baseline"]
    base = ["(none: unmasked)", "0%", _fmt(b["cell_top1"], True), _fmt(b["acc_25km"], True),
            _fmt(b["acc_200km"], True), _fmt(b["acc_750km"], True), _fmt(b["geoscore"]), "", ""]
    lines.append("| " + " | ".join(base + (["", ""] if has_cam else []) + [""]) + " |")
    for r in result["masks"]:
        m = r["metrics"]
        cells = [r["name"], _fmt(r["area"], True), _fmt(m["cell_top1"], True), _fmt(m["acc_25km"], True),
                 _fmt(m["acc_200km"], True), _fmt(m["acc_750km"], True), _fmt(m["geoscore"]),
                 f"{-r['rel_drop']:+.1%}", f"{r['excess_drop']:.1f}x"]
        if has_cam:
            cells += [_fmt(r.get("gradcam_mass"), True), _fmt(r.get("view_area"), True)]
        cells.append("**SHORTCUT**" if r["flagged"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_audit_report(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``audit.md`` and ``audit.json`` (+ PNG heatmaps) to ``out_dir``; return the written paths.

    PNGs: ``mean_gradcam.png`` (jet colours, preprocessed frame),
    ``gradcam_examples.png`` (overlays of the first images), ``occlusion_grid.png``
    (relative GeoScore drop per grid cell). The Markdown links them and embeds a
    base64 thumbnail of the mean Grad-CAM, so the file stands alone.
    """
    from geospot.explain.figures import gradcam_examples_figure, mean_gradcam_figure, occlusion_grid_figure
    from geospot.explain.gradcam import jet_colormap, to_display_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    cam = result.get("gradcam") or {}
    thumb_b64 = None
    if cam.get("n_images"):
        mean = np.asarray(cam["mean"], dtype=np.float32)
        peak = float(mean.max())
        heat = Image.fromarray(jet_colormap(mean / peak if peak > 0 else mean))
        mean_gradcam_figure(mean, int(cam["n_images"])).savefig(out / "mean_gradcam.png")
        written["mean_gradcam"] = out / "mean_gradcam.png"
        thumb = heat.resize((96, 96), Image.Resampling.BILINEAR)
        thumb_b64 = base64.b64encode(_png_bytes(thumb)).decode("ascii")
        tiles = [(to_display_image(x, cam["preprocess"]), c, _example_caption(result, top, path))
                 for x, c, top, path in cam.get("examples", [])]
        if tiles:
            gradcam_examples_figure(tiles, title="Grad-CAM of the top predicted cell").savefig(
                out / "gradcam_examples.png")
            written["gradcam_examples"] = out / "gradcam_examples.png"
    grid_img = occlusion_grid_figure(result["masks"])
    if grid_img is not None:
        grid_img.savefig(out / "occlusion_grid.png")
        written["occlusion_grid"] = out / "occlusion_grid.png"

    data = {k: v for k, v in result.items() if k != "gradcam"}
    data["gradcam"] = {"n_images": int(cam.get("n_images", 0)), "frame": "preprocessed (resize + centre crop)"}
    if cam.get("n_images"):
        data["gradcam"]["mean_png"] = "mean_gradcam.png"
        small = Image.fromarray(np.asarray(cam["mean"], dtype=np.float32)).resize((16, 16), Image.Resampling.BOX)
        data["gradcam"]["mean_16x16"] = np.round(np.asarray(small, dtype=np.float64), 4).tolist()
    data["images"] = {k: p.name for k, p in written.items()}
    (out / "audit.json").write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    written["json"] = out / "audit.json"

    b = result["baseline"]
    md = [
        "# Shortcut audit",
        "",
        f"**{result['verdict']}**",
        "",
        f"Model: encoder `{result['model']['encoder']}`, {result['model']['cells']} cells, "
        f"mask `{(result['model']['mask'] or {}).get('spec', 'none')}`. "
        f"Test images: {result['n_images']} ({result['n_failed']} could not be read)"
        + (f" from `{result['manifest']}`" if result.get("manifest") else "") + ".",
        "",
        f"Unmasked: cell top-1 {b['cell_top1']:.1%}, acc@25 km {b['acc_25km']:.1%}, acc@200 km {b['acc_200km']:.1%}, "
        f"acc@750 km {b['acc_750km']:.1%}, GeoScore {b['geoscore']:.0f} (local top-{result['top_k']} mean, geospot's headline estimate).",
        "",
        "## Each region hidden in turn",
        "",
        audit_table(result),
        "",
        "How to read it: *excess drop* = relative GeoScore drop / area fraction. Scenery spreads its evidence "
        "over the image, so hiding a region costs about its share of the image or less (excess drop <= 1). "
        f"A region is flagged when it covers at most {result['thresholds']['max_area']:.0%} of the image, "
        f"hiding it costs at least {result['thresholds']['min_rel_drop']:.0%} of the GeoScore and its excess drop "
        f"is at least {result['thresholds']['min_excess']:g}. *Grad-CAM mass* is the share of the mean Grad-CAM "
        "inside the region, to compare with the region's *share of view* (its area after the resize and centre crop).",
        "",
    ]
    if cam.get("n_images"):
        md += [
            f"## Mean Grad-CAM ({cam['n_images']} images, top predicted cell)",
            "",
            f"![mean Grad-CAM](data:image/png;base64,{thumb_b64})",
            "",
            "Full size: [mean_gradcam.png](mean_gradcam.png); examples: [gradcam_examples.png](gradcam_examples.png). "
            "Heatmaps are in the preprocessed frame (the centre crop the network sees).",
            "",
        ]
    if grid_img is not None:
        md += ["Occlusion grid (relative GeoScore drop per cell, red = largest): "
               "[occlusion_grid.png](occlusion_grid.png)", ""]
    if result["errors"]:
        md += ["## Images that could not be used", ""]
        md += [f"- `{p}`: {reason}" for p, reason in list(result["errors"].items())[:50]]
        if len(result["errors"]) > 50:
            md.append(f"- ... and {len(result['errors']) - 50} more (see audit.json)")
        md.append("")
    (out / "audit.md").write_text("\n".join(md), encoding="utf-8")
    written["markdown"] = out / "audit.md"
    return written


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to audit.json")
