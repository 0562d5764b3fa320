"""AVSBench-object reader (audio-visual segmentation): the S4 (single source) and MS3 (multiple
sources) subsets.

``read_avsbench(root, subset)`` with ``subset`` ``"s4"`` or ``"ms3"``. The metadata CSV is found at
``root/<subset>_meta_data.csv`` or, in the download layout, ``root/Single-source/s4_meta_data.csv``
/ ``root/Multi-sources/ms3_meta_data.csv``:

* S4: header ``name,start,category,split`` (``start``: the clip's start second, an integer);
* MS3: header ``video_id,split``.

Media sit in ``<subset>_data/`` beside the CSV (``Single-source/s4_data/``,
``Multi-sources/ms3_data/``), ``k`` = 1..5 (one frame per second, 224x224):

* S4: ``visual_frames/<split>/<category>/<name>/<name>_<k>.png``,
  ``gt_masks/<split>/<category>/<name>/<name>_<k>.png``,
  ``audio_log_mel/<split>/<category>/<name>.pkl``, ``audio_wav/<split>/<category>/<name>.wav``;
* MS3: ``visual_frames/<id>/<id>.mp4_<k>.png`` (no split folder: the release keeps all frames
  together), ``gt_masks/<split>/<id>/<id>_<k>.png``, ``audio_log_mel/<split>/<id>.pkl``,
  ``audio_wav/<split>/<id>.wav``.

S4 train videos have a mask for frame 1 only (the release annotates one frame per training
video); S4 val/test and every MS3 split have 5. Records carry the paths they would have; media
need not exist (annotation-only use, ``AVSIndex.media_counts`` counts what is there).

Bad input is a one-line error naming ``file:line`` and the fix (wrong header, missing or empty
field, unknown split, non-integer start, empty file, unknown subset). Quirks (counted in
``AVSIndex.quirks``, the row is kept or dropped as said):

* ``duplicate_video_id``: a video listed twice in one split: the first row is kept;
* ``video_in_two_splits``: a video listed in two splits: both rows kept (its media differ by
  split folder, except MS3 frames, which are then shared).
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from avprompt.data.layout import find_file, read_text, require_rows

FRAMES_PER_VIDEO = 5
SUBSETS = ("s4", "ms3")
SPLITS = ("train", "val", "test")
HEADERS = {"s4": ["name", "start", "category", "split"], "ms3": ["video_id", "split"]}
#: the folder of each subset in the download layout (the CSV and ``<subset>_data`` sit in it)
SUBSET_DIRS = {"s4": "Single-source", "ms3": "Multi-sources"}


@dataclass
class AVSRecord:
    """One AVSBench video: 5 frames, its ground-truth masks, its audio."""

    video_id: str
    split: str
    category: str | None  # S4 only
    start: int | None  # S4 only: start second of the 5-second clip in the source video
    frames: list[str]  # FRAMES_PER_VIDEO paths, frame k = 1..5
    masks: list[str]  # S4 train: [mask of frame 1]; otherwise one per frame
    audio: str  # wav
    log_mel: str  # VGGish log-mel pickle of the reference code

    @property
    def mask_frames(self) -> list[int]:
        """0-based frame indices the masks belong to (S4 train: ``[0]``)."""
        return list(range(len(self.masks)))


@dataclass
class AVSIndex:
    subset: str  # "s4" | "ms3"
    root: Path
    meta_file: Path
    data_dir: Path  # <subset>_data beside the metadata CSV (may not exist)
    categories: list[str]  # S4: sorted category names of the file; MS3: []
    records: list[AVSRecord]
    quirks: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[AVSRecord]:
        return [r for r in self.records if r.split == name]

    def media_counts(self) -> dict[str, int]:
        """Videos whose frames / masks / wav / log-mel all exist, and ``complete`` (frames and
        masks: what segmentation training needs)."""
        keys = ("frames", "masks", "audio_wav", "log_mel", "complete")
        if not self.data_dir.is_dir():  # annotation-only copy: skip ~40k stat calls
            return dict.fromkeys(keys, 0)
        out = dict.fromkeys(keys, 0)
        for r in self.records:
            frames = all(Path(p).is_file() for p in r.frames)
            masks = all(Path(p).is_file() for p in r.masks)
            out["frames"] += frames
            out["masks"] += masks
            out["audio_wav"] += Path(r.audio).is_file()
            out["log_mel"] += Path(r.log_mel).is_file()
            out["complete"] += frames and masks
        return out


def find_meta(root: Path, subset: str) -> Path:
    """The subset's metadata CSV under ``root`` (flat or download layout)."""
    name = f"{subset}_meta_data.csv"
    path = find_file(root, [name], ("", SUBSET_DIRS[subset]))
    if path is None:
        raise FileNotFoundError(
            f"{root}: no {name} (nor {SUBSET_DIRS[subset]}/{name}); point --root at the "
            f"AVSBench-object folder (the one holding {SUBSET_DIRS[subset]}/ or the CSV)")
    return path


