"""Example sources of supervised tasks: how a task's examples are read, batched and scored.

A supervised task names its source (``Task.source``: ``"clips"`` for clip datasets read into
``ClipRecord`` indexes, ``"avs"`` for AVSBench-object frames and masks, ``"avqa"`` for MUSIC-AVQA
questions on videos). A source is one file in this folder (``@register_source("key")`` on a
``Source`` subclass), or a ``avprompt.sources`` entry point, or a ``*.py`` in a folder of
``AVPROMPT_SOURCES_PATH``, found by scanning like methods, tasks and heads. ``avprompt train``
(``avprompt.supervised.run``) talks only to this interface, so segmentation and question answering
run through the same loop, validation selection, result store and paired comparison as clip tasks.

Interface (one instance per (workspace, task); splits are named "train" | "val" | "test"):

    splits() -> {split: [example, ...]}       examples the task uses (bad media left out)
    num_classes / class_names                  the head's outputs (event classes, answers)
    context() -> dict                          facts a head needs beyond them (e.g. vocab_size)
    batches(model, split, batch_size, shuffle_seed=None) -> iterator of batch dicts (inputs +
                                               targets; the model's encoder mode decides whether
                                               decoded media or cached features are read)
    score(preds, split) -> (metrics {name: percent}, per_unit {name: (N,) array})
                                               per_unit = the per-``unit`` scores whose mean is the
                                               metric (what the paired bootstrap resamples; stored
                                               as ``video_<metric>`` whatever the unit)
    floors(split, metrics) -> {metric: percent} the best constant predictor's score per metric
    ids(split) -> (N,) array                   example ids, stored with the predictions
    stored_predictions(preds) -> dict          what of the raw head outputs goes in ``.pred.npz``
    data_identity() -> dict                    what the data is (part of a cell's identity)
    extra() -> dict                            facts for the record (n_train, n_val, n_test, ...)
"""
from __future__ import annotations

from typing import ClassVar

from avprompt.plugins import ClassRegistry



class Source:
    key: ClassVar[str] = ""
    #: what one per-unit score is about (a test video, a question): the paired bootstrap resamples these
    unit: ClassVar[str] = "video"

    def __init__(self, ws, task):
        self.ws, self.task = ws, task

    # ----- what every source provides --------------------------------------------------------
    def splits(self) -> dict[str, list]:
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def context(self) -> dict:
        return {}

    def batches(self, model, split: str, batch_size: int, shuffle_seed: int | None = None):
        raise NotImplementedError

    def score(self, preds: dict, split: str) -> tuple[dict, dict]:
        raise NotImplementedError

    def floors(self, split: str, metrics) -> dict:
        return {}

    def ids(self, split: str):
        raise NotImplementedError

    def stored_predictions(self, preds: dict) -> dict:
        return preds

    def data_identity(self) -> dict:
        raise NotImplementedError

    def extra(self) -> dict:
        sp = self.splits()
        return {f"n_{s}": len(sp[s]) for s in ("train", "val", "test")}

    def require_splits(self, sp: dict[str, list], where: str) -> dict[str, list]:
        """One-line error when a split is empty (a supervised task needs all three)."""
        for s in ("train", "val", "test"):
            if not sp.get(s):
                raise ValueError(f"task {self.task.name}: {where} has no {s} examples; a supervised task "
                                 "needs train, val and test")
        return sp


_SOURCES = ClassRegistry("example source", Source, "avprompt.supervised.sources", "avprompt.sources",
                         "AVPROMPT_SOURCES_PATH")
register_source = _SOURCES.register  # class decorator: a ``Source`` subclass under ``Task.source``'s value
discover = _SOURCES.discover
get_source = _SOURCES.get


def source_for(ws, task) -> Source:
    """The example source of ``task`` (a supervised ``Task``) on workspace ``ws``."""
    return get_source(getattr(task, "source", "clips") or "clips")(ws, task)
