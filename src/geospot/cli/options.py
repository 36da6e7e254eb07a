"""Options and helpers the verbs share: the inference runtime, manifests, cells, training
hyper-parameters, test-time views, the estimate and the mask (one definition each)."""
from __future__ import annotations

import argparse
import sys

from geospot.cli import argtypes as t
from geospot.encoders import DEFAULT_ENCODER


def runtime_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference runtime")
    g.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto",
                   help="auto: torch on a GPU when present, else ONNX Runtime (fast on CPU)")
    g.add_argument("--device", type=t.device, default="auto", help="auto | cpu | cuda[:N] | mps (torch backend)")
    g.add_argument("--cache", metavar="DIR", help="embedding cache folder (default $GEOSPOT_CACHE/embeddings)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def manifest_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", metavar="NAME", help="use only rows whose `split` column equals NAME")


def cell_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("geocells (built from the training places)")
    g.add_argument("--cells", metavar="DIR", help="use cells saved by `geospot cells` instead of building them")
    g.add_argument("--scheme", choices=["s2", "grid", "semantic"], default="s2",
                   help="s2: PlaNet's adaptive S2 quadtree; grid: square or hexagonal grid; semantic: PIGEON's "
                        "named admin-unit cells (GeoNames, merged to --min-per-cell, split above --max-per-cell) "
                        "(default s2)")
    g.add_argument("--min-per-cell", type=t.positive_int,
                   help="s2: drop cells under this many places (default 8); grid: default 1")
    g.add_argument("--max-per-cell", type=t.positive_int, default=60, help="s2: split cells holding more places (default 60)")
    g.add_argument("--max-level", type=t.int_range(0, 30), default=20, help="s2: deepest level, 0..30 (default 20)")
    g.add_argument("--shape", choices=["square", "hex"], default="square", help="grid: cell shape")
    g.add_argument("--cell-km", type=t.positive_float, default=100.0, help="grid: cell size in km (default 100)")
    g.add_argument("--region", type=t.region,
                   help="grid: country name/ISO code, 'lat_min,lon_min,lat_max,lon_max' or GeoJSON file (default: the whole world)")


def train_opts(p: argparse.ArgumentParser) -> None:
    from geospot.train.config import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("training the geocell head")
    g.add_argument("--encoder", type=t.encoder, default=DEFAULT_ENCODER, help="image encoder (see `geospot encoders`)")
    g.add_argument("--loss", choices=["haversine", "ce"], default=d.loss,
                   help="haversine: PIGEON's haversine label smoothing; ce: plain cross-entropy")
    g.add_argument("--tau-km", type=t.positive_float, default=d.tau_km, help=f"label-smoothing temperature in km (default {d.tau_km})")
    g.add_argument("--hidden", type=t.nonneg_int, default=d.hidden, help="hidden units of an MLP head (0 = linear)")
    g.add_argument("--dropout", type=t.fraction, default=d.dropout, help="dropout of the head, in [0, 1)")
    g.add_argument("--lr", type=t.positive_float, default=d.lr, help="learning rate")
    g.add_argument("--weight-decay", type=t.nonneg_float, default=d.weight_decay, help="AdamW weight decay")
    g.add_argument("--epochs", type=t.positive_int, default=d.epochs, help="training epochs of the head")
    g.add_argument("--batch-size", type=t.positive_int, default=d.batch_size,
                   help="training batch size (shrinks on small datasets)")
    g.add_argument("--patience", type=int, default=d.patience,
                   help="early-stopping patience in epochs (0 or less: no early stopping)")
    g.add_argument("--class-weighting", choices=["none", "inv_sqrt"], default=d.class_weighting,
                   help="weight the loss of rare cells up (inv_sqrt) or not")
    g.add_argument("--val-fraction", type=t.fraction, default=d.val_fraction,
                   help="fraction of places held out for early stopping when no --val is given")
    g.add_argument("--seed", type=t.nonneg_int, default=d.seed, help="random seed")
    g.add_argument("--mask", metavar="SPEC",
                   help="hide image regions (watermarks) in training AND prediction, e.g. 'bottom:0.1' or 'br:0.3x0.1'")


def train_config(args):
    from geospot.train.config import TrainConfig

    return TrainConfig(
        loss=args.loss, tau_km=args.tau_km, hidden=args.hidden, dropout=args.dropout, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
        class_weighting=args.class_weighting, val_fraction=args.val_fraction, seed=args.seed,
    )


