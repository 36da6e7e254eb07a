"""Options of `geospot train` that switch on the methods of PIGEON and OSV-5M (docs/methods.md):
auxiliary heads, a retrieval refiner, the hybrid head. `locate` and `eval` use what a model stores.

    geospot train data.csv --out m --aux country,driving_side,month --aux-weight 0.2 --hidden 512
    geospot train data.csv --out m --refine prototypes --hybrid
"""
from __future__ import annotations


def register(sub) -> None:
    train = sub.choices.get("train")
    if train is None:
        return
    from geospot.models.aux import AUX_TARGETS

    g = train.add_argument_group("methods (docs/methods.md)")
    g.add_argument("--aux", metavar="NAMES",
                   help="auxiliary heads trained with the geocell head, comma-separated: "
                        f"{', '.join(AUX_TARGETS)} (month needs a date column; climate needs geospot[climate]); "
                        "NAME=W sets one head's loss weight. They change the geocell head only with --hidden > 0")
    g.add_argument("--aux-weight", type=float, default=0.2, metavar="W",
                   help="loss weight of the auxiliary heads on the shared layer (default 0.2; 0: extra "
                        "predictions only, the geocell head stays exactly as without them)")
    g.add_argument("--refine", choices=["prototypes", "knn"],
                   help="store a retrieval refiner in the model: PIGEON's prototypes (clusters of training "
                        "places per cell) or every training image (kNN); answers move to the best match in the top cells")
    g.add_argument("--hybrid", action="store_true",
                   help="also train OSV-5M's hybrid head (per-cell offsets from the centroid); answers use the "
                        "top cell moved by its offset")
    inner = train.get_default("func")
    train.set_defaults(func=lambda args: _train(args, inner))


def _train(args, inner) -> int:
    used = [f"--{name}" for name in ("aux", "refine", "hybrid") if getattr(args, name, None)]
    if used:
        from geospot.train.dist import launched

        if getattr(args, "store", None) or launched():
            raise SystemExit(f"error: {', '.join(used)} train on one process from a manifest; they do not "
                             "combine with --store or torchrun yet")
    return inner(args)


def train_method_options(args) -> dict:
    """The `fit` keywords of these options (empty when none is used); a bad --aux exits with one line."""
    opts: dict = {}
    if getattr(args, "aux", None):
        from geospot.models.aux import parse_aux

        if getattr(args, "aux_weight", 0.2) < 0:
            raise SystemExit(f"error: --aux-weight must be >= 0, got {args.aux_weight}")
        try:
            opts["aux"] = parse_aux(args.aux, args.aux_weight)
        except ValueError as exc:
            raise SystemExit(f"error: --aux: {exc}")
    if getattr(args, "refine", None):
        opts["refine"] = args.refine
    if getattr(args, "hybrid", False):
        opts["hybrid"] = True
    if opts and getattr(args, "unfreeze", 0):
        raise SystemExit("error: --aux, --refine and --hybrid work on the frozen encoder's embeddings; "
                         "they do not combine with --unfreeze")
    return opts


def admin_lines(report: dict) -> list[str]:
    """`geospot eval`'s country / region (and district) accuracy lines (OSV-5M definitions)."""
    admin = report.get("admin")
    if not admin:
        return []
    h, p = admin["hierarchy"], admin["point"]
    return [f"country / region accuracy (OSV-5M, GeoNames labels): hierarchy {100 * h['country_acc']:.1f}% / "
            f"{100 * h['region_acc']:.1f}% (summed cell probabilities, shares from {admin['shares_from']}); "
            f"point {100 * p['country_acc']:.1f}% / {100 * p['region_acc']:.1f}%, city {100 * p['city_acc']:.1f}%"
            ] + _district_line(h, p)


def _district_line(h: dict, p: dict) -> list[str]:
    """District (admin-2) accuracy, when the hierarchy has districts (models saved before them have none)."""
    if "district_acc" not in h:
        return []
    if not h["n_district"]:
        return [f"district accuracy (admin-2): none of the {h['n']} test places has a GeoNames district"]
    listed = ""
    if "district_listed" in h:
        there = h["district_acc_listed"]
        listed = (f"; answers list districts for {100 * h['district_listed']:.0f}% of them"
                  + (f", {100 * there:.1f}% right there" if there == there else ""))  # NaN: none listed
    return [f"district accuracy (admin-2, over the {h['n_district']} of {h['n']} places GeoNames gives one): "
            f"hierarchy {100 * h['district_acc']:.1f}%{listed}; point {100 * p['district_acc']:.1f}%"]
