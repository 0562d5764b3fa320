"""SynthAV audio-visual segmentation sets in the AVSBench-object formats: S4 and MS3.

``generate_avs(out, subset, size, seed, image_size)`` writes one subset under ``out`` in the
AVSBench-object layout (k = 1..5: one frame per second, frame k drawn at t = k - 0.5 s)::

    Single-source/s4_meta_data.csv                              name,start,category,split
    Single-source/s4_data/visual_frames/<split>/<category>/<name>/<name>_<k>.png   RGB
    Single-source/s4_data/gt_masks/<split>/<category>/<name>/<name>_<k>.png        L 0/255
    Single-source/s4_data/audio_wav/<split>/<category>/<name>.wav                   5 s mono
    Multi-sources/ms3_meta_data.csv                             video_id,split
    Multi-sources/ms3_data/visual_frames/<id>/<id>.mp4_<k>.png  (no split folder)
    Multi-sources/ms3_data/gt_masks/<split>/<id>/<id>_<k>.png
    Multi-sources/ms3_data/audio_wav/<split>/<id>.wav
    <subset folder>/synthav_avs.json        seed, size, counts, empty-GT / foreground facts, floors
    <subset folder>/synthav_avs_truth.json  per video: objects (draw order), colour, audible seconds
    <subset folder>/README.txt

The CSV sits only in the subset folder: readers look for ``out/<subset>_meta_data.csv`` first and
take ``<subset>_data`` beside it, so a copy in ``out`` would hide the media. Audio is 16-bit PCM at
16 kHz (the release ships VGGish log-mel pickles). S4 train: a mask for frame 1 only.

Categories are the eight AVE-format classes with underscores (``red_circle_low_whistle``).
S4: one sounding object (audible all 5 s) plus 0-2 silent visible objects of other classes.
MS3: 2-3 visible objects, 1-3 of them sounding, each over all or part of the 5 s; the mask of a
frame is the union of the objects audible in that second, and a second where none is audible has
an empty mask (the first video of every third in each split is given one silent second, so even
``tiny`` has empty ground truth in every split).

Masks are exact: ``object_subsamples`` replays ``render_frame``'s own geometry (same grid, bounding
box and ``_shape_mask``) on its 2x2 supersampling grid; an object's visible points are those not
covered by an object drawn later, and a pixel is foreground when at least 2 of its 4 points show
a sounding object, which is where the antialiased edge is at least half object.

Every file is written to ``<name>.part`` and renamed; ``synthav_avs.json``, written last, marks a
complete subset (a rerun with the same parameters returns at once). An interrupted run leaves
``.synthav_avs_partial.json``: a rerun with the same parameters keeps the videos whose files all
exist (per-video random streams: same bytes), any other rerun deletes the subset folder first.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from avprompt.atomic import atomic_write_via, exclusive
from avprompt.synthav.render import (COLOUR_RGB, SAMPLE_RATE, Background, ObjectLook, SoundSource,
                                     _grid, _shape_mask, render_audio, render_frame,
                                     sample_background, sample_source)
from avprompt.synthav.vocab import AVE_KINDS

FORMAT_VERSION = 1
SECONDS = 5
SPLITS = ("train", "val", "test")
SUBSETS = ("s4", "ms3")
COUNTS: dict[str, dict[str, tuple[int, int, int]]] = {  # videos (train, val, test)
    "s4": {"tiny": (4, 2, 2), "small": (160, 40, 80)},
    "ms3": {"tiny": (3, 2, 2), "small": (80, 24, 40)}}
SUBSET_DIRS = {"s4": "Single-source", "ms3": "Multi-sources"}
META_FILE = "synthav_avs.json"
TRUTH_FILE = "synthav_avs_truth.json"
PARTIAL_FILE = ".synthav_avs_partial.json"
CATEGORIES: tuple[str, ...] = tuple(k.llp_name for k in AVE_KINDS)
# Random-stream codes of their own: scenes.clip_rng knows only the AVE/LLP/VGG-Sound sets and must
# not change, so these streams live in a separate code range (scenes uses 1, 2, 3 and 9).
_STREAM = {"s4": 21, "ms3": 22}
_ID_STREAM = 29
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CHECK_SIZE = 64  # resolution of the cheap occlusion check during layout sampling


@dataclass
class AVSObject:
    kind: int  # index into AVE_KINDS / CATEGORIES
    look: ObjectLook
    source: SoundSource
    audible: list[bool]  # per second


@dataclass
class AVSVideo:
    subset: str
    split: str
    name: str  # S4 name / MS3 video_id
    index: int
    start: int  # S4 metadata only
    objects: list[AVSObject]  # draw order: later ones on top
    background: Background
    noise_level: float

    @property
    def sounding(self) -> list[int]:
        return [i for i, o in enumerate(self.objects) if any(o.audible)]

    @property
    def category(self) -> str:  # S4: the class of the one sounding object
        return CATEGORIES[self.objects[self.sounding[0]].kind] if self.subset == "s4" else ""

    def gt_frames(self) -> list[int]:
        return [1] if self.subset == "s4" and self.split == "train" else list(range(1, SECONDS + 1))


def _rng(seed: int, subset: str, index: int, purpose: int) -> np.random.Generator:
    """Independent stream per (seed, subset, video, purpose): 0 = layout, 1 = audio noise floor."""
    return np.random.default_rng([seed, _STREAM[subset], index, purpose])


# ----------------------------------------------------------------------------- geometry
def object_subsamples(o: ObjectLook, size: int) -> np.ndarray:
    """Boolean (2*size, 2*size): the supersampled points ``render_frame`` paints for ``o`` (same
    grid, bounding box and arithmetic as ``render_frame``, so the points agree exactly)."""
    full = np.zeros((2 * size, 2 * size), bool)
    g = _grid(size)
    x0 = max(0, int((o.cx - o.radius) * size) - 1)
    x1 = min(size, int((o.cx + o.radius) * size) + 2)
    y0 = max(0, int((o.cy - o.radius) * size) - 1)
    y1 = min(size, int((o.cy + o.radius) * size) + 2)
    if x0 >= x1 or y0 >= y1:
        return full
    yy, xx = np.meshgrid(g[2 * y0:2 * y1], g[2 * x0:2 * x1], indexing="ij")
    dx, dy = (xx - o.cx) / o.radius, (yy - o.cy) / o.radius
    c, s = np.cos(o.angle), np.sin(o.angle)
    full[2 * y0:2 * y1, 2 * x0:2 * x1] = _shape_mask(o.shape, c * dx + s * dy, -s * dx + c * dy)
    return full


def visible_subsamples(looks: list[ObjectLook], size: int) -> list[np.ndarray]:
    """Per object (draw order): its supersampled points not covered by an object drawn later."""
    masks = [object_subsamples(o, size) for o in looks]
    above = np.zeros((2 * size, 2 * size), bool)
    out = []
    for m in reversed(masks):
        out.append(m & ~above)
        above |= m
    return out[::-1]


def pixel_mask(sub: np.ndarray) -> np.ndarray:
    """Pixel foreground: at least 2 of the 4 supersampled points of the pixel are set."""
    n = sub.shape[0] // 2
    return sub.reshape(n, 2, n, 2).sum(axis=(1, 3)) >= 2


@lru_cache(maxsize=None)
def _area_factor(shape: str) -> float:
    """Area of the unit shape in units of radius**2 (so every shape can get the same area)."""
    g = (np.arange(400) + 0.5) / 200 - 1
    yy, xx = np.meshgrid(g, g, indexing="ij")
    return float(_shape_mask(shape, xx, yy).mean() * 4)


# ----------------------------------------------------------------------------- sampling
def _sample_look(rng: np.random.Generator, kind: int) -> ObjectLook:
    k = AVE_KINDS[kind]
    # equal area for every shape (10-26 % of the frame): size never tells the class
    r = math.sqrt(float(rng.uniform(0.10, 0.26)) / _area_factor(k.shape))
    cx, cy = rng.uniform(r, 1 - r, size=2)
    rgb = np.clip(np.array(COLOUR_RGB[k.colour], float) + rng.normal(0, 8, 3), 0, 255)
    return ObjectLook(k.shape, tuple(float(v) for v in rgb), float(cx), float(cy), r,
                      angle=float(rng.uniform(0, 2 * np.pi)), spin=float(rng.normal(0, 0.15)),
                      wobble=tuple(float(v) for v in rng.uniform(0, 0.04, size=2)),
                      omega=float(rng.uniform(0.3, 1.0)),
                      shade=tuple(float(v) for v in rng.uniform(-0.1, 0.1, size=2)))


def _frame_looks(objects: list[AVSObject], k: int) -> list[ObjectLook]:
    return [o.look.at(k - 0.5) for o in objects]


def _well_visible(objects: list[AVSObject]) -> bool:
    """Every object shows at least half of itself in every frame (cheap low-resolution check)."""
    for k in range(1, SECONDS + 1):
        looks = _frame_looks(objects, k)
        for vis, o in zip(visible_subsamples(looks, _CHECK_SIZE), looks):
            own = int(object_subsamples(o, _CHECK_SIZE).sum())
            if own == 0 or vis.sum() < 0.5 * own:
                return False
    return True


def _place(rng: np.random.Generator, objects: list[AVSObject]) -> None:
    """Resample centres until every object is well visible (shrink objects if it takes long)."""
    for attempt in range(1000):
        if _well_visible(objects):
            return
        for o in objects:
            if attempt % 100 == 99:
                o.look.radius *= 0.9
            r = o.look.radius
            o.look.cx, o.look.cy = (float(v) for v in rng.uniform(r, 1 - r, size=2))
    raise RuntimeError("could not place the objects of a SynthAV AVS video")


def _run(rng: np.random.Generator) -> list[bool]:
    """A contiguous run of 1-4 of the 5 seconds."""
    n = int(rng.integers(1, SECONDS))
    s = int(rng.integers(0, SECONDS - n + 1))
    return [s <= t < s + n for t in range(SECONDS)]


def _sample_video(subset: str, split: str, name: str, index: int, seed: int, category: int,
                  silent_second: bool) -> AVSVideo:
    rng = _rng(seed, subset, index, 0)
    n_cls = len(AVE_KINDS)
    if subset == "s4":
        n_distractors = int(rng.choice(3, p=[0.2, 0.4, 0.4]))
        others = [int(k) for k in rng.permutation([k for k in range(n_cls) if k != category])]
        kinds = [category] + others[:n_distractors]
        audible = [[True] * SECONDS] + [[False] * SECONDS] * n_distractors
    else:
        kinds = [int(k) for k in rng.choice(n_cls, size=2 + int(rng.random() < 0.5), replace=False)]
        n_sounding = int(rng.integers(1, len(kinds) + 1))
        sounding = {int(i) for i in rng.choice(len(kinds), size=n_sounding, replace=False)}
        audible = [([True] * SECONDS if rng.random() < 0.6 else _run(rng)) if i in sounding
                   else [False] * SECONDS for i in range(len(kinds))]
        if silent_second:
            g = int(rng.integers(SECONDS))
            for i in sounding:
                audible[i][g] = False
                if not any(audible[i]):  # a sounding object keeps at least one audible second
                    audible[i][(g + 1) % SECONDS] = True
    objects = [AVSObject(k, _sample_look(rng, k), sample_source(rng, AVE_KINDS[k].pitch,
                                                                AVE_KINDS[k].timbre), list(a))
               for k, a in zip(kinds, audible)]
    # a random draw order: the sounding object is as often behind as in front
    objects = [objects[int(i)] for i in rng.permutation(len(objects))]
    _place(rng, objects)
    start = int(rng.integers(0, 6))
    return AVSVideo(subset, split, name, index, start, objects, sample_background(rng),
                    float(rng.uniform(0.003, 0.012)))


def _make_ids(n: int, seed: int, subset: str) -> list[str]:
    """n unique YouTube-like ids; MS3 ids get a ``_<second>`` suffix half the time, as in MS3."""
    rng = np.random.default_rng([seed, _ID_STREAM, _STREAM[subset]])
    out: list[str] = []
    while len(out) < n:
        s = "".join(_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), size=11))
        if subset == "ms3" and rng.random() < 0.5:
            s += f"_{int(rng.integers(0, 60))}"
        if s[0] != "-" and s not in out:
            out.append(s)
    return out


def plan_videos(subset: str, size: str, seed: int) -> list[AVSVideo]:
    """Every video of a subset (layout, sounds, nuisances), without media."""
    counts = COUNTS[subset][size]
    ids = _make_ids(sum(counts), seed, subset)
    videos, i = [], 0
    for split, n in zip(SPLITS, counts):
        for j in range(n):
            videos.append(_sample_video(subset, split, ids[i], i, seed, i % len(CATEGORIES),
                                        silent_second=subset == "ms3" and j % 3 == 0))
            i += 1
    return videos


# ----------------------------------------------------------------------------- writing
def _paths(data: Path, v: AVSVideo) -> tuple[list[Path], list[Path], Path]:
    """(frames, masks, wav) of a video, exactly as the AVSBench-object release names them."""
    ks = range(1, SECONDS + 1)
    if v.subset == "s4":
        rel = Path(v.split) / v.category
        return ([data / "visual_frames" / rel / v.name / f"{v.name}_{k}.png" for k in ks],
                [data / "gt_masks" / rel / v.name / f"{v.name}_{k}.png" for k in v.gt_frames()],
                data / "audio_wav" / rel / f"{v.name}.wav")
    return ([data / "visual_frames" / v.name / f"{v.name}.mp4_{k}.png" for k in ks],
            [data / "gt_masks" / v.split / v.name / f"{v.name}_{k}.png" for k in v.gt_frames()],
            data / "audio_wav" / v.split / f"{v.name}.wav")


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` then into place; the ``.part`` temporary is what a re-generation sweeps away."""
    atomic_write_via(path, write, tmp=path.with_name(path.name + ".part"))


