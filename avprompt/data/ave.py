"""AVE (Audio-Visual Event) reader.

Files (in ``root`` or ``root/AVE_Dataset``): ``Annotations.txt``, ``trainSet.txt``, ``valSet.txt``,
``testSet.txt``; each line ``Category&VideoID&Quality&StartTime&EndTime``. The header line
``Category&VideoID&...`` is optional (the original release has none; common copies add one).
Media: ``AVE/<VideoID>.mp4`` or the pre-extracted layout (see ``layout``). DG-SCT's own AVE folder
(``data/AVE``: ``frames/``, ``wave/``, ``Annotations.txt`` and ``train_order.h5`` /
``test_order.h5`` in place of the split files) is named in the error, which asks for the three
split files from ``AVE_Dataset.zip``; its media are then used as they are.
An empty ``Annotations.txt`` (or one with only the header) is an error; a split file may be empty
(a subset without, say, a test split) but not all three.

Classes: the 28 categories in order of first appearance in ``Annotations.txt`` (background is not
a class here; tasks append it as the last output). Without ``Annotations.txt`` the order of first
appearance in train, val, test (in that order) is used.

One record per split-file row; segment t (0..9) is an event iff ``start <= t < end``.

Quirks of the real files and their rules (counted in ``DatasetIndex.quirks``):
* ``video_multiple_rows``: one video annotated with several events (e.g. male and female speech)
  has several rows, sometimes in two splits. Every row stays a record (as in the original
  benchmark); clip ids are ``<VideoID>#<k>`` (k = 1, 2, ... in train, val, test file order) for
  such videos and plain ``<VideoID>`` otherwise, so clip ids are unique.
* ``video_in_two_splits``: videos whose rows fall in two splits. Kept (they are the official
  splits); the ``standard`` few-shot protocol never draws a shot or a validation clip whose video
  also appears in a later split (see ``splits``).
* ``zero_length_event``: ``StartTime == EndTime`` (or end before start): every segment is
  background; the video label stays the row's category.
* ``segments_clipped``: times outside [0, 10] are clipped to that range.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from avprompt.data.layout import find_file, read_text, require_file, require_rows, resolve_media
from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex

SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
_SUBDIRS = ("", "AVE_Dataset")
#: files of DG-SCT's data/AVE folder (h5 row orders over Annotations.txt instead of split files)
_DGSCT_MARKERS = ("train_order.h5", "test_order.h5", "labels.h5")


def read_ave_rows(path: Path) -> list[tuple[str, str, int, int]]:
    """Rows ``(category, video_id, start, end)`` of one ``&``-separated AVE file."""
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split("&")
        if lineno == 1 and parts[0].strip().lower() == "category":
            continue  # optional header line
        if len(parts) != 5:
            raise ValueError(f"{path}:{lineno}: expected 5 '&'-separated fields "
                             f"(Category&VideoID&Quality&StartTime&EndTime), got {len(parts)}")
        try:
            start, end = int(float(parts[3])), int(float(parts[4]))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: StartTime/EndTime must be numbers, "
                             f"got {parts[3]!r}/{parts[4]!r}") from None
        rows.append((parts[0].strip(), parts[1].strip(), start, end))
    return rows


def _split_file(root: Path, split: str, name: str) -> Path:
    path = find_file(root, [name], _SUBDIRS)
    if path is None and find_file(root, list(_DGSCT_MARKERS), _SUBDIRS) is not None:
        # DG-SCT's release indexes Annotations.txt rows with h5 files; the official split files
        # are what every other AVE copy has, so ask for them rather than read h5 (h5py is not a
        # dependency).
        raise FileNotFoundError(
            f"{root}: DG-SCT's AVE layout (train_order.h5/test_order.h5 over Annotations.txt) has "
            f"no {name}; copy trainSet.txt, valSet.txt and testSet.txt from AVE_Dataset.zip "
            f"(YapengTian/AVE-ECCV18) into {root}; its frames/<id>/ and wave/<id>.npy are used "
            "as they are")
    return path or require_file(root, [name], f"AVE {split} split", _SUBDIRS)


def read_ave(root: str | Path) -> DatasetIndex:
    root = Path(root)
    split_rows = {}
    for split, name in SPLIT_FILES.items():
        split_rows[split] = read_ave_rows(_split_file(root, split, name))
    if not any(split_rows.values()):
        raise ValueError(f"{root}: trainSet.txt, valSet.txt and testSet.txt are all empty; "
                         "restore them from AVE_Dataset.zip")
    ann_path = find_file(root, ["Annotations.txt", "annotations.txt"], _SUBDIRS)
    if ann_path is not None:
        ann = read_ave_rows(ann_path)
        require_rows(ann_path, ann, "Category&VideoID&Quality&StartTime&EndTime")
    else:
        ann = [r for rows in split_rows.values() for r in rows]
    classes: list[str] = []
    for cat, *_ in ann:
        if cat not in classes:
            classes.append(cat)
    cls_index = {c: i for i, c in enumerate(classes)}

    rows_per_video = Counter(vid for rows in split_rows.values() for _, vid, _, _ in rows)
    splits_per_video: dict[str, set[str]] = defaultdict(set)
    quirks = Counter()
    records: list[ClipRecord] = []
    seen: Counter = Counter()
    for split, rows in split_rows.items():
        for cat, vid, start, end in rows:
            if cat not in cls_index:
                raise ValueError(f"AVE {SPLIT_FILES[split]}: category {cat!r} of video {vid} "
                                 "is not in Annotations.txt; use matching annotation files")
            splits_per_video[vid].add(split)
            seen[vid] += 1
            clip_id = f"{vid}#{seen[vid]}" if rows_per_video[vid] > 1 else vid
            s, e = max(0, min(start, NUM_SEGMENTS)), max(0, min(end, NUM_SEGMENTS))
            if (s, e) != (start, end):
                quirks["segments_clipped"] += 1
            if e <= s:
                quirks["zero_length_event"] += 1
            c = cls_index[cat]
            seg = [c if s <= t < e else -1 for t in range(NUM_SEGMENTS)]
            records.append(ClipRecord(clip_id=clip_id, video_id=vid,
                                      media=resolve_media(root, "AVE", [vid]), split=split,
                                      segment_labels=seg, video_labels=[c]))
    quirks["video_multiple_rows"] = sum(1 for n in rows_per_video.values() if n > 1)
    quirks["video_in_two_splits"] = sum(1 for s in splits_per_video.values() if len(s) > 1)
    return DatasetIndex(name="ave", root=root, classes=classes, records=records,
                        quirks=dict(quirks))
