"""A trained model for prediction in NumPy: the same directory as `GeoModel`, no torch.

`load_numpy_model(dir)` reads and validates `config.json`, the cells and
`head.safetensors` (through `safetensors.numpy`) exactly like `GeoModel.load`,
and runs the head -- normalisation, linear or MLP with exact GELU, softmax --
in NumPy. It is what `geospot locate` uses, so that a cold start pays for
neither importing torch (~1.5-4 s) nor building a module. Outputs match the
torch head to float32 rounding (tests/models/test_numpy_model.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from geospot.models.checkpoint import AnswersMixin, default_model_dir
from geospot.models.checkpoint_read import (
    CONFIG_FILE, ENCODER_FILE, HEAD_FILE, CheckpointError, _read_answer_parts, _read_safetensors, head_shapes,
    load_cells, read_config,
)
from geospot.models.validate import read_numpy_tensors, shape_problems

TRAIN_PLACES_FILE = "train_places.safetensors"  # written by geospot.pipeline.save_model
_CHUNK = 8192

from geospot.models.special import erf  # noqa: E402  (re-exported for the head)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as torch.nn.GELU()."""
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class NumpyGeoModel(AnswersMixin):
    """Prediction-only view of a model directory (see `GeoModel` for the fields)."""

    def __init__(self, root: Path, config: dict, weights: dict[str, np.ndarray], cells) -> None:
        self.root = root
        self.config = config
        enc = config["encoder"]
        self.encoder_name: str = enc["name"]
        self.preprocess: dict = dict(enc.get("preprocess") or {})
        self.mask: dict | None = config.get("mask")
        self.train_config = config.get("train_config")
        self.metrics = config.get("metrics")
        head = config["head"]
        self.embed_dim, self.num_cells, self.hidden = head["embed_dim"], head["num_cells"], head["hidden"]
        self.normalize: bool = head["normalize"]
        self.cells = cells
        self._w = weights
        self.fine_tuned = enc.get("weights", "pretrained") == ENCODER_FILE
        self.train_coords = None

        self.support, self.calibration, self.estimate = _read_answer_parts(root, config, len(cells))
        self._read_extras(root, config)

    @property
    def encoder_state(self):
        """Fine-tuned encoder weights (torch tensors; imports torch), or None for a frozen encoder."""
        if not self.fine_tuned:
            return None

        return _read_safetensors(self.root / ENCODER_FILE, "fine-tuned encoder weights")

    def features(self, emb: np.ndarray) -> np.ndarray:
        """What the output layer (and any auxiliary head) reads: normalised embedding, or the hidden layer."""
        x = np.asarray(emb, dtype=np.float32)
        if self.normalize:  # geospot.models.head.normalize_embeddings: rows to norm sqrt(D)
            norm = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            x = x * (np.float32(np.sqrt(x.shape[1])) / norm)
        if self.hidden:
            x = gelu(x @ self._w["hidden_layer.weight"].T + self._w["hidden_layer.bias"])
        return x

    def logits(self, emb: np.ndarray) -> np.ndarray:
        return self.features(emb) @ self._w["out.weight"].T + self._w["out.bias"]

    def predict_proba(self, emb) -> np.ndarray:
        """Cell probabilities [B, C] float32 for embeddings [B, D]."""
        emb = np.asarray(emb)
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"predict_proba: expected embeddings of shape [B, {self.embed_dim}], got {list(emb.shape)}")
        out = np.empty((emb.shape[0], self.num_cells), dtype=np.float32)
        for start in range(0, emb.shape[0], _CHUNK):
            out[start : start + _CHUNK] = softmax(self.logits(emb[start : start + _CHUNK]).astype(np.float32))
        return out

    def __repr__(self) -> str:
        return (f"NumpyGeoModel(encoder={self.encoder_name!r}, embed_dim={self.embed_dim}, cells={self.num_cells} "
                f"{self.cells.scheme}, hidden={self.hidden}, normalize={self.normalize})")


def _load_head(path: Path, head: dict) -> dict[str, np.ndarray]:
    state = read_numpy_tensors(path, "head weights", CheckpointError)
    expected = head_shapes(head)
    problems = shape_problems({k: v.shape for k, v in state.items()}, expected)
    problems += [f"'{k}' has non-float dtype {state[k].dtype}"
                 for k in expected if k in state and state[k].dtype.kind != "f"]
    if problems:
        raise CheckpointError(f"{path}: does not match the head described in config.json: " + "; ".join(problems))
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    bad = [k for k, v in weights.items() if not np.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN/inf) in {', '.join(sorted(bad))}")
    return weights


def load_numpy_model(model_dir: str | Path | None = None) -> NumpyGeoModel:
    """Load a model directory (None: the bundled default) for NumPy prediction; `CheckpointError` on any problem."""
    root = Path(model_dir) if model_dir is not None else default_model_dir()
    config = read_config(root)
    weights = config["encoder"].get("weights", "pretrained")
    if weights not in ("pretrained", ENCODER_FILE):
        raise CheckpointError(f"{root / CONFIG_FILE}: encoder.weights must be 'pretrained' or '{ENCODER_FILE}', got {weights!r}")
    model = NumpyGeoModel(root, config, _load_head(root / HEAD_FILE, config["head"]), load_cells(root, config))
    places = root / TRAIN_PLACES_FILE
    if places.is_file():
        from geospot.models.validate import load_train_places

        try:  # checked like GeoModel's: readable, finite, in range
            model.train_coords = load_train_places(places)
        except (OSError, ValueError) as exc:
            raise CheckpointError(str(exc)) from None
    return model
