"""AVS (audio-visual segmentation) metrics on AVSBench-object, as the reference defines them.

Reference: METHODS.md, "AVS on AVSBench-object" (the released test script of OpenNLPLab/AVSBench).
numpy only; torch tensors are accepted and converted (``detach().cpu().numpy()``).

Conventions
-----------
* Every function takes **probabilities** (after the sigmoid), not logits: ``prob`` is float
  ``(H, W)`` for one frame or ``(N, H, W)`` for N frames, values in [0, 1]. A head that outputs
  logits goes through ``sigmoid(logits)`` first (a numerically stable helper is provided).
* Ground truth ``gt`` has the same shape; a pixel is foreground iff ``gt > 0.5`` (so 0/1 floats,
  bools and 0/255 PNG masks all work).

mIoU (Jaccard), per frame (``frame_iou``)
    P = prob > 0.5 (strict, as the reference). IoU = |P∩G| / (|P∪G| + 1e-7). For a frame whose
    ground truth is empty the reference replaces the ratio by the share of pixels where both are 0:
    an empty prediction scores 1, a prediction with k positive pixels scores (HW - k) / HW.

F-score (``frame_fscore_curve``)
    255 thresholds ``np.linspace(0, 1 - 1e-10, 255)`` (evenly spaced in [0, 1), as the reference).
    At each threshold t the prediction is ``prob >= t`` (note >=, as the reference; so t = 0
    predicts every pixel); over the frame, precision = TP / (|pred| + 1e-20) and
    recall = TP / (|G| + 1e-20); F = (1 + β²)PR / (β²P + R) with β² = 0.3, NaN (P = R = 0) -> 0.
    A frame with an empty ground truth has no curve (None) and is skipped. The reported F is the
    maximum over thresholds of the curve averaged over the scored frames (``avs_scores``).

Aggregation (``avs_scores``)
    ``"frame"`` (default, the reported number): mIoU = mean of per-frame IoU over all frames;
    F = max over thresholds of the mean curve over the non-empty-GT frames. When every frame has an
    empty ground truth F is undefined: ``fscore`` is NaN and ``fscore_frames`` is 0.
    ``"batch"``: reproduces the reference test loop, which averages per-batch scores (batches of
    ``batch_videos`` videos x ``frames_per_video`` frames, in the given order; the last batch may be
    smaller): mIoU = mean over batches of the batch's mean IoU; F = mean over batches of the batch's
    max-over-thresholds F, where a batch with no non-empty-GT frame contributes 0 (the reference's
    zero-initialised curve). It depends on the batch size and order: with equal-sized batches its
    mIoU equals the frame mean, its F does not in general (mean of maxima vs max of the mean).
"""
from __future__ import annotations

import numpy as np

NUM_THRESHOLDS = 255
BETA2 = 0.3
IOU_EPS = 1e-7
PR_EPS = 1e-20
AGGREGATIONS = ("frame", "batch")


