"""Torch-free encoder inference: a verified ONNX export run by ONNX Runtime.

Every ONNX file geospot exports gets a record beside it (`<file>.onnx.json`:
encoder, weights id, precision, embedding size, preprocessing, sha256 and
size of the file). Loading reads the file's bytes once, checks their sha256
against the record and hands those same bytes to ONNX Runtime, so a file
swapped or damaged after export is refused (`OnnxVerificationError`), never
silently used, and nothing can change between the check and the load.

A pretrained encoder also gets an alias record (`pretrained-<name>.json`:
its weights id, the ONNX file, and the size + mtime of the weight files the
export was built from). With it, `OnnxRuntime.pretrained(name)` finds and
verifies the export without importing torch or building the network: this is
how `geospot locate` starts in a fraction of a second. When the alias is
missing or stale (`OnnxRecordMissing`), the caller builds the encoder in torch
once (`EncoderRuntime`), which exports and writes both records.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from geospot.encoders.preprocess import Preprocess, cache_root

RECORD_FORMAT = 1
PRECISIONS = ("fp32", "int8")
# On CPU, ONNX Runtime runs EfficientNet-Lite fastest one image at a time: in every sweep of
# benchmarks/bench_embed.py on this 2-core box (threads x spinning x batch 1/8/32), batch 1 beat
# batch 32 by 1.3-1.6x (the activations of a big batch no longer fit the caches). Callers keep
# their batch size (decoding, caching); the session is run on micro-batches of this size.
CPU_MICRO_BATCH = 1


class OnnxRecordMissing(RuntimeError):
    """No (or a stale) record: the export must be (re)built with torch."""


class OnnxVerificationError(RuntimeError):
    """An ONNX file whose content differs from what geospot exported: refused."""


def usable_cpus() -> int:
    """CPU cores this process may run on (respects taskset/cpusets, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def onnx_dir() -> Path:
    return cache_root() / "onnx"


def onnx_path(name: str, weights_id: str, precision: str = "fp32") -> Path:
    """Where the export of `name` with weights `weights_id` lives (one file per weights and precision)."""
    suffix = "" if precision == "fp32" else f"-{precision}"
    return onnx_dir() / f"{name}-{weights_id}{suffix}.onnx"


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def alias_path(name: str) -> Path:
    return onnx_dir() / f"pretrained-{name}.json"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_record(path: Path, *, encoder: str, weights_id: str, embed_dim: int, preprocess: dict,
                 precision: str = "fp32", **extra: Any) -> dict:
    """Record the sha256 of the ONNX file at `path` (call right after writing it)."""
    data = path.read_bytes()
    record = {"format": RECORD_FORMAT, "encoder": encoder, "weights_id": weights_id, "precision": precision,
              "embed_dim": int(embed_dim), "preprocess": preprocess, "file": path.name,
              "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), **extra}
    _atomic_write_text(record_path(path), json.dumps(record, indent=1, sort_keys=True))
    return record


def _read_json(path: Path, what: str) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OnnxRecordMissing(f"{path}: no {what}") from None
    except (OSError, ValueError) as exc:
        raise OnnxRecordMissing(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise OnnxRecordMissing(f"{path}: not a geospot {what}")
    return record


def read_verified(path: Path) -> tuple[bytes, dict]:
    """(bytes, record) of an ONNX export whose content matches its record.

    Raises `OnnxRecordMissing` when the file or its record is absent, and
    `OnnxVerificationError` when the bytes differ from the recorded export."""
    record = _read_json(record_path(path), "export record")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OnnxRecordMissing(f"{path}: missing") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.get("sha256"):
        raise OnnxVerificationError(
            f"{path}: content (sha256 {digest[:12]}…) differs from the export geospot recorded "
            f"({str(record.get('sha256'))[:12]}…); the file was replaced or damaged, refusing to use it")
    return data, record


def _source_stamp(files) -> list[list]:
    out = []
    for f in files:
        st = os.stat(f)
        out.append([os.fspath(f), st.st_size, st.st_mtime_ns])
    return out


def write_alias(name: str, weights_id: str, sources) -> None:
    """Remember which export belongs to the pretrained `name` (written by the torch path)."""
    from geospot import __version__

    alias = {"format": RECORD_FORMAT, "encoder": name, "weights_id": weights_id, "geospot_version": __version__,
             "sources": _source_stamp(sources)}
    _atomic_write_text(alias_path(name), json.dumps(alias, indent=1, sort_keys=True))


def pretrained_weights_id(name: str) -> str:
    """Weights id of the pretrained `name` from its alias, if the alias is current; else `OnnxRecordMissing`."""
    from geospot import __version__

    path = alias_path(name)
    alias = _read_json(path, "pretrained-encoder record")
    if alias.get("encoder") != name or alias.get("geospot_version") != __version__:
        raise OnnxRecordMissing(f"{path}: written by another geospot version or for another encoder")
    try:
        if _source_stamp(f for f, _, _ in alias.get("sources", [])) != alias.get("sources", []):
            raise OnnxRecordMissing(f"{path}: the encoder's weight files changed since the export")
    except OSError as exc:
        raise OnnxRecordMissing(f"{path}: a weight file of the export is gone ({exc})") from None
    return str(alias["weights_id"])


def make_session(model: bytes | str | os.PathLike, providers: list[str] | None = None, threads: int | None = None,
                 spinning: bool = False):
    """An ONNX Runtime session with full graph optimisation on `threads` (default: usable cores).

    Spinning is off by default: idle ORT threads would otherwise busy-wait
    between batches and steal the cores that decode the next batch
    (`embed_paths` overlaps the two; see benchmarks/bench_embed.py)."""
    import onnxruntime as ort

    # An offline tool sends nothing anywhere: ORT_DISABLE_TELEMETRY (set by `import geospot`) stops ORT's
    # telemetry at import; switching its events off too covers an ORT imported before geospot.
    if hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or usable_cpus()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3  # warnings about unused initialisers etc. are noise for users
    if not isinstance(model, bytes):
        model = os.fspath(model)
    return ort.InferenceSession(model, sess_options=opts, providers=providers or ["CPUExecutionProvider"])


def checked_batch(batch, name: str, size: int) -> np.ndarray:
    """``batch`` as C-contiguous float32 ``[B, 3, size, size]``; a ValueError naming the encoder otherwise."""
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
        raise ValueError(f"{name} expects a batch [B, 3, {size}, {size}], got {list(batch.shape)}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def run_session(session, batch: np.ndarray, micro_batch: int | None) -> np.ndarray:
    """`session` on `batch` [B, 3, S, S] -> float32 [B, D], in micro-batches when given."""
    if not micro_batch or len(batch) <= micro_batch:
        return session.run(None, {"images": batch})[0].astype(np.float32, copy=False)
    return np.concatenate([session.run(None, {"images": batch[i : i + micro_batch]})[0]
                           for i in range(0, len(batch), micro_batch)]).astype(np.float32, copy=False)


def micro_batch_for(providers: list[str] | None) -> int | None:
    return CPU_MICRO_BATCH if not providers or providers[0] == "CPUExecutionProvider" else None


class OnnxRuntime:
    """An `embed_paths` runtime backed by a verified ONNX export; no torch.

    Attributes match `EncoderRuntime`: `name`, `weights_id` (with a `-int8`
    suffix for the quantised variant, so caches never mix precisions),
    `embed_dim`, `preprocess`, `backend` ("onnx"), `onnx_path`, `precision`.
    """

    backend = "onnx"
    device = None

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None,
                 spinning: bool = False) -> None:
        data, record = read_verified(path)
        self.onnx_path = path
        self.name = str(record["encoder"])
        self.precision = str(record.get("precision", "fp32"))
        base_id = str(record["weights_id"])
        self.weights_id = base_id if self.precision == "fp32" else f"{base_id}-{self.precision}"
        self.embed_dim = int(record["embed_dim"])
        self.preprocess = Preprocess.from_dict(record["preprocess"])
        self._session = make_session(data, providers, threads=threads, spinning=spinning)
        self.micro_batch = micro_batch_for(providers)

    @classmethod
    def pretrained(cls, name: str, precision: str = "fp32", **session: Any) -> "OnnxRuntime":
        """The verified export of the pretrained `name`, found through its alias record (no torch).
        `session`: `threads`, `spinning` (see `make_session`)."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        return cls(onnx_path(name, pretrained_weights_id(name), precision), **session)

    @property
    def input_size(self) -> int:
        return self.preprocess.size

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """float32 [B, 3, S, S] -> float32 [B, D]."""
        batch = checked_batch(batch, self.name, self.input_size)
        if batch.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return run_session(self._session, batch, self.micro_batch)
