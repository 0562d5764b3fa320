"""The frozen-feature cache: encode each clip once per (backbone, preprocessing), reuse everywhere.

Cacheable methods (``Method.cacheable``) only read pooled frozen embeddings, so every method,
shot count and seed on the same backbone and inputs can share one encoding of each clip::

    cache = FeatureCache(root)
    feats = cache.get_or_compute(encoders, "v", clip_ids, loader_fn,
                                 dataset="ave", preprocessing={"num_segments": 10})  # (N, T, D)

Layout: ``root/<dataset>/<modality>-<key>/<clip>.npy`` (float32 (T, D)) plus a ``key.json``
describing what the key hashes. The key hashes everything the numbers depend on:

* the tower's spec (kind, architecture, weights tag or path, text tower) and class;
* a fingerprint of the loaded weights themselves (per tensor: name, shape, sum, sum of squares and
  a strided sample of values). It tells apart two random initialisations, a re-trained file at the
  same path and an in-place edit, which a path, size or mtime alone would not;
* the tower's own preprocessing (image size, mean/std; sample rate, clip length, short-audio mode);
* the caller's preprocessing dict (number of segments, frame sampling, decoder options ...);
* the dataset name; the clip id names the file inside the key folder.

Writes are atomic (temporary file in the same folder, then ``os.replace``), so an interrupted run
never leaves a truncated feature file behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import weakref
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from avprompt.atomic import atomic_write, atomic_write_text

FORMAT_VERSION = 1
# module -> (state signature, fingerprint): hashing ViT-B-sized weights takes a fraction of a
# second, so it is redone only when a tensor is replaced or modified in place (its _version moves).
# Weak keys: a freed module's entry goes with it, so a new module at a reused address never matches.
_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's state (parameters and buffers): the exact bytes of every tensor.

    The same in every process: it used to hash float64 sums, whose rounding follows torch's
    reduction order and so its thread count, and a sweep's worker processes (1 thread) never
    matched the features their parent (2 threads) had just cached for the vision tower -- each
    worker encoded them again. Memoised per module (``_FINGERPRINTS``); ViT-B-32 takes ~0.3 s."""
    state = module.state_dict()
    signature = tuple((name, t.data_ptr(), t._version, tuple(t.shape)) for name, t in state.items())
    memo = _FINGERPRINTS.get(module)
    if memo is not None and memo[0] == signature:
        return memo[1]
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        if t.numel():
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    _FINGERPRINTS[module] = (signature, h.hexdigest()[:16])
    return _FINGERPRINTS[module][1]


def tower_identity(tower) -> dict:
    """Everything about a tower that its embeddings depend on (JSON-serialisable)."""
    ident = {"class": type(tower).__name__, "arch": getattr(tower, "arch", None),
             "weights": getattr(tower, "weights", None), "fingerprint": weights_fingerprint(tower)}
    if getattr(tower, "modality", "") == "v":
        ident["preprocessing"] = {"image_size": int(tower.image_size),
                                  "mean": [float(x) for x in tower.image_mean],
                                  "std": [float(x) for x in tower.image_std]}
    elif getattr(tower, "modality", "") == "a":
        ident["preprocessing"] = {"sample_rate": int(tower.sample_rate), "clip_samples": int(tower.clip_samples),
                                  "short_audio": tower.short_audio}
    text = getattr(tower, "text", None)
    if text is not None:
        ident["text"] = type(text).__name__
    return ident


def encode_clips(encoders, modality: str, batches: Iterable[dict], audio_pass: str = "segment") -> torch.Tensor:
    """Encode batches of clips (``frames`` (B, T, 3, H, W) or ``audio`` (B, T, S)) -> (N, T, D)
    float32 on the CPU, in batch order (the frozen encoders' ``encode``, no gradients)."""
    out = [encoders.encode(b, modality, audio_pass=audio_pass).float().cpu() for b in batches]
    if not out:
        raise ValueError("encode_clips: no batches to encode")
    return torch.cat(out)


def _file_name(clip_id: str) -> str:
    # Clip ids are arbitrary strings (YouTube ids, suffixed duplicates): keep a readable,
    # filesystem-safe stem and disambiguate with a short hash of the exact id.
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", clip_id)[:80]
    return f"{stem}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}.npy"


