"""LLP (AVVP, Look Listen and Parse) reader.

Files (in ``root`` or ``root/data``), all tab-separated with a header line:
``AVVP_train.csv``, ``AVVP_val_pd.csv``, ``AVVP_test_pd.csv`` (``filename<TAB>event_labels``,
labels comma-separated) and the dense ``AVVP_eval_audio.csv`` / ``AVVP_eval_visual.csv``
(``filename<TAB>onset<TAB>offset<TAB>event_labels``, one event per row, seconds).
Video id = first 11 characters of ``filename`` (the YouTube id); clip id = ``filename``.
Media: ``LLP_dataset/video/<id>.mp4`` (or ``<filename>.mp4``), or the pre-extracted layout:
``frames/<id>/`` + ``wave/<id>.npy``, or DG-SCT's ``LLP_dataset/frame/<id>/`` +
``LLP_dataset/wave/<id>.npy`` (``--root`` is DG-SCT's ``data/AVVP``). A file with no data row is
an error naming it.

Classes: the 25 events in the order the AVVP code uses (``LLP_CLASSES``); that order defines the
"lowest-index label" of the reference LLP-classification rule. A dataset in this layout with
other events (SynthAV's LLP-format set, a user's own) reads its classes from ``classes.txt``
(one per line) when present, else in order of first appearance in the train/val/test files.

Dense labels: val/test records get ``audio_segments`` / ``visual_segments`` (10 lists of class
indices; segment t holds an event iff ``onset <= t < offset``), None when the file has no row for
the video. Quirks of the real files and their rules (counted in ``DatasetIndex.quirks``):
* ``weak_duplicate_label``: a label listed twice in one weak row (``Clapping,Clapping``): counted
  once, so the video is single-label.
* ``dense_unmatched_rows``: dense rows whose filename matches no val/test video (truncated ids,
  typos): dropped.
* ``dense_empty_interval``: rows with ``offset <= onset``: no segment is marked, row dropped.
* ``dense_label_outside_weak``: a dense label absent from the video's weak label set: kept in the
  dense labels (it is the finer annotation); the weak labels (``video_labels``) stay as published.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from avprompt.data.layout import find_file, read_text, require_file, require_rows, resolve_media
from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex

LLP_CLASSES = [
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce",
    "Fire_alarm", "Chainsaw", "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle",
    "Vacuum_cleaner", "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter",
    "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping",
]
SPLIT_FILES = {"train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv"}
DENSE_FILES = {"audio": "AVVP_eval_audio.csv", "visual": "AVVP_eval_visual.csv"}
_SUBDIRS = ("", "data")


def _rows(path: Path, ncols: int) -> list[tuple[int, list[str]]]:
    text = read_text(path)
    rows = [(i, r) for i, r in enumerate(csv.reader(io.StringIO(text, newline=""),
                                                    delimiter="\t"), 1) if r]
    if rows and rows[0][1][0].strip().lower() == "filename":
        rows = rows[1:]
    require_rows(path, rows, "tab-separated " + ("filename, event_labels" if ncols == 2 else
                                                 "filename, onset, offset, event_labels"))
    for lineno, r in rows:
        if len(r) != ncols:
            raise ValueError(f"{path}:{lineno}: expected {ncols} tab-separated fields, got "
                             f"{len(r)}")
    return rows


def _label_index(path: Path, lineno: int, name: str, idx: dict[str, int]) -> int:
    name = name.strip()
    if name not in idx:
        raise ValueError(f"{path}:{lineno}: unknown LLP event label {name!r}; not among the "
                         f"{len(idx)} classes (AVVP's 25, or classes.txt): fix the row or classes.txt")
    return idx[name]


def _classes(root: Path) -> list[str]:
    listed = find_file(root, ["classes.txt"], _SUBDIRS)
    if listed is not None:
        names = [c.strip() for c in read_text(listed).splitlines() if c.strip()]
        require_rows(listed, names, "class name")
        return names
    seen: dict[str, None] = {}
    for split, name in SPLIT_FILES.items():
        path = require_file(root, [name], f"LLP {split} weak labels", _SUBDIRS)
        for _, (_, labels) in _rows(path, 2):
            seen.update((lab.strip(), None) for lab in labels.split(",") if lab.strip())
    return list(LLP_CLASSES) if set(seen) <= set(LLP_CLASSES) else list(seen)


def read_llp(root: str | Path) -> DatasetIndex:
    root = Path(root)
    classes = _classes(root)
    idx = {c: i for i, c in enumerate(classes)}
    quirks: Counter = Counter()
    records: list[ClipRecord] = []
    by_filename: dict[str, ClipRecord] = {}
    for split, name in SPLIT_FILES.items():
        path = require_file(root, [name], f"LLP {split} weak labels", _SUBDIRS)
        for lineno, (filename, labels) in _rows(path, 2):
            filename = filename.strip()
            if filename in by_filename:
                raise ValueError(f"{path}:{lineno}: filename {filename} already listed in split "
                                 f"{by_filename[filename].split}; remove the duplicate row")
            listed = [_label_index(path, lineno, lab, idx) for lab in labels.split(",")
                      if lab.strip()]
            vlabels = sorted(set(listed))
            if len(vlabels) < len(listed):
                quirks["weak_duplicate_label"] += 1
            vid = filename[:11]
            rec = ClipRecord(clip_id=filename, video_id=vid,
                             media=resolve_media(root, "LLP_dataset/video", [vid, filename]),
                             split=split, video_labels=vlabels)
            by_filename[filename] = rec
            records.append(rec)
    for modality, name in DENSE_FILES.items():
        path = find_file(root, [name], _SUBDIRS)
        if path is None:
            continue
        attr = f"{modality}_segments"
        for lineno, (filename, onset, offset, label) in _rows(path, 4):
            rec = by_filename.get(filename.strip())
            if rec is None or rec.split == "train":
                quirks["dense_unmatched_rows"] += 1
                continue
            try:
                on, off = int(float(onset)), int(float(offset))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: onset/offset must be numbers, got "
                                 f"{onset!r}/{offset!r}") from None
            on, off = max(0, on), min(NUM_SEGMENTS, off)
            if off <= on:
                quirks["dense_empty_interval"] += 1
                continue
            c = _label_index(path, lineno, label, idx)
            if c not in rec.video_labels:
                quirks["dense_label_outside_weak"] += 1
            segs = getattr(rec, attr)
            if segs is None:
                segs = [[] for _ in range(NUM_SEGMENTS)]
                setattr(rec, attr, segs)
            for t in range(on, off):
                if c not in segs[t]:
                    segs[t].append(c)
                    segs[t].sort()
    return DatasetIndex(name="llp", root=root, classes=classes, records=records,
                        quirks=dict(quirks))
