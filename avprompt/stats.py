"""Uncertainty of benchmark numbers, from the per-video test predictions of each cell.

The resampling unit is the test video (a video's segments stay together). Everything here works
on the predictions ``avprompt.results.read_predictions`` returns (``clip_ids``, ``logits``,
``segment_labels``, ``video_labels``) and recomputes the metrics of ``avprompt.data.metrics``:
segment / video / reference / single-label accuracy exactly, as sums of per-video correct counts
over per-video totals; macro mAP as the mean over classes with a positive of sklearn's average
precision with a resample's multiplicities as sample weights (identical to duplicating videos;
float32 ratios, within 1e-5 points).

Three intervals, all percentile intervals (``percentile_ci``) of B bootstrap replicates
(``DEFAULT_B`` = 1000; ``MAP_B`` = 250 for macro mAP in a store's report; fixed seed, so a
report is reproducible). Macro mAP's replicates sit above its estimate (a video drawn twice ties
with itself, which raises AP on a resample: +0.6 points on average for a 17% mAP synthetic cell
of 1200 videos, +0.3 at 63%), so its intervals lean upward; ``percentile_ci(..., center=)``
gives Efron's bias-corrected interval instead, which moves them down by about twice that shift
(it assumes the estimator is biased like the replicates; unused by the report). Paired
differences largely cancel the shift.

* one cell (``bootstrap_ci``): resample the test videos with replacement, recompute the metric;
* one row = several seeds of one method (``two_level_ci``), a two-level bootstrap: each replicate
  draws the seeds with replacement (training-split / initialisation variation) and one
  resample of the test videos (test-set variation), and averages the drawn seeds' metrics on
  that resample. Seeds scored on the same test set get the same video draw in a replicate: the
  test set is one sample shared by all seeds, so resampling it independently per seed would
  average its variation away. With one seed it is the cell's video bootstrap; with few seeds
  the seed level is coarse (3 seeds: 10 distinct draws) but it is not ignored;
* a paired difference of two methods (``paired_difference``; over seeds ``seeds_difference``,
  the two-level interval of the per-seed differences, a seed's pair drawn as one unit): videos
  matched by ``clip_id``, each replicate applies ONE video resample to both methods, so what
  both get right or wrong cancels. Seeds pair by number; a zero-shot reference (K=0, one seed)
  pairs with every seed (``pair_seeds``). Significant (``*``) when the 95% interval excludes 0.

Draws depend only on (seed, test set): every cell scored on the same test videos gets the same
resamples, so a cell's replicates are computed once (``CellBootstrap``) and reused for its row,
every difference it is part of and the curves.
"""
from __future__ import annotations

import hashlib
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_B = 1000
#: Replicates for macro mAP in a store's report (each costs a full AP per class; the
#: accuracies' replicates are one matrix product). Measured on a 1200-video, 25-class cell: the
#: 95% endpoints vary between draw seeds by a standard deviation of 4% of the interval's width
#: with 250 replicates (2% with 1000).
MAP_B = 250
DEFAULT_SEED = 0
CONFIDENCE = 0.95
#: Metrics recomputed from predictions (the primary metrics and LLP's single-label accuracy).
METRICS = ("segment_acc", "video_acc", "reference_acc", "single_label_acc", "macro_map")
AP_CHUNK = 64  # replicates per pass of average_precisions


# ----- resampling ---------------------------------------------------------------------------------
def test_set_key(clip_ids: Iterable) -> str:
    """A short hash naming a test set (the sorted clip ids)."""
    ids = np.sort(np.asarray(clip_ids).astype(str))
    return hashlib.sha1("\n".join(ids.tolist()).encode()).hexdigest()[:16]


def resample_indices(n: int, b: int = DEFAULT_B, seed: int = DEFAULT_SEED, key: str = "") -> np.ndarray:
    """(b, n) video indices, each row a resample with replacement; fixed by (seed, key)."""
    salt = int(key, 16) if key else 0
    return np.random.default_rng([int(seed), salt]).integers(0, n, size=(b, n))


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(b, n) float32 multiplicities of each video in each resample (row of ``indices``)."""
    b = len(indices)
    flat = (indices + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float32)


def seed_draws(s: int, b: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(b, s) seed indices drawn with replacement (the outer level of the two-level bootstrap)."""
    return np.random.default_rng([int(seed), 1, int(s)]).integers(0, s, size=(b, s))