def _save_png(path: Path, array: np.ndarray) -> None:
    _atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _save_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype("<i2")

    def write(tmp: Path) -> None:
        with wave.open(str(tmp), "wb") as w:
            w.setparams((1, 2, SAMPLE_RATE, len(pcm), "NONE", "not compressed"))
            w.writeframes(pcm.tobytes())
    _atomic(path, write)


def _save_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def _frame_scores(gt: np.ndarray, objects_mask: np.ndarray) -> dict:
    """Floors of one GT frame under the reference rules (mIoU empty-GT rule; F, beta^2 = 0.3)."""
    fg = float(gt.mean())
    empty = not gt.any()
    inter, union = float((gt & objects_mask).sum()), float((gt | objects_mask).sum())
    p = inter / max(float(objects_mask.sum()), 1e-12)
    r = inter / max(float(gt.sum()), 1e-12)
    return {"empty": empty, "fg": fg,
            "iou_objects": float((~objects_mask).mean()) if empty else inter / (union + 1e-7),
            "f_objects": None if empty else (1.3 * p * r / (0.3 * p + r) if p + r > 0 else 0.0),
            "iou_whole": 0.0 if empty else fg,
            "f_whole": None if empty else 1.3 * fg / (0.3 * fg + 1)}


def _write_video(data: Path, v: AVSVideo, seed: int, size: int) -> list[dict]:
    """Render and write one video unless its files all exist; returns its GT frames' scores."""
    frames, masks, wav = _paths(data, v)
    done = all(p.is_file() for p in frames + masks + [wav])
    sounding = set(v.sounding)
    rng = _rng(seed, v.subset, v.index, 1)
    scores = []
    for k in range(1, SECONDS + 1):
        looks = _frame_looks(v.objects, k)
        if not done:
            # no pixel noise (the textured background is the visual nuisance): noise would make
            # the PNGs 6x larger and slower to write, and would not make the task harder
            _save_png(frames[k - 1], render_frame(looks, v.background, size))
        if k not in v.gt_frames():
            continue
        vis = visible_subsamples(looks, size)
        union = np.zeros_like(vis[0])
        for i in sounding:
            if v.objects[i].audible[k - 1]:
                union |= vis[i]
        gt = pixel_mask(union)
        if not done:
            _save_png(masks[v.gt_frames().index(k)], (gt * np.uint8(255)).astype(np.uint8))
        scores.append(_frame_scores(gt, pixel_mask(np.logical_or.reduce(vis))))
    if not done:
        audio = np.concatenate([render_audio(
            [o.source for o in v.objects if o.audible[t]], float(t), v.noise_level, rng)
            for t in range(SECONDS)])
        _save_wav(wav, audio)
    return scores


