"""A trained geolocation model on disk: ``config.json`` + safetensors, never pickle.

Layout of a model directory::

    config.json          format, versions, encoder, head shape, cells hash, mask,
                         training config, metrics
    head.safetensors     GeoCellHead weights
    cells.json           the CellTable (written by CellTable.save)
    cells.safetensors
    support.safetensors  where each cell's probability lies (clusters of its training
                         places); absent in older models: cells' centroids + areas
    aux.safetensors      optional auxiliary heads (geospot.models.aux)
    prototypes.*, hybrid.*  optional refiner / hybrid head (geospot.models.methods)
    encoder.safetensors  only for a fine-tuned encoder

`GeoModel.load` validates everything it reads and raises `CheckpointError`
naming the file and the problem.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

# torch is imported where it is used: reading a config and the cells (`read_config`,
# `load_cells`) is torch-free, which the NumPy prediction path relies on.
# The reading half lives in checkpoint_read (torch-free); its names stay importable from here.
from geospot.models.checkpoint_read import (  # noqa: F401
    CONFIG_FILE, ENCODER_FILE, FORMAT, FORMAT_VERSION, HEAD_FILE, SUPPORT_FILE, CheckpointError,
    _check_encoder_name, _check_head_header, _read_answer_parts, _read_safetensors, load_cells, read_config,
)
from geospot.models.validate import check_finite, clean_stale_temp_dirs

_PREDICT_BATCH = 8192


def default_model_dir() -> Path:
    """Directory of the model bundled with the package (``geospot/assets/default_model``)."""
    return Path(__file__).resolve().parents[1] / "assets" / "default_model"


class AnswersMixin:
    """What turns a model's probabilities into answers; both model classes carry `cells`,
    `support` and `calibration` (see `geospot.models.answer`), and optionally auxiliary
    heads (`aux`), a refiner (`refiner`, `refine_method`) and a hybrid head (`hybrid`)."""

    _answers = None
    aux = None  # geospot.models.aux.AuxHeadsNumpy
    refiner = None  # geospot.models.refine.Prototypes (prototypes, or one row per image for kNN)
    refine_method = None  # "prototypes" | "knn"
    hybrid = None  # geospot.models.methods.HybridNumpy
    familiarity = None  # geospot.models.familiarity.Familiarity: unfamiliar photos answer with its fallback

    def predict_aux(self, emb) -> dict:
        """Auxiliary heads' probabilities ``{name: [B, K]}`` (empty without auxiliary heads)."""
        if self.aux is None:
            return {}
        return self.aux.predict(np.asarray(self.features(emb), np.float32))

    def _read_extras(self, root: Path, config: dict) -> None:
        from geospot.models.aux import read_aux
        from geospot.models.methods import read_methods

        head = config["head"]
        self.aux = read_aux(root, config, head["hidden"] or head["embed_dim"])
        self.refine_method, self.refiner, self.hybrid = read_methods(root, config, self.cells)
        from geospot.models.familiarity import read_familiarity

        self.familiarity = read_familiarity(root, config)

    def answer_context(self):
        """The model's `AnswerContext` (calibration, support, estimates), built once."""
        if self._answers is None:
            from geospot.models.answer import AnswerContext

            self._answers = AnswerContext(self.cells, self.support, self.calibration)
        return self._answers