def percentile_ci(values: np.ndarray, confidence: float = CONFIDENCE,
                  center: float | None = None) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; NaN when none).

    With ``center`` (the estimate on the original data), Efron's bias-corrected percentile
    interval: the tails move by z0 = Phi^-1(share of replicates below the estimate, ties
    counted half); replicates centred on the estimate (z0 = 0) give the plain percentiles."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return math.nan, math.nan
    tail = round(50 * (1 - confidence), 10)  # 2.5 exactly for 95%
    q = [tail, 100 - tail]
    if center is not None and center == center:
        below = (np.sum(v < center) + 0.5 * np.sum(v == center)) / v.size
        if below != 0.5:
            nd = NormalDist()
            z0 = nd.inv_cdf(min(max(below, 0.5 / v.size), 1 - 0.5 / v.size))
            q = [100 * nd.cdf(2 * z0 + nd.inv_cdf(p / 100)) for p in q]
    lo, hi = np.percentile(v, q)
    return float(lo), float(hi)


# ----- metrics from predictions -------------------------------------------------------------------
def metric_name(task: str, protocol: str, metric: str = "primary") -> str | None:
    """The metric recomputed for ``metric`` (``primary`` resolves per task and protocol); None
    when it cannot be recomputed from predictions (e.g. ``per_class.dog``)."""
    from avprompt.tasks import discover

    t = discover().get(task)
    if t is None or not t.few_shot:  # unknown, or a supervised task (other metrics, no predictions here)
        return None
    name = t.primary_metric(protocol) if metric == "primary" else metric
    if name not in METRICS or name not in t.metrics:  # only what the task's evaluator reports
        return None
    return name


