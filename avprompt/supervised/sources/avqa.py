"""Source ``avqa``: MUSIC-AVQA questions on videos (``json_update/avqa-<split>.json`` + ``videos/``).

Data: ``<data root>/<task.dataset>/`` (``musicavqa``), read by ``avprompt.data.musicavqa``; on
``--data synthav`` the SynthAV AVQA set is generated there on first use. Classes = the closed
answer set (``AVQAIndex.answers``); deleted questions and answers outside the set are dropped and
counted (``extra()``). Question words: lower-cased ``\\w+`` runs of the TRAIN questions (so "?" and
other punctuation vanish), in first-appearance order; id 0 = padding, 1 = unknown word.

Example = one VIDEO with all its questions of the split: the towers are the cost and every
question of a video shares one encoding. A batch of B_v videos and their B_q questions:
    frames (B_v, T, 3, S, S) / audio (B_v, T, sr)   decoded media (the shared media cache), or the
                                                     cached frozen ``feat_a`` / ``feat_v`` where the
                                                     encoder mode reads them (see ``batches``)
    question (B_q, L_q) long, 0-padded;  question_len (B_q,);  answer (B_q,) long
    question_video (B_q,) long: the row of each question's video in the batch
Question order everywhere (predictions, ``ids``, ``score``): videos in split order (first
appearance in the split's file; not shuffled for val/test), each video's questions in file order.

Metrics (percent; ``avqa_scores``): ``acc`` (all questions pooled, the primary), ``acc_<group>``
and ``acc_<group>_<type>`` with group ``audio`` | ``visual`` | ``av`` and the type lower-cased
(``acc_av_temporal``); a type with no question in the split is left out. Per-unit scores: only
``acc`` (per question 0/100), since a group's mean over all questions is not the group accuracy.
Floors: the better of two constant answers fitted on train (``avqa_floors``: the majority answer
of the question's (group, type), or the global one), for every metric reported.
"""
from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avprompt.data.avqa_metrics import GROUP_TYPES, avqa_floors, avqa_scores
from avprompt.supervised.sources import Source, register_source

GROUP_KEYS = {"Audio": "audio", "Visual": "visual", "Audio-Visual": "av"}
#: every metric name this source can report, in reporting order
METRICS = ("acc",) + tuple(f"acc_{k}" for k in GROUP_KEYS.values()) + tuple(
    f"acc_{GROUP_KEYS[g]}_{t.lower()}" for g, ts in GROUP_TYPES.items() for t in ts)
PAD, UNK = 0, 1
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def metric_name(key: str) -> str:
    """``avqa_scores`` key ("overall", "Audio", "Audio-Visual/Counting") -> metric name."""
    if key == "overall":
        return "acc"
    group, _, qtype = key.partition("/")
    return f"acc_{GROUP_KEYS[group]}" + (f"_{qtype.lower()}" if qtype else "")


@dataclass
class VideoExample:
    record: object  # the video's ClipRecord (media cache key)
    questions: list = field(default_factory=list)  # AVQAQuestion, file order