class GeoModel(AnswersMixin):
    """Encoder reference + preprocessing + geocell head + cells: everything needed to predict.

    The encoder itself is referenced by name (its pretrained weights ship with
    its package); ``encoder_state`` holds the weights of a fine-tuned encoder.
    ``normalize`` (default: the training config's, else True) L2-normalises
    embeddings before the head, exactly as in training.
    """

    def __init__(
        self,
        encoder_name: str,
        preprocess: dict,
        head: GeoCellHead,
        cells,
        train_config: dict | Any | None = None,
        metrics: dict | None = None,
        mask: dict | None = None,
        encoder_state: dict[str, torch.Tensor] | None = None,
        normalize: bool | None = None,
        support=None,
        calibration=None,
        estimate: str | None = None,
    ) -> None:
        if not isinstance(encoder_name, str) or not encoder_name:
            raise ValueError(f"GeoModel: encoder_name must be a non-empty string, got {encoder_name!r}")
        if head.num_cells != len(cells):
            raise ValueError(f"GeoModel: the head predicts {head.num_cells} cells but the cell table has {len(cells)}")
        if train_config is not None and not isinstance(train_config, dict):
            train_config = train_config.to_dict()  # a TrainConfig
        if mask is not None and not isinstance(mask, dict):
            mask = mask.to_dict()  # a geospot.data.masks.Mask
        self.encoder_name = encoder_name
        self.preprocess = dict(preprocess or {})
        self.head = head
        self.cells = cells
        self.train_config = train_config
        self.metrics = metrics
        self.mask = mask
        self.encoder_state = encoder_state
        if normalize is None:
            normalize = bool((train_config or {}).get("normalize", True))
        self.normalize = bool(normalize)
        self.support = support  # geospot.models.distribution.Support or None
        self.calibration = calibration  # geospot.models.calibration.Calibration or None
        self.estimate = estimate  # the default point estimate (None: the library default)
        self._answers = None

    @property
    def num_cells(self) -> int:
        return self.head.num_cells

    @property
    def embed_dim(self) -> int:
        return self.head.embed_dim

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """Differentiable ``[B, D] -> [B, C]`` logits (normalisation + head), e.g. for Grad-CAM."""
        from geospot.models.head import normalize_embeddings

        return self.head(normalize_embeddings(emb) if self.normalize else emb)

    def features(self, emb) -> np.ndarray:
        """What the output layer reads (normalised embedding or hidden layer), NumPy, for auxiliary heads."""
        import torch

        from geospot.models.head import normalize_embeddings

        t = torch.from_numpy(np.asarray(emb, np.float32))
        self.head.eval()
        with torch.no_grad():
            return self.head.features(normalize_embeddings(t) if self.normalize else t).numpy()

    def predict_proba(self, emb) -> np.ndarray:
        """Cell probabilities ``[B, C]`` (float32 NumPy) for embeddings ``[B, D]`` (NumPy or torch)."""
        import torch

        t = emb.detach().cpu() if isinstance(emb, torch.Tensor) else torch.from_numpy(np.asarray(emb))
        if t.ndim != 2 or t.shape[1] != self.embed_dim:
            raise ValueError(f"predict_proba: expected embeddings of shape [B, {self.embed_dim}], got {list(t.shape)}")
        t = t.to(torch.float32)
        self.head.eval()
        out = np.empty((t.shape[0], self.num_cells), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, t.shape[0], _PREDICT_BATCH):
                chunk = t[start : start + _PREDICT_BATCH]
                out[start : start + len(chunk)] = torch.softmax(self.logits(chunk), dim=1).numpy()
        return out

    # ------------------------------------------------------------------ saving

    def config_dict(self) -> dict[str, Any]:
        """The ``config.json`` content (without the creation timestamp)."""
        from geospot import __version__

        extras = {}
        if self.aux is not None:
            extras["aux"] = self.aux.config()
        if self.refiner is not None:
            extras["refine"] = {"method": self.refine_method or "prototypes", "file": self.refiner.TENSORS}
        if self.hybrid is not None:
            from geospot.models.methods import HYBRID_FILE

            extras["hybrid"] = HYBRID_FILE
        if self.familiarity is not None:
            extras["familiarity"] = self.familiarity.config()
        return extras | {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "geospot_version": __version__,
            "encoder": {
                "name": self.encoder_name,
                "preprocess": self.preprocess,
                "weights": ENCODER_FILE if self.encoder_state is not None else "pretrained",
            },
            "head": {**self.head.config(), "normalize": self.normalize},
            "cells": {"scheme": self.cells.scheme, "count": len(self.cells), "hash": self.cells.hash()},
            "mask": self.mask,
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "estimate": self.estimate,
            "support": SUPPORT_FILE if self.support is not None else None,
            "train_config": self.train_config,
            "metrics": self.metrics,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model to ``directory`` atomically and return its path.

        Everything is written to a temporary sibling directory which then
        replaces ``directory``; an existing model there is only removed once the
        new one is complete. A non-empty directory that is not a geospot model is
        never overwritten (`CheckpointError`).
        """
        from safetensors.torch import save_file

        target = Path(directory)
        if target.exists() and not _is_replaceable(target):
            raise CheckpointError(
                f"{target}: exists and is not a geospot model directory; refusing to overwrite it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_dirs(target)  # left by a save that was killed
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-p{os.getpid()}-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it owner-only; a model dir is ordinary shared data
            config = dict(self.config_dict(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            text = json.dumps(_jsonable(config), indent=2, allow_nan=False)
            (tmp / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
            save_file(_contiguous(self.head.state_dict()), str(tmp / HEAD_FILE), metadata={"format": "pt"})
            if self.encoder_state is not None:
                save_file(_contiguous(self.encoder_state), str(tmp / ENCODER_FILE), metadata={"format": "pt"})
            self.cells.save(tmp)
            if self.support is not None:
                from safetensors.numpy import save_file as save_numpy

                save_numpy(self.support.to_arrays(), str(tmp / SUPPORT_FILE))
            if self.aux is not None:
                self.aux.save(tmp)
            from geospot.models.methods import save_methods

            save_methods(self, tmp)
            if self.familiarity is not None:
                self.familiarity.save(tmp)
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "GeoModel":
        """Load and validate a model directory; raises `CheckpointError` on any problem."""
        from geospot.models.head import GeoCellHead

        root = Path(directory)
        if not root.is_dir():
            raise CheckpointError(f"{root}: model directory not found")
        config = read_config(root)
        _check_encoder_name(root / CONFIG_FILE, config)
        head_cfg = config["head"]
        # shapes come from config.json: check them against the weights' header BEFORE allocating anything
        _check_head_header(root / HEAD_FILE, head_cfg)
        head = GeoCellHead(head_cfg["embed_dim"], head_cfg["num_cells"], head_cfg["hidden"], head_cfg["dropout"])
        _load_head_weights(head, root / HEAD_FILE)
        cells = load_cells(root, config)

        support, calibration, estimate = _read_answer_parts(root, config, len(cells))
        encoder_state = None
        weights = config["encoder"].get("weights", "pretrained")
        if weights == ENCODER_FILE:
            encoder_state = _read_safetensors(root / ENCODER_FILE, "fine-tuned encoder weights")
            try:
                check_finite(encoder_state, root / ENCODER_FILE)
            except ValueError as exc:
                raise CheckpointError(str(exc)) from None
        elif weights != "pretrained":
            raise CheckpointError(f"{root / CONFIG_FILE}: encoder.weights must be 'pretrained' or '{ENCODER_FILE}', got {weights!r}")
        model = cls(
            encoder_name=config["encoder"]["name"],
            preprocess=config["encoder"].get("preprocess") or {},
            head=head,
            cells=cells,
            train_config=config.get("train_config"),
            metrics=config.get("metrics"),
            mask=config.get("mask"),
            encoder_state=encoder_state,
            normalize=head_cfg["normalize"],
            support=support,
            calibration=calibration,
            estimate=estimate,
        )
        model._read_extras(root, config)
        return model

    def __repr__(self) -> str:
        return (f"GeoModel(encoder={self.encoder_name!r}, embed_dim={self.embed_dim}, cells={self.num_cells} "
                f"{self.cells.scheme}, hidden={self.head.hidden}, normalize={self.normalize})")


# ---------------------------------------------------------------------- helpers


def _load_head_weights(head: GeoCellHead, path: Path) -> None:
    import torch

    state = _read_safetensors(path, "head weights")
    expected = head.state_dict()
    problems = [f"missing tensor '{k}'" for k in expected if k not in state]
    problems += [f"unexpected tensor '{k}'" for k in state if k not in expected]
    problems += [
        f"'{k}' has shape {list(state[k].shape)}, config.json implies {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems += [f"'{k}' has non-float dtype {state[k].dtype}" for k in expected if k in state and not state[k].is_floating_point()]
    if problems:
        raise CheckpointError(f"{path}: does not match the head described in config.json: " + "; ".join(problems))
    try:
        check_finite(state, path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    head.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    head.eval()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; copies are cheap for a head.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy: NumPy scalars/arrays to Python, non-finite floats to None, paths to str."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} in config.json: {obj!r}")


def _is_replaceable(path: Path) -> bool:
    """True for an empty directory or a previous geospot model (never for files or other folders)."""
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is set aside first and deleted last."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-p{os.getpid()}-", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)  # put the previous model back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
