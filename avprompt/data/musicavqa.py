"""MUSIC-AVQA question reader (audio-visual question answering).

``read_musicavqa(root, prefer="update")`` reads ``avqa-{train,val,test}.json`` from
``root/json_update/`` (the authors' corrected annotations) when that folder holds any of them,
else from ``root/json/`` (``prefer="original"`` reverses the order). ``root`` may also be the
repository's parent of ``data/`` (``root/data/json_update/`` ...), or the ``json`` /
``json_update`` folder itself (that one is read, whatever ``prefer`` says: the way to get the
statistics of the original files through ``avprompt data stats --root .../json``). Any of the
three splits may be absent, but at least one must be there.

Each file is a JSON list of records: ``video_id``, ``question_id``, ``type`` (a JSON-encoded
string such as ``"[\\"Audio\\", \\"Counting\\"]"``: modality group, question type),
``question_content`` with placeholders ``<Object> <LR> <LRer> <FL> <TH> <LL> <BA>``,
``templ_values`` (a JSON-encoded list filling the placeholders in order), ``question_deleted`` and
the answer under ``anser`` (sic; ``answer`` is accepted too). ``AVQAQuestion.question`` is the
filled text, ``template`` the raw one.

Answers: ``AVQAIndex.answers`` is the closed answer set in first-appearance order over train,
then val, then test: with the train file present its answers come first, in the order the
original loaders build the answer vocabulary from it.

Media: the videos are expected at ``<base>/videos/<video_id>.mp4``, ``<base>`` being the folder
holding ``json_update/`` or ``json/`` (usually ``root``; ``AVQAIndex.media_root``); the path is
recorded in ``AVQAQuestion.video`` whether or not the file exists.

Bad input is a one-line error naming the file (and record) and the fix: malformed JSON, a file
that is not a list, a missing field, an unreadable ``type`` / ``templ_values``, more placeholders
than ``templ_values``. Quirks (counted in ``AVQAIndex.quirks``):

* ``duplicate_question_id``: rows whose question id was already read (within or across splits;
  the original val file has such rows, with conflicting answers): the first is kept, the others
  dropped; ``duplicate_conflicting_answer`` counts the dropped ones whose answer differs;
* ``unused_templ_values``: questions with more ``templ_values`` than placeholders (extras ignored);
* ``unknown_placeholder``: a ``<...>`` tag outside the seven above (filled all the same);
* ``unknown_type``: a (group, type) pair outside the nine of the benchmark (kept);
* ``question_deleted``: questions flagged deleted (kept, ``deleted=True``).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from avprompt.data.layout import read_text

SPLITS = ("train", "val", "test")
SOURCES = {"update": ("json_update", "json"), "original": ("json", "json_update")}
PLACEHOLDERS = ("<Object>", "<LR>", "<LRer>", "<FL>", "<TH>", "<LL>", "<BA>")
#: the benchmark's question types, per modality group (reporting order)
QUESTION_TYPES: dict[str, tuple[str, ...]] = {
    "Audio": ("Counting", "Comparative"),
    "Visual": ("Counting", "Location"),
    "Audio-Visual": ("Existential", "Counting", "Location", "Comparative", "Temporal"),
}
_TAG = re.compile(r"<[^<>\s]+>")
_REQUIRED = ("video_id", "question_id", "type", "question_content", "templ_values")


@dataclass
class AVQAQuestion:
    question_id: int | str
    video_id: str
    split: str
    group: str  # "Audio" | "Visual" | "Audio-Visual"
    qtype: str  # "Counting", "Location", ...
    template: str  # question_content as published, with placeholders
    templ_values: list[str]
    question: str  # template with placeholders filled
    answer: str
    deleted: bool
    video: str = ""  # <root>/videos/<video_id>.mp4 (may not exist)


@dataclass
class AVQAIndex:
    root: Path
    media_root: Path  # the folder holding json_update/ or json/; videos/ is expected there
    source: str  # "json_update" | "json"
    questions: list[AVQAQuestion]
    answers: list[str]
    quirks: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # split -> file read
    rows_read: dict[str, int] = field(default_factory=dict)  # split -> records in the file

    def split(self, name: str) -> list[AVQAQuestion]:
        return [q for q in self.questions if q.split == name]

    def answer_index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.answers)}


def video_path(root: Path, video_id: str) -> Path:
    return root / "videos" / f"{video_id}.mp4"


def find_source(root: Path, prefer: str = "update") -> tuple[str, dict[str, Path]]:
    """(source folder name, {split: file}) of the first folder in preference order holding any
    ``avqa-<split>.json``: ``root/<source>/``, ``root/data/<source>/``, or ``root`` itself when
    it is a ``json``/``json_update`` folder."""
    if prefer not in SOURCES:
        raise ValueError(f"unknown prefer={prefer!r}; use one of {', '.join(SOURCES)}")
    candidates = [(source, (root / sub if sub else root) / source)
                  for sub in ("", "data") for source in SOURCES[prefer]]
    if root.name in SOURCES["update"]:  # --root at the json folder: read exactly that one
        candidates.insert(0, (root.name, root))
    for source, folder in candidates:
        files = {s: folder / f"avqa-{s}.json" for s in SPLITS}
        files = {s: p for s, p in files.items() if p.is_file()}
        if files:
            return source, files
    raise FileNotFoundError(f"{root}: no json_update/avqa-{{train,val,test}}.json nor "
                            f"json/avqa-*.json; point --root at the MUSIC-AVQA folder holding "
                            f"json_update/ or json/")


def _load(path: Path) -> list:
    text = read_text(path, "MUSIC-AVQA question file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno}); "
                         f"restore the file from the MUSIC-AVQA release") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of question records, got "
                         f"{type(data).__name__}; use the avqa-<split>.json of the release")
    if not data:
        raise ValueError(f"{path} is empty (no question records); restore the file from the "
                         f"MUSIC-AVQA release")
    return data


def _json_field(where: str, key: str, raw) -> list:
    """``type`` / ``templ_values`` are JSON-encoded strings; a plain list is accepted too."""
    if isinstance(raw, list):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key} {raw!r} is not a JSON-encoded list; fix the record")
    return value


def fill_template(template: str, values: list[str]) -> tuple[str, int, list[str]]:
    """``(question, placeholders, unknown tags)``: each ``<...>`` tag replaced by the next value,
    in order (as the original loaders do); tags beyond the values stay as they are."""
    tags = _TAG.findall(template)
    it = iter(values)
    filled = _TAG.sub(lambda m: str(next(it, m.group(0))), template)
    return filled, len(tags), [t for t in tags if t not in PLACEHOLDERS]


def read_musicavqa(root: str | Path, prefer: str = "update") -> AVQAIndex:
    """Read the MUSIC-AVQA question files under ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MUSIC-AVQA root {root} does not exist; pass --root DIR")
    source, files = find_source(root, prefer)
    base = next(iter(files.values())).parent.parent  # the folder holding json*/ (and videos/)
    known = {(g, t) for g, ts in QUESTION_TYPES.items() for t in ts}
    quirks: Counter = Counter()
    questions: list[AVQAQuestion] = []
    first: dict = {}  # question_id -> the kept question
    answers: dict[str, None] = {}
    rows_read: dict[str, int] = {}
    for split, path in files.items():
        data = _load(path)
        rows_read[split] = len(data)
        for i, rec in enumerate(data):
            where = f"{path}: record {i}"
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: not a JSON object; fix the record")
            if "question_id" in rec:
                where += f" (question_id {rec['question_id']})"
            missing = [k for k in _REQUIRED if k not in rec]
            if "anser" not in rec and "answer" not in rec:
                missing.append("anser")
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}; fix the record")
            answer = str(rec["anser"] if "anser" in rec else rec["answer"]).strip()
            qid = rec["question_id"]
            if qid in first:
                quirks["duplicate_question_id"] += 1  # the first one read is kept
                if first[qid].answer != answer:
                    quirks["duplicate_conflicting_answer"] += 1
                continue
            kind = _json_field(where, "type", rec["type"])
            if len(kind) != 2 or not all(isinstance(x, str) for x in kind):
                raise ValueError(f"{where}: type {rec['type']!r} is not [group, type]; fix the "
                                 f"record")
            group, qtype = kind
            if (group, qtype) not in known:
                quirks["unknown_type"] += 1
            values = [str(v) for v in _json_field(where, "templ_values", rec["templ_values"])]
            template = str(rec["question_content"])
            question, n_tags, unknown = fill_template(template, values)
            if n_tags > len(values):
                raise ValueError(f"{where}: {n_tags} placeholders in {template!r} but "
                                 f"{len(values)} templ_values; fix templ_values")
            if n_tags < len(values):
                quirks["unused_templ_values"] += 1
            if unknown:
                quirks["unknown_placeholder"] += 1
            deleted = bool(rec.get("question_deleted", 0))
            quirks["question_deleted"] += deleted
            q = AVQAQuestion(question_id=qid, video_id=str(rec["video_id"]), split=split,
                             group=group, qtype=qtype, template=template, templ_values=values,
                             question=question, answer=answer, deleted=deleted,
                             video=str(video_path(base, str(rec["video_id"]))))
            first[qid] = q
            questions.append(q)
            answers.setdefault(answer, None)
    return AVQAIndex(root=root, media_root=base, source=source, questions=questions,
                     answers=list(answers),
                     quirks={k: v for k, v in quirks.items() if v}, files=files,
                     rows_read=rows_read)


