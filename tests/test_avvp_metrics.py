"""AVVP (LLP) metrics: hand cases for each rule of METHODS.md "AVVP on LLP", and the real files."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from avprompt.data.avvp_metrics import (METRICS, avvp_dataset_summary, avvp_scores, decide,
                                        dense_matrix, event_f1, segment_f1)
from avprompt.data.llp import LLP_CLASSES

C, T = 25, 10


def row(*segments, c: int = C, cls: int = 0) -> np.ndarray:
    """(C, T) matrix with class ``cls`` positive on the given segments."""
    m = np.zeros((c, T), dtype=bool)
    m[cls, list(segments)] = True
    return m


# ---------------------------------------------------------------- matrices and decide
def test_dense_matrix():
    segs = [[] for _ in range(T)]
    segs[2] = [0, 3]
    segs[3] = [3]
    m = dense_matrix(segs, 5)
    assert m.shape == (5, T) and m.dtype == bool
    assert m.sum() == 3 and m[0, 2] and m[3, 2] and m[3, 3]
    assert not dense_matrix(None, 5).any() and dense_matrix(None, 5).shape == (5, T)
    with pytest.raises(ValueError):
        dense_matrix([[7]] + [[]] * 9, 5)


def test_decide_thresholds():
    # 1 video, T=2 segments, C=3 classes; inputs (N, T, C), outputs (N, C, T)
    seg_a = np.array([[[0.5, 0.9, 0.2],
                       [0.49, 0.9, 0.8]]])
    seg_v = np.array([[[0.1, 0.6, 0.7],
                       [0.7, 0.4, 0.99]]])
    video = np.array([[0.5, 0.3, 0.51]])  # class 1 gated off (0.3 < 0.5) whatever its segments
    pa, pv = decide(seg_a, seg_v, video)
    assert pa.shape == pv.shape == (1, 3, 2) and pa.dtype == bool
    # audio: c0 seg0 (0.5 >= 0.5, video 0.5 >= 0.5), c0 seg1 no (0.49); c1 never; c2 seg1 only
    np.testing.assert_array_equal(pa[0], [[True, False], [False, False], [False, True]])
    np.testing.assert_array_equal(pv[0], [[False, True], [False, False], [True, True]])
    with pytest.raises(ValueError):
        decide(seg_a, seg_v, video[:, :2])


# ---------------------------------------------------------------- F1 rules
def test_perfect_prediction_is_100_everywhere():
    rng = np.random.default_rng(0)
    ga = rng.random((20, C, T)) < 0.1
    gv = rng.random((20, C, T)) < 0.1
    s = avvp_scores(ga, gv, ga, gv)
    assert all(s[m] == 100.0 for m in METRICS), s
    assert s["videos"] == 20 and s["per_video"]["evt_av"].shape == (20,)


def test_empty_video_with_empty_prediction_scores_one():
    z = np.zeros((C, T), dtype=bool)
    assert segment_f1(z, z) == 1.0 and event_f1(z, z) == 1.0
    s = avvp_scores(z, z, z, z)
    assert all(s[m] == 100.0 for m in METRICS)


def test_events_without_prediction_score_zero():
    z = np.zeros((C, T), dtype=bool)
    g = row(2, 3) | row(7, cls=4)
    assert segment_f1(z, g) == 0.0 and event_f1(z, g) == 0.0
    s = avvp_scores(z, z, g, g)
    assert all(s[m] == 0.0 for m in METRICS), s
    # and the converse: predictions on an empty video are all false positives
    assert segment_f1(g, z) == 0.0 and event_f1(g, z) == 0.0


def test_event_iou_threshold():
    gt = row(2, 3)
    assert event_f1(row(3), gt) == 1.0       # IoU 1/2 -> hit: TP=1, F1 = 2/2
    # segments 3-4 vs 2-3: inter 1, union 3, IoU 1/3 -> FP=1 and the gt event is FN=1, F1 = 0
    assert event_f1(row(3, 4), gt) == 0.0
    # while at segment level the same prediction is half right: TP=1 FP=1 FN=1 -> 2/4
    assert segment_f1(row(3, 4), gt) == 0.5


def test_event_matching_cases():
    # The rule is "IoU >= 0.5 with ANY event" (not one-to-one). With maximal runs on one time
    # axis, one event can reach IoU >= 0.5 with at most one event of the other side (checked by
    # brute force over all pairs of 8-segment rows while writing this), so one-to-one matching
    # would give the same counts; these cases pin the counting itself.
    gt = row(0, 1, 2, 3)
    pred = row(0, 1) | row(2, 3)  # one run 0-3: a single event, a perfect hit
    assert event_f1(pred, gt) == 1.0
    pred = row(0, 1, 3)           # events 0-1 (IoU 2/4) and 3 (IoU 1/4)
    # TP=1 (0-1), FP=1 (3), FN=0 (the gt event is hit) -> 2/(2+1) = 2/3
    assert event_f1(pred, gt) == pytest.approx(2 / 3)
    gt = row(0, 1, 2, 3, 4, 5)
    pred = row(0, 1, 2) | row(4, 5)  # 0-2 has IoU 3/6 = 0.5 -> TP; 4-5 IoU 2/6 -> FP
    assert event_f1(pred, gt) == pytest.approx(2 / 3)
    gt = row(0, 1) | row(3, 4)       # two gt events, one prediction 0-4 covering both (IoU 2/5)
    assert event_f1(row(0, 1, 2, 3, 4), gt) == 0.0  # TP 0, FP 1, FN 2
    gt = row(0) | row(2)             # two gt events, predictions hit both -> 2 TP
    assert event_f1(row(0) | row(2), gt) == 1.0


def test_segment_f1_hand_computed():
    pred = np.zeros((C, T), dtype=bool)
    gt = np.zeros((C, T), dtype=bool)
    gt[0, 0:4] = True    # class 0: gt 0-3, pred 2-5  -> TP 2 (2,3), FP 2 (4,5), FN 2 (0,1)
    pred[0, 2:6] = True  #   F1_0 = 2*2 / (2*2 + 2 + 2) = 4/8 = 0.5
    gt[1, 5:10] = True   # class 1: gt 5-9, pred 5-9  -> F1_1 = 1
    pred[1, 5:10] = True
    pred[2, 9] = True    # class 2: FP only         -> F1_2 = 0
    gt[3, 0:2] = True    # class 3: FN only         -> F1_3 = 0
    pred[4, 0:10] = True  # class 4: gt 0-9, pred 0-9 plus class 5 untouched (inactive, ignored)
    gt[4, 0:10] = True   #   -> F1_4 = 1
    # 5 active classes: (0.5 + 1 + 0 + 0 + 1) / 5 = 0.5
    assert segment_f1(pred, gt) == pytest.approx(0.5)
    # event level: c0 one event each, IoU 2/6 -> TP 0 FP 1 FN 1 -> 0; c1, c4 -> 1; c2, c3 -> 0
    assert event_f1(pred, gt) == pytest.approx(2 / 5)
    # batched form gives per-video arrays
    both = segment_f1(np.stack([pred, gt]), np.stack([gt, gt]))
    np.testing.assert_allclose(both, [0.5, 1.0])


def test_av_and_event_rules():
    # class 0: audio gt 0-5, visual gt 3-9 -> AV gt 3-5
    ga, gv = row(0, 1, 2, 3, 4, 5), row(3, 4, 5, 6, 7, 8, 9)
    # prediction: audio 0-5 (perfect), visual 0-9 (FP on 0-2)   -> AV pred = 0-5
    pa, pv = row(0, 1, 2, 3, 4, 5), row(*range(10))
    s = avvp_scores(pa, pv, ga, gv)
    assert s["seg_a"] == 100.0
    # visual segments: TP 7, FP 3, FN 0 -> 14/17
    assert s["seg_v"] == pytest.approx(100 * 14 / 17)
    # AV = audio AND visual on both sides: pred 0-5 vs gt 3-5: TP 3 FP 3 FN 0 -> 6/9
    assert s["seg_av"] == pytest.approx(100 * 6 / 9)
    # had AV been "audio OR visual" the gt would be 0-9 and the pred 0-9: 100; it is not
    assert s["seg_type"] == pytest.approx((100 + 100 * 14 / 17 + 100 * 6 / 9) / 3)
    # Event@AV adds counts: TP 6+7, FP 0+3, FN 0+0 -> 26/29 (not the mean of 1 and 14/17)
    assert s["seg_event"] == pytest.approx(100 * 26 / 29)
    # event level: audio hit (1); visual 0-9 vs 3-9 IoU 7/10 -> hit (1);
    # AV 0-5 vs 3-5 IoU 3/6 -> hit (1)
    assert s["evt_a"] == s["evt_v"] == s["evt_av"] == s["evt_type"] == s["evt_event"] == 100.0

    # Event rule at event level: class 0 audio perfect (TP 1), visual missed (FN 1);
    # class 1 visual only FP.  Summed per class: c0 TP1 FN1 -> 2/3, c1 FP1 -> 0; mean 1/3
    ga, gv = row(0, 1), row(5, 6)
    pa, pv = row(0, 1), row(0, cls=1)
    s = avvp_scores(pa, pv, ga, gv)
    assert s["evt_a"] == 100.0 and s["evt_v"] == 0.0
    assert s["evt_event"] == pytest.approx(100 / 3)
    assert s["seg_event"] == pytest.approx(100 * (4 / 6 + 0) / 2)  # c0: TP 2, FN 2; c1: FP 1
    # AV: gt AV empty (audio 0-1, visual 5-6 never overlap); pred AV empty -> no class: 1.0
    assert s["seg_av"] == s["evt_av"] == 100.0


def test_means_are_over_videos():
    z = np.zeros((C, T), dtype=bool)
    g = row(1, 2)
    s = avvp_scores(np.stack([g, z]), np.stack([g, z]), np.stack([g, g]), np.stack([g, g]))
    assert s["seg_a"] == 50.0 and list(s["per_video"]["seg_a"]) == [1.0, 0.0]


# ---------------------------------------------------------------- the real files
@pytest.fixture()
def llp_real(annotations_root, request):
    """(index, root) of the real LLP files; skipped when ../shared/data/llp is absent."""
    root = annotations_root / "llp"
    if not (root / "AVVP_test_pd.csv").is_file():
        pytest.skip(f"real LLP annotation files not found under {root}")
    return request.getfixturevalue("llp"), root


@pytest.mark.annotations
def test_real_llp_ground_truth_and_summary(llp_real):
    llp, root = llp_real
    test = llp.split("test")
    # every video of AVVP_test_pd.csv that has any event has dense rows; measured: all 1200 test
    # videos have at least one dense row (6 lack an audio row, 121 a visual row: visual-only or
    # audio-only videos, not missing annotation)
    assert len(test) == 1200
    assert all(r.audio_segments is not None or r.visual_segments is not None for r in test)
    assert sum(r.audio_segments is None for r in test) == 6
    assert sum(r.visual_segments is None for r in test) == 121

    # ground truth as the reference evaluation builds it, from the files directly:
    # GT[class, int(onset):int(offset)] = 1 for each dense row of the video
    cidx = {c: i for i, c in enumerate(LLP_CLASSES)}
    for modality in ("audio", "visual"):
        ref = {r.clip_id: np.zeros((C, T), dtype=bool) for r in test}
        with open(root / f"AVVP_eval_{modality}.csv", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:]
        for fn, on, off, lab in (r for r in rows if r):
            if fn in ref:
                ref[fn][cidx[lab], int(float(on)):int(float(off))] = True
        for r in test:
            mine = dense_matrix(getattr(r, f"{modality}_segments"), C)
            np.testing.assert_array_equal(mine, ref[r.clip_id], err_msg=f"{modality} {r.clip_id}")

    ga = np.stack([dense_matrix(r.audio_segments, C) for r in test])
    gv = np.stack([dense_matrix(r.visual_segments, C) for r in test])
    s = avvp_scores(ga, gv, ga, gv)
    assert all(s[m] == 100.0 for m in METRICS)

    summary = avvp_dataset_summary(llp)
    print(json.dumps(summary, indent=1))
    t = summary["splits"]["test"]
    assert t["videos"] == t["videos_with_dense_rows"] == t["videos_with_events"] == 1200
    assert summary["splits"]["train"]["videos"] == 10000
    assert summary["splits"]["train"]["videos_with_dense_rows"] == 0
    assert summary["splits"]["val"]["videos"] == summary["splits"]["val"]["videos_with_dense_rows"]
    assert t["audio_events"] > t["visual_events"] > 1000
    assert t["audio_visual_segments"] <= min(t["audio_segments"], t["visual_segments"])
    assert 0 < t["videos_with_visual_only_events"] < t["videos_with_audio_only_events"] < 1200
    nothing, weak = t["floors"]["nothing"], t["floors"]["weak_oracle"]
    # predicting nothing scores 1.0 exactly on the videos with nothing to find in that metric:
    # 6 without audio events, 121 without visual events (0.5 %, 10.08 %)
    assert nothing["seg_a"] == nothing["evt_a"] == pytest.approx(100 * 6 / 1200, abs=1e-3)
    assert nothing["seg_v"] == nothing["evt_v"] == pytest.approx(100 * 121 / 1200, abs=1e-3)
    assert nothing["seg_event"] == nothing["evt_event"] == 0.0  # every video has some event
    assert all(0 <= weak[m] < 100 for m in METRICS)
    assert all(weak[m] > nothing[m] for m in METRICS)
    assert all(weak[f"evt_{k}"] <= weak[f"seg_{k}"] for k in ("a", "v", "av", "event"))


def test_summary_on_a_hand_index(tmp_path):
    from avprompt.data.records import ClipRecord, DatasetIndex
    segs = lambda pairs: [[c for c, ts in pairs if t in ts] for t in range(T)]  # noqa: E731
    # video a: class 0 heard on 0-1 and 5 (two audio events), seen on 0-3; class 1 heard on 9
    a = ClipRecord("a", "a", "", "test", video_labels=[0, 1],
                   audio_segments=segs([(0, {0, 1, 5}), (1, {9})]),
                   visual_segments=segs([(0, {0, 1, 2, 3})]))
    # video b: no dense row at all (weak label 2 only)
    b = ClipRecord("b", "b", "", "test", video_labels=[2])
    tr = ClipRecord("t", "t", "", "train", video_labels=[1])
    s = avvp_dataset_summary(DatasetIndex("llp", tmp_path, ["x", "y", "z"], [a, b, tr]))
    t = s["splits"]["test"]
    assert (t["videos"], t["videos_with_dense_rows"], t["videos_with_events"]) == (2, 1, 1)
    assert (t["audio_events"], t["visual_events"], t["audio_visual_events"]) == (3, 1, 1)
    assert (t["audio_segments"], t["visual_segments"], t["audio_visual_segments"]) == (4, 4, 2)
    assert t["videos_with_audio_only_events"] == 1 and t["videos_with_visual_only_events"] == 0
    assert t["videos_with_weak_labels_but_no_events"] == 1
    assert s["splits"]["train"] == {"videos": 1, "videos_with_dense_rows": 0,
                                    "videos_with_audio_rows": 0, "videos_with_visual_rows": 0}
    nothing, weak = t["floors"]["nothing"], t["floors"]["weak_oracle"]
    # nothing: video a scores 0 everywhere, video b (no events) 1 everywhere -> 50
    assert all(nothing[m] == 50.0 for m in METRICS)
    # weak oracle, video a, segment level audio: c0 pred 0-9 vs 0,1,5 -> TP 3 FP 7 -> 6/13;
    # c1 pred 0-9 vs 9 -> 2/11; video b predicts class 2 everywhere on an empty video -> 0
    assert weak["seg_a"] == pytest.approx(100 * (6 / 13 + 2 / 11) / 2 / 2)
    # event level audio, video a: c0 one pred event 0-9 vs 0-1 (IoU .2), 5 (.1) -> FP1 FN2 -> 0
    assert weak["evt_a"] == 0.0
