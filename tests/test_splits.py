"""Few-shot splits (both protocols), tasks/targets and metrics."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from avprompt.data.datasets import load_dataset
from avprompt.data.metrics import compute_metrics, macro_map
from avprompt.data.records import ClipRecord, DatasetIndex
from avprompt.data.splits import Split, make_split
from avprompt.data.tasks import primary_label, targets, task_spec


def _toy(n_per_class=6, classes=3, with_val=False) -> DatasetIndex:
    recs = []
    for c in range(classes):
        for i in range(n_per_class):
            recs.append(ClipRecord(f"c{c}v{i}", f"c{c}v{i}", "x.mp4", "train",
                                   video_labels=[c]))
        recs.append(ClipRecord(f"c{c}t", f"c{c}t", "x.mp4", "test", video_labels=[c]))
        if with_val:
            recs.append(ClipRecord(f"c{c}val", f"c{c}val", "x.mp4", "val", video_labels=[c]))
    return DatasetIndex("toy", None, [f"k{c}" for c in range(classes)], recs)


@pytest.mark.annotations
@pytest.mark.parametrize("task", ["ave", "ave-cls"])
def test_seeded_splits_reproducible_and_disjoint(ave, task):
    a, b = make_split(ave, task, shots=4, seed=1), make_split(ave, task, shots=4, seed=1)
    c = make_split(ave, task, shots=4, seed=2)
    assert a == b and a.hash == b.hash
    assert a.train != c.train and a.hash != c.hash
    assert len(a.train) == 4 * 28
    recs = {r.clip_id: r for r in ave.records}
    held = {recs[i].video_id for i in a.val + a.test}
    assert not set(a.train) & set(a.val + a.test)
    assert not {recs[i].video_id for i in a.train} & held  # no shot shares a video
    assert not {recs[i].video_id for i in a.val} & {recs[i].video_id for i in a.test}
    assert a.notes["train_dropped_video_in_val_or_test"] > 0
    per_class = np.bincount([primary_label(recs[i]) for i in a.train], minlength=28)
    assert (per_class == 4).all()


@pytest.mark.annotations
def test_reference_is_first_k_in_train_order(ave):
    s = make_split(ave, "ave", protocol="reference", shots=2, seed=5)
    assert s.train == make_split(ave, "ave", protocol="reference", shots=2, seed=9).train
    firsts: dict[int, list[str]] = {}
    for r in ave.split("train"):
        firsts.setdefault(primary_label(r), []).append(r.clip_id)
    assert set(s.train) == {i for ids in firsts.values() for i in ids[:2]}
    assert s.test == [r.clip_id for r in ave.split("test")]
    assert not set(s.train) & set(s.test + s.val)


@pytest.mark.annotations
def test_llp_shots_single_label_and_short_classes(llp):
    with pytest.warns(UserWarning, match=r"Speech \(0\)"):
        s = make_split(llp, "llp-cls", shots=16, seed=1)
    assert s.notes["short_classes"]["Speech"] == 0
    recs = {r.clip_id: r for r in llp.records}
    assert all(len(recs[i].video_labels) == 1 for i in s.train)
    assert s.val == [r.clip_id for r in llp.split("val")]
    counts = np.bincount([recs[i].video_labels[0] for i in s.train], minlength=25)
    assert counts[0] == 0 and counts[1:].max() == 16 and counts[1:].min() >= 1


def test_hold_out_val_when_no_val_split():
    index = _toy()
    s = make_split(index, "ave-cls", shots=3, seed=0)
    assert "held out" in s.notes["val_source"]
    assert len(s.val) == 3 and len(s.train) == 9
    assert not set(s.train) & set(s.val) and not set(s.train) & set(s.test)
    assert make_split(index, "ave-cls", shots=3, seed=1).val != s.val or \
        make_split(index, "ave-cls", shots=3, seed=1).train != s.train


def test_take_all_rule_zero_shot_and_full():
    index = _toy(n_per_class=2, with_val=True)
    with pytest.warns(UserWarning, match="taking all available"):
        s = make_split(index, "ave-cls", shots=4, seed=0)
    assert len(s.train) == 6 and s.notes["short_classes"] == {"k0": 2, "k1": 2, "k2": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_split(index, "ave-cls", shots=0).train == []
        assert len(make_split(index, "ave-cls", shots=None).train) == 6
    with pytest.raises(ValueError, match="unknown protocol"):
        make_split(index, "ave-cls", protocol="best-on-test")


def test_split_json_round_trip_and_tamper(tmp_path):
    s = make_split(_toy(with_val=True), "ave-cls", shots=2, seed=3)
    path = s.save(tmp_path / "split.json")
    assert json.loads(path.read_text())["hash"] == s.hash
    assert Split.load(path) == s
    data = json.loads(path.read_text())
    data["train"] = data["train"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="does not match its hash"):
        Split.load(path)


def test_targets_and_task_spec():
    index = _toy(classes=3)
    rec = ClipRecord("a", "a", "a.mp4", "train", segment_labels=[-1, 2, 2] + [-1] * 7,
                     video_labels=[2])
    spec = task_spec("ave", index)
    assert spec.num_outputs == 4
    t = targets(spec, rec)
    assert t["segment_labels"][:3] == [3, 2, 2] and t["label"] == 2 and t["video_labels"] == [2]
    assert targets("ave-cls", rec, num_classes=3)["segment_labels"][0] == 3
    multi = ClipRecord("b", "b", "b.mp4", "test", video_labels=[2, 1])
    assert targets(task_spec("llp-cls", index), multi)["label"] == 1  # lowest index
    with pytest.raises(ValueError, match="unknown task"):
        task_spec("avel", index)


def test_metrics():
    recs = [ClipRecord(str(i), str(i), "", "test", video_labels=v)
            for i, v in enumerate([[0], [1], [0, 2], [2]])]
    perfect = np.eye(3)[[0, 1, 0, 2]] + 0.5 * np.eye(3)[[0, 1, 2, 2]]
    m = compute_metrics("llp-cls", "standard", perfect, recs)
    assert m["primary_name"] == "macro_map" and m["single_label_acc"] == 100.0
    assert compute_metrics("llp-cls", "reference", perfect, recs)["primary"] == 100.0
    const = np.tile([1.0, 0.0, 0.0], (4, 1))
    prevalence = [2 / 4, 1 / 4, 2 / 4]
    assert macro_map(const, [r.video_labels for r in recs]) == pytest.approx(
        100 * np.mean(prevalence))
    seg = [ClipRecord("s", "s", "", "test", segment_labels=[0] * 5 + [-1] * 5, video_labels=[0])]
    logits = np.zeros((1, 10, 3))
    logits[0, :, 2] = 1  # predicts background everywhere
    assert compute_metrics("ave", "standard", logits, seg)["primary"] == 50.0
    assert compute_metrics("ave-cls", "standard", logits[:, :, :2] + [1, 0], seg)["primary"] \
        == 100.0
    with pytest.raises(ValueError, match="logit rows"):
        compute_metrics("ave", "standard", logits, seg * 2)
