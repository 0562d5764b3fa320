"""AVS (AVSBench) and AVQA (MUSIC-AVQA) metrics: hand-built cases with hand-computed answers."""
from __future__ import annotations

import numpy as np
import pytest

from avprompt.data.avqa_metrics import avqa_floors, avqa_scores
from avprompt.data.avs_metrics import (avs_floors, avs_scores, fscore_thresholds,
                                       frame_fscore_curve, frame_iou, mean_mask, sigmoid)

F_ALL = 1.3 * 0.25 / (0.3 * 0.25 + 1)  # F when P = 1/4, R = 1


def square(h, w, r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((h, w))
    m[r0:r1, c0:c1] = 1.0
    return m


def known_map():
    """12x12, GT = left half (72 px); prob 0.9 on GT, 0.3 on 24 background px (a third), 0 else."""
    gt = square(12, 12, 0, 12, 0, 6)
    prob = 0.9 * gt
    prob[:, 6:8] = 0.3
    return prob, gt


# ---------------------------------------------------------------- AVS: per frame
def test_sigmoid():
    s = sigmoid(np.array([0.0, 800.0, -800.0, 2.0]))
    np.testing.assert_allclose(s, [0.5, 1.0, 0.0, 1 / (1 + np.exp(-2.0))])
    assert np.all(np.isfinite(s))


def test_perfect_mask_scores_one():
    rng = np.random.default_rng(0)
    gts = (rng.random((6, 16, 16)) < 0.3).astype(float)
    gts[3] = 0.0  # one empty-GT frame: IoU 1, skipped by F
    s = avs_scores(gts.copy(), gts)
    assert s["miou"] == pytest.approx(1.0, abs=1e-6) and s["fscore"] == pytest.approx(1.0, abs=1e-9)
    assert s["frames"] == 6 and s["skipped_empty_gt"] == 1 and s["fscore_frames"] == 5


def test_half_overlapping_squares():
    # two 10x10 squares offset by 5 px in x: intersection 10x5 = 50, union 100 + 100 - 50 = 150
    gt = square(32, 32, 5, 15, 5, 15)
    prob = square(32, 32, 5, 15, 10, 20)
    assert frame_iou(prob, gt) == pytest.approx(50 / 150, abs=1e-9)
    # threshold is strict: a probability of exactly 0.5 is background
    assert frame_iou(0.5 * gt, gt) == 0.0


def test_empty_gt_iou():
    gt = np.zeros((8, 8))
    assert frame_iou(np.zeros((8, 8)), gt) == 1.0
    prob = np.zeros((8, 8))
    prob[0, :5] = 0.8  # k = 5 predicted pixels
    assert frame_iou(prob, gt) == (64 - 5) / 64
    assert frame_fscore_curve(prob, gt) is None


def test_fscore_curve_on_known_map():
    prob, gt = known_map()
    th = fscore_thresholds()
    assert th.shape == (255,) and th[0] == 0.0 and th[-1] < 1.0
    f = frame_fscore_curve(prob, gt)
    assert f.shape == (255,)
    # t = 0 predicts all 144 px: P = 1/2, R = 1
    assert f[0] == pytest.approx(1.3 * 0.5 / (0.15 + 1))
    # 0 < t <= 0.3: 96 px predicted, 72 right: P = 3/4, R = 1
    low = 1.3 * 0.75 / (0.3 * 0.75 + 1)
    i01 = int(np.argmin(np.abs(th - 0.1)))
    assert f[i01] == pytest.approx(low) and low == pytest.approx(0.975 / 1.225)
    np.testing.assert_allclose(f[(th > 0) & (th <= 0.3)], low)
    # 0.3 < t <= 0.9: exactly the GT: P = R = 1
    np.testing.assert_allclose(f[(th > 0.3) & (th <= 0.9)], 1.0)
    # t > 0.9: nothing predicted, P = R = 0 -> NaN -> 0
    assert np.all(f[th > 0.9] == 0.0)
    assert f.max() == pytest.approx(1.0)
    assert avs_scores(prob[None], gt[None])["fscore"] == pytest.approx(1.0)


def test_empty_gt_frames_are_skipped_by_fscore():
    prob, gt = known_map()
    empty = np.zeros((12, 12))
    both = avs_scores(np.stack([empty, prob]), np.stack([empty, gt]), return_per_frame=True)
    alone = avs_scores(prob[None], gt[None])
    assert both["fscore"] == alone["fscore"] and both["skipped_empty_gt"] == 1
    assert both["miou"] == pytest.approx((1.0 + 1.0) / 2, abs=1e-6)
    assert both["per_frame_iou"].shape == (2,) and both["per_frame_fcurve"].shape == (2, 255)
    assert np.all(np.isnan(both["per_frame_fcurve"][0]))
    # every frame empty: F undefined -> NaN with fscore_frames 0 (frame); 0 per batch (reference)
    none = avs_scores(np.stack([empty, empty]), np.stack([empty, empty]))
    assert np.isnan(none["fscore"]) and none["fscore_frames"] == 0 and none["miou"] == 1.0
    batch = avs_scores(np.stack([empty, empty]), np.stack([empty, empty]), aggregation="batch",
                       frames_per_video=1)
    assert batch["fscore"] == 0.0


def test_torch_input_and_logits():
    torch = pytest.importorskip("torch")
    gt = square(32, 32, 5, 15, 5, 15)
    logits = torch.tensor(square(32, 32, 5, 15, 10, 20) * 20 - 10, requires_grad=True)
    assert frame_iou(sigmoid(logits), torch.tensor(gt)) == pytest.approx(1 / 3, abs=1e-9)


# ---------------------------------------------------------------- AVS: aggregation
def three_frames():
    """IoUs 1 (empty GT, empty pred), 0 (empty GT, full pred), 0 (GT square, empty pred)."""
    z = np.zeros((4, 4))
    gts = np.stack([z, z, square(4, 4, 0, 2, 0, 2)])
    probs = np.stack([z, np.ones((4, 4)), z])
    return probs, gts


def test_batch_aggregation_uneven_batches():
    probs, gts = three_frames()
    frame = avs_scores(probs, gts)
    # batches of 2 frames: [1, 0] -> 0.5 and [0] -> 0; mean 0.25, not 1/3
    batch = avs_scores(probs, gts, aggregation="batch", batch_videos=2, frames_per_video=1)
    assert frame["miou"] == pytest.approx(1 / 3) and batch["miou"] == pytest.approx(0.25)
    # first batch has no scored frame: contributes 0 to the F mean (reference quirk)
    assert frame["fscore"] == pytest.approx(F_ALL)
    assert batch["fscore"] == pytest.approx(F_ALL / 2)
    with pytest.raises(ValueError):
        avs_scores(probs, gts, aggregation="batch", frames_per_video=2)
    with pytest.raises(ValueError):
        avs_scores(probs, gts, aggregation="mean")


def test_batch_aggregation_equal_batches():
    probs, gts = three_frames()
    probs, gts = np.concatenate([probs, probs[:1]]), np.concatenate([gts, gts[:1]])  # IoUs 1,0,0,1
    a = avs_scores(probs, gts)
    b = avs_scores(probs, gts, aggregation="batch", batch_videos=1, frames_per_video=2)
    assert a["miou"] == b["miou"] == 0.5
    # identical batches: the F numbers agree too
    prob, gt = known_map()
    p2, g2 = np.stack([prob, prob, prob, prob]), np.stack([gt, gt, gt, gt])
    a = avs_scores(p2, g2)
    b = avs_scores(p2, g2, aggregation="batch", batch_videos=2, frames_per_video=1)
    assert a["fscore"] == pytest.approx(b["fscore"]) and a["miou"] == pytest.approx(b["miou"])


def test_batch_fscore_is_mean_of_maxima():
    # frame A peaks (F = 1) at 0.3 < t <= 0.9; frame B (prob 0.2 on GT) peaks at 0 < t <= 0.2
    pa, ga = known_map()
    pb = 0.2 * ga
    probs, gts = np.stack([pa, pb]), np.stack([ga, ga])
    low = 0.975 / 1.225
    assert avs_scores(probs, gts)["fscore"] == pytest.approx((low + 1.0) / 2)
    b = avs_scores(probs, gts, aggregation="batch", batch_videos=1, frames_per_video=1)
    assert b["fscore"] == pytest.approx(1.0)


def test_shape_errors():
    with pytest.raises(ValueError):
        frame_iou(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        avs_scores(np.zeros((4, 4)), np.zeros((4, 4)))


# ---------------------------------------------------------------- AVS: floors
def test_avs_floors():
    gts = np.stack([square(4, 4, 0, 2, 0, 2), np.zeros((4, 4))])  # 4 GT px; an empty frame
    tl = square(4, 4, 0, 2, 0, 2)
    train = np.stack([tl, tl + square(4, 4, 3, 4, 3, 4)])
    np.testing.assert_allclose(mean_mask(train)[3, 3], 0.5)
    fl = avs_floors(gts, train_gts=train)
    assert set(fl) == {"all_background", "all_foreground", "centre_box", "mean_mask"}
    assert fl["all_background"]["miou"] == pytest.approx(0.5)  # IoUs 0 and 1
    assert fl["all_foreground"]["miou"] == pytest.approx((4 / 16 + 0) / 2)
    # t = 0 predicts everything, so both constants get F(P = 1/4, R = 1)
    assert fl["all_background"]["fscore"] == pytest.approx(F_ALL)
    assert fl["all_foreground"]["fscore"] == pytest.approx(F_ALL)
    # centre box rows/cols 1..2: overlaps the GT in 1 px, union 7; 4 px on the empty frame
    assert fl["centre_box"]["miou"] == pytest.approx((1 / 7 + 12 / 16) / 2)
    assert fl["centre_box"]["fscore"] == pytest.approx(F_ALL)  # > 0.25 at t > 0
    # mean mask: 1 on the GT square, 0.5 at (3, 3); IoU keeps only the > 0.5 px (4 of them, which
    # cost 4/16 on the empty frame); F peaks at 1 for t > 0.5
    assert fl["mean_mask"]["miou"] == pytest.approx((1.0 + 12 / 16) / 2, abs=1e-6)
    assert fl["mean_mask"]["fscore"] == pytest.approx(1.0)
    assert "mean_mask" not in avs_floors(gts)


# ---------------------------------------------------------------- AVQA
def toy_avqa():
    rows = [  # (predicted, answer, group, type)
        ("two", "two", "Audio", "Counting"), ("one", "one", "Audio", "Counting"),
        ("three", "three", "Audio", "Counting"), ("two", "one", "Audio", "Counting"),
        ("yes", "no", "Audio", "Comparative"),
        ("left", "left", "Visual", "Location"), ("right", "right", "Visual", "Location"),
        ("yes", "no", "Audio-Visual", "Temporal"),
    ]
    return [list(c) for c in zip(*rows)]


def test_avqa_scores_by_hand():
    s = avqa_scores(*toy_avqa())
    assert s["Audio/Counting"] == {"accuracy": 75.0, "n": 4, "correct": 3}
    assert s["Audio/Comparative"]["accuracy"] == 0.0
    assert s["Audio"] == {"accuracy": 60.0, "n": 5, "correct": 3}
    assert s["Visual/Location"]["accuracy"] == 100.0 and s["Visual"]["n"] == 2
    assert s["Audio-Visual"]["accuracy"] == 0.0 and s["Audio-Visual/Temporal"]["n"] == 1
    assert "Visual/Counting" not in s
    # pooled: 5 of 8; the mean of the groups would be (60 + 100 + 0) / 3
    assert s["overall"] == {"accuracy": 62.5, "n": 8, "correct": 5}
    assert s["overall"]["accuracy"] != pytest.approx((60 + 100 + 0) / 3)
    assert list(s)[-1] == "overall"


def test_avqa_errors():
    p, a, g, t = toy_avqa()
    with pytest.raises(ValueError, match="group"):
        avqa_scores(p, a, g[:-1] + ["Audiovisual"], t)
    with pytest.raises(ValueError, match="type"):
        avqa_scores(p, a, g[:-1] + ["Visual"], t[:-1] + ["Comparative"])
    with pytest.raises(ValueError, match="length"):
        avqa_scores(p[:-1], a, g, t)
    with pytest.raises(ValueError):
        avqa_floors(a, g, t[:-1], a, g, t)


def test_avqa_floors():
    train = [("two", "Audio", "Counting"), ("two", "Audio", "Counting"),
             ("three", "Audio", "Counting"), ("left", "Visual", "Location"),
             ("right", "Visual", "Location"), ("right", "Visual", "Location"),
             ("yes", "Audio-Visual", "Existential"), ("yes", "Audio-Visual", "Existential"),
             ("no", "Audio-Visual", "Existential")]
    test = [("two", "Audio", "Counting"), ("three", "Audio", "Counting"),
            ("right", "Visual", "Location"), ("yes", "Audio-Visual", "Existential"),
            ("no", "Audio-Visual", "Existential"), ("simultaneously", "Audio-Visual", "Temporal")]
    fl = avqa_floors(*[list(c) for c in zip(*train)], *[list(c) for c in zip(*test)])
    # "two", "right", "yes" tie at 2: the first seen in training wins
    assert fl["global_majority_answer"] == "two"
    assert fl["type_majority_answers"] == {"Audio/Counting": "two", "Visual/Location": "right",
                                           "Audio-Visual/Existential": "yes"}
    tm, gm = fl["type_majority"], fl["global_majority"]
    # Temporal is absent from training: falls back to "two" (wrong)
    assert tm["Audio/Counting"]["accuracy"] == 50.0 and tm["Visual"]["accuracy"] == 100.0
    assert tm["Audio-Visual"]["correct"] == 1 and tm["Audio-Visual"]["n"] == 3
    assert tm["overall"]["accuracy"] == pytest.approx(100 * 3 / 6)
    assert gm["overall"]["accuracy"] == pytest.approx(100 * 1 / 6)
    assert gm["Audio/Counting"]["accuracy"] == 50.0 and gm["Visual"]["accuracy"] == 0.0