def _mean(xs: list[float]) -> float:
    return round(float(np.mean(xs)), 4) if xs else 0.0


def _facts(scores: list[dict]) -> dict:
    """Per-frame means over GT frames: what a perfect, an empty, a whole-frame and an
    every-visible-object (audio-blind) prediction score under the reference metric rules."""
    nonempty = [s for s in scores if not s["empty"]]
    return {"gt_frames": len(scores),
            "empty_gt_fraction": _mean([float(s["empty"]) for s in scores]),
            "mean_foreground_fraction": _mean([s["fg"] for s in scores]),
            "mean_foreground_fraction_nonempty": _mean([s["fg"] for s in nonempty]),
            "miou": {"oracle": 1.0, "all_empty": _mean([float(s["empty"]) for s in scores]),
                     "whole_frame": _mean([s["iou_whole"] for s in scores]),
                     "all_visible_objects": _mean([s["iou_objects"] for s in scores])},
            "fscore": {"oracle": 1.0 if nonempty else 0.0, "all_empty": 0.0,
                       "whole_frame": _mean([s["f_whole"] for s in nonempty]),
                       "all_visible_objects": _mean([s["f_objects"] for s in nonempty])}}


def _csv_text(rows: list[list], header: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header] + rows)
    return buf.getvalue()


