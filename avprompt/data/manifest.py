"""Manifests: any dataset (or your own videos) as one CSV or JSONL file.

``--data manifest:FILE`` runs every task on the clips a manifest lists. ``.jsonl`` files are
JSON Lines, anything else is CSV. Columns / keys:

============== ========== =============================================================
column         required   meaning
============== ========== =============================================================
media          yes        mp4 path (or pre-extracted frames folder); relative paths are
                          resolved against the manifest's folder
split          yes        ``train`` | ``val`` | ``test``
clip_id        no         unique key; default ``video_id`` (then ``#2``, ``#3`` on repeats)
video_id       no         default: the media file stem
labels         no         video-level class names; CSV: ``|``-separated
segment_labels no         10 entries, one class name per one-second segment, empty (or
                          ``background``) for background; CSV: ``|``-separated
audio_segments no         10 entries, each a list of class names (dense audio labels);
visual_segments           CSV: ``|`` between segments, ``+`` between names in a segment
============== ========== =============================================================

In JSONL the list columns must be JSON lists (``"labels": ["dog"]``): a bare string is an error
naming the row (read as a list it would be the classes d, o, g).

Classes: a CSV may start with a comment line ``# classes: name1|name2|...`` and a JSONL file
with an object ``{"classes": [...]}``; that fixes the class order (indices). Without it classes
are the names in order of first appearance. ``export_manifest`` always writes the class line, so
export -> load reproduces the index exactly, and writes absolute media paths, so the manifest
works from any folder whatever ``--root`` was relative to.

The file is UTF-8 (a BOM is fine); other bytes, a file without clip rows and a CSV without a
``media`` or ``split`` column are one-line errors naming the file.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path

from avprompt.data.layout import read_text, require_rows
from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex

COLUMNS = ["clip_id", "video_id", "media", "split", "labels", "segment_labels",
           "audio_segments", "visual_segments"]
REQUIRED = ("media", "split")
_BACKGROUND = {"", "background", "-1"}
_LIST_KEYS = ("labels", "segment_labels", "audio_segments", "visual_segments")


def format_help() -> str:
    """The manifest format (this module's column table), for ``data export-manifest`` alone."""
    doc = __doc__.split("\n", 1)[1].split("\nThe file is UTF-8")[0].strip().replace("``", "")
    return doc + "\n\nWrite one from a dataset: avprompt data export-manifest --dataset ave " \
                 "--root DIR --out FILE.jsonl\nUse it: avprompt bench --data manifest:FILE"


def _check_jsonl_types(path: Path, lineno: int, obj: dict) -> None:
    """JSON list columns must be lists: iterating a string would read "dog" as d, o, g."""
    for key in _LIST_KEYS:
        v = obj.get(key)
        if v is None:
            continue
        if isinstance(v, str):
            raise ValueError(f"{path}:{lineno}: {key!r} must be a JSON list, got the string "
                             f"{json.dumps(v)}; write \"{key}\": [{json.dumps(v)}]")
        if not isinstance(v, list):
            raise ValueError(f"{path}:{lineno}: {key!r} must be a JSON list, got "
                             f"{json.dumps(v)}")
        if key.endswith("_segments") and key != "segment_labels":
            for s in v:
                if not isinstance(s, list):
                    raise ValueError(f"{path}:{lineno}: {key!r} needs one list of class names "
                                     f"per segment, got {json.dumps(s)}; write [{json.dumps(s)}]")


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def _raw_rows(path: Path) -> tuple[list[str] | None, list[tuple[int, dict]]]:
    classes, rows = None, []
    text = read_text(path, "manifest")
    if _is_jsonl(path):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object "
                                 "({\"media\": ..., \"split\": ...}), got "
                                 f"{type(obj).__name__}")
            if "classes" in obj and "media" not in obj:
                if not isinstance(obj["classes"], list):
                    raise ValueError(f"{path}:{lineno}: 'classes' must be a JSON list of names")
                classes = [str(c) for c in obj["classes"]]
            else:
                _check_jsonl_types(path, lineno, obj)
                rows.append((lineno, obj))
        return classes, rows
    lines = text.splitlines()
    if lines and lines[0].startswith("#"):
        head = lines.pop(0)[1:].strip()
        if head.lower().startswith("classes:"):
            classes = [c.strip() for c in head.split(":", 1)[1].split("|") if c.strip()]
    header_line = 1 + (len(text.splitlines()) > len(lines))
    reader = csv.DictReader(io.StringIO("\n".join(lines), newline=""))
    fields = [f.strip() for f in reader.fieldnames or []]
    if fields:
        missing = [c for c in REQUIRED if c not in fields]
        if missing:
            raise ValueError(f"{path}:{header_line}: no column {', '.join(map(repr, missing))} in "
                             f"the header ({', '.join(fields)}); a CSV manifest needs columns "
                             "media and split")
    for row in reader:
        lineno = header_line - 1 + reader.line_num  # physical line (blank lines are skipped)
        row = {(k or "").strip(): v for k, v in row.items()}
        lists = {}
        for key in _LIST_KEYS:
            v = (row.get(key) or "").strip()
            if not v:
                continue
            parts = v.split("|")
            lists[key] = ([p.split("+") if p else [] for p in parts]
                          if key.endswith("_segments") and key != "segment_labels" else parts)
        rows.append((lineno, {**{k: v for k, v in row.items() if k}, **lists}))
    return classes, rows


