"""Evaluation metrics (numpy in, floats in percent out).

Primary metric per (task, protocol), returned as ``compute_metrics(...)["primary"]``:

==========================  ===========================================================
ave                         segment accuracy over all test segments (background included)
ave-cls, vggsound*          video accuracy
llp-cls, standard           macro mAP over classes with a positive test video: a constant
                            predictor scores the mean class prevalence, far below a model
llp-cls, reference          reference rule: correct iff argmax = lowest-index weak label
                            (a constant "Speech" predictor scores over 50 % on real LLP)
==========================  ===========================================================

``llp-cls`` also reports ``single_label_acc`` (accuracy on single-label test videos) and the
other LLP numbers under both protocols, so results stay comparable.

Which metrics a task reports and which is primary are fields of its ``Task``
(``avprompt.tasks``: ``metrics``, ``primary``, ``reference_primary``); this module computes them.
"""
from __future__ import annotations

import numpy as np

from avprompt.data.records import ClipRecord
from avprompt.data.tasks import primary_label
from avprompt.tasks import Task, few_shot_task


def segment_accuracy(logits: np.ndarray, segment_labels: np.ndarray) -> float:
    """logits (N, T, K), segment_labels (N, T) with background = K-1 -> percent correct."""
    pred = np.asarray(logits).argmax(-1)
    return float((pred == np.asarray(segment_labels)).mean() * 100)


def video_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """logits (N, K), labels (N,) -> percent correct; records with label -1 are skipped."""
    labels = np.asarray(labels)
    keep = labels >= 0
    if not keep.any():
        return float("nan")
    return float((np.asarray(logits)[keep].argmax(-1) == labels[keep]).mean() * 100)


def single_label_accuracy(logits: np.ndarray, video_labels: list[list[int]]) -> float:
    """Accuracy (percent) over videos with exactly one weak label; nan when there are none."""
    rows = [i for i, v in enumerate(video_labels) if len(v) == 1]
    if not rows:
        return float("nan")
    pred = np.asarray(logits)[rows].argmax(-1)
    return float(np.mean([p == video_labels[i][0] for p, i in zip(pred, rows)]) * 100)


def multi_hot(video_labels: list[list[int]], num_classes: int) -> np.ndarray:
    y = np.zeros((len(video_labels), num_classes), dtype=np.int64)
    for i, labs in enumerate(video_labels):
        y[i, labs] = 1
    return y


def macro_map(scores: np.ndarray, video_labels: list[list[int]]) -> float:
    """Mean over classes with >= 1 positive of the average precision (percent), exactly as
    sklearn's ``average_precision_score`` computes it (one threshold per distinct score), in
    numpy: model selection scores it thousands of times per cell."""
    scores = np.asarray(scores, dtype=np.float64)
    y = multi_hot(video_labels, scores.shape[1]).astype(bool)
    aps = []
    for k in np.flatnonzero(y.any(0)):
        order = np.argsort(scores[:, k], kind="mergesort")[::-1]
        s, t = scores[order, k], y[order, k]
        last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each distinct score
        tps = np.cumsum(t)[last]
        precision, recall = tps / (last + 1), tps / tps[-1]
        aps.append(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return float(np.mean(aps) * 100) if aps else float("nan")


def reference_llp_accuracy(logits: np.ndarray, video_labels: list[list[int]]) -> float:
    """DG-SCT's LLP rule: a video counts as correct iff argmax = its lowest-index label."""
    labels = np.array([min(v) if v else -1 for v in video_labels])
    return video_accuracy(logits, labels)


def primary_metric(task: str | Task, protocol: str) -> str:
    """Name of the primary metric of ``task`` under ``protocol`` (see the module docstring)."""
    return few_shot_task(task).primary_metric(protocol)


#: how each video-level metric is computed from (logits (N, K), primary labels, sorted label sets)
_VIDEO_METRICS = {
    "video_acc": lambda logits, labels, vl: video_accuracy(logits, labels),
    "single_label_acc": lambda logits, labels, vl: single_label_accuracy(logits, vl),
    "macro_map": lambda logits, labels, vl: macro_map(logits, vl),
    "reference_acc": lambda logits, labels, vl: reference_llp_accuracy(logits, vl),
}


def compute_metrics(task: str | Task, protocol: str, logits_np: np.ndarray,
                    records: list[ClipRecord]) -> dict:
    """All metrics of ``task`` for ``records`` (test order) and ``logits_np``.

    logits_np: (N, T, K) for segment tasks; (N, K) or (N, T, K) (averaged over T) for video
    tasks. Returns floats in percent plus ``primary`` and ``primary_name``.
    """
    task = few_shot_task(task)
    logits = np.asarray(logits_np, dtype=np.float64)
    if logits.shape[0] != len(records):
        raise ValueError(f"{task.name}: {logits.shape[0]} logit rows for {len(records)} records")
    out: dict = {}
    if task.segment_level:
        if logits.ndim != 3:
            raise ValueError(f"{task.name}: segment task needs logits (N, T, K), got {logits.shape}")
        background = logits.shape[-1] - 1
        seg = np.array([[background if s < 0 else s for s in r.segment_labels] for r in records])
        out["segment_acc"] = segment_accuracy(logits, seg)
    else:
        if logits.ndim == 3:
            logits = logits.mean(axis=1)
        vl = [sorted(r.video_labels) for r in records]
        labels = np.array([primary_label(r) for r in records])
        for name in task.metrics:  # in the task's order: results keep their key order
            if name not in _VIDEO_METRICS:
                raise ValueError(f"task {task.name!r}: no video-level metric {name!r} "
                                 f"(known: {', '.join(_VIDEO_METRICS)})")
            out[name] = _VIDEO_METRICS[name](logits, labels, vl)
    out["primary_name"] = primary_metric(task, protocol)
    out["primary"] = out[out["primary_name"]]
    return out
