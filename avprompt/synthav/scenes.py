"""SynthAV ground truth: which object of which kind is visible / audible in each of 10 segments.

A clip is a list of tracks; a track is one object kind with two boolean timelines (visible,
audible). An audio-visual event is a segment where a track is visible AND audible. Distractors are
tracks of OTHER classes of the same set that are only visible (silent) or only audible (off-screen),
so neither modality alone tells which object is the event.

Sampling is pure (no media), cheap, and keyed by (seed, dataset, index), so ground truth does not
depend on worker count or order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from avprompt.synthav.vocab import AVE_KINDS, LLP_KINDS, PRETRAIN_KINDS, ObjectKind

T = 10  # segments per clip (one second each)
DATASETS = ("ave", "llp", "vggsound40k")
KINDS: dict[str, tuple[ObjectKind, ...]] = {"ave": AVE_KINDS, "llp": LLP_KINDS,
                                            "vggsound40k": PRETRAIN_KINDS}
_DATASET_CODE = {"ave": 1, "llp": 2, "vggsound40k": 3, "ids": 9}
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class WorldSize:
    """Clip counts: ave/vggsound40k per class (train, val, test); llp in all (train, val, test).

    llp_single_per_class: LLP training clips drawn single-label per class, in addition to
    ``llp_clips[0]`` mixed ones, so that K-shot LLP classification (shots come only from
    single-label videos) really has K per class up to K=16, with room for the seeds to differ.
    """

    ave_per_class: tuple[int, int, int]
    llp_clips: tuple[int, int, int]
    vgg_per_class: tuple[int, int, int]
    llp_single_per_class: int = 0


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize((1, 1, 1), (4, 2, 2), (1, 0, 1)),
    # small (the default benchmark world): test sets sized so that a paired difference between two
    # methods at K=16 has a 95% CI of at most +-5 points (measured on 20 AVE videos per class and 160
    # LLP: up to +-8.1 on ave-cls and +-5.8 on llp-cls, and the width falls as 1/sqrt(videos));
    # 24 single-label LLP clips per class. results/README.md has the measured widths.
    "small": WorldSize((20, 6, 60), (96, 48, 256), (16, 2, 2), llp_single_per_class=24),
    "medium": WorldSize((60, 12, 20), (480, 96, 144), (60, 8, 8)),
}


@dataclass
class Track:
    kind: int  # index into the dataset's class list
    visible: list[bool]
    audible: list[bool]


@dataclass
class ClipTruth:
    """Ground truth of one clip. event/start/end: AVE and VGG-Sound clips only (-1 otherwise)."""

    dataset: str
    split: str
    video_id: str
    index: int
    tracks: list[Track] = field(default_factory=list)
    event: int = -1
    start: int = -1
    end: int = -1
    llp_offset: int = 0  # LLP filename is <id>_<offset>_<offset+10>

    @property
    def filename(self) -> str:
        if self.dataset == "llp":
            return f"{self.video_id}_{self.llp_offset}_{self.llp_offset + T}"
        return self.video_id

    def segment_labels(self) -> list[int]:
        """Per segment: the class visible AND audible, -1 for background (at most one by design)."""
        out = [-1] * T
        for tr in self.tracks:
            for t in range(T):
                if tr.visible[t] and tr.audible[t]:
                    out[t] = tr.kind
        return out

    def visible_sets(self) -> list[set[int]]:
        return [{tr.kind for tr in self.tracks if tr.visible[t]} for t in range(T)]

    def audible_sets(self) -> list[set[int]]:
        return [{tr.kind for tr in self.tracks if tr.audible[t]} for t in range(T)]

    def to_json(self) -> dict:
        d = asdict(self)
        for tr in d["tracks"]:  # compact "0011100000" strings keep the truth file small
            tr["visible"] = "".join("1" if v else "0" for v in tr["visible"])
            tr["audible"] = "".join("1" if a else "0" for a in tr["audible"])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ClipTruth":
        d = dict(d)
        d["tracks"] = [Track(tr["kind"], [c == "1" for c in tr["visible"]],
                             [c == "1" for c in tr["audible"]]) for tr in d["tracks"]]
        return cls(**d)


def clip_rng(seed: int, dataset: str, index: int, purpose: int = 0) -> np.random.Generator:
    """Independent stream per (seed, dataset, clip, purpose): 0 = ground truth, 1 = rendering."""
    return np.random.default_rng([seed, _DATASET_CODE[dataset], index, purpose])


def make_ids(n: int, seed: int) -> list[str]:
    """n unique YouTube-like 11-character ids (never starting with '-', which trips up CLIs)."""
    rng = np.random.default_rng([seed, _DATASET_CODE["ids"]])
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        idx = rng.integers(0, len(_ID_ALPHABET), size=11)
        s = "".join(_ID_ALPHABET[i] for i in idx)
        if s[0] != "-" and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _interval(rng: np.random.Generator, lo: int, hi: int) -> list[bool]:
    """A random contiguous run of length in [lo, hi] inside the 10 segments."""
    n = int(rng.integers(lo, hi + 1))
    s = int(rng.integers(0, T - n + 1))
    return [s <= t < s + n for t in range(T)]


def sample_event_clip(rng: np.random.Generator, n_classes: int, event: int) -> ClipTruth:
    """AVE / VGG-Sound style clip: one event class over a contiguous interval plus distractors.

    Outside the event the event object is, before and after independently: absent, visible but
    silent, or audible but off-screen. A silent visible distractor and an off-screen audible
    distractor of two other classes each appear with probability 0.6 over a random interval.
    """
    n = T if rng.random() < 0.35 else int(rng.integers(2, T))
    s = int(rng.integers(0, T - n + 1))
    vis = [s <= t < s + n for t in range(T)]
    aud = list(vis)
    for region in (range(0, s), range(s + n, T)):
        state = rng.choice(3)  # 0 absent, 1 visible only, 2 audible only
        for t in region:
            vis[t] = vis[t] or state == 1
            aud[t] = aud[t] or state == 2
    clip = ClipTruth("", "", "", 0, [Track(event, vis, aud)], event, s, s + n)
    others = [k for k in range(n_classes) if k != event]
    rng.shuffle(others)
    if rng.random() < 0.6:
        clip.tracks.append(Track(others[0], _interval(rng, 3, T), [False] * T))
    if rng.random() < 0.6:
        clip.tracks.append(Track(others[1], [False] * T, _interval(rng, 3, T)))
    return clip


def sample_llp_clip(rng: np.random.Generator, n_classes: int, single: int | None = None) -> ClipTruth:
    """AVVP style clip: 1-3 classes (only class ``single`` when given), each audio-visual,
    audio-only or visual-only.

    Audio-visual tracks may be visible and audible over different intervals, so the audio events and
    visual events of a video can differ, as in AVVP.
    """
    k = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    kinds = rng.choice(n_classes, size=k, replace=False)
    if single is not None:
        kinds = np.array([single])
    clip = ClipTruth("", "", "", 0, llp_offset=10 * int(rng.integers(0, 30)))
    for kind in kinds:
        mode = rng.choice(3, p=[0.5, 0.25, 0.25])  # 0 audio-visual, 1 audio only, 2 visual only
        vis = _interval(rng, 2, T) if mode != 1 else [False] * T
        if mode == 0 and rng.random() < 0.5:
            aud = list(vis)
        else:
            aud = _interval(rng, 2, T) if mode != 2 else [False] * T
        clip.tracks.append(Track(int(kind), vis, aud))
    return clip


def sample_truth(size: str | WorldSize, seed: int) -> list[ClipTruth]:
    """Ground truth of every clip of every dataset of a world (no media)."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown SynthAV size {size!r}: choose one of {', '.join(SIZES)}")
        size = SIZES[size]
    plan: list[tuple[str, str, int]] = []  # (dataset, split, class or -1)
    splits = ("train", "val", "test")
    for ds, per in (("ave", size.ave_per_class), ("vggsound40k", size.vgg_per_class)):
        for split, n in zip(splits, per):
            plan += [(ds, split, c) for c in range(len(KINDS[ds])) for _ in range(n)]
    plan += [("llp", "train", c) for c in range(len(KINDS["llp"])) for _ in range(size.llp_single_per_class)]
    for split, n in zip(splits, size.llp_clips):
        plan += [("llp", split, -1)] * n
    ids = make_ids(len(plan), seed)
    clips: list[ClipTruth] = []
    counters = dict.fromkeys(DATASETS, 0)
    for (ds, split, c), vid in zip(plan, ids):
        i = counters[ds]
        counters[ds] += 1
        rng = clip_rng(seed, ds, i)
        n_classes = len(KINDS[ds])
        if ds == "llp":
            clip = sample_llp_clip(rng, n_classes, single=None if c < 0 else c)
        else:
            clip = sample_event_clip(rng, n_classes, c)
        clip.dataset, clip.split, clip.video_id, clip.index = ds, split, vid, i
        clips.append(clip)
    return clips