def _ap_plan(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Threshold groups (tied scores) holding a positive, for all classes (columns; each has a
    positive) at once, numbered class by class in rank order. Returns, for every (row, class)
    ranked at or above the class's last such group, the group its weight first counts in (the
    first at or below its rank) and its row; the same for the positives; groups per class."""
    n, k = s.shape
    order = np.argsort(-s, axis=0, kind="stable")
    ss, ys = np.take_along_axis(s, order, 0), np.take_along_axis(y, order, 0)
    new = np.ones((n, k), bool)
    new[1:] = ss[1:] != ss[:-1]
    gid = (np.cumsum(new, 0) - 1 + np.arange(k) * n).ravel("F")  # global group id, class-major
    ys, order = ys.ravel("F"), order.ravel("F")
    groups = np.unique(gid[ys])  # sorted: class by class, in rank order
    last = np.maximum.reduceat(np.where(ys, gid, -1), np.arange(0, n * k, n))
    keep = gid <= np.repeat(last, n)  # rows below a class's last positive group never count
    seg = np.searchsorted(groups, gid)
    sizes = np.bincount(groups // n, minlength=k)
    return seg[keep], order[keep], seg[ys], order[ys], sizes


def average_precisions(scores: np.ndarray, positive: np.ndarray,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """Average precision of every class with a positive (columns of ``scores`` / ``positive``,
    (n, K)) under each row of ``weights`` (b, n) (None: one row of ones): sklearn's
    ``average_precision_score`` with ``sample_weight`` (tied scores share a threshold).
    (K', b); NaN where a row gives a class's positives no weight.

    AP = sum over thresholds of (recall step) x precision; the weights at or above each
    threshold come from one sparse (thresholds x videos) product for all classes at once.
    Weights are summed in float32 (exact for integer multiplicities below 2**24)."""
    from scipy import sparse

    s = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    y = np.asarray(positive, dtype=bool).reshape(len(s), -1)
    w = np.ones((1, len(s)), np.float32) if weights is None else np.asarray(weights, np.float32)
    has = y.any(0)
    if not has.any():
        return np.zeros((0, len(w)))
    seg, rows, pos_seg, pos_rows, sizes = _ap_plan(s[:, has], y[:, has])
    g = int(sizes.sum())
    # product rows 0..g-1: every video's weight into its threshold segment; g..2g-1: positives only
    seg_all = np.r_[seg, pos_seg + g]  # non-decreasing: CSR directly, no COO sort
    indptr = np.r_[0, np.cumsum(np.bincount(seg_all, minlength=2 * g))]
    m = sparse.csr_matrix((np.ones(len(seg_all), np.float32), np.r_[rows, pos_rows], indptr),
                          shape=(2 * g, len(s)))
    bounds = np.r_[0, np.cumsum(sizes)]
    blocks = list(zip(np.r_[bounds[:-1], bounds[:-1] + g], np.r_[bounds[1:], bounds[1:] + g]))
    wt = np.ascontiguousarray(w.T)
    out = np.empty((len(sizes), len(w)))
    for c in range(0, len(w), AP_CHUNK):  # chunks of replicates: arrays stay in cache
        part = np.ascontiguousarray((m @ wt[:, c:c + AP_CHUNK]).T)  # (chunk, 2g)
        run = np.empty_like(part)
        for a, z in blocks:
            np.cumsum(part[:, a:z], axis=1, out=run[:, a:z])  # running sums within each class
        above, tp_above, tp = run[:, :g], run[:, g:], part[:, g:]
        total_tp = tp_above[:, bounds[1:] - 1]  # each class's positive weight
        with np.errstate(invalid="ignore", divide="ignore"):
            step = tp * tp_above / np.where(above > 0, above, 1)  # recall step x precision x total
            ap = np.add.reduceat(step, bounds[:-1], axis=1, dtype=np.float64) / total_tp
        out[:, c:c + AP_CHUNK] = np.where(total_tp > 0, ap, math.nan).T
    return out


@dataclass
class Prepared:
    """One cell's predictions reduced to what its metric needs, rows in sorted clip-id order.

    Accuracies: ``correct`` / ``total`` per video (metric = sum correct / sum total, percent);
    macro mAP: ``scores`` (n, K) and ``positive`` (n, K)."""

    name: str
    clip_ids: np.ndarray
    correct: np.ndarray | None = None
    total: np.ndarray | None = None
    scores: np.ndarray | None = None
    positive: np.ndarray | None = None
    key: str = field(default="", init=False)

    def __post_init__(self):
        self.key = test_set_key(self.clip_ids)

    def take(self, rows: np.ndarray) -> Prepared:
        pick = (lambda a: None if a is None else a[rows])
        return Prepared(self.name, self.clip_ids[rows], pick(self.correct), pick(self.total),
                        pick(self.scores), pick(self.positive))

    def value(self) -> float:
        """The metric on the full test set (percent)."""
        return float(self.replicates(np.ones((1, len(self.clip_ids)), np.float32))[0])

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        """The metric under each resample (row of multiplicities ``counts``), shape (b,)."""
        if self.name == "macro_map":
            aps = average_precisions(self.scores, self.positive, counts)
            if not len(aps):
                return np.full(len(counts), math.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no positives
                return np.nanmean(aps, axis=0) * 100
        num = counts @ self.correct.astype(np.float32)
        den = counts @ self.total.astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num.astype(np.float64) / den * 100, math.nan)


def prepare(task: str, protocol: str, preds: dict, metric: str = "primary") -> Prepared | None:
    """``preds`` (``read_predictions``) reduced for ``metric``; None when not recomputable."""
    name = metric_name(task, protocol, metric)
    if name is None:
        return None
    ids = np.asarray(preds["clip_ids"]).astype(str)
    order = np.argsort(ids, kind="stable")
    logits = np.asarray(preds["logits"], dtype=np.float64)[order]
    seg = np.asarray(preds["segment_labels"]).astype(np.int64)[order]
    vl = np.asarray(preds["video_labels"]).astype(bool)[order]
    ids = ids[order]
    if name == "segment_acc":  # background (-1) is the last class, as compute_metrics scores it
        seg = np.where(seg < 0, logits.shape[-1] - 1, seg)
        correct = (logits.argmax(-1) == seg).sum(1)
        return Prepared(name, ids, correct, np.full(len(ids), seg.shape[1]))
    if logits.ndim == 3:
        logits = logits.mean(axis=1)
    if name == "macro_map":
        k = logits.shape[1]
        pos = np.zeros((len(ids), k), bool)
        pos[:, : min(k, vl.shape[1])] = vl[:, :k]
        return Prepared(name, ids, scores=logits, positive=pos)
    label = primary_labels(seg, vl) if name == "video_acc" else np.where(vl.any(1), vl.argmax(1), -1)
    keep = (label >= 0) if name != "single_label_acc" else (vl.sum(1) == 1)
    correct = (logits.argmax(-1) == label) & keep
    return Prepared(name, ids, correct.astype(np.int64), keep.astype(np.int64))


def primary_labels(segment_labels: np.ndarray, video_labels: np.ndarray) -> np.ndarray:
    """(N,) video class by ``avprompt.data.tasks.primary_label``'s rule: the first event segment's
    class, else the lowest-index weak label, else -1. segment_labels (N, T) (-1 background),
    video_labels (N, C) multi-hot."""
    seg, vl = np.asarray(segment_labels), np.asarray(video_labels)
    lowest = np.where(vl.any(1), vl.argmax(1), -1)
    first_seg = np.where((seg >= 0).any(1), seg[np.arange(len(seg)), (seg >= 0).argmax(1)], -1)
    return np.where(first_seg >= 0, first_seg, lowest)


# ----- intervals ----------------------------------------------------------------------------------
@dataclass
class Interval:
    """A value with its percentile interval; ``n_seeds`` seeds, ``b`` replicates."""

    value: float
    lo: float
    hi: float
    n_seeds: int = 1
    b: int = DEFAULT_B

    @property
    def halfwidth(self) -> float:
        """The larger distance from the value to a bound (the ``±`` a sentence may quote)."""
        return max(self.hi - self.value, self.value - self.lo)

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (for a difference)."""
        return bool(self.lo > 0 or self.hi < 0)


def two_level_ci(values: Sequence[float], replicates: np.ndarray, confidence: float = CONFIDENCE,
                 seed: int = DEFAULT_SEED) -> Interval:
    """Interval of the mean over seeds: ``values`` (s,) per-seed metrics (or differences),
    ``replicates`` (s, b) their video-bootstrap replicates (column j of every seed from the same
    resample when they share a test set). Replicate j averages the seeds ``seed_draws`` picks."""
    reps = np.atleast_2d(np.asarray(replicates, dtype=float))
    s, b = reps.shape
    draws = seed_draws(s, b, seed)
    lo, hi = percentile_ci(reps[draws, np.arange(b)[:, None]].mean(1), confidence)
    return Interval(float(np.mean(values)), lo, hi, s, b)


def seed_mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for one seed) over seeds."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


