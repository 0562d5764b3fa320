"""Write a SynthAV world to disk in the real AVE, LLP and VGG-Sound-40K formats.

Layout under ``out``::

    ave/AVE/<VideoID>.mp4, ave/Annotations.txt, ave/{train,val,test}Set.txt, ave/categories.txt
    llp/LLP_dataset/video/<id>.mp4, llp/AVVP_{train,val_pd,test_pd,dataset_full}.csv,
        llp/AVVP_eval_{audio,visual}.csv, llp/classes.txt
    vggsound40k/video/<video_id>.mp4, vggsound40k/vggsound-avel40k_labels.csv,
        vggsound40k/VggsoundAVEL40kCategories.txt
    ground_truth.json   per clip and segment: which class is visible / audible
    synthav.json        seed, size, classes, vocabulary, oracle ceilings, sha256 of every file
    README.md           the same facts for people

``synthav.json`` is written last, atomically: it marks a complete world. A run that finds it with
the same seed, size and format version returns at once; a run that does not (interrupted, other
seed) deletes the paths listed above, and only those, and regenerates.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from avprompt.atomic import atomic_write_text, atomic_write_via, exclusive
from avprompt.progress import progress
from avprompt.synthav import vocab
from avprompt.synthav.media import FPS, render_clip, write_mp4
from avprompt.synthav.oracle import TRUTH_FILE, oracle_ceilings
from avprompt.synthav.render import IMAGE_SIZE, SAMPLE_RATE
from avprompt.synthav.scenes import KINDS, SIZES, T, ClipTruth, sample_truth

FORMAT_VERSION = 5  # 4: larger small-world val/test, single-label LLP clips per class; 5: test x3 / x1.6
META_FILE = "synthav.json"
_OWNED = ("ave", "llp", "vggsound40k", TRUTH_FILE, META_FILE, "README.md")
_MEDIA_DIR = {"ave": "ave/AVE", "llp": "llp/LLP_dataset/video", "vggsound40k": "vggsound40k/video"}


def default_world_dir(size: str = "small", seed: int = 0) -> Path:
    """Cache folder of a world: $AVPROMPT_CACHE (else $XDG_CACHE_HOME/avprompt, else
    ~/.cache/avprompt) / synthav-<size>-<seed>."""
    root = os.environ.get("AVPROMPT_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "avprompt") if xdg else str(Path.home() / ".cache" / "avprompt")
    return Path(root).expanduser() / f"synthav-{size}-{seed}"


def media_path(out: Path, clip: ClipTruth) -> Path:
    return Path(out) / _MEDIA_DIR[clip.dataset] / f"{clip.video_id}.mp4"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_clip(job: tuple[str, dict, int]) -> tuple[str, str]:
    """Worker: render and write one clip; returns (path, sha256). Top level so it pickles."""
    path, truth, seed = job
    clip = ClipTruth.from_json(truth)
    frames, audio = render_clip(clip, seed)
    atomic_write_via(path, lambda tmp: write_mp4(tmp, frames, audio), tmp=Path(path).with_suffix(".part.mp4"))
    return path, _sha256(Path(path))


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """Contiguous True runs as (onset, offset) in seconds."""
    out, start = [], None
    for t, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = t
        elif not f and start is not None:
            out.append((start, t))
            start = None
    return out


def _write_rows(path: Path, rows: list[list], delimiter: str, header: list[str] | None) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        if header:
            w.writerow(header)
        w.writerows(rows)


def _write_ave(out: Path, clips: list[ClipTruth]) -> None:
    names = [k.name for k in KINDS["ave"]]
    d = out / "ave"
    # grouped by class like the original file, so first-appearance order is the class order
    split_order = {"train": 0, "val": 1, "test": 2}
    ordered = sorted(clips, key=lambda c: (c.event, split_order[c.split], c.index))
    row = {id(c): [names[c.event], c.video_id, "good", c.start, c.end] for c in ordered}
    _write_rows(d / "Annotations.txt", [row[id(c)] for c in ordered], "&",
                ["Category", "VideoID", "Quality", "StartTime", "EndTime"])
    for split, fname in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        _write_rows(d / fname, [row[id(c)] for c in ordered if c.split == split], "&", None)
    (d / "categories.txt").write_text("".join(n + "\n" for n in names))


def _write_llp(out: Path, clips: list[ClipTruth]) -> None:
    names = [k.llp_name for k in KINDS["llp"]]
    d = out / "llp"

    def weak(c: ClipTruth) -> list[str]:
        present = [tr.kind for tr in c.tracks if any(tr.visible) or any(tr.audible)]
        return [c.filename, ",".join(names[k] for k in present)]
    header = ["filename", "event_labels"]
    files = {"train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv"}
    for split, fname in files.items():
        _write_rows(d / fname, [weak(c) for c in clips if c.split == split], "\t", header)
    _write_rows(d / "AVVP_dataset_full.csv", [weak(c) for c in clips], "\t", header)
    # the class list in canonical order, also when a small world leaves a class out of the labels
    (d / "classes.txt").write_text("".join(n + "\n" for n in names))
    for modality in ("audio", "visual"):
        rows = []
        for c in clips:
            if c.split == "train":
                continue  # dense labels exist for val and test only, as in AVVP
            for tr in c.tracks:
                flags = tr.audible if modality == "audio" else tr.visible
                rows += [[c.filename, on, off, names[tr.kind]] for on, off in _runs(flags)]
        _write_rows(d / f"AVVP_eval_{modality}.csv", rows, "\t",
                    ["filename", "onset", "offset", "event_labels"])


def _write_vgg(out: Path, clips: list[ClipTruth]) -> None:
    names = [k.name for k in KINDS["vggsound40k"]]
    d = out / "vggsound40k"
    rows = []
    for c in clips:
        label = [int(lab == c.event) for lab in c.segment_labels()]
        rows.append([c.split, names[c.event], c.video_id, "[" + ", ".join(map(str, label)) + "]"])
    _write_rows(d / "vggsound-avel40k_labels.csv", rows, ",",
                ["split", "category", "video_id", "label"])
    (d / "VggsoundAVEL40kCategories.txt").write_text("".join(n + "\n" for n in names))


def _readme(meta: dict) -> str:
    lines = [f"# SynthAV world (size {meta['size']}, seed {meta['seed']})", "",
             "A generated audio-visual world in the AVE, LLP and VGG-Sound-40K formats. "
             "See avprompt/synthav/README.md for the design.", "",
             "| set | classes | clips (train/val/test) |", "|---|---|---|"]
    for ds, info in meta["datasets"].items():
        lines.append(f"| {ds} | {len(info['classes'])} | {'/'.join(map(str, info['clips']))} |")
    lines += ["", "Oracle segment accuracy (test split):", "",
              "| task | audio-visual | visual only | audio only | always background |",
              "|---|---|---|---|---|"]
    for ds, o in meta["oracle_ceilings"].items():
        if "audio_visual" in o:
            lines.append(f"| {ds} | {o['audio_visual']:.3f} | {o['visual_only']:.3f} | "
                         f"{o['audio_only']:.3f} | {o['background']:.3f} |")
    return "\n".join(lines) + "\n"


def read_json(path: Path) -> dict:
    """A generator's JSON file, or {} when it is missing or half-written."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def marker_matches(path: Path, **params) -> bool:
    """Whether the completion marker at ``path`` (written last) records exactly these parameters:
    a set generated with them is complete and is reused, anything else is generated again."""
    meta = read_json(path)
    return bool(meta) and all(meta.get(k) == v for k, v in params.items())


