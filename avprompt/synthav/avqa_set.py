"""Write a SynthAV audio-visual question answering set in the MUSIC-AVQA file format.

Layout under ``out``::

    json_update/avqa-{train,val,test}.json   MUSIC-AVQA records: video_id, question_id, type
                                             (JSON-encoded '["Audio", "Counting"]'), question_content
                                             (with <Object> <LR> <LRer> <FL> <LL> placeholders),
                                             templ_values (JSON-encoded list), question_deleted,
                                             anser (sic: the answer)
    videos/<video_id>.mp4                    10 s, H.264 yuv444p 64x64 at 4 fps + mono AAC 16 kHz,
                                             the media format of the rest of SynthAV
    ground_truth.json                        per video: each instrument's slot, sounding interval
                                             and loudness (the scenes every answer comes from)
    synthav_avqa.json                        seed, size, counts per split and type, the answer set,
                                             constant floors per type, sha256 of every file
    README.txt                               the same facts for people

Scenes and questions: ``avqa_questions.py``. ``synthav_avqa.json`` is written last, atomically: it
marks a complete set. A rerun with the same seed, size and format version returns at once; otherwise
the paths listed above, and only those, are deleted and the set is regenerated. Every file is written
to a temporary name and renamed, so a crash never leaves a half file under a final name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from avprompt.atomic import atomic_write_bytes, atomic_write_via, exclusive
from avprompt.synthav.avqa_questions import (ANSWERS, INSTRUMENT_NAMES, INSTRUMENTS, SLOT_X, SLOTS,
                                             TYPES, Scene, ask, avqa_rng, constant_floors,
                                             sample_scene, type_string)
from avprompt.synthav.media import FPS, write_mp4
from avprompt.synthav.render import (IMAGE_SIZE, SAMPLE_RATE, ObjectLook, render_audio,
                                     render_frame, sample_background, sample_look, sample_source)
from avprompt.synthav.scenes import T

FORMAT_VERSION = 1
META_FILE = "synthav_avqa.json"
TRUTH_FILE = "ground_truth.json"
SPLITS = ("train", "val", "test")
AVQA_SIZES: dict[str, tuple[int, int, int]] = {"tiny": (8, 3, 6), "small": (240, 60, 120)}
_OWNED = ("json_update", "videos", TRUTH_FILE, META_FILE, "README.txt")


def _write_atomic(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, tmp=path.with_name(path.name + ".part"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_scene(scene: Scene, seed: int, image_size: int = IMAGE_SIZE,
                 sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T*fps, H, W, 3) and audio float32 (T*sample_rate,) of one scene."""
    rng = avqa_rng(seed, scene.index, 1)
    background = sample_background(rng)
    # a low noise floor: the quietest level (0.05 RMS) stays clearly above it, so "heard" is clear
    noise_level = float(rng.uniform(0.005, 0.015))
    looks: list[ObjectLook] = []
    sources = []
    for p in scene.players:
        k = INSTRUMENTS[p.instrument]
        if p.visible:
            look = sample_look(rng, k.colour, k.shape, (SLOT_X[p.slot], float(rng.uniform(0.3, 0.7))))
            # smaller and steadier than in the event world: jitter (0.02) + drift (<= 0.015) +
            # radius (<= 0.125) keep every object inside its third of the image, so left / middle /
            # right is never ambiguous
            look = replace(look, radius=float(rng.uniform(0.10, 0.125)),
                           wobble=(0.5 * look.wobble[0], 0.5 * look.wobble[1]))
            looks.append(look)
        sources.append(replace(sample_source(rng, k.pitch, k.timbre), gain=p.gain))
    frames = np.empty((T * fps, image_size, image_size, 3), np.uint8)
    for f in range(T * fps):
        frames[f] = render_frame([lk.at((f + 0.5) / fps) for lk in looks], background, image_size)
    audio = np.concatenate([
        render_audio([s for s, p in zip(sources, scene.players) if p.audible_at(t)], float(t),
                     noise_level, rng, 1.0, sample_rate) for t in range(T)])
    return frames, audio


def _write_video(job: tuple[str, dict, int]) -> tuple[str, str]:
    """Worker: render and write one video; returns (path, sha256). Top level so it pickles."""
    path, scene, seed = job
    frames, audio = render_scene(Scene.from_json(scene), seed)
    atomic_write_via(path, lambda tmp: write_mp4(tmp, frames, audio), tmp=Path(path).with_suffix(".part.mp4"))
    return path, _sha256(Path(path))


def build_scenes(size: str, seed: int) -> list[Scene]:
    """All scenes of a set, train then val then test; video ids are 8-digit numbers."""
    scenes: list[Scene] = []
    for split, n in zip(SPLITS, AVQA_SIZES[size]):
        for _ in range(n):
            i = len(scenes)
            scenes.append(sample_scene(seed, i, f"{i:08d}", split))
    return scenes


def build_questions(scenes: list[Scene], seed: int) -> dict[str, list[dict]]:
    """MUSIC-AVQA records per split; question ids run on across the splits, so they are unique."""
    out: dict[str, list[dict]] = {}
    qid = 0
    for split in SPLITS:
        out[split] = ask([s for s in scenes if s.split == split], seed, first_qid=qid)
        qid += len(out[split])
    return out


