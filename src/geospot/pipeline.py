"""The workflows under their 0.1 names (kept so that `from geospot.pipeline import fit`
goes on working). New code imports from `geospot.workflows.*`."""
from __future__ import annotations

from geospot.workflows.crossval import cross_validate
from geospot.workflows.embedding import (
    DEFAULT_ENCODER, cache_root, embed_manifest, embeddings_or_compute, l2_normalize, log,
)
from geospot.workflows.evaluation import evaluate, write_full_report
from geospot.workflows.scoring import Predictions, fuse_views, place_probs, score_methods
from geospot.workflows.training import (
    DEFAULT_CELLS, TRAIN_PLACES_FILE, build_model_cells, fit, head_config, load_model, location_table,
    recipe_config, save_model,
)

__all__ = [
    "DEFAULT_CELLS", "DEFAULT_ENCODER", "TRAIN_PLACES_FILE", "Predictions", "build_model_cells", "cache_root",
    "cross_validate", "embed_manifest", "embeddings_or_compute", "evaluate", "fit", "fuse_views", "head_config",
    "l2_normalize", "load_model", "location_table", "log", "place_probs", "recipe_config", "save_model",
    "score_methods", "write_full_report",
]
