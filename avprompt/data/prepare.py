"""Decode every clip once into an on-disk cache, then load clips from it (memory-mapped).

Layout: ``<cache_dir>/<dataset>-<prep hash>/`` holding ``frames/<key>.npy`` (uint8
``(10, S, S, 3)``), ``wave/<key>.npy`` (float32 ``(10 * sr,)``), ``prep.json`` (the parameters)
and ``report.json``. The hash covers everything that changes the arrays (image size, sample rate,
resize/crop rule, decoder version), so a changed transform never reuses stale arrays; mean/std
are applied at load time (``media.normalize_frames``) and are not part of it.
``key`` is the media file stem (clips sharing one video are decoded once), with unsafe
characters replaced and a short hash appended when that happens.

Resumable: each array is written to a temporary file and moved into place with ``os.replace``;
a clip whose two arrays exist is skipped. Parallel over ``workers`` processes.

Bad media (see ``media``): with ``on_bad_media="fail"`` (default) the first bad clip raises a
one-line ``ValueError`` naming the file and the ``--on-bad-media skip`` option; with ``"skip"``
bad clips are listed with their reason in ``report.json`` (``bad``) and left out of the cache.
Handled cases (no audio, short clips) are listed under ``handled``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex

PREP_VERSION = 1  # bump when decoding changes the arrays
ON_BAD_MEDIA = ("fail", "skip")


def prep_params(image_size: int, sample_rate: int) -> dict:
    return {"image_size": int(image_size), "sample_rate": int(sample_rate),
            "num_segments": NUM_SEGMENTS, "frame": "nearest-to-segment-centre",
            "resize": "shortest-side bicubic + centre crop", "audio": "mono, crop/repeatpad 10 s",
            "version": PREP_VERSION}


def media_key(clip: ClipRecord) -> str:
    stem = Path(clip.media).name if Path(clip.media).is_dir() else Path(clip.media).stem
    stem = stem or clip.clip_id
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
    if safe != stem or safe.startswith("."):
        safe = f"{safe}-{hashlib.sha1(stem.encode()).hexdigest()[:8]}"
    return safe


@dataclass
class MediaCache:
    """One keyed cache folder; ``load_clip`` reads from it."""

    path: Path
    image_size: int
    sample_rate: int

    @classmethod
    def open(cls, cache_dir: str | Path, dataset: str, image_size: int,
             sample_rate: int) -> "MediaCache":
        params = prep_params(image_size, sample_rate)
        h = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)
        return cls(Path(cache_dir) / f"{safe}-{h}", int(image_size), int(sample_rate))

    @classmethod
    def from_path(cls, path: str | Path) -> "MediaCache":
        meta = Path(path) / "prep.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{path} is not a prepared media cache (no prep.json); run "
                                    "`avprompt data prepare` first")
        p = json.loads(meta.read_text())
        return cls(Path(path), p["image_size"], p["sample_rate"])

    def files(self, key: str) -> tuple[Path, Path]:
        return self.path / "frames" / f"{key}.npy", self.path / "wave" / f"{key}.npy"

    def has(self, key: str) -> bool:
        return all(p.is_file() for p in self.files(key))


@dataclass
class PrepareReport:
    cache: str
    total: int = 0  # distinct media files
    decoded: int = 0
    reused: int = 0
    bad: list[dict] = field(default_factory=list)  # {"media", "clip_ids", "reason"}
    handled: list[dict] = field(default_factory=list)  # {"media", "notes"}
    seconds: float = 0.0

    @property
    def bad_clip_ids(self) -> set[str]:
        return {c for b in self.bad for c in b["clip_ids"]}

    def to_dict(self) -> dict:
        return asdict(self)


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def _work(media: str, frames_path: str, wave_path: str, image_size: int,
          sample_rate: int) -> dict:
    """Decode one media file into the cache (runs in a worker process)."""
    from avprompt.data.media import MediaError, decode_clip

    try:
        frames, wave, notes = decode_clip(media, image_size, sample_rate)
    except MediaError as e:
        return {"media": media, "ok": False, "reason": str(e)}
    _atomic_save(Path(wave_path), wave)
    _atomic_save(Path(frames_path), frames)  # written last: its presence marks completion
    return {"media": media, "ok": True, "notes": notes}


def prepare(index: DatasetIndex, cache_dir: str | Path, image_size: int = 224,
            sample_rate: int = 48000, workers: int = 1, on_bad_media: str = "fail",
            progress: bool = True) -> PrepareReport:
    """Decode every clip of ``index`` once into the cache; returns (and writes) the report."""
    if on_bad_media not in ON_BAD_MEDIA:
        raise ValueError(f"on_bad_media must be fail or skip, got {on_bad_media!r}")
    from tqdm import tqdm

    start = time.perf_counter()
    cache = MediaCache.open(cache_dir, index.name, image_size, sample_rate)
    for sub in ("frames", "wave"):
        (cache.path / sub).mkdir(parents=True, exist_ok=True)
    (cache.path / "prep.json").write_text(json.dumps(prep_params(image_size, sample_rate),
                                                     indent=1))
    report_path = cache.path / "report.json"
    jobs: dict[str, tuple[str, list[str]]] = {}  # key -> (media, clip ids)
    for r in index.records:
        jobs.setdefault(media_key(r), (str(r.media), []))[1].append(r.clip_id)
    report = PrepareReport(cache=str(cache.path), total=len(jobs))
    todo = []
    for key, (media, _) in jobs.items():
        if cache.has(key):
            report.reused += 1
        else:
            f, w = cache.files(key)
            todo.append((key, (media, str(f), str(w), image_size, sample_rate)))

    def finish(key: str, res: dict) -> None:
        media, clip_ids = jobs[key]
        if res["ok"]:
            report.decoded += 1
            if res["notes"]:
                report.handled.append({"media": media, "notes": res["notes"]})
            return
        report.bad.append({"media": media, "clip_ids": clip_ids, "reason": res["reason"]})
        if on_bad_media == "fail":
            report.seconds = time.perf_counter() - start
            report_path.write_text(json.dumps(report.to_dict(), indent=1))
            raise ValueError(f"{media}: {res['reason']}; fix or remove the file, or pass "
                             f"--on-bad-media skip to list it in {report_path} and go on")

    bar = tqdm(total=len(todo), desc=f"prepare {index.name}", unit="clip", disable=not progress)
    try:
        if workers <= 1:
            for key, args in todo:
                finish(key, _work(*args))
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                pending = {pool.submit(_work, *args): key for key, args in todo}
                try:
                    while pending:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            finish(pending.pop(fut), fut.result())
                            bar.update()
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    report_path.write_text(json.dumps(report.to_dict(), indent=1))
    return report


def load_clip(cache: MediaCache | str | Path, clip: ClipRecord) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped ``frames`` uint8 ``(10, H, W, 3)`` and ``wave`` float32 ``(10 * sr,)``."""
    if not isinstance(cache, MediaCache):
        cache = MediaCache.from_path(cache)
    key = media_key(clip)
    f, w = cache.files(key)
    if not (f.is_file() and w.is_file()):
        raise FileNotFoundError(f"clip {clip.clip_id} ({clip.media}) is not in the media cache "
                                f"{cache.path}; run `avprompt data prepare` (bad media are "
                                "listed in its report.json)")
    return np.load(f, mmap_mode="r"), np.load(w, mmap_mode="r")
