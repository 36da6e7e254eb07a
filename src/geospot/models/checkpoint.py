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
from geospot.models.validate import (check_finite, clean_stale_temp_dirs, read_json_bounded,
                                     safetensors_shapes, shape_problems)

FORMAT = "geospot-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
HEAD_FILE = "head.safetensors"
ENCODER_FILE = "encoder.safetensors"
CELLS_FILES = ("cells.json", "cells.safetensors")
SUPPORT_FILE = "support.safetensors"
_PREDICT_BATCH = 8192


class CheckpointError(Exception):
    """A model directory that cannot be loaded (or saved); the message names the file and the reason."""


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


def read_config(root: Path) -> dict[str, Any]:
    """The validated ``config.json`` of a model directory (torch-free); `CheckpointError` otherwise."""
    if not root.is_dir():
        raise CheckpointError(f"{root}: model directory not found")
    config = _read_config(root / CONFIG_FILE)
    _check_encoder_fields(root / CONFIG_FILE, config)
    return config


def load_cells(root: Path, config: dict[str, Any]):
    """The model's `CellTable`, checked against the count and hash in its config (torch-free)."""
    from geospot.geo.cells import CellTable

    missing = [name for name in CELLS_FILES if not (root / name).is_file()]
    if missing:
        raise CheckpointError(f"{root / missing[0]}: missing (the model's cell table)")
    try:
        cells = CellTable.load(root)
    except Exception as exc:  # any parse failure of the cell files is a checkpoint problem
        # CellTable's messages usually name the damaged file already; otherwise name it here.
        where = "" if str(root) in str(exc) else f"{root / CELLS_FILES[0]}: "
        raise CheckpointError(f"{where}cannot load the model's cell table: {exc}") from exc
    want, num_cells = config["cells"], config["head"]["num_cells"]
    if len(cells) != want["count"] or len(cells) != num_cells:
        raise CheckpointError(
            f"{root / CELLS_FILES[0]}: holds {len(cells)} cells but {root / CONFIG_FILE} says "
            f"{want['count']} and the head predicts {num_cells}"
        )
    if cells.hash() != want["hash"]:
        raise CheckpointError(
            f"{root / CELLS_FILES[0]}: cell table hash {cells.hash()[:12]}… does not match "
            f"{want['hash'][:12]}… recorded in {root / CONFIG_FILE}; the cells were changed or belong to another model"
        )
    return cells


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {path.parent} is not a geospot model directory")
    try:
        config = read_json_bounded(path)  # size and nesting bounded before parsing
    except (OSError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: not a geospot model (format {found!r}, expected {FORMAT!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} was written by a newer geospot "
            f"({config.get('geospot_version', 'unknown')}); this one reads up to {FORMAT_VERSION} — upgrade geospot"
        )
    _require(path, config, "encoder", dict)
    _require(path, config["encoder"], "name", str, "encoder.")
    _require(path, config, "head", dict)
    for key in ("embed_dim", "num_cells", "hidden"):
        _require(path, config["head"], key, int, "head.")
    _require(path, config["head"], "dropout", (int, float), "head.")
    _require(path, config["head"], "normalize", bool, "head.")
    _require(path, config, "cells", dict)
    _require(path, config["cells"], "count", int, "cells.")
    _require(path, config["cells"], "hash", str, "cells.")
    head = config["head"]
    if head["embed_dim"] < 1 or head["num_cells"] < 1 or head["hidden"] < 0 or not 0 <= head["dropout"] < 1:
        raise CheckpointError(f"{path}: invalid head shape {head}")
    return config


def _read_answer_parts(root: Path, config: dict, n_cells: int):
    """Support points, calibration and default estimate (all optional: older models have none)."""
    from geospot.models.answer import ESTIMATES
    from geospot.models.calibration import Calibration
    from geospot.models.distribution import Support

    support = None
    if config.get("support") is not None:
        if config["support"] != SUPPORT_FILE:
            raise CheckpointError(f"{root / CONFIG_FILE}: 'support' must be {SUPPORT_FILE!r} or null")
        path = root / SUPPORT_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the model's support points)")
        try:
            from safetensors.numpy import load_file as load_numpy

            support = Support.from_arrays(load_numpy(str(path)))
            support.check_cells(n_cells)
        except Exception as exc:
            raise CheckpointError(f"{path}: corrupt or inconsistent support points: {exc}") from exc
    try:
        calibration = Calibration.from_dict(config.get("calibration")) if config.get("calibration") else None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE}: bad 'calibration': {exc}") from exc
    estimate = config.get("estimate")
    if estimate is not None and estimate not in ESTIMATES:
        raise CheckpointError(f"{root / CONFIG_FILE}: unknown 'estimate' {estimate!r}; known: {', '.join(ESTIMATES)}")
    return support, calibration, estimate


def _require(path: Path, obj: dict, key: str, kind, prefix: str = "") -> None:
    value = obj.get(key)
    # JSON true/false are Python bools, which are also ints: only accept them where a bool is wanted.
    if key not in obj or not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        want = kind.__name__ if isinstance(kind, type) else "number"
        raise CheckpointError(f"{path}: '{prefix}{key}' is missing or not a {want} (got {value!r})")


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what})")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for truncated/garbled files
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({what}): {exc}") from exc


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


def head_shapes(head_cfg: dict) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a head as config.json's ``head`` describes it (linear or one hidden layer)."""
    d, c, h = head_cfg["embed_dim"], head_cfg["num_cells"], head_cfg["hidden"]
    if h > 0:
        return {"hidden_layer.weight": (h, d), "hidden_layer.bias": (h,), "out.weight": (c, h), "out.bias": (c,)}
    return {"out.weight": (c, d), "out.bias": (c,)}


def _check_head_header(path: Path, head_cfg: dict) -> None:
    """The head shapes config.json implies must be those stored in the file (read from its header only)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (head weights)")
    try:
        stored = safetensors_shapes(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    problems = shape_problems({k: v[1] for k, v in stored.items()}, head_shapes(head_cfg))
    if problems:
        raise CheckpointError(f"{path}: does not match the head described in config.json: " + "; ".join(problems))


_MAX_INPUT_SIZE = 1024


def _check_encoder_name(path: Path, config: dict) -> None:
    """The encoder must be registered (imports the encoders, so torch: not on the NumPy path,
    where a missing ONNX record sends an unknown name to the same check when building it)."""
    from geospot.encoders import list_encoders

    name = config["encoder"]["name"]
    if name not in list_encoders():
        raise CheckpointError(f"{path}: unknown encoder {name!r}; known: {', '.join(list_encoders())}")


def _check_encoder_fields(path: Path, config: dict) -> None:
    """Preprocessing and mask must be usable before any photo is decoded with them (torch-free)."""
    enc = config["encoder"]
    pre = enc.get("preprocess")
    if pre:
        from geospot.encoders.preprocess import Preprocess

        try:
            if not isinstance(pre, dict):
                raise ValueError(f"expected an object, got {type(pre).__name__}")
            p = Preprocess.from_dict(pre)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{path}: invalid encoder.preprocess ({exc})") from None
        if p.size > _MAX_INPUT_SIZE or p.resize > 2 * p.size:
            raise CheckpointError(f"{path}: encoder.preprocess asks for {p.size} px inputs resized from "
                                  f"{p.resize} px; geospot allows at most {_MAX_INPUT_SIZE} px and resize <= 2 x size")
    if config.get("mask") is not None:
        from geospot.data.masks import Mask

        try:
            Mask.from_dict(config["mask"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid mask ({exc})") from None


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
