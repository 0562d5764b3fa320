"""Per-class results add up to the cell's own metric, recomputed the way the verdicts are."""
from __future__ import annotations

import numpy as np
import pytest

from avprompt import report_perclass as PC
from avprompt import stats as S

NAMES = ["dog", "car", "violin", "horn"]


def _preds(task: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n, t, k = 40, 10, len(NAMES)
    seg = rng.integers(-1, k, size=(n, t))
    primary = rng.integers(0, k, size=n)
    multi = np.zeros((n, k), np.uint8)
    multi[np.arange(n), primary] = 1
    if task == "llp-cls":
        multi[rng.random((n, k)) < 0.2] = 1
    logits = rng.normal(size=(n, t, k + 1) if task == "ave" else (n, k)).astype(np.float16)
    if task == "ave-cls":  # make some right
        logits[np.arange(n)[:20], primary[:20]] += 3
    return {"clip_ids": np.array([f"c{i}" for i in range(n)]), "logits": logits,
            "segment_labels": seg.astype(np.int16), "video_labels": multi}


@pytest.mark.parametrize("task,level", [("ave", "segment"), ("ave-cls", "video"), ("llp-cls", "video")])
def test_per_class_rows_add_up_to_the_overall_metric(task, level):
    preds = _preds(task)
    rows = PC.per_class(task, level, NAMES, preds)
    overall = S.prepare(task, "standard", preds).value()
    if task == "llp-cls":
        assert rows["value"].mean() == pytest.approx(overall, abs=1e-6)  # macro mAP = mean AP
    else:
        assert 100 * rows["correct"].sum() / rows["support"].sum() == pytest.approx(overall, abs=1e-6)
        m = PC.confusion(level, len(NAMES), preds)
        assert m.sum() == rows["support"].sum() and np.trace(m) == rows["correct"].sum()
    if task == "ave":
        assert rows["class"].iloc[-1] == "background"