def _truth(v: AVSVideo) -> dict:
    return {"name": v.name, "split": v.split, "category": v.category or None, "start": v.start,
            "objects": [{"class": CATEGORIES[o.kind], "shape": o.look.shape,
                         "colour": AVE_KINDS[o.kind].colour,
                         "rgb": [round(c, 3) for c in o.look.rgb],
                         "audible": "".join("1" if a else "0" for a in o.audible)}
                        for o in v.objects]}


def _readme(meta: dict) -> str:
    f, c = meta["facts"]["all"], meta["counts"]
    return (f"SynthAV {meta['subset'].upper()} set, AVSBench-object layout (size {meta['size']}, "
            f"seed {meta['seed']}, {meta['image_size']} px): generated shapes and tones, see "
            "avprompt/synthav/avs_set.py and avprompt/synthav/README.md.\n"
            f"Videos train/val/test: {c['train']}/{c['val']}/{c['test']}; GT frames "
            f"{f['gt_frames']}, empty GT {f['empty_gt_fraction']:.3f}, mean foreground "
            f"{f['mean_foreground_fraction']:.3f}.\n"
            "Audio: audio_wav/ (16-bit PCM, 16 kHz, 5 s), no VGGish log-mel pickles.\n"
            f"{TRUTH_FILE}: each video's objects in draw order and the seconds each is audible.\n")