def _readme(meta: dict) -> str:
    lines = [f"SynthAV AVQA set (size {meta['size']}, seed {meta['seed']})", "",
             "Generated audio-visual question answering in the MUSIC-AVQA file format "
             "(json_update/avqa-*.json, answers under 'anser'). Instruments are SynthAV objects",
             "(a colour-shape look + a pitch-timbre sound) named by their visual words; see",
             "avprompt/synthav/README.md and avprompt/synthav/avqa_questions.py.", "",
             "videos (train/val/test): " + "/".join(str(meta["videos"][s]) for s in SPLITS),
             "questions (train/val/test): " + "/".join(str(meta["questions"][s]) for s in SPLITS),
             "", "type | train | val | test | constant floor on test (answer)"]
    for t in TYPES:
        key = type_string(t)
        f = meta["constant_floor"][key]
        counts = " | ".join(str(meta["questions_per_type"][s].get(key, 0)) for s in SPLITS)
        acc = "n/a" if f["accuracy"] is None else f"{f['accuracy']:.3f} ({f['answer']})"
        lines.append(f"{'/'.join(t)} | {counts} | {acc}")
    f = meta["constant_floor"]["all"]
    lines += ["", f"pooled constant floor on test: {f['accuracy']} ({f['answer']})",
              "answers: " + ", ".join(meta["answers"])]
    return "\n".join(lines) + "\n"


def _is_complete(out: Path, size: str, seed: int) -> bool:
    from avprompt.synthav.world import marker_matches
    return marker_matches(out / META_FILE, seed=seed, size=size, format_version=FORMAT_VERSION)


def generate_avqa(out: str | Path, size: str = "small", seed: int = 0, workers: int = 1) -> Path:
    """Generate (or find) a SynthAV AVQA set at ``out``; returns ``out``.

    size: "tiny" (tests, 8/3/6 videos) or "small" (240/60/120 videos). workers: processes that
    render and encode videos (the result does not depend on it).
    """
    if size not in AVQA_SIZES:
        raise ValueError(f"unknown SynthAV AVQA size {size!r}: choose one of {', '.join(AVQA_SIZES)}")
    out = Path(out).expanduser()
    if _is_complete(out, size, seed):
        return out
    with exclusive(out):  # two processes on an empty cache: one generates, the other waits
        if _is_complete(out, size, seed):
            return out
        return _render_avqa(out, size, seed, workers)


def _render_avqa(out: Path, size: str, seed: int, workers: int) -> Path:
    """``generate_avqa``'s work, under its lock."""
    t_start = time.perf_counter()
    for name in _OWNED:  # stale or partial set: remove exactly what this module writes
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (out / "json_update").mkdir(parents=True)
    (out / "videos").mkdir()

    scenes = build_scenes(size, seed)
    questions = build_questions(scenes, seed)
    for split in SPLITS:  # indent 2 and ASCII escapes, as the original files are written
        _write_atomic(out / "json_update" / f"avqa-{split}.json",
                      json.dumps(questions[split], indent=2).encode())
    truth = {"seed": seed, "size": size, "instruments": list(INSTRUMENT_NAMES), "slots": list(SLOTS),
             "instrument_words": [k.attributes() for k in INSTRUMENTS],
             "scenes": [s.to_json() for s in scenes]}
    _write_atomic(out / TRUTH_FILE, json.dumps(truth, separators=(",", ":")).encode())

    jobs = [(str(out / "videos" / f"{s.video_id}.mp4"), s.to_json(), seed) for s in scenes]
    if workers <= 1:
        results = [_write_video(j) for j in jobs]
    else:
        # spawn: safe even when the caller already loaded torch/threads (fork could deadlock)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_write_video, jobs, chunksize=8))

    hashes = {os.path.relpath(p, out): h for p, h in results}
    for p in sorted((out / "json_update").glob("*.json")) + [out / TRUTH_FILE]:
        hashes[str(p.relative_to(out))] = _sha256(p)
    meta = {
        "format_version": FORMAT_VERSION, "seed": seed, "size": size,
        "media": {"fps": FPS, "image_size": IMAGE_SIZE, "sample_rate": SAMPLE_RATE,
                  "seconds": T, "video": "h264 yuv444p", "audio": "aac mono"},
        "videos": {s: sum(sc.split == s for sc in scenes) for s in SPLITS},
        "questions": {s: len(questions[s]) for s in SPLITS},
        "questions_per_type": {s: dict(sorted(Counter(r["type"] for r in questions[s]).items()))
                               for s in SPLITS},
        "answers": list(ANSWERS),
        "constant_floor": constant_floors(questions["train"], questions["test"]),
        "generation_seconds": round(time.perf_counter() - t_start, 1),
        "files": dict(sorted(hashes.items())),
    }
    _write_atomic(out / "README.txt", _readme(meta).encode())
    # last step: marks the set complete
    _write_atomic(out / META_FILE, json.dumps(meta, indent=1).encode())
    return out
