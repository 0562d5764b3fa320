"""AVVP (audio-visual video parsing) metrics on LLP, as the reference defines them.

Reference: METHODS.md, "AVVP on LLP" (the protocol of YapengTian/AVVP-ECCV20). numpy only.

Conventions
-----------
* A prediction / ground-truth matrix of one video and one modality is bool ``(C, T)``: classes x
  segments (C = 25 on LLP, T = 10 one-second segments). A batch of videos is ``(N, C, T)``.
* ``dense_matrix(segments, C)`` turns a record's ``audio_segments`` / ``visual_segments`` (10 lists
  of class indices, or None) into that matrix; None (the dense file has no row for the video) is an
  all-False matrix, as in the reference evaluation (it scores every test video, a video with no
  dense row has an empty ground truth).
* ``decide(seg_prob_audio, seg_prob_visual, video_prob)``: segment probabilities ``(N, T, C)``
  (time before class, the layout of the reference head's ``frame_prob[:, :, m, :]``), video-level
  probabilities ``(N, C)``; returns the audio and visual prediction matrices ``(N, C, T)``. Rule:
  segment t of modality m is positive for class c iff ``seg_prob_m[n, t, c] >= 0.5`` AND
  ``video_prob[n, c] >= 0.5`` (both thresholds = ``threshold``).
* Audio-visual: ``AV = audio AND visual`` elementwise, for predictions and ground truth alike.

Per-video F1 (both levels): per class c, count TP, FP, FN; ``F1_c = 2TP / (2TP + FN + FP)`` for every
class with ``TP + FP > 0`` or ``TP + FN > 0``; the video's score is the mean of F1_c over those
classes, or 1.0 when there is none (nothing predicted, nothing annotated).

* Segment level: TP/FP/FN are counted over the T segments of the class row.
* Event level: events are the maximal runs of consecutive positive segments of a class row. A
  predicted event is a TP if its IoU with ANY ground-truth event of that class is >= 0.5 (matching
  is not one-to-one: two predictions can both hit one ground-truth event), else an FP; a
  ground-truth event with no predicted event at IoU >= 0.5 is an FN.

Metric names (``avvp_scores``; reported numbers are the means over videos, in percent):

==============  =================================================================================
``seg_a``       segment-level Audio F1 (audio prediction vs audio ground truth)
``seg_v``       segment-level Visual F1
``seg_av``      segment-level Audio-Visual F1 (AV prediction vs AV ground truth)
``seg_type``    segment-level Type@AV = (seg_a + seg_v + seg_av) / 3
``seg_event``   segment-level Event@AV: per class, TP, FP, FN of audio and visual added, then F1
``evt_a``       event-level Audio F1
``evt_v``       event-level Visual F1
``evt_av``      event-level Audio-Visual F1
``evt_type``    event-level Type@AV = (evt_a + evt_v + evt_av) / 3
``evt_event``   event-level Event@AV (audio + visual event counts per class)
==============  =================================================================================

Type@AV is the mean of the three reported (already video-averaged) numbers; its per-video array is
the mean of the three per-video arrays, whose mean is the same number.
"""
from __future__ import annotations

import numpy as np

NUM_SEGMENTS = 10
METRICS = ("seg_a", "seg_v", "seg_av", "seg_type", "seg_event",
           "evt_a", "evt_v", "evt_av", "evt_type", "evt_event")
METRIC_LABELS = {
    "seg_a": "Segment-level Audio F1", "seg_v": "Segment-level Visual F1",
    "seg_av": "Segment-level Audio-Visual F1", "seg_type": "Segment-level Type@AV F1",
    "seg_event": "Segment-level Event@AV F1", "evt_a": "Event-level Audio F1",
    "evt_v": "Event-level Visual F1", "evt_av": "Event-level Audio-Visual F1",
    "evt_type": "Event-level Type@AV F1", "evt_event": "Event-level Event@AV F1",
}


# ---------------------------------------------------------------- matrices
def dense_matrix(segments: list[list[int]] | None, num_classes: int,
                 T: int = NUM_SEGMENTS) -> np.ndarray:
    """bool (C, T): ``m[c, t]`` iff class c is in ``segments[t]``; all False for None."""
    m = np.zeros((num_classes, T), dtype=bool)
    if segments is None:
        return m
    if len(segments) != T:
        raise ValueError(f"dense labels: expected {T} segments, got {len(segments)}")
    for t, classes in enumerate(segments):
        for c in classes:
            if not 0 <= c < num_classes:
                raise ValueError(f"dense labels: class index {c} outside 0..{num_classes - 1}")
            m[c, t] = True
    return m