def _np(x) -> np.ndarray:
    """numpy view of an array-like or a (possibly CUDA / grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def sigmoid(logits) -> np.ndarray:
    """Elementwise logistic function, float64, same shape; stable for large |logits|."""
    z = _np(logits).astype(float)
    # exp of a non-positive number only, so neither branch overflows
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def fscore_thresholds(num: int = NUM_THRESHOLDS) -> np.ndarray:
    """(num,) thresholds evenly spaced in [0, 1): ``np.linspace(0, 1 - 1e-10, num)``."""
    return np.linspace(0.0, 1.0 - 1e-10, num)


def _frame_pair(prob, gt) -> tuple[np.ndarray, np.ndarray]:
    p = _np(prob).astype(float)
    g = _np(gt) > 0.5
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"expected prob and gt of one shape (H, W); got {p.shape} and {g.shape}")
    return p, g


def frame_iou(prob, gt) -> float:
    """IoU of one frame: ``prob`` (H, W) probabilities, ``gt`` (H, W) mask -> float in [0, 1]."""
    p, g = _frame_pair(prob, gt)
    pred = p > 0.5
    if not g.any():
        # reference: pixels where both are background, over all pixels
        return float(np.count_nonzero(~pred)) / pred.size
    inter = np.count_nonzero(pred & g)
    union = np.count_nonzero(pred | g)
    return inter / (union + IOU_EPS)


def frame_fscore_curve(prob, gt, thresholds: int | np.ndarray = NUM_THRESHOLDS):
    """F-measure (β² = 0.3) of one frame at each threshold, float (K,); None for an empty GT.

    ``prob`` (H, W) probabilities, ``gt`` (H, W) mask; ``thresholds`` is a count (the default 255
    gives ``fscore_thresholds(255)``) or an explicit (K,) array. Prediction at t is ``prob >= t``.
    """
    p, g = _frame_pair(prob, gt)
    if not g.any():
        return None
    th = fscore_thresholds(thresholds) if np.isscalar(thresholds) else np.asarray(thresholds, float)
    # counts of pixels >= t for all t at once: sort once, then binary search
    all_sorted = np.sort(p, axis=None)
    fg_sorted = np.sort(p[g])
    n_pred = all_sorted.size - np.searchsorted(all_sorted, th, side="left")
    tp = fg_sorted.size - np.searchsorted(fg_sorted, th, side="left")
    precision = tp / (n_pred + PR_EPS)
    recall = tp / (fg_sorted.size + PR_EPS)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall)
    return np.nan_to_num(f, nan=0.0)


def _frames(probs, gts) -> tuple[np.ndarray, np.ndarray]:
    p, g = _np(probs), _np(gts)
    if p.ndim != 3 or p.shape != g.shape:
        raise ValueError(f"expected probs and gts of one shape (N, H, W); got {p.shape} and "
                         f"{g.shape}")
    return p, g


def avs_scores(probs, gts, aggregation: str = "frame", batch_videos: int = 4,
               frames_per_video: int = 5, return_per_frame: bool = False,
               thresholds: int | np.ndarray = NUM_THRESHOLDS) -> dict:
    """mIoU and F-score of N frames: ``probs`` (N, H, W) probabilities, ``gts`` (N, H, W) masks.

    Returns ``{"miou", "fscore"}`` (fractions in [0, 1]; ``fscore`` NaN when no frame has a
    non-empty GT under ``"frame"``), ``"frames"`` (N), ``"skipped_empty_gt"`` (frames without an F
    curve), ``"fscore_frames"`` (N - skipped), ``"aggregation"``. With ``return_per_frame`` also
    ``"per_frame_iou"`` float (N,) and ``"per_frame_fcurve"`` float (N, K) (NaN rows for empty-GT
    frames), from which per-video bootstrap resamples can recompute both numbers.
    ``batch_videos`` / ``frames_per_video`` only matter for ``aggregation="batch"``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    p, g = _frames(probs, gts)
    n = p.shape[0]
    if n == 0:
        raise ValueError("avs_scores: no frames")
    th = fscore_thresholds(thresholds) if np.isscalar(thresholds) else np.asarray(thresholds, float)
    ious = np.empty(n)
    curves = np.full((n, th.size), np.nan)
    # frame by frame: keeps memory at one frame even for broadcast constant predictions
    for i in range(n):
        ious[i] = frame_iou(p[i], g[i])
        c = frame_fscore_curve(p[i], g[i], th)
        if c is not None:
            curves[i] = c
    scored = ~np.isnan(curves[:, 0])

    if aggregation == "frame":
        miou = float(ious.mean())
        fscore = float(curves[scored].mean(axis=0).max()) if scored.any() else float("nan")
    else:
        if batch_videos < 1 or frames_per_video < 1:
            raise ValueError("batch_videos and frames_per_video must be >= 1")
        if n % frames_per_video:
            raise ValueError(f"batch aggregation: {n} frames is not a multiple of "
                             f"frames_per_video={frames_per_video}")
        size = batch_videos * frames_per_video
        b_iou, b_f = [], []
        for start in range(0, n, size):
            sl = slice(start, start + size)
            b_iou.append(ious[sl].mean())
            s = scored[sl]
            # reference: the curve starts at zeros, so a batch without a scored frame gives 0
            b_f.append(curves[sl][s].mean(axis=0).max() if s.any() else 0.0)
        miou, fscore = float(np.mean(b_iou)), float(np.mean(b_f))

    out = {"miou": miou, "fscore": fscore, "frames": n,
           "skipped_empty_gt": int(n - scored.sum()), "fscore_frames": int(scored.sum()),
           "aggregation": aggregation}
    if return_per_frame:
        out["per_frame_iou"] = ious
        out["per_frame_fcurve"] = curves
    return out


def mean_mask(train_gts) -> np.ndarray:
    """float (H, W): per-pixel foreground rate of training masks ``train_gts`` (M, H, W)."""
    g = _np(train_gts)
    if g.ndim != 3 or g.shape[0] == 0:
        raise ValueError(f"expected training masks (M, H, W) with M > 0; got {g.shape}")
    return (g > 0.5).mean(axis=0)


def centre_box(h: int, w: int) -> np.ndarray:
    """float (H, W): 1 inside the central box of half the height and half the width, else 0."""
    box = np.zeros((h, w))
    box[h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = 1.0
    return box


def avs_floors(gts, train_gts=None, **score_kw) -> dict:
    """Constant-prediction floors on test masks ``gts`` (N, H, W), each scored by ``avs_scores``.

    Returns name -> ``avs_scores`` dict for:
    * ``"all_background"``: prob 0 everywhere (IoU 1 on empty-GT frames, 0 elsewhere);
    * ``"all_foreground"``: prob 1 everywhere (IoU |G|/HW; 0 on empty-GT frames);
    * ``"centre_box"``: prob 1 on ``centre_box(H, W)``;
    * ``"mean_mask"`` (only with ``train_gts`` (M, H, W)): the training mean mask used as the
      probability map, so IoU sees it thresholded at > 0.5 and the F curve sweeps it.
    Because t = 0 predicts every pixel (``prob >= 0``), the F of ``all_background`` equals that of
    ``all_foreground``: the reference F-score rewards no constant map over another.
    ``score_kw`` goes to ``avs_scores`` (aggregation, batch sizes).
    """
    g = _np(gts)
    if g.ndim != 3:
        raise ValueError(f"expected gts (N, H, W); got {g.shape}")
    n, h, w = g.shape
    # broadcast views: no (N, H, W) copy of a constant map
    maps = {"all_background": np.zeros((h, w)), "all_foreground": np.ones((h, w)),
            "centre_box": centre_box(h, w)}
    if train_gts is not None:
        prior = mean_mask(train_gts)
        if prior.shape != (h, w):
            raise ValueError(f"training masks are {prior.shape}, test masks {(h, w)}")
        maps["mean_mask"] = prior
    return {name: avs_scores(np.broadcast_to(m, (n, h, w)), g, **score_kw)
            for name, m in maps.items()}