def _hash(info: dict) -> str:
    return hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array))


class FeatureCache:
    """Frozen pooled embeddings on disk, keyed by backbone, preprocessing and dataset.

    ``stats`` counts clip hits (read from disk or memory) and misses (encoded) since creation.
    ``memory=True`` also keeps loaded features in memory for the life of the object, so repeated
    runs in one process (methods x shots x seeds) do not re-read the files.
    """

    def __init__(self, root: str | os.PathLike, memory: bool = True):
        self.root = Path(root)
        self.memory = memory
        self._mem: dict[tuple[str, str], torch.Tensor] = {}
        self.stats = {"hits": 0, "misses": 0}

    # ----- keys ------------------------------------------------------------------------------
    def key_info(self, encoders, modality: str, dataset: str = "", preprocessing: dict | None = None) -> dict:
        """The JSON description a key hashes (also written to the key folder as key.json)."""
        if modality not in ("v", "a"):
            raise ValueError(f"feature cache: modality must be 'v' or 'a', got {modality!r}")
        return {"format": FORMAT_VERSION, "modality": modality, "dataset": dataset,
                "tower": tower_identity(encoders.tower(modality)),
                "preprocessing": dict(sorted((preprocessing or {}).items()))}

    def key(self, encoders, modality: str, dataset: str = "", preprocessing: dict | None = None) -> str:
        return _hash(self.key_info(encoders, modality, dataset, preprocessing))

    def folder(self, encoders, modality: str, dataset: str = "", preprocessing: dict | None = None) -> Path:
        return self._folder(dataset, modality, self.key(encoders, modality, dataset, preprocessing))

    def _folder(self, dataset: str, modality: str, key: str) -> Path:
        return self.root / re.sub(r"[^A-Za-z0-9_.-]", "_", dataset or "default") / f"{modality}-{key}"

    # ----- lookups ---------------------------------------------------------------------------
    def get_or_compute(self, encoders, modality: str, clip_ids: list[str],
                       loader_fn: Callable[[list[str]], Iterable[dict]], dataset: str = "",
                       preprocessing: dict | None = None, audio_pass: str = "segment") -> torch.Tensor:
        """Features (N, T, D) float32 of ``clip_ids`` (in that order), encoding only the misses.

        ``loader_fn(missing_ids)`` yields batches (dicts with ``frames`` (B, T, 3, H, W) or
        ``audio`` (B, T, S)) covering exactly ``missing_ids`` in order; it is not called when
        every clip is cached. ``audio_pass="clip"`` (audio only) encodes each clip in one pass
        (``Encoders.encode``); it is part of the key.
        """
        if modality == "a" and audio_pass != "segment":
            preprocessing = {**(preprocessing or {}), "audio_pass": audio_pass}
        info = self.key_info(encoders, modality, dataset, preprocessing)
        key = _hash(info)
        folder = self._folder(dataset, modality, key)
        found: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        for cid in dict.fromkeys(clip_ids):  # unique, order kept
            mem = self._mem.get((key, cid))
            path = folder / _file_name(cid)
            if mem is not None:
                found[cid] = mem
            elif path.is_file():
                try:
                    found[cid] = torch.from_numpy(np.load(path))
                except (ValueError, OSError) as e:
                    raise ValueError(f"feature cache file {path} is unreadable ({e}); delete it to "
                                     "re-encode that clip") from None
            else:
                missing.append(cid)
        self.stats["hits"] += len(found)
        self.stats["misses"] += len(missing)
        if missing:
            feats = encode_clips(encoders, modality, loader_fn(missing), audio_pass if modality == "a" else "segment")
            if feats.shape[0] != len(missing):
                raise ValueError(f"feature cache: loader_fn returned {feats.shape[0]} clips for "
                                 f"{len(missing)} requested ids; it must yield exactly the ids it is given")
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "key.json").exists():
                atomic_write_text(folder / "key.json", json.dumps(info, indent=1, sort_keys=True, default=str))
            for cid, f in zip(missing, feats):
                _atomic_save(folder / _file_name(cid), f.numpy())
                found[cid] = f
        if self.memory:
            for cid, f in found.items():
                self._mem[(key, cid)] = f
        return torch.stack([found[cid] for cid in clip_ids])
