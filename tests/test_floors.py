"""Constant-predictor floors of every metric, on the exact clips a cell was scored on."""
from __future__ import annotations

import numpy as np
import pytest

from avprompt.data.metrics import compute_metrics, primary_metric
from avprompt.data.records import ClipRecord, DatasetIndex
from avprompt.data.stats import constant_floors, metric_floors


def clip(i: int, labels: list[int], segments: list[int] | None = None, split: str = "test"):
    seg = segments if segments is not None else [-1] * 10
    return ClipRecord(f"c{i}", f"v{i}", f"/none/v{i}.mp4", split, seg, sorted(labels))


def brute_force(task: str, protocol: str, records, k: int) -> dict:
    """Best score over every constant one-class predictor, metric by metric."""
    seg = task == "ave"
    best: dict = {}
    for c in range(k + int(seg)):
        logits = np.zeros((len(records), 10, k + int(seg)) if seg else (len(records), k))
        logits[..., c] = 1.0
        for m, v in compute_metrics(task, protocol, logits, records).items():
            if isinstance(v, float) and v == v:
                best[m] = max(best.get(m, -1.0), v)
    return best


# LLP-like: the most frequent lowest-index label (0) is not the most frequent single label (1)
LLP = [clip(0, [1]), clip(1, [1]), clip(2, [0, 2]), clip(3, [0, 3]), clip(4, [0, 4])]


def test_each_llp_metric_gets_its_own_floor():
    for protocol in ("standard", "reference"):
        f = metric_floors("llp-cls", protocol, LLP)
        assert f["reference_acc"] == pytest.approx(100 * 3 / 5)  # always class 0
        assert f["video_acc"] == pytest.approx(100 * 3 / 5)
        assert f["single_label_acc"] == pytest.approx(100.0)  # both single-label clips are 1
        # constant scores: AP of a class = its prevalence; mean over the 5 present classes
        assert f["macro_map"] == pytest.approx(100 * np.mean([3, 2, 1, 1, 1]) / 5)
        assert f["primary"] == f[primary_metric("llp-cls", protocol)]
    assert metric_floors("llp-cls", "standard", LLP)["primary"] < \
        metric_floors("llp-cls", "reference", LLP)["primary"]


def test_floors_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    llp = [clip(i, sorted(set(rng.integers(0, 6, size=rng.integers(1, 3)).tolist())))
           for i in range(40)]
    ave = [clip(i, [], [int(s) if s < 4 else -1 for s in rng.integers(0, 6, 10)])
           for i in range(30)]
    for task, records, k in [("llp-cls", llp, 6), ("ave", ave, 4), ("ave-cls", ave, 4)]:
        for protocol in ("standard", "reference"):
            got = metric_floors(task, protocol, records, num_classes=k)
            want = brute_force(task, protocol, records, k)
            assert {m: got[m] for m in want} == pytest.approx(want), (task, protocol)


def test_segment_floor_counts_background():
    records = [clip(0, [2], [-1] * 7 + [2] * 3), clip(1, [1], [-1] * 4 + [1] * 6)]
    f = metric_floors("ave", "standard", records, num_classes=3)
    assert f["segment_acc"] == pytest.approx(100 * 11 / 20) and f["primary"] == f["segment_acc"]


def test_unlabelled_clips_do_not_hide_the_best_class():
    records = [clip(0, []), clip(1, []), clip(2, []), clip(3, [1]), clip(4, [1]), clip(5, [0])]
    assert metric_floors("ave-cls", "standard", records)["video_acc"] == pytest.approx(200 / 3)


def test_the_floors_are_of_the_clips_given():
    assert metric_floors("llp-cls", "standard", []) == {}
    two = metric_floors("llp-cls", "reference", LLP[:2])  # only the two class-1 clips
    assert two["reference_acc"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="protocol 'paper'"):
        metric_floors("llp-cls", "paper", LLP)


def test_constant_floors_keeps_its_old_shape_and_takes_records():
    index = DatasetIndex("llp", None, [f"k{i}" for i in range(5)],
                         LLP + [clip(9, [4], split="train")])
    every = constant_floors(index, "llp-cls")
    assert set(every) == {"standard", "reference"}
    for p, f in every.items():
        assert f["primary_name"] == primary_metric("llp-cls", p)
        assert f["primary"] == f[f["primary_name"]]
        assert {k: v for k, v in f.items() if k != "primary_name"} == \
            metric_floors("llp-cls", p, LLP)
    one = constant_floors(index, "llp-cls", protocol="reference", records=LLP[:2])
    assert list(one) == ["reference"] and one["reference"]["reference_acc"] == pytest.approx(100)


def test_macro_map_equals_sklearn_with_ties():
    import numpy as np
    from sklearn.metrics import average_precision_score

    from avprompt.data.metrics import macro_map, multi_hot
    rng = np.random.default_rng(0)
    for trial in range(50):
        n, k = int(rng.integers(3, 40)), int(rng.integers(2, 6))
        scores = rng.integers(0, 4, size=(n, k)).astype(float) if trial % 2 else rng.normal(size=(n, k))
        labels = [sorted(set(rng.integers(0, k, size=int(rng.integers(1, 3))).tolist())) for _ in range(n)]
        y = multi_hot(labels, k)
        expected = np.mean([average_precision_score(y[:, c], scores[:, c]) for c in range(k) if y[:, c].any()]) * 100
        assert abs(macro_map(scores, labels) - expected) < 1e-9
