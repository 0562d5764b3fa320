"""Records -> tensors: decoded clips from the media cache, or frozen features, as method batches.

A ``ClipTensors`` holds, for one dataset and one preprocessing, every clip's frames (uint8, CLIP
normalisation applied per batch) and per-segment waveforms, loaded once from the prepared media
cache. Batches carry the keys documented in ``avprompt.method``.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from avprompt.data.records import ClipRecord
from avprompt.data.tasks import targets
from avprompt.task import TaskSpec


def target_tensors(task: TaskSpec, records: Sequence[ClipRecord]) -> dict:
    """segment_labels (N, T) long, label (N,) long, video_labels (N, K) float multi-hot."""
    t = [targets(task, r) for r in records]
    k = len(task.class_names)
    multi = torch.zeros(len(records), k)
    for i, x in enumerate(t):
        multi[i, [c for c in x["video_labels"] if 0 <= c < k]] = 1.0
    return {"segment_labels": torch.tensor([x["segment_labels"][: task.num_segments] for x in t], dtype=torch.long),
            "label": torch.tensor([max(x["label"], 0) for x in t], dtype=torch.long),
            "video_labels": multi}


class ClipTensors:
    """Decoded clips of one dataset at one preprocessing, read lazily from the memory-mapped
    media cache (a real dataset does not fit in memory as arrays).

    frames: uint8 (T, S, S, 3) per clip; audio: float32 (T, sr) per clip (1 s per segment).
    """

    def __init__(self, media_cache, mean, std, num_segments: int = 10):
        self.cache = media_cache
        self.mean = torch.tensor(mean).view(1, 1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 1, 3, 1, 1)
        self.num_segments = num_segments

    def inputs(self, records: Sequence[ClipRecord], modalities: str) -> dict:
        from avprompt.data.prepare import load_clip

        return clip_inputs([load_clip(self.cache, r) for r in records], self.mean, self.std,
                           self.num_segments, modalities)


def clip_inputs(arrays: Sequence[tuple], mean, std, num_segments: int, modalities: str) -> dict:
    """Decoded clips [(frames uint8 (10, S, S, 3), wave float32 (10 * sr,))] -> model inputs:
    ``frames`` (B, T, 3, S, S) normalised, ``audio`` (B, T, sr); only the modalities asked for."""
    t = num_segments
    mean, std = (torch.as_tensor(x, dtype=torch.float32).view(1, 1, 3, 1, 1) for x in (mean, std))
    out = {}
    if "v" in modalities:
        f = torch.from_numpy(np.stack([np.asarray(a[0][:t]) for a in arrays]))  # (B, T, S, S, 3) uint8
        f = f.permute(0, 1, 4, 2, 3).float().div_(255.0)
        out["frames"] = (f - mean) / std  # (B, T, 3, S, S)
    if "a" in modalities:
        out["audio"] = torch.from_numpy(np.stack([np.asarray(a[1]).reshape(10, -1)[:t] for a in arrays])).float()
    return out


def iterate(records: Sequence[ClipRecord], batch_size: int, make, shuffle_seed: int | None = None
            ) -> Iterator[dict]:
    """Yield ``make(chunk)`` over ``records`` in order, or shuffled by a seeded generator."""
    order = np.arange(len(records))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(records))
    for s in range(0, len(order), batch_size):
        yield make([records[i] for i in order[s: s + batch_size]])