@register_source("avqa")
class AVQASource(Source):
    unit = "question"  # per-unit scores are per question (a video carries several)

    def __init__(self, ws, task):
        super().__init__(ws, task)
        self._splits = None
        self._feats: dict[tuple, torch.Tensor] = {}

    # ----- reading -------------------------------------------------------------------------------
    def _folder(self) -> Path:
        kind, root = self.ws.root
        if kind != "dir":
            raise ValueError(f"task {self.task.name} reads MUSIC-AVQA question files, not a manifest; "
                             "pass --data synthav or a folder holding musicavqa/")
        folder = Path(root) / self.task.dataset
        if self.ws.data == "synthav":
            from avprompt.synthav.avqa_set import META_FILE, generate_avqa
            if not (folder / META_FILE).is_file():
                print(f"generating the SynthAV AVQA set ({self.ws.synth_size}, seed {self.ws.synth_seed}) "
                      f"into {folder} (first use only)", file=sys.stderr, flush=True)
            generate_avqa(folder, size=self.ws.synth_size, seed=self.ws.synth_seed)  # returns at once if there
        return folder

    def splits(self) -> dict[str, list]:
        if self._splits is None:
            self._read()
        return self._splits

    def _read(self) -> None:
        from avprompt.data.musicavqa import read_musicavqa
        from avprompt.data.records import ClipRecord, DatasetIndex
        folder = self._folder()
        try:
            index = read_musicavqa(folder)
        except FileNotFoundError:
            raise FileNotFoundError(f"task {self.task.name} needs {folder} holding json_update/avqa-"
                                    "{train,val,test}.json (or json/) and videos/<video_id>.mp4; "
                                    "point --data at the folder containing musicavqa/") from None
        self.index, self.answers = index, list(index.answers)
        aid = index.answer_index()
        self.dropped = {"deleted": 0, "answer_outside_set": 0, "bad_media": 0}
        by_split: dict[str, dict[str, list]] = {s: {} for s in ("train", "val", "test")}
        for q in index.questions:
            if q.deleted or q.answer not in aid:
                self.dropped["deleted" if q.deleted else "answer_outside_set"] += 1
                continue
            if q.split in by_split:
                by_split[q.split].setdefault(q.video_id, []).append(q)
        # one ClipRecord per (video, split); a video in two splits gets a split suffix
        owner: dict[str, str] = {}
        records, examples = [], {s: [] for s in by_split}
        for s, videos in by_split.items():
            for vid, qs in videos.items():
                cid = vid if owner.setdefault(vid, s) == s else f"{vid}.{s}"
                rec = ClipRecord(clip_id=cid, video_id=vid, media=qs[0].video, split=s)
                records.append(rec)
                examples[s].append(VideoExample(rec, qs))
        # the shared media path (prepare -> MediaCache -> ClipTensors, feature cache) finds its
        # dataset index by the task's dataset name: hand it this one
        self.ws.add_index(DatasetIndex(self.task.dataset, folder, self.answers, records))
        self.bad = self.ws.bad_clips(self.task.name)
        for s in examples:
            self.dropped["bad_media"] += sum(len(e.questions) for e in examples[s] if e.record.clip_id in self.bad)
            examples[s] = [e for e in examples[s] if e.record.clip_id not in self.bad]
        self.vocab = {"<pad>": PAD, "<unk>": UNK}
        for e in examples["train"]:
            for q in e.questions:
                for w in words(q.question):
                    self.vocab.setdefault(w, len(self.vocab))
        self._aid = aid
        self._splits = self.require_splits(examples, f"the MUSIC-AVQA data at {folder}")

    # ----- facts ---------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        self.splits()
        return list(self.answers)

    def context(self) -> dict:
        self.splits()
        return {"vocab_size": len(self.vocab)}

    def questions(self, split: str) -> list:
        """The split's questions in prediction order (videos in order, then file order)."""
        return [q for e in self.splits()[split] for q in e.questions]

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(w, UNK) for w in words(text)] or [UNK]  # an empty question reads as unknown

    # ----- batches -------------------------------------------------------------------------------
    def _cached(self, modality: str, split: str) -> torch.Tensor:
        """Frozen features (N_videos, T, D) of a split (each video encoded once, disk-cached)."""
        if (modality, split) not in self._feats:
            recs = [e.record for e in self.splits()[split]]
            self._feats[(modality, split)] = self.ws.features(self.task.name, modality, recs)
        return self._feats[(modality, split)]

    def batches(self, model, split: str, batch_size: int, shuffle_seed: int | None = None):
        """Batches of ``batch_size`` VIDEOS with all their questions (module docstring). The frozen
        mode reads cached ``feat_a`` (and ``feat_v`` when the head reads no tokens); the frames a
        token-reading head needs, and all media of the in-network modes, are decoded."""
        from avprompt.engine.batches import iterate
        examples = self.splits()[split]
        cached = model.mode.runs_on == "features"
        tokens = model.head.needs_tokens
        media = ("" if cached else "a") + ("v" if tokens or not cached else "")
        row = {id(e): i for i, e in enumerate(examples)}

        def make(chunk):
            b = self.ws.clips(self.task.name).inputs([e.record for e in chunk], media) if media else {}
            if cached:
                idx = torch.tensor([row[id(e)] for e in chunk], dtype=torch.long)
                b["feat_a"] = self._cached("a", split)[idx]
                if not tokens:
                    b["feat_v"] = self._cached("v", split)[idx]
            qs = [(i, q) for i, e in enumerate(chunk) for q in e.questions]
            toks = [self.encode(q.question) for _, q in qs]
            question = torch.zeros(len(toks), max(map(len, toks)), dtype=torch.long)
            for j, t in enumerate(toks):
                question[j, :len(t)] = torch.tensor(t)
            b.update(question=question, question_len=torch.tensor([len(t) for t in toks]),
                     question_video=torch.tensor([i for i, _ in qs]),
                     answer=torch.tensor([self._aid[q.answer] for _, q in qs]))
            return b
        return iterate(examples, batch_size, make, shuffle_seed)

    # ----- scoring -------------------------------------------------------------------------------
    def _columns(self, split: str):
        qs = self.questions(split)
        return [q.answer for q in qs], [q.group for q in qs], [q.qtype for q in qs]

    def score(self, preds: dict, split: str) -> tuple[dict, dict]:
        """``preds["answer_scores"]`` (N_q, C) in question order -> (metrics, {"acc": (N_q,) 0/100})."""
        scores = np.asarray(preds["answer_scores"])
        answers, groups, qtypes = self._columns(split)
        if scores.shape != (len(answers), len(self.answers)):
            raise ValueError(f"task {self.task.name}: answer_scores of shape {scores.shape} for "
                             f"{len(answers)} {split} questions and {len(self.answers)} answers; "
                             "predict with this source's batches")
        predicted = [self.answers[i] for i in scores.argmax(1)]
        res = avqa_scores(predicted, answers, groups, qtypes)
        metrics = {metric_name(k): v["accuracy"] for k, v in res.items()}
        per_q = 100.0 * (np.array(predicted) == np.array(answers)).astype(np.float64)
        return metrics, {"acc": per_q}

    def floors(self, split: str, metrics) -> dict:
        """Best constant answer (per (group, type) majority, or global majority, fitted on train)
        for each asked metric and every group/type accuracy the split has (``score`` reports them
        though only ``acc`` has per-question scores)."""
        fl = avqa_floors(*self._columns("train"), *self._columns(split))
        best: dict[str, float] = {}
        for kind in ("type_majority", "global_majority"):
            for k, v in fl[kind].items():
                m = metric_name(k)
                best[m] = max(best.get(m, 0.0), v["accuracy"])
        return {m: best[m] for m in METRICS if m in best}

    def ids(self, split: str):
        return np.array([q.question_id for q in self.questions(split)])

    def stored_predictions(self, preds: dict) -> dict:
        return {"answer": np.asarray(preds["answer_scores"]).argmax(1).astype(np.int16)}

    def data_identity(self) -> dict:
        self.splits()
        h = hashlib.sha256()
        for s in sorted(self.index.files):
            h.update(s.encode() + b"\0" + Path(self.index.files[s]).read_bytes())
        kind, root = self.ws.root
        folder = Path(root) / self.task.dataset
        location = self.ws.data_id if self.ws.data == "synthav" else f"{kind}:{folder.resolve()}"
        return {"location": location, "dataset": self.task.dataset, "annotations": h.hexdigest()[:16]}

    def extra(self) -> dict:
        sp = self.splits()
        return {**{f"n_{s}": len(sp[s]) for s in sp},  # videos
                **{f"n_{s}_questions": sum(len(e.questions) for e in sp[s]) for s in sp},
                "dropped_questions": dict(self.dropped), "bad_media": len(self.bad),
                "vocab_size": len(self.vocab), "question_source": self.index.source}