def decide(seg_prob_audio, seg_prob_visual, video_prob, threshold: float = 0.5):
    """Prediction matrices ``(pred_audio, pred_visual)``, bool ``(N, C, T)``.

    ``seg_prob_audio`` / ``seg_prob_visual``: ``(N, T, C)`` per-segment class probabilities;
    ``video_prob``: ``(N, C)`` video-level probabilities. Segment t is positive for class c in a
    modality iff its segment probability >= threshold AND ``video_prob[n, c] >= threshold``.
    """
    pa = np.asarray(seg_prob_audio, dtype=float)
    pv = np.asarray(seg_prob_visual, dtype=float)
    vp = np.asarray(video_prob, dtype=float)
    if pa.ndim != 3 or pa.shape != pv.shape:
        raise ValueError(f"segment probabilities must both be (N, T, C); got {pa.shape} and "
                         f"{pv.shape}")
    if vp.shape != (pa.shape[0], pa.shape[2]):
        raise ValueError(f"video probabilities must be (N, C) = {(pa.shape[0], pa.shape[2])}; "
                         f"got {vp.shape}")
    gate = (vp >= threshold)[:, None, :]  # (N, 1, C)
    out_a = ((pa >= threshold) & gate).transpose(0, 2, 1)
    out_v = ((pv >= threshold) & gate).transpose(0, 2, 1)
    return out_a, out_v


# ---------------------------------------------------------------- counting
def _as_batch(*mats) -> list[np.ndarray]:
    arrs = [np.asarray(m).astype(bool) for m in mats]
    shape = arrs[0].shape
    for a in arrs:
        if a.shape != shape:
            raise ValueError(f"prediction and ground-truth shapes differ: {[x.shape for x in arrs]}")
    if arrs[0].ndim == 2:
        arrs = [a[None] for a in arrs]
    elif arrs[0].ndim != 3:
        raise ValueError(f"expected (C, T) or (N, C, T) matrices, got shape {shape}")
    return arrs


def _segment_counts(pred: np.ndarray, gt: np.ndarray):
    """(N, C, T) bool -> TP, FP, FN, each int (N, C), counted over segments."""
    tp = np.sum(pred & gt, axis=-1)
    fp = np.sum(pred & ~gt, axis=-1)
    fn = np.sum(~pred & gt, axis=-1)
    return tp, fp, fn


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool row, as half-open [start, end)."""
    if not row.any():
        return []
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    d = np.diff(padded)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _hit(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """IoU(a, b) >= 0.5 for half-open segment intervals (integer arithmetic)."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return 2 * inter >= union


def _event_counts(pred: np.ndarray, gt: np.ndarray):
    """(N, C, T) bool -> TP, FP, FN, each int (N, C), counted over events (runs)."""
    n, c, _ = pred.shape
    tp = np.zeros((n, c), dtype=int)
    fp = np.zeros((n, c), dtype=int)
    fn = np.zeros((n, c), dtype=int)
    active = np.argwhere(pred.any(axis=-1) | gt.any(axis=-1))
    for i, k in active:
        p_ev, g_ev = _runs(pred[i, k]), _runs(gt[i, k])
        hits = sum(any(_hit(p, g) for g in g_ev) for p in p_ev)
        tp[i, k] = hits
        fp[i, k] = len(p_ev) - hits
        fn[i, k] = sum(not any(_hit(g, p) for p in p_ev) for g in g_ev)
    return tp, fp, fn


