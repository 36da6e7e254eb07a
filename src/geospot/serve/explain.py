"""Grad-CAM of the top cell for the web page (optional: built on first use, then kept)."""
from __future__ import annotations

import base64
import io
import threading


class CamMaker:
    """Builds the model's torch encoder once and turns a photo + cell into an overlay PNG (data URI)."""

    def __init__(self, model):
        self.model = model
        self._lock = threading.Lock()
        self._parts = None

    def _load(self):
        from geospot.train.finetune import build_encoder, model_mask, model_preprocess

        if not hasattr(self.model, "head"):  # the predictor's NumPy model: Grad-CAM needs the torch one
            from geospot.workflows.training import load_model

            self.model = load_model(self.model.root)
        encoder = build_encoder(self.model)
        encoder.eval()
        return encoder, model_preprocess(self.model, encoder), model_mask(self.model)

    def data_uri(self, path: str, cell: int, max_side: int = 320) -> str:
        import torch

        from geospot.data.images import open_image
        from geospot.explain.gradcam import gradcam, overlay, to_display_image

        with self._lock:  # one Grad-CAM at a time: it holds gradients of the whole encoder
            if self._parts is None:
                self._parts = self._load()
            encoder, preprocess, mask = self._parts
            img = open_image(path)
            x = preprocess(mask.apply(img) if mask is not None else img)
            xt = torch.from_numpy(x[None])
            cam = gradcam(encoder, self.model.logits, xt, [cell])[0]
        shown = overlay(to_display_image(x, preprocess), cam)
        if max(shown.size) > max_side:
            shown.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        shown.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