def cell_params(args) -> dict:
    if args.scheme == "semantic":
        return {"scheme": "semantic", "min_per_cell": args.min_per_cell if args.min_per_cell is not None else 8,
                "max_per_cell": args.max_per_cell}
    if args.scheme == "s2":
        return {"scheme": "s2", "min_per_cell": args.min_per_cell if args.min_per_cell is not None else 8,
                "max_per_cell": args.max_per_cell, "max_level": args.max_level}
    params = {"scheme": "grid", "shape": args.shape, "cell_km": args.cell_km,
              "min_per_cell": args.min_per_cell if args.min_per_cell is not None else 1}
    if args.region:
        from geospot.geo.regions import resolve_region

        params["region"] = resolve_region(args.region)
    return params


def read_manifest_or_exit(path: str, split: str | None = None):
    """Read a manifest; bad rows are reported on stderr and left out (the run goes on)."""
    from geospot.data.manifest import ManifestError, read_manifest

    try:
        manifest = read_manifest(path, check_files=True, on_error="drop")
    except ManifestError as exc:  # unrecoverable: e.g. missing required columns
        raise SystemExit(f"error: {exc}")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read manifest {path}: {exc}")
    for problem in getattr(manifest, "problems", []) or []:
        print(f"warning: {problem}", file=sys.stderr)
    if split is not None:
        if "split" not in manifest.df.columns:
            raise SystemExit(f"error: {path} has no `split` column (asked for --split {split})")
        manifest = manifest.subset((manifest.df["split"].astype(str) == split).to_numpy().nonzero()[0])
    if len(manifest) == 0:
        raise SystemExit(f"error: {path} has no usable rows" + (f" with split == {split!r}" if split else ""))
    return manifest


def read_manifests_or_exit(specs: list[str], split: str | None = None):
    """One manifest, or several combined with a ``collection`` column (``NAME=PATH`` names one;
    by default a collection is named after its manifest's folder)."""
    from geospot.data.combine import collection_name, combine, parse_named

    named = [parse_named(s) for s in specs]
    if len(named) == 1 and named[0][0] is None:
        return read_manifest_or_exit(named[0][1], split)
    parts = [(name or collection_name(path), read_manifest_or_exit(path, split)) for name, path in named]
    try:
        return combine(parts)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")


# --tta value -> `Preprocess.views` (with --frame crop; "none" with the default full frame is "full")
TTA_VIEWS = {"none": "center", "flip": "flip", "five": "five", "ten": "ten"}


def tta_opt(p: argparse.ArgumentParser, help_text: str, default: str | None = "none") -> None:
    p.add_argument("--tta", choices=list(TTA_VIEWS), default=default,
                   help="test-time augmentation, the mean embedding of several crops of the ImageNet frame per "
                        "photo: flip (centre + mirror, 2x encoder time), five (4 corners + centre, 5x), ten "
                        "(five + mirrors, 10x); " + help_text)
    if default is not None:  # embed, train, cv: what the photos are embedded with
        p.add_argument("--frame", choices=["full", "crop"], default=None,
                       help="full (default without --tta): the whole photo, shorter side resized to the "
                            "encoder's input size; crop: ImageNet's centre crop (224 of 256 px), which drops "
                            "12.5%% of each side (chosen leave-one-collection-out: docs/accuracy.md)")


def views_of(args) -> str:
    """`Preprocess.views` for --tta and --frame: the full frame unless --tta or --frame crop says otherwise."""
    from geospot.encoders.preprocess import DEFAULT_VIEWS

    tta, frame = getattr(args, "tta", None) or "none", getattr(args, "frame", None)
    if tta != "none":
        if frame == "full":
            raise SystemExit(f"error: --tta {tta} takes crops of the ImageNet frame; drop --frame full")
        return TTA_VIEWS[tta]
    return "center" if frame == "crop" else DEFAULT_VIEWS


def estimate_opt(p: argparse.ArgumentParser, default_text: str) -> None:
    from geospot.models.answer import ESTIMATES

    p.add_argument("--estimate", choices=list(ESTIMATES), default=None,
                   help=f"which point estimate becomes lat/lon ({default_text}); every estimate is in --json "
                        "and in reports")


def mask_of(spec: str | None):
    if not spec:
        return None
    from geospot.data.masks import parse_mask

    try:
        return parse_mask(spec)
    except ValueError as exc:
        raise SystemExit(f"error: --mask: {exc}")