def _f1_per_video(tp, fp, fn) -> np.ndarray:
    """(N, C) counts -> (N,) mean F1 over active classes; 1.0 where no class is active."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    active = (tp + fp > 0) | (tp + fn > 0)
    denom = np.where(active, 2 * tp + fp + fn, 1.0)
    f1 = np.where(active, 2 * tp / denom, 0.0)
    n_active = active.sum(axis=-1)
    return np.where(n_active > 0, f1.sum(axis=-1) / np.maximum(n_active, 1), 1.0)


def _unbatch(scores: np.ndarray, ndim: int):
    return float(scores[0]) if ndim == 2 else scores


def segment_f1(pred, gt):
    """Segment-level F1 per video: float for (C, T) inputs, (N,) array for (N, C, T)."""
    ndim = np.ndim(pred)
    p, g = _as_batch(pred, gt)
    return _unbatch(_f1_per_video(*_segment_counts(p, g)), ndim)


def event_f1(pred, gt):
    """Event-level F1 per video: float for (C, T) inputs, (N,) array for (N, C, T)."""
    ndim = np.ndim(pred)
    p, g = _as_batch(pred, gt)
    return _unbatch(_f1_per_video(*_event_counts(p, g)), ndim)


def avvp_scores(pred_audio, pred_visual, gt_audio, gt_visual) -> dict:
    """All ten AVVP metrics (see the module docstring for names and rules).

    Inputs: bool ``(N, C, T)`` (or one video's ``(C, T)``). Returns ``{name: mean in percent}``
    for every name of ``METRICS``, plus ``"per_video": {name: (N,) array of F1 in [0, 1]}`` and
    ``"videos": N``.
    """
    pa, pv, ga, gv = _as_batch(pred_audio, pred_visual, gt_audio, gt_visual)
    pav, gav = pa & pv, ga & gv
    per: dict[str, np.ndarray] = {}
    for level, count in (("seg", _segment_counts), ("evt", _event_counts)):
        ca, cv, cav = count(pa, ga), count(pv, gv), count(pav, gav)
        per[f"{level}_a"] = _f1_per_video(*ca)
        per[f"{level}_v"] = _f1_per_video(*cv)
        per[f"{level}_av"] = _f1_per_video(*cav)
        per[f"{level}_type"] = (per[f"{level}_a"] + per[f"{level}_v"] + per[f"{level}_av"]) / 3.0
        per[f"{level}_event"] = _f1_per_video(*(x + y for x, y in zip(ca, cv)))
    out: dict = {name: 100.0 * float(np.mean(per[name])) for name in METRICS}
    out["per_video"] = {name: per[name] for name in METRICS}
    out["videos"] = int(pa.shape[0])
    return out


# ---------------------------------------------------------------- dataset summary
def _gt_matrices(records, num_classes: int, T: int = NUM_SEGMENTS):
    ga = np.stack([dense_matrix(r.audio_segments, num_classes, T) for r in records])
    gv = np.stack([dense_matrix(r.visual_segments, num_classes, T) for r in records])
    return ga, gv


def avvp_floors(records, num_classes: int, T: int = NUM_SEGMENTS) -> dict:
    """Constant parsers on ``records`` (their dense labels; None = no event), in percent.

    ``nothing``: no prediction at all. ``most_frequent``: the class annotated in most videos of
    ``records``, on all T segments of both modalities of every video. A constant floor of a metric
    is the better of the two. ``weak_oracle`` (a reference ceiling, not a floor): every weak label
    of the video (``video_labels``) on all T segments of both modalities: what a model scores that
    gets the video-level labels right and parses nothing in time or modality.
    """
    if not records:
        return {}
    ga, gv = _gt_matrices(records, num_classes, T)
    none = np.zeros_like(ga)
    every = np.zeros_like(ga)
    every[:, int((ga | gv).any(-1).sum(0).argmax()), :] = True
    weak = np.zeros_like(ga)
    for i, r in enumerate(records):
        weak[i, list(r.video_labels), :] = True
    out = {}
    for name, p in (("nothing", none), ("most_frequent", every), ("weak_oracle", weak)):
        s = avvp_scores(p, p, ga, gv)
        out[name] = {m: round(s[m], 4) for m in METRICS}
    return out


def _split_summary(records, num_classes: int, T: int = NUM_SEGMENTS) -> dict:
    has_a = sum(r.audio_segments is not None for r in records)
    has_v = sum(r.visual_segments is not None for r in records)
    has_any = sum(r.audio_segments is not None or r.visual_segments is not None for r in records)
    out = {"videos": len(records), "videos_with_dense_rows": has_any,
           "videos_with_audio_rows": has_a, "videos_with_visual_rows": has_v}
    if not records or has_any == 0:
        return out
    ga, gv = _gt_matrices(records, num_classes, T)
    n_runs = lambda m: sum(len(_runs(row)) for row in m.reshape(-1, T))  # noqa: E731
    cls_a, cls_v = ga.any(axis=-1), gv.any(axis=-1)  # (N, C): class present in the modality
    has_events = cls_a.any(axis=-1) | cls_v.any(axis=-1)
    weak_only = sum(bool(r.video_labels) and not h for r, h in zip(records, has_events))
    out.update({
        "audio_events": n_runs(ga), "visual_events": n_runs(gv),
        "audio_visual_events": n_runs(ga & gv),
        "audio_segments": int(ga.sum()), "visual_segments": int(gv.sum()),
        "audio_visual_segments": int((ga & gv).sum()),
        # a class heard but never seen in the video (audio-only), or seen but never heard
        "videos_with_audio_only_events": int((cls_a & ~cls_v).any(axis=-1).sum()),
        "videos_with_visual_only_events": int((cls_v & ~cls_a).any(axis=-1).sum()),
        "videos_with_events": int(has_events.sum()),
        "videos_with_weak_labels_but_no_events": int(weak_only),
    })
    return out


def avvp_dataset_summary(index) -> dict:
    """AVVP statistics of an LLP-layout ``DatasetIndex`` (for ``data stats``).

    Per split (``train`` / ``val`` / ``test``): ``videos``; ``videos_with_dense_rows`` (audio or
    visual dense row; also ``videos_with_audio_rows`` / ``videos_with_visual_rows``); and, where
    dense rows exist: ``audio_events`` / ``visual_events`` (maximal runs of consecutive positive
    segments per class, what the event-level metric counts) and ``audio_visual_events`` (runs of
    audio AND visual), ``audio_segments`` / ``visual_segments`` / ``audio_visual_segments``
    (positive (class, segment) cells), ``videos_with_audio_only_events`` (a class with audio
    segments and no visual segment in the video) / ``videos_with_visual_only_events`` (the
    converse), ``videos_with_events``, ``videos_with_weak_labels_but_no_events``.
    The test split also gets ``floors`` (``avvp_floors``: ``nothing``, ``most_frequent``, ``weak_oracle``, every
    metric, percent), computed over all test videos as the reference evaluates them.
    """
    c = len(index.classes)
    out = {"classes": c, "splits": {}}
    for split in ("train", "val", "test"):
        records = index.split(split)
        s = _split_summary(records, c)
        if split == "test":
            s["floors"] = avvp_floors(records, c)
        out["splits"][split] = s
    return out