class CellBootstrap:
    """Replicates of cells, computed once: ``cell`` for one cell, ``pair`` for a paired difference.

    One resample matrix per test set (``counts``): cells on the same test videos share draws.
    """

    def __init__(self, b: int = DEFAULT_B, seed: int = DEFAULT_SEED, map_b: int = MAP_B):
        self.b, self.seed, self.map_b = int(b), int(seed), int(map_b)
        self._counts: dict[str, np.ndarray] = {}
        self._prepared: dict[tuple, Prepared | None] = {}
        self._reps: dict[tuple, tuple[float, np.ndarray]] = {}

    def resamples(self, name: str) -> int:
        """Replicates for metric ``name``: ``b``, at most ``map_b`` for macro mAP."""
        return min(self.b, self.map_b) if name == "macro_map" else self.b

    def counts(self, prep: Prepared) -> np.ndarray:
        """The test set's resample multiplicities, (resamples(prep.name), n): the first rows of
        one (b, n) draw, so macro mAP's fewer replicates are the accuracies' first ones."""
        if prep.key not in self._counts:
            n = len(prep.clip_ids)
            self._counts[prep.key] = resample_counts(resample_indices(n, self.b, self.seed, prep.key), n)
        return self._counts[prep.key][: self.resamples(prep.name)]

    def prepared(self, path: str, task: str, protocol: str, metric: str = "primary") -> Prepared | None:
        k = (str(path), metric)
        if k not in self._prepared:
            from avprompt.results import read_predictions

            try:
                preds = read_predictions(str(path)) if path else None
                self._prepared[k] = None if preds is None else prepare(task, protocol, preds, metric)
            except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as e:
                warnings.warn(f"{path}: unreadable predictions ({type(e).__name__}: {e}); "
                              "its row falls back to Student t", stacklevel=2)
                self._prepared[k] = None
        return self._prepared[k]

    def cell(self, path: str, task: str, protocol: str,
             metric: str = "primary") -> tuple[float, np.ndarray] | None:
        """(value, (b,) replicates) of a cell; None without predictions or recomputable metric."""
        k = (str(path), metric)
        if k not in self._reps:
            prep = self.prepared(path, task, protocol, metric)
            if prep is None:
                return None
            counts = self.counts(prep)  # one call for the full-sample value (row of ones) and all
            reps = prep.replicates(np.vstack([np.ones((1, counts.shape[1]), counts.dtype), counts]))
            self._reps[k] = (float(reps[0]), reps[1:])
        return self._reps[k]

    def pair(self, path_a: str, path_b: str, task: str, protocol: str,
             metric: str = "primary") -> tuple[float, np.ndarray] | None:
        """(difference a - b, (b,) replicates) on the videos both were scored on."""
        pa = self.prepared(path_a, task, protocol, metric)
        pb = self.prepared(path_b, task, protocol, metric)
        if pa is None or pb is None:
            return None
        if pa.key == pb.key:
            (va, ra) = self.cell(path_a, task, protocol, metric)
            (vb, rb) = self.cell(path_b, task, protocol, metric)
            return va - vb, ra - rb
        return paired_replicates(pa, pb, self.resamples(pa.name), self.seed)


