"""Few-shot splits under two protocols.

``standard`` (default)
    * shots: K training clips per class, drawn without replacement from the official train split
      with ``numpy.random.default_rng([seed, class_index])`` (adding a class never changes the
      draws of the others); kept in train-file order.
    * leakage rule: a train clip whose *video* also appears in the validation or test clips is
      never a shot, and a validation clip whose video is in test is dropped (AVE lists some
      videos in two splits with different events).
    * validation: the official val split (LLP: ``AVVP_val_pd.csv``). A dataset without one
      (VGG-Sound, manifests without ``val`` rows) holds out ``val_fraction`` (10 %) of each
      class's train clips, at least one when the class has two or more, with
      ``default_rng([seed, 1, class_index])``; shots are drawn from the rest.
    * test: the official test split.
``reference``
    The original DG-SCT rules: first K clips per class in train-file order, no leakage filter,
    validation = official val split (never test: nothing is ever selected on test).

Both: ``llp-cls`` shots come only from single-label videos (``Task.single_label_shots``). When K
exceeds what a class has, all its clips are taken and a warning lists each such class with its
count (also in ``Split.notes["short_classes"]``); a class with no eligible clip (LLP "Speech")
therefore has no shot. ``shots=None`` takes every eligible clip (full training, pre-training);
``shots=0`` gives an empty train list (zero-shot).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avprompt.data.records import ClipRecord, DatasetIndex
from avprompt.data.tasks import primary_label, shot_eligible
from avprompt.tasks import Task, few_shot_task

PROTOCOLS = ("standard", "reference")


@dataclass
class Split:
    dataset: str
    task: str
    protocol: str
    shots: int | None
    seed: int
    train: list[str]
    val: list[str]
    test: list[str]
    notes: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """Content hash (16 hex) of everything that defines the split (not the notes)."""
        payload = {k: getattr(self, k) for k in
                   ("dataset", "task", "protocol", "shots", "seed", "train", "val", "test")}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {**asdict(self), "hash": self.hash}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        data = json.loads(Path(path).read_text())
        stored = data.pop("hash", None)
        split = cls(**data)
        if stored is not None and stored != split.hash:
            raise ValueError(f"{path}: split content does not match its hash {stored}; the file "
                             "was edited: recreate it with make_split")
        return split


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")


def _by_class(records: list[ClipRecord], task: Task) -> dict[int, list[ClipRecord]]:
    out: dict[int, list[ClipRecord]] = defaultdict(list)
    for r in records:
        if shot_eligible(task, r):
            out[primary_label(r)].append(r)
    return out


def _hold_out(train: list[ClipRecord], task: Task, seed: int, fraction: float) -> set[str]:
    held: set[str] = set()
    for c, recs in sorted(_by_class(train, task).items()):
        n = len(recs)
        k = max(1, round(fraction * n)) if n >= 2 else 0
        rng = np.random.default_rng([seed, 1, c])
        held.update(recs[i].clip_id for i in rng.choice(n, size=k, replace=False))
    return held


def make_split(index: DatasetIndex, task: str | Task, protocol: str = "standard",
               shots: int | None = 16, seed: int = 1, val_fraction: float = 0.1) -> Split:
    """Few-shot split of ``index`` for ``task`` (see the module docstring for the rules).

    ``task``: a name or its ``Task``; a supervised task is a one-line error (it has no shots)."""
    task = few_shot_task(task)
    _check_protocol(protocol)
    if shots is not None and shots < 0:
        raise ValueError(f"shots must be >= 0 (or None for all), got {shots}")
    train = index.split("train")
    val = index.split("val")
    test = index.split("test")
    notes: dict = {}
    if protocol == "standard":
        test_videos = {r.video_id for r in test}
        if not val:
            held = _hold_out([r for r in train if r.video_id not in test_videos], task, seed,
                             val_fraction)
            val = [r for r in train if r.clip_id in held]
            notes["val_source"] = f"held out {val_fraction:.0%} of train per class (no val split)"
        else:
            notes["val_source"] = "official val split"
        kept_val = [r for r in val if r.video_id not in test_videos]
        notes["val_dropped_video_in_test"] = len(val) - len(kept_val)
        val = kept_val
        forbidden = test_videos | {r.video_id for r in val}
        pool = [r for r in train if r.video_id not in forbidden]
        notes["train_dropped_video_in_val_or_test"] = len(train) - len(pool)
    else:
        notes["val_source"] = "official val split" if val else "none (dataset has no val split)"
        pool = train
    per_class = _by_class(pool, task)
    chosen: set[str] = set()
    short: dict[str, int] = {}
    for c, name in enumerate(index.classes):
        cands = per_class.get(c, [])
        if shots is None:
            picked = cands
        else:
            if len(cands) < shots:
                short[name] = len(cands)
            if protocol == "reference":
                picked = cands[:shots]
            else:
                rng = np.random.default_rng([seed, c])
                take = rng.choice(len(cands), size=min(shots, len(cands)), replace=False)
                picked = [cands[i] for i in sorted(take)]
        chosen.update(r.clip_id for r in picked)
    if short and shots:
        listing = ", ".join(f"{n} ({k})" for n, k in short.items())
        warnings.warn(f"{index.name}/{task.name}: {shots} shots exceed the eligible training clips of "
                      f"{len(short)} classes: {listing}; taking all available", stacklevel=2)
        notes["short_classes"] = short
    return Split(dataset=index.name, task=task.name, protocol=protocol, shots=shots, seed=seed,
                 train=[r.clip_id for r in pool if r.clip_id in chosen],
                 val=[r.clip_id for r in val], test=[r.clip_id for r in test], notes=notes)


def shot_counts(index: DatasetIndex, task: str | Task, protocol: str = "standard",
                ks: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict[int, int]:
    """Training-set size for each K (depends only on per-class counts, not on the seed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: len(make_split(index, task, protocol, k, seed=0).train) for k in ks}
