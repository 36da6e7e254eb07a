"""`geospot explain` (Grad-CAM overlays) and `geospot audit` (shortcut audit).

explain: one PNG per photo showing where the model looked for the top cell (or
``--cell``), plus the mean heatmap with ``--mean``. audit: hide image regions
one at a time and flag regions that cost far more accuracy than their size
(a watermark the model reads instead of the landscape).
"""
from __future__ import annotations

import sys
from pathlib import Path

from geospot.cli import argtypes as t

EXIT_SHORTCUT = 3


def register(sub) -> None:
    _explain(sub)
    _audit(sub)


def _load_model(path: str):
    from geospot.models.checkpoint import CheckpointError, GeoModel

    try:
        return GeoModel.load(path)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}")


# --------------------------------------------------------------------------- explain


def _explain(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM: where in each photo did the model look? (PNG overlays)")
    p.add_argument("model", metavar="MODEL", help="model folder")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    p.add_argument("--cell", metavar="ID", help="explain this cell (a cell id or index) instead of each photo's top cell")
    p.add_argument("--out", metavar="DIR", default="explain", help="folder for the PNGs (default ./explain)")
    p.add_argument("--mean", action="store_true", help="also write the mean heatmap over all inputs")
    p.add_argument("--batch-size", type=t.positive_int, default=16, help="images per batch")
    p.add_argument("--device", type=t.device, default="auto", help="auto | cpu | cuda[:N] | mps")
    p.set_defaults(func=cmd_explain)


def _resolve_cell(cells, spec: str) -> int:
    ids = [str(i) for i in cells.ids]
    if spec in ids:
        return ids.index(spec)
    try:
        idx = int(spec)
    except ValueError:
        idx = -1
    if 0 <= idx < len(ids):
        return idx
    raise SystemExit(f"error: --cell {spec!r} is neither a cell id of this model nor an index in 0..{len(ids) - 1}")


def _unique_name(path: str, used: set[str]) -> str:
    stem = Path(path).stem or "image"
    name, n = f"{stem}.gradcam.png", 1
    while name in used:  # same file name in two folders
        n += 1
        name = f"{stem}-{n}.gradcam.png"
    used.add(name)
    return name


def _place(lat: float, lon: float) -> str:
    """``near Town, Country`` of a cell centre (offline GeoNames)."""
    from geospot.geo.geocode import reverse_geocode

    place = reverse_geocode(lat, lon)[0]
    where = ", ".join(x for x in (place.city, place.country) if x)
    return f"near {where}" if where else ""


def _exif_truth(path: str):
    """The photo's GPS position when its EXIF has one (shown as the truth), else None."""
    from geospot.data.images import ImageError, read_gps_exif

    try:
        return read_gps_exif(path)
    except (ImageError, OSError):
        return None


def cmd_explain(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from geospot.data.images import open_image
    from geospot.explain.figures import gradcam_caption, gradcam_figure
    from geospot.explain.gradcam import gradcam, jet_colormap, overlay, to_display_image
    from geospot.predict import expand_paths
    from geospot.train.finetune import build_encoder, iter_image_batches, model_mask, model_preprocess, resolve_device

    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be >= 1")
    model = _load_model(args.model)
    target = _resolve_cell(model.cells, args.cell) if args.cell is not None else None
    files, missing = expand_paths(args.paths)
    failed = 0
    for m in missing:
        print(f"error: {m.path}: {m.error}", file=sys.stderr)
        failed += 1
    device = resolve_device(args.device)
    encoder = build_encoder(model).to(device)
    model.head.to(device)
    preprocess, mask = model_preprocess(model, encoder), model_mask(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def load(path: str) -> np.ndarray:
        img = open_image(path)
        return preprocess(mask.apply(img) if mask is not None else img)

    used: set[str] = set()
    sum_cam, sum_img, n_ok = None, None, 0
    ids = [str(i) for i in model.cells.ids]
    for pos, x, errors in iter_image_batches(files, load, args.batch_size):
        for p, reason in errors.items():
            print(f"error: {files[p]}: {reason}", file=sys.stderr)
            failed += 1
        if x is None:
            continue
        xt = torch.from_numpy(x).to(device)
        with torch.no_grad():
            raw = torch.softmax(model.logits(encoder(xt)), dim=1).cpu().numpy()
        # the probabilities `locate` reports (calibrated), so the caption agrees with the answer
        probs = model.answer_context().posterior(raw).probs
        cells = np.full(len(pos), target) if target is not None else probs.argmax(axis=1)
        cams = gradcam(encoder, model.logits, xt, torch.as_tensor(cells))
        for p, cam, xi, prob, cell in zip(pos, cams, x, probs, cells):
            shown = to_display_image(xi, preprocess)
            name = _unique_name(files[p], used)
            lat, lon = float(model.cells.centroid_lat[cell]), float(model.cells.centroid_lon[cell])
            caption = gradcam_caption(ids[cell], float(prob[cell]), _place(lat, lon), _exif_truth(files[p]), (lat, lon))
            gradcam_figure(shown, cam, caption=caption, title=Path(files[p]).name).savefig(out / name)
            print(f"{files[p]}\t{out / name}\tcell {ids[cell]} p={prob[cell]:.3f} ({lat:.4f}, {lon:.4f})")
            rgb = np.asarray(shown, dtype=np.float64)
            sum_cam = cam.astype(np.float64) if sum_cam is None else sum_cam + cam
            sum_img = rgb if sum_img is None else sum_img + rgb
            n_ok += 1
    if args.mean and n_ok:
        mean = (sum_cam / n_ok).astype(np.float32)
        peak = float(mean.max())
        Image.fromarray(jet_colormap(mean / peak if peak > 0 else mean)).save(out / "mean_gradcam.png")
        mean_img = Image.fromarray(np.clip(np.round(sum_img / n_ok), 0, 255).astype(np.uint8))
        overlay(mean_img, mean / peak if peak > 0 else mean).save(out / "mean_overlay.png")
        print(f"mean of {n_ok} images\t{out / 'mean_gradcam.png'}\t{out / 'mean_overlay.png'}")
    if failed:
        print(f"{failed} of {failed + n_ok} inputs failed", file=sys.stderr)
    return 1 if failed or not n_ok else 0


# --------------------------------------------------------------------------- audit


def _audit(sub) -> None:
    from geospot.explain.thresholds import DEFAULT_MAX_AREA, DEFAULT_MIN_EXCESS, DEFAULT_MIN_REL_DROP

    p = sub.add_parser("audit", help="shortcut audit: does hiding a small region (a watermark) wreck the accuracy?")
    p.add_argument("model", metavar="MODEL", help="model folder")
    p.add_argument("manifest", metavar="MANIFEST", help="test manifest (CSV or Parquet)")
    p.add_argument("--out", metavar="DIR", default="audit", help="report folder (default ./audit)")
    p.add_argument("--grid", type=t.positive_int, default=3, help="occlusion grid size (default 3: 3x3 cells)")
    p.add_argument("--split", metavar="NAME", help="use only rows whose `split` column equals NAME")
    p.add_argument("--max-area", type=t.float_range(0.0, 1.0, lo_open=True), default=DEFAULT_MAX_AREA,
                   help=f"largest region that can be flagged, as a fraction of the image (default {DEFAULT_MAX_AREA})")
    p.add_argument("--min-drop", type=t.nonneg_float, default=DEFAULT_MIN_REL_DROP,
                   help=f"smallest relative GeoScore drop that is flagged (default {DEFAULT_MIN_REL_DROP})")
    p.add_argument("--min-excess", type=t.nonneg_float, default=DEFAULT_MIN_EXCESS,
                   help=f"smallest drop / area ratio that is flagged (default {DEFAULT_MIN_EXCESS})")
    p.add_argument("--gradcam-images", type=t.nonneg_int, default=128, help="images for the mean Grad-CAM (0 = skip)")
    p.add_argument("--fail-on-shortcut", action="store_true", help=f"exit with status {EXIT_SHORTCUT} when a shortcut is flagged")
    g = p.add_argument_group("inference runtime")
    g.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto", help="auto: torch on a GPU when present, else ONNX Runtime")
    g.add_argument("--device", type=t.device, default="auto", help="auto | cpu | cuda[:N] | mps")
    g.add_argument("--cache", metavar="DIR", help="embedding cache folder (default $GEOSPOT_CACHE/embeddings)")
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_audit)


def _read_manifest(path: str, split: str | None):
    from geospot.cli.options import read_manifest_or_exit

    return read_manifest_or_exit(path, split)


def cmd_audit(args) -> int:
    from geospot.explain.audit import audit, audit_table, write_audit_report

    if args.grid < 1 or args.gradcam_images < 0:
        raise SystemExit("error: --grid must be >= 1 and --gradcam-images >= 0")
    model = _load_model(args.model)
    manifest = _read_manifest(args.manifest, args.split)
    try:
        result = audit(model, manifest, grid=args.grid, max_area=args.max_area, min_rel_drop=args.min_drop,
                       min_excess=args.min_excess, gradcam_images=args.gradcam_images, cache_dir=args.cache,
                       backend=args.backend, device=args.device, progress=not args.quiet)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    written = write_audit_report(result, args.out)
    for path, reason in result["errors"].items():
        print(f"error: {path}: {reason}", file=sys.stderr)
    print(result["verdict"])
    print()
    print(audit_table(result))
    print()
    print(f"report: {written['markdown']} and {written['json']}")
    if args.fail_on_shortcut and result["flagged"]:
        return EXIT_SHORTCUT
    return 1 if result["errors"] else 0