def _common(a: Prepared, b: Prepared) -> tuple[Prepared, Prepared]:
    common, ia, ib = np.intersect1d(a.clip_ids, b.clip_ids, assume_unique=False, return_indices=True)
    if not len(common):
        raise ValueError("the two cells share no test video: nothing to pair")
    return a.take(ia), b.take(ib)


def paired_replicates(a: Prepared, b: Prepared, n_boot: int = DEFAULT_B,
                      seed: int = DEFAULT_SEED) -> tuple[float, np.ndarray]:
    """(a - b on the common videos, (n_boot,) replicates: one resample applied to both)."""
    a, b = _common(a, b)
    counts = resample_counts(resample_indices(len(a.clip_ids), n_boot, seed, a.key), len(a.clip_ids))
    return a.value() - b.value(), a.replicates(counts) - b.replicates(counts)


# ----- one-call forms -----------------------------------------------------------------------------
def bootstrap_ci(task: str, protocol: str, preds: dict, metric: str = "primary",
                 b: int = DEFAULT_B, seed: int = DEFAULT_SEED,
                 confidence: float = CONFIDENCE) -> Interval:
    """Video-level bootstrap interval of one cell's metric."""
    prep = prepare(task, protocol, preds, metric)
    if prep is None:
        raise ValueError(f"{task}: metric {metric!r} cannot be recomputed from predictions")
    n = len(prep.clip_ids)
    reps = prep.replicates(resample_counts(resample_indices(n, b, seed, prep.key), n))
    return Interval(prep.value(), *percentile_ci(reps, confidence), 1, b)


def paired_difference(task: str, protocol: str, preds_a: dict, preds_b: dict,
                      metric: str = "primary", b: int = DEFAULT_B, seed: int = DEFAULT_SEED,
                      confidence: float = CONFIDENCE) -> Interval:
    """Metric of A minus metric of B on their common test videos (matched by clip id), with a
    paired bootstrap interval; ``.significant`` when it excludes 0."""
    pa, pb = prepare(task, protocol, preds_a, metric), prepare(task, protocol, preds_b, metric)
    if pa is None or pb is None:
        raise ValueError(f"{task}: metric {metric!r} cannot be recomputed from predictions")
    diff, reps = paired_replicates(pa, pb, b, seed)
    return Interval(diff, *percentile_ci(reps, confidence), 1, b)


def seeds_difference(engine: CellBootstrap, pairs: Sequence[tuple[str, str]], task: str,
                     protocol: str, metric: str = "primary",
                     confidence: float = CONFIDENCE) -> Interval | None:
    """Mean over seeds of paired differences (``pairs`` of cell paths, one per seed) with its
    two-level interval; None when a cell has no predictions."""
    got = [engine.pair(a, b, task, protocol, metric) for a, b in pairs]
    if not got or any(g is None for g in got):
        return None
    return two_level_ci([g[0] for g in got], np.stack([g[1] for g in got]), confidence, engine.seed)


def seeds_interval(engine: CellBootstrap, paths: Sequence[str], task: str, protocol: str,
                   metric: str = "primary", confidence: float = CONFIDENCE) -> Interval | None:
    """Two-level interval of one row's cells (one per seed); None when any lacks predictions."""
    got = [engine.cell(p, task, protocol, metric) for p in paths]
    if not got or any(g is None for g in got):
        return None
    return two_level_ci([g[0] for g in got], np.stack([g[1] for g in got]), confidence, engine.seed)


# ----- a store's rows ------------------------------------------------------------------------------
#: Zero-shot reference of each branch (the method_id suffix after "@") and the DG-SCT reference.
ZERO_SHOT = {"v": "zeroshot-clip@v", "a": "zeroshot-clap@a", "av": "zeroshot-av@av"}
DG_SCT = "dg-sct@av"
PAIRED = {"d_zs": "Δ zs", "d_dgsct": "Δ dg-sct"}


# the store-level comparisons live beside the report (re-exported for callers of this module)
from avprompt.report_paired import _cells_index, add_paired_columns, pair_seeds, paired_halfwidths  # noqa: E402,F401
