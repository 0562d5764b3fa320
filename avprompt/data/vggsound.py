"""VGG-Sound readers: the full list and the 40K / 141-class AVEL subset used for pre-training.

``read_vggsound(root)``
    * ``vggsound.csv`` (no header; ``YouTubeID,start_seconds,label,split``, labels quoted when they
      contain commas; split ``train``/``test``). Media ``video/<YouTubeID>_<start:06d>.mp4``; the
      video id is that stem (one YouTube video can give several clips).
    * without it, the files of the public repository snapshot: ``stat.csv`` (``label,count,group``)
      gives the classes and ``test.csv`` (``file,label``) the test clips.
    Classes: label names sorted alphabetically (the order VGG-Sound's own code uses), from
    ``stat.csv`` when present, else from the clip list. VGG-Sound has no validation split: the
    ``standard`` protocol holds out part of train (see ``splits``).
    Quirk ``duplicate_clip``: a (YouTubeID, start) listed twice gets clip id ``<stem>#2``.

``read_vggsound40k(root)``
    ``vggsound-avel40k_labels.csv`` with columns ``split, category, video_id, label`` (header
    optional) where ``label`` is a 10-element 0/1 list (event per segment), and
    ``VggsoundAVEL40kCategories.txt`` (one class per line, defines the order; without it: order
    of first appearance). Media ``video/<video_id>.mp4``. A row whose label list has no 1 keeps
    the category as its video label (quirk ``no_event_segment``).
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

from avprompt.data.layout import find_file, require_file, resolve_media
from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex

_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val",
           "validation": "val", "test": "test", "testing": "test"}


def _split_name(path: Path, lineno: int, value: str) -> str:
    s = _SPLITS.get(value.strip().lower())
    if s is None:
        raise ValueError(f"{path}:{lineno}: split must be train/val/test, got {value!r}")
    return s


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(i, [c.strip() for c in r]) for i, r in enumerate(csv.reader(f), 1)
                if r and any(c.strip() for c in r)]


def read_vggsound_classes(stat_csv: Path) -> list[str]:
    """Sorted class names from ``stat.csv`` (``label,count,group``; CRLF line ends occur)."""
    return sorted({r[0] for _, r in _csv_rows(stat_csv)})


def read_vggsound(root: str | Path) -> DatasetIndex:
    root = Path(root)
    full = find_file(root, ["vggsound.csv"], ("", "data"))
    stat = find_file(root, ["stat.csv"], ("", "data"))
    rows: list[tuple[str, str, str]] = []  # (stem, label, split)
    if full is not None:
        for lineno, r in _csv_rows(full):
            if len(r) != 4:
                raise ValueError(f"{full}:{lineno}: expected YouTubeID,start_seconds,label,split")
            try:
                start = int(float(r[1]))
            except ValueError:
                raise ValueError(f"{full}:{lineno}: start_seconds must be a number, got "
                                 f"{r[1]!r}") from None
            rows.append((f"{r[0]}_{start:06d}", r[2], _split_name(full, lineno, r[3])))
    else:
        test = require_file(root, ["test.csv"], "VGG-Sound clip list (vggsound.csv or test.csv)",
                            ("", "data"))
        for lineno, r in _csv_rows(test):
            if len(r) != 2:
                raise ValueError(f"{test}:{lineno}: expected file,label")
            rows.append((Path(r[0]).stem, r[1], "test"))
    classes = read_vggsound_classes(stat) if stat is not None else sorted({r[1] for r in rows})
    idx = {c: i for i, c in enumerate(classes)}
    quirks: Counter = Counter()
    seen: Counter = Counter()
    records = []
    for stem, label, split in rows:
        if label not in idx:
            raise ValueError(f"VGG-Sound clip {stem}: label {label!r} is not in stat.csv; use "
                             "matching annotation files")
        seen[stem] += 1
        if seen[stem] > 1:
            quirks["duplicate_clip"] += 1
        clip_id = stem if seen[stem] == 1 else f"{stem}#{seen[stem]}"
        records.append(ClipRecord(clip_id=clip_id, video_id=stem,
                                  media=resolve_media(root, "video", [stem]), split=split,
                                  video_labels=[idx[label]]))
    return DatasetIndex(name="vggsound", root=root, classes=classes, records=records,
                        quirks=dict(quirks))


def read_vggsound40k(root: str | Path) -> DatasetIndex:
    root = Path(root)
    path = require_file(root, ["vggsound-avel40k_labels.csv"], "VGG-Sound AVEL 40K labels",
                        ("", "data"))
    rows = _csv_rows(path)
    if rows and rows[0][1][0].lower() == "split":
        rows = rows[1:]
    cat_file = find_file(root, ["VggsoundAVEL40kCategories.txt"], ("", "data"))
    classes: list[str] = []
    if cat_file is not None:
        classes = [ln.strip() for ln in cat_file.read_text(encoding="utf-8").splitlines()
                   if ln.strip()]
    else:
        for _, r in rows:
            if len(r) > 1 and r[1] not in classes:
                classes.append(r[1])
    idx = {c: i for i, c in enumerate(classes)}
    quirks: Counter = Counter()
    seen: Counter = Counter()
    records = []
    for lineno, r in rows:
        if len(r) < 4:
            raise ValueError(f"{path}:{lineno}: expected split,category,video_id,label")
        split, cat, vid = _split_name(path, lineno, r[0]), r[1], r[2]
        bits = [int(b) for b in re.findall(r"[01]", ",".join(r[3:]))]  # list may span fields
        if len(bits) != NUM_SEGMENTS:
            raise ValueError(f"{path}:{lineno}: label must list {NUM_SEGMENTS} 0/1 values, got "
                             f"{','.join(r[3:])!r}")
        if cat not in idx:
            raise ValueError(f"{path}:{lineno}: category {cat!r} is not in "
                             "VggsoundAVEL40kCategories.txt")
        c = idx[cat]
        if not any(bits):
            quirks["no_event_segment"] += 1
        seen[vid] += 1
        records.append(ClipRecord(
            clip_id=vid if seen[vid] == 1 else f"{vid}#{seen[vid]}", video_id=vid,
            media=resolve_media(root, "video", [vid]), split=split,
            segment_labels=[c if b else -1 for b in bits], video_labels=[c]))
    return DatasetIndex(name="vggsound40k", root=root, classes=classes, records=records,
                        quirks=dict(quirks))
