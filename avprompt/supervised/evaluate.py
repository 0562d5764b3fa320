"""Scoring of supervised task heads: what a head's ``predict`` returns -> metrics and per-video scores.

The evaluator dispatches on the KIND of output, not on the task's name, so a new task whose head
emits one of these kinds needs no edit here:

    segment_scores (N, T, C + 1)       segment classification with background (ave-sup):
                                       ``segment_acc`` = accuracy over all test segments (C + 1-way)
    seg_prob_audio / seg_prob_visual   audio-visual video parsing (avvp): the reference decision rule
      (N, T, C) + video_prob (N, C)    and segment-/event-level F1 (``avprompt.data.avvp_metrics``)

Every metric is a mean over test videos of a per-video score, so ``per_video`` (metric -> (N,))
is what the paired bootstrap resamples (``paired_modes``).
"""
from __future__ import annotations

import numpy as np

from avprompt.data import avvp_metrics as av


def _segment_targets(records, num_classes: int) -> np.ndarray:
    """(N, T) class per segment, background = num_classes."""
    return np.array([[num_classes if s < 0 else s for s in r.segment_labels] for r in records])


def _dense(records, num_classes: int, which: str) -> np.ndarray:
    """(N, C, T) bool dense labels of one modality (``audio_segments`` / ``visual_segments``)."""
    return np.stack([av.dense_matrix(getattr(r, which), num_classes) for r in records])


def score(preds: dict, records, num_classes: int) -> tuple[dict, dict]:
    """(metrics in percent, per_video {metric: (N,) array}) of one prediction set."""
    if "segment_scores" in preds:
        pred = np.asarray(preds["segment_scores"]).argmax(-1)
        per = {"segment_acc": (pred == _segment_targets(records, num_classes)).mean(1) * 100}
    elif "seg_prob_audio" in preds:
        # a video without dense rows has an empty ground truth (the reference scores every video)
        pa, pv = av.decide(np.asarray(preds["seg_prob_audio"]), np.asarray(preds["seg_prob_visual"]),
                           np.asarray(preds["video_prob"]))
        scores = av.avvp_scores(pa, pv, _dense(records, num_classes, "audio_segments"),
                                _dense(records, num_classes, "visual_segments"))
        per = {k: np.asarray(v, dtype=float) * 100 for k, v in scores["per_video"].items()}
    else:
        raise ValueError(f"no evaluator for head outputs {sorted(preds)}: emit segment_scores or "
                         "seg_prob_audio/seg_prob_visual/video_prob (avprompt.heads docstring)")
    return {k: float(v.mean()) for k, v in per.items()}, per


def constant_floor(records, num_classes: int, metric: str) -> float | None:
    """The best constant predictor's score on ``records`` (a number the head must beat)."""
    if metric == "segment_acc":
        y = _segment_targets(records, num_classes).ravel()
        return float(np.bincount(y, minlength=num_classes + 1).max() / max(len(y), 1) * 100)
    if metric in av.METRICS:
        floors = av.avvp_floors(records, num_classes)
        return max(floors["nothing"][metric], floors["most_frequent"][metric])
    return None
