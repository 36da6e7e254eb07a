"""End-to-end workflows over the library, one module per job:

- `embedding`: embed a manifest (cached), report failed images;
- `training`: cells, the calibrated head (`train_calibrated`), `fit`, saving and loading models;
- `scoring`: every estimate and the skeptic's baselines, scored with confidence intervals;
- `evaluation`: `evaluate` a saved model on a manifest, with reports;
- `crossval`: `cross_validate` by location or by collection (leave-one-collection-out).

The maths lives in `geo`, `models`, `train` and `eval`; these modules own the glue.
"""