def avqa_stats(index: AVQAIndex) -> dict:
    """JSON-ready statistics of the MUSIC-AVQA questions (see ``avprompt.data.stats``)."""
    splits = {s: index.split(s) for s in SPLITS if s in index.files}
    videos = {q.video_id for q in index.questions}
    return {
        "dataset": "musicavqa",
        "kind": "avqa",
        "source": index.source,
        "files": {s: str(p) for s, p in index.files.items()},
        "rows_read": dict(index.rows_read),
        "rows": len(index.questions),
        "splits": {s: len(r) for s, r in splits.items()},
        "unique_videos": {s: len({q.video_id for q in r}) for s, r in splits.items()},
        "groups": {s: dict(Counter(q.group for q in r)) for s, r in splits.items()},
        "types": {s: {f"{g}/{t}": n for (g, t), n in sorted(
            Counter((q.group, q.qtype) for q in r).items())} for s, r in splits.items()},
        "type_pairs": len({(q.group, q.qtype) for q in index.questions}),
        "answers": len(index.answers),
        "answer_names": list(index.answers),
        "answers_per_split": {s: len({q.answer for q in r}) for s, r in splits.items()},
        "media_present": sum(1 for v in videos if video_path(index.media_root, v).is_file()),
        "videos": len(videos),
        "quirks": dict(index.quirks),
    }
