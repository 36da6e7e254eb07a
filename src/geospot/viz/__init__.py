"""Maps and figures, offline: probability maps, cell maps, evaluation maps.

Every function returns a ``matplotlib.figure.Figure`` (Agg canvas, no pyplot),
so notebooks show it and the CLI saves it. The basemap is vendored Natural
Earth country outlines; nothing is downloaded.
"""
from __future__ import annotations

from geospot.viz.evalmaps import country_accuracy_map, error_map, write_eval_maps
from geospot.viz.maps import cells_map, probability_map

__all__ = ["cells_map", "country_accuracy_map", "error_map", "prediction_map", "probability_map", "write_eval_maps"]


def prediction_map(model, prediction, truth=None, **kwargs):
    """The map of one ``Prediction`` made by ``model`` (a ``GeoModel`` or a ``Predictor``)."""
    model = getattr(model, "model", model)
    if getattr(prediction, "probs", None) is None:
        raise ValueError("prediction_map: this prediction carries no cell probabilities (make it with Predictor.predict)")
    return probability_map(model.cells, prediction.probs, prediction, truth=truth, **kwargs)