def _load(path: Path) -> dict:
    from avprompt.synthav.world import read_json
    return read_json(path)


def generate_avs(out: str | Path, subset: str = "s4", size: str = "small", seed: int = 0,
                 image_size: int = 224) -> Path:
    """Generate (or find) a SynthAV S4 or MS3 set under ``out``; returns ``out``, the folder that
    holds ``Single-source/`` / ``Multi-sources/`` (the root the AVSBench reader takes)."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown AVS subset {subset!r}: choose one of {', '.join(SUBSETS)}")
    if size not in COUNTS[subset]:
        raise ValueError(f"unknown SynthAV AVS size {size!r}: choose one of "
                         f"{', '.join(COUNTS[subset])}")
    if image_size < 16:
        raise ValueError(f"image_size {image_size} is too small: use at least 16 (224 as released)")
    out = Path(out).expanduser()
    root = out / SUBSET_DIRS[subset]
    params = {"format_version": FORMAT_VERSION, "subset": subset, "size": size, "seed": seed,
              "image_size": image_size}
    if all(_load(root / META_FILE).get(k) == v for k, v in params.items()):
        return out
    with exclusive(root):  # two processes on an empty cache: one generates, the other waits
        if not all(_load(root / META_FILE).get(k) == v for k, v in params.items()):
            _render_avs(out, root, subset, params, size, seed, image_size)
    return out


def _render_avs(out: Path, root: Path, subset: str, params: dict, size: str, seed: int, image_size: int) -> None:
    """``generate_avs``'s work, under its lock."""
    # not a resumable run of these parameters: start again (this generator owns the subset folder)
    if _load(root / PARTIAL_FILE) != params:
        if root.exists():
            shutil.rmtree(root)
        _save_text(root / PARTIAL_FILE, json.dumps(params))
    data = root / f"{subset}_data"
    videos = plan_videos(subset, size, seed)
    scores = {s: [] for s in SPLITS}
    for v in videos:
        scores[v.split] += _write_video(data, v, seed, image_size)
    if subset == "s4":
        rows = [[v.name, v.start, v.category, v.split] for v in videos]
        header = ["name", "start", "category", "split"]
    else:
        rows, header = [[v.name, v.split] for v in videos], ["video_id", "split"]
    _save_text(root / f"{subset}_meta_data.csv", _csv_text(rows, header))
    _save_text(root / TRUTH_FILE, json.dumps({**params, "videos": [_truth(v) for v in videos]},
                                             separators=(",", ":")))
    meta = {**params, "seconds": SECONDS, "sample_rate": SAMPLE_RATE,
            "categories": list(CATEGORIES),
            "counts": {s: sum(v.split == s for v in videos) for s in SPLITS},
            "facts": {"all": _facts([x for s in SPLITS for x in scores[s]]),
                      **{s: _facts(scores[s]) for s in SPLITS}},
            "facts_note": "per-frame means over GT frames; floors: reference mIoU (empty GT: "
                          "share of pixels both empty) and max F (beta^2 = 0.3, empty GT skipped) "
                          "of fixed predictions; all_visible_objects ignores the audio"}
    _save_text(root / "README.txt", _readme(meta))
    _save_text(root / META_FILE, json.dumps(meta, indent=1))  # last: marks the subset complete
    (root / PARTIAL_FILE).unlink(missing_ok=True)
