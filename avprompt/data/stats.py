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
  the one that protocol reports (``constant_floors``; ``metric_floors`` gives the same for any
  list of clips, e.g. the test clips one cell was scored on);
* ``quirks``: the reader's quirk counts.

``avs-s4`` / ``avs-ms3`` (AVSBench-object) and ``musicavqa`` are not clip-classification
datasets: ``stats`` dispatches them by name to ``avs_stats`` / ``avqa_stats`` (``kind`` "avs" /
"avqa"): rows per split, categories (S4) or question groups and types, answers, media present and
quirk counts (duplicates included); no shots and no floors.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from avprompt.data.datasets import load_dataset
from avprompt.data.metrics import compute_metrics, primary_metric
from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex
from avprompt.data.splits import PROTOCOLS, shot_counts
from avprompt.data.tasks import primary_label
from avprompt.tasks import Task, default_task, discover, few_shot_task


def _tasks_of(dataset: str) -> list[str]:
    """The few-shot (and pre-training) tasks read from ``dataset``, in registry order: the
    ones ``stats`` gives floors for (supervised tasks have no shots and no constant floors)."""
    return [t.name for t in discover().values() if t.dataset == dataset and t.few_shot]


def _num_outputs(task: Task, records: list[ClipRecord], num_classes: int | None) -> int:
    """Logit width of ``task``: the classes (inferred from the labels when not given), plus
    background for segment tasks. A constant predictor's scores do not depend on it."""
    if num_classes is None:
        labels = [s for r in records for s in r.segment_labels] + \
                 [c for r in records for c in r.video_labels]
        num_classes = max([c for c in labels if c >= 0], default=0) + 1
    return num_classes + int(task.segment_level)


def metric_floors(task: str | Task, protocol: str, records: list[ClipRecord],
                  num_classes: int | None = None) -> dict[str, float]:
    """Constant-predictor floor of every metric ``task`` reports under ``protocol`` on ``records``.

    ``records``: the exact clips a cell was scored on (its test list, test order irrelevant).
    Returns ``{metric: floor}`` in percent, one entry per float metric of ``compute_metrics``
    (e.g. ``llp-cls``: video_acc, single_label_acc, macro_map, reference_acc) plus ``primary``
    (the floor of the protocol's primary metric); ``{}`` when ``records`` is empty. Each floor is
    the best score any constant predictor reaches on that metric (always the same class for the
    accuracies; any constant scores for mAP, which then equals the mean class prevalence), so a
    model scoring at or below it learned nothing usable for that metric.
    """
    task = few_shot_task(task)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    records = list(records)
    if not records:
        return {}
    segment = task.segment_level
    k = _num_outputs(task, records, num_classes)
    # A constant predictor's best class is the most frequent one under some metric's label
    # rule, so only those candidates go through the metric code (the same code results use).
    counts = [Counter(primary_label(r) for r in records),
              Counter(min(r.video_labels) for r in records if r.video_labels),
              Counter(r.video_labels[0] for r in records if len(r.video_labels) == 1)]
    if segment:
        counts.append(Counter(k - 1 if s < 0 else s for r in records for s in r.segment_labels))
    candidates = set()
    for c in counts:
        c.pop(-1, None)  # unlabelled clips: no metric counts them
        if c:
            candidates.add(c.most_common(1)[0][0])
    scores = []
    for c in sorted(candidates) or [0]:
        logits = np.zeros((len(records), NUM_SEGMENTS, k) if segment else (len(records), k))
        logits[..., c] = 1.0
        scores.append(compute_metrics(task, protocol, logits, records))
    names = [m for m, v in scores[0].items() if isinstance(v, float) and m != "primary"]
    out = {m: max((s[m] for s in scores if s[m] == s[m]), default=float("nan")) for m in names}
    out["primary"] = out[scores[0]["primary_name"]]
    return out


def constant_floors(index: DatasetIndex, task: str, protocol: str | None = None,
                    records: list[ClipRecord] | None = None) -> dict:
    """``{protocol: {metric: floor, "primary": ..., "primary_name": ...}}``.

    ``records`` defaults to the test split of ``index``; ``protocol`` None gives every protocol.
    See ``metric_floors`` for what a floor is.
    """
    records = index.split("test") if records is None else list(records)
    if not records:
        return {}
    out = {}
    for p in PROTOCOLS if protocol is None else (protocol,):
        floors = metric_floors(task, p, records, num_classes=len(index.classes))
        out[p] = {**floors, "primary_name": primary_metric(task, p)}
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
    kind = index.name if _tasks_of(index.name) else None
    if kind == "ave":
        seg = [s for r in splits["test"] for s in r.segment_labels]
        out["test_segments"] = {"event": sum(s >= 0 for s in seg),
                                "background": sum(s < 0 for s in seg)}
    if kind == "llp":
        single = Counter(r.video_labels[0] for r in splits["train"] if len(r.video_labels) == 1)
        out["single_label_train"] = {n: single.get(c, 0) for c, n in enumerate(names)}
        out["no_single_label_train"] = [n for c, n in enumerate(names) if not single.get(c)]
        out["multi_label_test"] = sum(len(r.video_labels) > 1 for r in splits["test"])
        from avprompt.data.avvp_metrics import avvp_dataset_summary
        out["avvp"] = avvp_dataset_summary(index)  # dense annotations: coverage, events, floors
    task = default_task(kind or "", fallback="ave-cls")
    out["shots"] = {str(k): n for k, n in shot_counts(index, task, protocol).items()}
    out["floors"] = {t: constant_floors(index, t) for t in (_tasks_of(kind) if kind else ["ave-cls"])}
    out["quirks"] = dict(index.quirks)
    return out


#: datasets with their own readers and statistics (not ClipRecord indexes)
OTHER_DATASETS = ("avs-s4", "avs-ms3", "musicavqa")


def _other_stats(key: str, root: str | Path | None) -> dict:
    if root is None:
        raise ValueError(f"dataset {key!r} needs --root DIR (the folder with its annotation files)")
    if key == "musicavqa":
        from avprompt.data.musicavqa import avqa_stats, read_musicavqa
        return avqa_stats(read_musicavqa(Path(root)))
    from avprompt.data.avsbench import avs_stats, read_avsbench
    return avs_stats(read_avsbench(Path(root), key.split("-", 1)[1]))


def stats(dataset: str, root: str | Path | None, protocol: str = "standard") -> dict:
    """Statistics of ``dataset`` (a name or ``manifest:FILE``) read from ``root``.

    For a SynthAV world (``synthav.json`` beside the dataset folder) the generator's oracle
    ceilings (visual-only, audio-only, audio-visual accuracy from the ground truth) are added.
    ``avs-s4`` / ``avs-ms3`` / ``musicavqa`` go to their own statistics (module docstring).
    """
    key = dataset.strip().lower()
    if key in OTHER_DATASETS:
        return _other_stats(key, root)
    out = index_stats(load_dataset(dataset, root), protocol)
    if root is not None:
        meta = Path(root).parent / "synthav.json"
        if meta.is_file():
            import json
            info = json.loads(meta.read_text())
            out["synthav"] = {"seed": info.get("seed"), "size": info.get("size"),
                              "oracle_ceilings": info.get("oracle_ceilings", {})}
    return out