def read_manifest(path: str | Path) -> DatasetIndex:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found; pass --data manifest:FILE with an "
                                "existing CSV or JSONL file")
    # media paths are relative to the manifest's folder, whatever the working directory
    path = Path(os.path.abspath(path))
    classes, rows = _raw_rows(path)
    require_rows(path, rows, "clip", "add one row per clip (`avprompt data export-manifest` "
                                     "prints the columns)")
    fixed = classes is not None
    classes = list(classes or [])
    idx = {c: i for i, c in enumerate(classes)}

    def cls(name: str, lineno: int) -> int:
        name = str(name).strip()
        if name not in idx:
            if fixed:
                raise ValueError(f"{path}:{lineno}: class {name!r} is not in the manifest's "
                                 "class list; add it to the classes line")
            idx[name] = len(classes)
            classes.append(name)
        return idx[name]

    records, seen = [], Counter()
    for lineno, row in rows:
        media = str(row.get("media") or "").strip()
        split = str(row.get("split") or "").strip().lower()
        if not media:
            raise ValueError(f"{path}:{lineno}: column 'media' is empty; give the mp4 path")
        if split not in ("train", "val", "test"):
            raise ValueError(f"{path}:{lineno}: split must be train/val/test, got {split!r}")
        if not Path(media).is_absolute():
            media = str(path.parent / media)
        vid = str(row.get("video_id") or "").strip() or Path(media).stem
        seg_raw = row.get("segment_labels")
        seg = [-1] * NUM_SEGMENTS
        if seg_raw:
            if len(seg_raw) != NUM_SEGMENTS:
                raise ValueError(f"{path}:{lineno}: segment_labels needs {NUM_SEGMENTS} "
                                 f"entries, got {len(seg_raw)}")
            seg = [-1 if s is None or str(s).strip().lower() in _BACKGROUND else cls(s, lineno)
                   for s in seg_raw]
        vlabels = {cls(n, lineno) for n in (row.get("labels") or []) if str(n).strip()}
        vlabels |= {s for s in seg if s >= 0}
        dense = {}
        for key in ("audio_segments", "visual_segments"):
            d = row.get(key)
            if d:
                if len(d) != NUM_SEGMENTS:
                    raise ValueError(f"{path}:{lineno}: {key} needs {NUM_SEGMENTS} entries")
                dense[key] = [sorted({cls(n, lineno) for n in s if str(n).strip()}) for s in d]
        clip_id = str(row.get("clip_id") or "").strip() or vid
        seen[clip_id] += 1
        if seen[clip_id] > 1:
            if str(row.get("clip_id") or "").strip():
                raise ValueError(f"{path}:{lineno}: clip_id {clip_id!r} is repeated; clip ids "
                                 "must be unique")
            clip_id = f"{clip_id}#{seen[clip_id]}"
        records.append(ClipRecord(clip_id=clip_id, video_id=vid, media=media, split=split,
                                  segment_labels=seg, video_labels=sorted(vlabels), **dense))
    return DatasetIndex(name=f"manifest-{path.stem}", root=path.parent, classes=classes,
                        records=records)


def _names(index: DatasetIndex, ids: list[int]) -> list[str]:
    return [index.classes[i] for i in ids]


def export_manifest(index: DatasetIndex, path: str | Path) -> Path:
    """Write ``index`` as a manifest (JSONL for ``.jsonl``, else CSV); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in index.records:
        # absolute: a path relative to the working directory (a relative --root) would be read
        # back relative to the manifest's folder and point nowhere
        row = {"clip_id": r.clip_id, "video_id": r.video_id, "media": str(Path(r.media).resolve()),
               "split": r.split, "labels": _names(index, r.video_labels),
               "segment_labels": [index.classes[s] if s >= 0 else "" for s in r.segment_labels]}
        for key in ("audio_segments", "visual_segments"):
            d = getattr(r, key)
            row[key] = [_names(index, s) for s in d] if d is not None else None
        rows.append(row)
    if _is_jsonl(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps({"classes": index.classes, "name": index.name}) + "\n")
            for row in rows:
                f.write(json.dumps(row) + "\n")
        return path
    bad = [c for c in index.classes if "|" in c or "+" in c]
    if bad:
        raise ValueError(f"class name {bad[0]!r} contains '|' or '+', which the CSV manifest "
                         "uses as separators; export to a .jsonl file instead")
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write("# classes: " + "|".join(index.classes) + "\n")
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows:
            out = dict(row)
            out["labels"] = "|".join(row["labels"])
            out["segment_labels"] = "|".join(row["segment_labels"])
            for key in ("audio_segments", "visual_segments"):
                out[key] = "" if row[key] is None else "|".join("+".join(s) for s in row[key])
            w.writerow(out)
    return path