def _is_complete(out: Path, size: str, seed: int) -> bool:
    return marker_matches(out / META_FILE, seed=seed, size=size, format_version=FORMAT_VERSION)


def generate_world(out: str | Path, size: str = "small", seed: int = 0, workers: int = 2) -> Path:
    """Generate (or find) a SynthAV world at ``out``; returns ``out``.

    size: "tiny" (tests), "small" (default benchmark world) or "medium".
    workers: processes that render and encode clips (the result does not depend on it).
    """
    if size not in SIZES:
        raise ValueError(f"unknown SynthAV size {size!r}: choose one of {', '.join(SIZES)}")
    out = Path(out).expanduser()
    if _is_complete(out, size, seed):
        return out
    with exclusive(out):  # two processes on an empty cache: one generates, the other waits
        if _is_complete(out, size, seed):
            return out
        return _render_world(out, size, seed, workers)


def _render_world(out: Path, size: str, seed: int, workers: int) -> Path:
    """``generate_world``'s work, under its lock."""
    t_start = time.perf_counter()
    for name in _OWNED:  # stale or partial world: remove exactly what this module writes
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for sub in _MEDIA_DIR.values():
        (out / sub).mkdir(parents=True, exist_ok=True)

    clips = sample_truth(size, seed)
    by_ds = {ds: [c for c in clips if c.dataset == ds] for ds in KINDS}
    _write_ave(out, by_ds["ave"])
    _write_llp(out, by_ds["llp"])
    _write_vgg(out, by_ds["vggsound40k"])
    (out / TRUTH_FILE).write_text(json.dumps(
        {"seed": seed, "size": size, "clips": [c.to_json() for c in clips]}, separators=(",", ":")))

    jobs = [(str(media_path(out, c)), c.to_json(), seed) for c in clips]
    bar = progress(total=len(jobs), desc=f"SynthAV world ({size})", unit="clip")
    results = []
    with bar, (ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1
               else contextlib.nullcontext()) as pool:
        # spawn: safe even when the caller already loaded torch/threads (fork could deadlock)
        for r in (pool.map(_write_clip, jobs, chunksize=8) if pool else map(_write_clip, jobs)):
            results.append(r)
            bar.update(1)

    hashes = {os.path.relpath(p, out): h for p, h in results}
    for p in sorted(out.glob("*/*.txt")) + sorted(out.glob("*/*.csv")) + [out / TRUTH_FILE]:
        hashes[str(p.relative_to(out))] = _sha256(p)
    meta = {
        "format_version": FORMAT_VERSION, "seed": seed, "size": size,
        "media": {"fps": FPS, "image_size": IMAGE_SIZE, "sample_rate": SAMPLE_RATE,
                  "seconds": T, "video": "h264 yuv444p", "audio": "aac mono"},
        "datasets": {ds: {"classes": vocab.class_sets()[ds],
                          "clips": [sum(c.split == s for c in by_ds[ds])
                                    for s in ("train", "val", "test")]} for ds in KINDS},
        "vocabulary": {"colours": list(vocab.COLOURS), "shapes": list(vocab.SHAPES),
                       "pitches": list(vocab.PITCHES), "timbres": list(vocab.TIMBRES),
                       "heldout_visual_pairs": [list(p) for p in vocab.HELDOUT_VISUAL],
                       "heldout_audio_pairs": [list(p) for p in vocab.HELDOUT_AUDIO]},
        "oracle_ceilings": oracle_ceilings(clips, "test"),
        "generation_seconds": round(time.perf_counter() - t_start, 1),
        "files": dict(sorted(hashes.items())),
    }
    (out / "README.md").write_text(_readme(meta))
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=1))  # last step: marks the world complete
    return out
