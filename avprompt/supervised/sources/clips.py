"""Source ``clips``: clip datasets read into ``ClipRecord`` indexes (AVE, LLP: ``ave-sup``, ``avvp``).

Examples are the dataset's clips of each split (media that cannot be decoded are left out and
counted). Batches carry the targets of ``avprompt.engine.batches.target_tensors`` and either the
cached frozen per-segment features (``feat_v`` / ``feat_a``, encoder mode ``frozen``: each clip
encoded once, shared with the few-shot sweeps, fetched once per split) or the decoded clips
(in-network modes, or a head that reads the vision tokens). Scoring: ``avprompt.supervised.evaluate``.
"""
from __future__ import annotations

import numpy as np
import torch

from avprompt.supervised.sources import Source, register_source


@register_source("clips")
class ClipSource(Source):

    def __init__(self, ws, task):
        super().__init__(ws, task)
        self._splits = None
        self._feats: dict[str, dict] = {}

    def splits(self) -> dict[str, list]:
        if self._splits is None:
            index = self.ws.index(self.task.name)
            self.bad = self.ws.bad_clips(self.task.name)
            sp = {s: [r for r in index.split(s) if r.clip_id not in self.bad] for s in ("train", "val", "test")}
            self.index = index
            self._splits = self.require_splits(sp, f"the {index.name} data at {index.root} "
                                                   f"(after {len(self.bad)} bad media)")
        return self._splits

    @property
    def class_names(self) -> list[str]:
        self.splits()
        return list(self.index.classes)

    @property
    def spec(self):
        from avprompt.task import TaskSpec
        return TaskSpec(self.task.name, "segment", tuple(self.class_names), self.task.num_segments)

    def features(self, split: str) -> dict:
        """Frozen per-segment features of a split, both modalities: {"v": (N, T, D_v), "a": ...}."""
        if split not in self._feats:
            self._feats[split] = {m: self.ws.features(self.task.name, m, self.splits()[split]) for m in "va"}
        return self._feats[split]

    def batches(self, model, split: str, batch_size: int, shuffle_seed: int | None = None):
        from avprompt.engine.batches import iterate, target_tensors

        records = self.splits()[split]
        cached = model.mode.runs_on == "features" and not model.head.needs_tokens
        spec = self.spec
        if cached:
            row = {id(r): i for i, r in enumerate(records)}
            feats = self.features(split)

        def make(chunk):
            b = target_tensors(spec, chunk)
            if cached:
                idx = torch.tensor([row[id(r)] for r in chunk], dtype=torch.long)
                b.update({"feat_" + m: feats[m][idx] for m in "va"})
            else:
                b.update(self.ws.clips(self.task.name).inputs(chunk, "va"))
            return b
        return iterate(records, batch_size, make, shuffle_seed)

    def score(self, preds: dict, split: str) -> tuple[dict, dict]:
        from avprompt.supervised.evaluate import score
        return score(preds, self.splits()[split], self.num_classes)

    def floors(self, split: str, metrics) -> dict:
        from avprompt.supervised.evaluate import constant_floor
        recs = self.splits()[split]
        return {m: constant_floor(recs, self.num_classes, m) for m in metrics}

    def ids(self, split: str):
        return np.array([r.clip_id for r in self.splits()[split]])

    def data_identity(self) -> dict:
        return self.ws.data_identity(self.task.name)

    def extra(self) -> dict:
        return {**super().extra(), "bad_media": len(self.bad)}