def _s4_paths(base: Path, split: str, category: str, name: str) -> tuple[list[str], list[str],
                                                                         str, str]:
    rel = Path(split) / category
    frames = [str(base / "visual_frames" / rel / name / f"{name}_{k}.png")
              for k in range(1, FRAMES_PER_VIDEO + 1)]
    n_masks = 1 if split == "train" else FRAMES_PER_VIDEO
    masks = [str(base / "gt_masks" / rel / name / f"{name}_{k}.png") for k in range(1, n_masks + 1)]
    return (frames, masks, str(base / "audio_wav" / rel / f"{name}.wav"),
            str(base / "audio_log_mel" / rel / f"{name}.pkl"))


def _ms3_paths(base: Path, split: str, vid: str) -> tuple[list[str], list[str], str, str]:
    frames = [str(base / "visual_frames" / vid / f"{vid}.mp4_{k}.png")
              for k in range(1, FRAMES_PER_VIDEO + 1)]
    masks = [str(base / "gt_masks" / split / vid / f"{vid}_{k}.png")
             for k in range(1, FRAMES_PER_VIDEO + 1)]
    return (frames, masks, str(base / "audio_wav" / split / f"{vid}.wav"),
            str(base / "audio_log_mel" / split / f"{vid}.pkl"))


def _rows(path: Path, subset: str) -> list[tuple[int, dict[str, str]]]:
    """Data rows of the CSV with their line numbers; header and field count checked."""
    text = read_text(path, "AVSBench metadata CSV")
    rows = [(i, r) for i, r in enumerate(csv.reader(io.StringIO(text, newline="")), 1)
            if any(c.strip() for c in r)]
    want = HEADERS[subset]
    if not rows:
        require_rows(path, [], ",".join(want))
    lineno, header = rows[0]
    if [c.strip().lower() for c in header] != want:
        raise ValueError(f"{path}:{lineno}: header {','.join(header)!r} is not "
                         f"{','.join(want)!r} (the {subset.upper()} metadata); use the "
                         f"{subset}_meta_data.csv of the AVSBench release")
    body = rows[1:]
    require_rows(path, body, ",".join(want))
    out = []
    for lineno, r in body:
        if len(r) != len(want):
            raise ValueError(f"{path}:{lineno}: expected {len(want)} comma-separated fields "
                             f"({','.join(want)}), got {len(r)}; fix the row")
        values = {k: v.strip() for k, v in zip(want, r)}
        for k, v in values.items():
            if not v:
                raise ValueError(f"{path}:{lineno}: empty {k}; fill it or remove the row")
        if values["split"] not in SPLITS:
            raise ValueError(f"{path}:{lineno}: unknown split {values['split']!r}; use one of "
                             f"{', '.join(SPLITS)}")
        out.append((lineno, values))
    return out


def read_avsbench(root: str | Path, subset: str) -> AVSIndex:
    """Read the ``subset`` (``"s4"`` | ``"ms3"``) metadata under ``root``; media need not exist."""
    key = str(subset).strip().lower()
    if key not in SUBSETS:
        raise ValueError(f"unknown AVSBench subset {subset!r}; use one of {', '.join(SUBSETS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AVSBench root {root} does not exist; pass --root DIR")
    path = find_meta(root, key)
    base = path.parent / f"{key}_data"
    quirks: Counter = Counter()
    records: list[AVSRecord] = []
    seen: dict[tuple[str, str], int] = {}
    splits_of: dict[str, set[str]] = {}
    for lineno, v in _rows(path, key):
        vid = v["name"] if key == "s4" else v["video_id"]
        split = v["split"]
        if (split, vid) in seen:
            quirks["duplicate_video_id"] += 1  # first row wins: its category/start are kept
            continue
        seen[(split, vid)] = lineno
        splits_of.setdefault(vid, set()).add(split)
        if key == "s4":
            try:
                start = int(v["start"])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: start {v['start']!r} is not an integer "
                                 f"second; fix the row") from None
            category = v["category"]
            frames, masks, wav, mel = _s4_paths(base, split, category, vid)
        else:
            start, category = None, None
            frames, masks, wav, mel = _ms3_paths(base, split, vid)
        records.append(AVSRecord(video_id=vid, split=split, category=category, start=start,
                                 frames=frames, masks=masks, audio=wav, log_mel=mel))
    two = sum(1 for s in splits_of.values() if len(s) > 1)
    if two:
        quirks["video_in_two_splits"] = two
    categories = sorted({r.category for r in records if r.category is not None})
    return AVSIndex(subset=key, root=root, meta_file=path, data_dir=base, categories=categories,
                    records=records, quirks=dict(quirks))


def avs_stats(index: AVSIndex) -> dict:
    """JSON-ready statistics of an AVSBench subset (see ``avprompt.data.stats``)."""
    splits = {s: index.split(s) for s in SPLITS}
    out: dict = {
        "dataset": f"avs-{index.subset}",
        "kind": "avs",
        "meta_file": str(index.meta_file),
        "rows": len(index.records),
        "splits": {s: len(r) for s, r in splits.items()},
        "unique_videos": {s: len({x.video_id for x in r}) for s, r in splits.items()},
        "frames_per_video": FRAMES_PER_VIDEO,
        "masks": {s: sum(len(x.masks) for x in r) for s, r in splits.items()},
        "categories": len(index.categories),
        "category_names": list(index.categories),
    }
    if index.subset == "s4":
        out["per_category"] = {s: dict(sorted(Counter(x.category for x in r).items()))
                               for s, r in splits.items()}
    out["media_present"] = index.media_counts()
    out["quirks"] = dict(index.quirks)
    return out
