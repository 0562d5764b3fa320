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
    ``vggsound-avel40k_labels.csv``, read by its header names as DG-SCT's code does
    (``pandas.read_csv`` then ``df['split']`` ...): columns ``split``, ``category``, ``video_id``,
    ``label`` in any order, other columns (e.g. a pandas index column) ignored; a missing column
    or a missing header line is an error naming the file. ``label`` is a 10-element 0/1 list
    (event per segment), normally quoted (``"[0, 1, ...]"``); unquoted, it may only be the last
    column. ``VggsoundAVEL40kCategories.txt`` (one class per line) defines the order; without it:
    order of first appearance. Media ``video/<video_id>.mp4`` or the pre-extracted layout, also
    under DG-SCT's name for a numeric id (``str(int(video_id)).zfill(6)``, e.g. ``frames/000123/``
    + ``wave/000123.npy``, with ``--root`` its ``data/vggsound``). A row whose label list has no 1
    keeps the category as its video label (quirk ``no_event_segment``).

Every file is read as UTF-8 (a BOM is fine); a file with no data row is an error naming it.
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

from avprompt.data.layout import find_file, read_text, require_file, require_rows, resolve_media
from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex

_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val",
           "validation": "val", "test": "test", "testing": "test"}


def _split_name(path: Path, lineno: int, value: str) -> str:
    s = _SPLITS.get(value.strip().lower())
    if s is None:
        raise ValueError(f"{path}:{lineno}: split must be train/val/test, got {value!r}")
    return s


def _csv_rows(path: Path, what: str) -> list[tuple[int, list[str]]]:
    text = read_text(path)
    rows = [(i, [c.strip() for c in r]) for i, r in
            enumerate(csv.reader(io.StringIO(text, newline="")), 1)
            if r and any(c.strip() for c in r)]
    require_rows(path, rows, what)
    return rows


def read_vggsound_classes(stat_csv: Path) -> list[str]:
    """Sorted class names from ``stat.csv`` (``label,count,group``; CRLF line ends occur)."""
    return sorted({r[0] for _, r in _csv_rows(stat_csv, "label,count,group")})


def read_vggsound(root: str | Path) -> DatasetIndex:
    root = Path(root)
    full = find_file(root, ["vggsound.csv"], ("", "data"))
    stat = find_file(root, ["stat.csv"], ("", "data"))
    rows: list[tuple[str, str, str]] = []  # (stem, label, split)
    if full is not None:
        for lineno, r in _csv_rows(full, "YouTubeID,start_seconds,label,split"):
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
        for lineno, r in _csv_rows(test, "file,label"):
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


AVEL40K_COLUMNS = ("split", "category", "video_id", "label")


def _avel40k_columns(path: Path, header: list[str]) -> dict[str, int]:
    """Column name -> position from the header line (names compared case-insensitively)."""
    names = [h.strip().lower() for h in header]
    if names and names[0] in _SPLITS:
        raise ValueError(f"{path}:1: no header line; add '{','.join(AVEL40K_COLUMNS)}' as the "
                         "first line (the columns are read by name)")
    missing = [c for c in AVEL40K_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}:1: header has no column {', '.join(map(repr, missing))} "
                         f"(found {', '.join(map(repr, header))}); the file needs columns "
                         f"{', '.join(AVEL40K_COLUMNS)}")
    return {c: names.index(c) for c in AVEL40K_COLUMNS}


def _segment_bits(path: Path, lineno: int, raw: str) -> list[int]:
    """``"[0, 1, ...]"`` -> 10 ints in {0, 1}; anything else names the row."""
    tokens = [t for t in re.split(r"[\s,]+", raw.strip().strip("[]()").strip()) if t]
    try:
        bits = [int(float(t)) for t in tokens]
    except ValueError:
        bits = []
    if len(bits) != NUM_SEGMENTS or any(b not in (0, 1) for b in bits):
        raise ValueError(f"{path}:{lineno}: label must list {NUM_SEGMENTS} 0/1 values, got "
                         f"{raw!r}")
    return bits


def _media_stems(vid: str) -> list[str]:
    """The id as written, then DG-SCT's zero-padded name for numeric ids (its loader does
    ``str(int(video_id)).zfill(6)``)."""
    return [vid] + ([str(int(vid)).zfill(6)] if vid.isdigit() else [])


def read_vggsound40k(root: str | Path) -> DatasetIndex:
    root = Path(root)
    path = require_file(root, ["vggsound-avel40k_labels.csv"], "VGG-Sound AVEL 40K labels",
                        ("", "data"))
    (_, header), *rows = _csv_rows(path, "split,category,video_id,label")
    col = _avel40k_columns(path, header)
    require_rows(path, rows, "split,category,video_id,label")
    label_last = col["label"] == len(header) - 1
    cat_file = find_file(root, ["VggsoundAVEL40kCategories.txt"], ("", "data"))
    classes: list[str] = []
    if cat_file is not None:
        classes = [ln.strip() for ln in read_text(cat_file).splitlines() if ln.strip()]
        require_rows(cat_file, classes, "category")
    else:
        for _, r in rows:
            if len(r) > col["category"] and r[col["category"]] not in classes:
                classes.append(r[col["category"]])
    idx = {c: i for i, c in enumerate(classes)}
    quirks: Counter = Counter()
    seen: Counter = Counter()
    records = []
    for lineno, r in rows:
        if len(r) < len(header) or (len(r) > len(header) and not label_last):
            raise ValueError(f"{path}:{lineno}: expected {len(header)} fields as in the header, "
                             f"got {len(r)}; quote the label list (\"[0, 1, ...]\")")
        split = _split_name(path, lineno, r[col["split"]])
        cat, vid = r[col["category"]], r[col["video_id"]]
        # an unquoted list spills into the following fields: only possible as the last column
        raw = ",".join(r[col["label"]:]) if label_last else r[col["label"]]
        bits = _segment_bits(path, lineno, raw)
        if cat not in idx:
            raise ValueError(f"{path}:{lineno}: category {cat!r} is not in "
                             "VggsoundAVEL40kCategories.txt")
        if not vid:
            raise ValueError(f"{path}:{lineno}: video_id is empty")
        c = idx[cat]
        if not any(bits):
            quirks["no_event_segment"] += 1
        seen[vid] += 1
        records.append(ClipRecord(
            clip_id=vid if seen[vid] == 1 else f"{vid}#{seen[vid]}", video_id=vid,
            media=resolve_media(root, "video", _media_stems(vid)), split=split,
            segment_labels=[c if b else -1 for b in bits], video_labels=[c]))
    return DatasetIndex(name="vggsound40k", root=root, classes=classes, records=records,
                        quirks=dict(quirks))
