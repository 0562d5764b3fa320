"""Dataset statistics from annotation files alone (media presence is counted, never required).

``stats(dataset, root, protocol)`` returns a JSON-ready dict:

* ``rows``: records; ``splits``: records per split (the published split sizes); ``unique_videos``:
  distinct video ids per split; ``classes``; ``class_names``; ``per_class``: per split, the
  number of records carrying each class (multi-label records count once per class);
* ``media_present``: records whose media exists under ``root``;
* AVE: ``test_segments`` ``{"event": n, "background": n}``;
* LLP: ``single_label_train`` per class, ``no_single_label_train`` (classes that can get no
  few-shot example), ``multi_label_test`` (number of test videos with several labels);
* ``shots``: training-set size for K = 1, 2, 4, 8, 16 under ``protocol``;
* ``floors``: for each task of the dataset and each protocol, the best score a constant predictor
  (always the same class; for mAP, any constant scores) reaches on every metric; ``primary`` is
  the one that protocol reports;
* ``quirks``: the reader's quirk counts.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from avprompt.data.datasets import load_dataset
from avprompt.data.metrics import compute_metrics
from avprompt.data.records import DatasetIndex
from avprompt.data.splits import PROTOCOLS, shot_counts
from avprompt.data.tasks import DEFAULT_TASK, TASK_LEVELS, primary_label

_TASKS_OF = {"ave": ["ave", "ave-cls"], "llp": ["llp-cls"], "vggsound": ["vggsound"],
             "vggsound40k": ["vggsound40k"]}


def constant_floors(index: DatasetIndex, task: str) -> dict:
    """``{protocol: {metric: best constant score, "primary": ...}}`` on the test split."""
    test = index.split("test")
    if not test:
        return {}
    segment = TASK_LEVELS[task] == "segment"
    k = len(index.classes) + int(segment)
    # A constant predictor's best class is the most frequent one under some metric's label
    # rule, so only those candidates go through the metric code (the same code results use).
    counts = [Counter(primary_label(r) for r in test),
              Counter(r.video_labels[0] for r in test if len(r.video_labels) == 1)]
    if segment:
        counts.append(Counter(k - 1 if s < 0 else s for r in test for s in r.segment_labels))
    candidates = sorted({c.most_common(1)[0][0] for c in counts if c} - {-1}) or [0]
    per_class = []
    for c in candidates:
        logits = np.zeros((len(test), 10, k) if segment else (len(test), k))
        logits[..., c] = 1.0
        per_class.append({p: compute_metrics(task, p, logits, test) for p in PROTOCOLS})
    out = {}
    for p in PROTOCOLS:
        names = [m for m, v in per_class[0][p].items() if isinstance(v, float)]
        best = {m: max(pc[p][m] for pc in per_class) for m in names if m != "primary"}
        best["primary_name"] = per_class[0][p]["primary_name"]
        best["primary"] = best[best["primary_name"]]
        out[p] = best
    return out


def index_stats(index: DatasetIndex, protocol: str = "standard") -> dict:
    names = index.classes
    splits = {s: index.split(s) for s in ("train", "val", "test")}
    out: dict = {
        "dataset": index.name,
        "rows": len(index.records),
        "splits": {s: len(r) for s, r in splits.items()},
        "unique_videos": {s: len({x.video_id for x in r}) for s, r in splits.items()},
        "classes": len(names),
        "class_names": list(names),
        "per_class": {s: {names[c]: n for c, n in sorted(
            Counter(c for x in r for c in x.video_labels).items())} for s, r in splits.items()},
        "media_present": sum(1 for r in index.records if Path(r.media).exists()),
    }
    kind = index.name if index.name in _TASKS_OF else None
    if kind == "ave":
        seg = [s for r in splits["test"] for s in r.segment_labels]
        out["test_segments"] = {"event": sum(s >= 0 for s in seg),
                                "background": sum(s < 0 for s in seg)}
    if kind == "llp":
        single = Counter(r.video_labels[0] for r in splits["train"] if len(r.video_labels) == 1)
        out["single_label_train"] = {n: single.get(c, 0) for c, n in enumerate(names)}
        out["no_single_label_train"] = [n for c, n in enumerate(names) if not single.get(c)]
        out["multi_label_test"] = sum(len(r.video_labels) > 1 for r in splits["test"])
    task = DEFAULT_TASK.get(kind or "", "ave-cls")
    out["shots"] = {str(k): n for k, n in shot_counts(index, task, protocol).items()}
    out["floors"] = {t: constant_floors(index, t) for t in _TASKS_OF.get(kind or "", ["ave-cls"])}
    out["quirks"] = dict(index.quirks)
    return out


def stats(dataset: str, root: str | Path | None, protocol: str = "standard") -> dict:
    """Statistics of ``dataset`` (a name or ``manifest:FILE``) read from ``root``.

    For a SynthAV world (``synthav.json`` beside the dataset folder) the generator's oracle
    ceilings (visual-only, audio-only, audio-visual accuracy from the ground truth) are added.
    """
    out = index_stats(load_dataset(dataset, root), protocol)
    if root is not None:
        meta = Path(root).parent / "synthav.json"
        if meta.is_file():
            import json
            info = json.loads(meta.read_text())
            out["synthav"] = {"seed": info.get("seed"), "size": info.get("size"),
                              "oracle_ceilings": info.get("oracle_ceilings", {})}
    return out
