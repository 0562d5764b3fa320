"""Decode every clip once into an on-disk cache, then load clips from it (memory-mapped).

Layout: ``<cache_dir>/<dataset>-<prep hash>/`` holding, per media file, ``frames/<key>.npy``
(uint8 ``(10, S, S, 3)``), ``wave/<key>.npy`` (float32 ``(10 * sr,)``) and ``meta/<key>.json``
(the file's path, fingerprint and decoding notes), plus ``prep.json`` (the parameters) and
``report.json`` (the last run's ``PrepareReport``). The folder hash covers everything that changes
the arrays (image size, sample rate, resize/crop rule, decoder version), so a changed transform
never reuses stale arrays; mean/std are applied at load time (``media.normalize_frames``).

Keys are ``<stem>-<P>-<V>``: P hashes the media file's resolved path, V its size and mtime_ns (a
pre-extracted frames folder: its images' and wave file's names, sizes and mtimes) and the
preprocessing parameters. Two dataset folders whose files share names therefore never share
arrays, and a file replaced or edited in place gets a new V and is decoded again; the arrays of
its old version (same P, other V) are deleted then and the clips counted as changed. Rows that
share one media file (AVE videos listed twice) share one key and are decoded once. ``load_clip``
computes the key from the file as it is now, so it never serves an older version's arrays.
(A rewrite that keeps both the size and the mtime to the nanosecond is not detected.)

Resumable and atomic: each file is written to ``.<name>.<host>.<pid>.tmp`` and moved into place
with ``os.replace``; the frames file is written last and marks completion, and a key whose three
files exist is reused with the notes stored in its meta file. Temporary files of an interrupted
run (their process is gone, or they are older than a day) are removed when the cache is opened.

Bad media (see ``media``): with ``on_bad_media="fail"`` (default) the first bad clip raises a
one-line ``ValueError`` naming the file and the ``--on-bad-media skip`` option; with ``"skip"``
bad clips are listed with their reason (``PrepareReport.bad``, ``bad_reasons``) and left out of
the cache; they are tried again on the next run (the file may have been fixed).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from avprompt.atomic import atomic_write, atomic_write_text
from avprompt.cell_claims import pid_alive
from avprompt.data.layout import frame_files, pre_extracted_wave
from avprompt.data.records import NUM_SEGMENTS, ClipRecord, DatasetIndex

PREP_VERSION = 2  # bump when decoding changes the arrays (2: arrays keyed by file fingerprint)
ON_BAD_MEDIA = ("fail", "skip")
STALE_TMP_SECONDS = 24 * 3600  # a temp file this old is abandoned even if its pid is reused
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.tmp$")
_SUBDIRS = ("frames", "wave", "meta")
_KEY = re.compile(r"^(?P<path>.+-[0-9a-f]{10})-[0-9a-f]{10}$")  # <stem>-<path hash>-<version>


def prep_params(image_size: int, sample_rate: int) -> dict:
    return {"image_size": int(image_size), "sample_rate": int(sample_rate),
            "num_segments": NUM_SEGMENTS, "frame": "nearest-to-segment-centre",
            "resize": "shortest-side bicubic + centre crop", "audio": "mono, crop/repeatpad 10 s",
            "version": PREP_VERSION}


def _sha(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def media_stamp(media: str | Path) -> str:
    """What identifies the current version of a media file: ``size:mtime_ns`` (a frames folder:
    those of each image and of its wave file); ``"missing"`` when it cannot be read."""
    p = Path(media)
    try:
        if p.is_dir():
            parts = []
            for f in frame_files(p):
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
            wave = pre_extracted_wave(p)
            if wave.is_file():
                st = wave.stat()
                parts.append(f"{wave.name}:{st.st_size}:{st.st_mtime_ns}")
            return "dir|" + "|".join(parts)
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


def media_key(clip: ClipRecord, params: dict, stamp: str | None = None) -> str:
    """``<stem>-<path hash>-<version hash>`` of the clip's media file as it is now."""
    media = Path(clip.media)
    stem = media.name if media.suffix.lower() != ".mp4" else media.stem
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem or clip.clip_id)[:80].lstrip(".") or "clip"
    stamp = media_stamp(media) if stamp is None else stamp
    version = _sha(json.dumps([stamp, params], sort_keys=True))
    return f"{stem}-{_sha(os.path.realpath(media))}-{version}"


def _tmp_name(path: Path) -> Path:
    """The temporary names this host and pid, so a stale one (dead writer) can be told from a live one."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")


def _save_array(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr), tmp=_tmp_name(path))


def _save_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1), tmp=_tmp_name(path))


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
        cache = cls(Path(cache_dir) / f"{safe}-{h}", int(image_size), int(sample_rate))
        cache.remove_stale_tmp()
        return cache

    @classmethod
    def from_path(cls, path: str | Path) -> "MediaCache":
        meta = Path(path) / "prep.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{path} is not a prepared media cache (no prep.json); run "
                                    "`avprompt data prepare` first")
        p = json.loads(meta.read_text())
        return cls(Path(path), p["image_size"], p["sample_rate"])

    @property
    def params(self) -> dict:
        return prep_params(self.image_size, self.sample_rate)

    def key(self, clip: ClipRecord, stamp: str | None = None) -> str:
        return media_key(clip, self.params, stamp)

    def files(self, key: str) -> tuple[Path, Path]:
        return self.path / "frames" / f"{key}.npy", self.path / "wave" / f"{key}.npy"

    def meta_file(self, key: str) -> Path:
        return self.path / "meta" / f"{key}.json"

    def has(self, key: str) -> bool:
        return all(p.is_file() for p in (*self.files(key), self.meta_file(key)))

    def notes(self, key: str) -> list[str]:
        """Decoding notes stored with ``key`` ([] when its meta file is unreadable)."""
        try:
            return list(json.loads(self.meta_file(key).read_text()).get("notes", []))
        except (OSError, ValueError):
            return []

    def other_versions(self, key: str, complete: bool = False) -> list[str]:
        """Keys of the same media path with another version (the file changed since); with
        ``complete``, only those whose frames were written (fully decoded)."""
        path_part = key.rsplit("-", 1)[0]
        found = self.versions(("frames",) if complete else _SUBDIRS, path_part)
        return sorted(found.get(path_part, set()) - {key})

    def versions(self, subs: tuple[str, ...] = _SUBDIRS, path_part: str = "") -> dict[str, set]:
        """``<stem>-<path hash>`` -> the keys present for it (any version, complete or not), from
        one listing per sub-folder (``path_part`` narrows the listing by name prefix)."""
        out: dict[str, set] = {}
        for sub in subs:
            d = self.path / sub
            if not d.is_dir():
                continue
            for e in os.scandir(d):
                m = _KEY.match(e.name.rsplit(".", 1)[0])
                if m and e.name.startswith(path_part):
                    out.setdefault(m["path"], set()).add(m.group(0))
        return out

    def remove(self, key: str) -> None:
        for p in (*self.files(key), self.meta_file(key)):
            p.unlink(missing_ok=True)

    def remove_stale_tmp(self) -> int:
        """Delete temp files of writers that are gone (this host, dead pid) or older than a day;
        a live writer's temp files (another prepare on the same cache) are left alone."""
        removed, now = 0, time.time()
        for sub in _SUBDIRS:
            d = self.path / sub
            if not d.is_dir():
                continue
            for e in os.scandir(d):
                m = _TMP.match(e.name)
                if not m:
                    continue
                try:
                    old = now - e.stat().st_mtime > STALE_TMP_SECONDS
                except FileNotFoundError:
                    continue
                if old or (m["host"] == _HOST and not pid_alive(int(m["pid"]))):
                    Path(e.path).unlink(missing_ok=True)
                    removed += 1
        return removed


@dataclass
class PrepareReport:
    """What one ``prepare`` run found. Media-level lists; clip-level views as properties.

    bad: ``{"media", "clip_ids", "reason"}`` per media file that could not be decoded;
    handled: ``{"media", "clip_ids", "notes"}`` per media file with decoding notes (decoded now
        or reused: notes are stored with the arrays, so a rerun keeps them);
    changed: ``{"media", "clip_ids"}`` per media file decoded again because it changed since it
        was cached; ``redecoded_changed``: the number of clips (not files) concerned;
    clip_notes: clip id -> notes, for every clip with notes.
    """

    cache: str
    total: int = 0  # distinct media files
    decoded: int = 0  # media files decoded in this run (changed ones included)
    reused: int = 0  # media files found in the cache
    redecoded_changed: int = 0  # clips re-decoded because their media file changed
    bad: list[dict] = field(default_factory=list)
    handled: list[dict] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)
    clip_notes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def bad_clip_ids(self) -> set[str]:
        return {c for b in self.bad for c in b["clip_ids"]}

    @property
    def bad_reasons(self) -> dict[str, str]:
        """clip id -> why its media could not be decoded."""
        return {c: b["reason"] for b in self.bad for c in b["clip_ids"]}

    @property
    def redecoded(self) -> int:
        """Same as ``redecoded_changed`` (the name ``engine.workspace`` reads)."""
        return self.redecoded_changed

    @property
    def changed_clip_ids(self) -> set[str]:
        return {c for x in self.changed for c in x["clip_ids"]}

    def summary(self) -> str:
        return (f"{len(self.bad_clip_ids)} clips skipped as bad media, "
                f"{self.redecoded_changed} re-decoded (changed)")

    def to_dict(self) -> dict:
        return asdict(self)


def _work(media: str, stamp: str, frames_path: str, wave_path: str, meta_path: str,
          image_size: int, sample_rate: int, threads: int = 0) -> dict:
    """Decode one media file into the cache (runs in a worker process)."""
    from avprompt.data.media import MediaError, decode_clip

    try:
        frames, wave, notes = decode_clip(media, image_size, sample_rate, threads=threads)
    except MediaError as e:
        return {"ok": False, "reason": str(e)}
    if media_stamp(media) != stamp:  # rewritten while decoding: the arrays match neither version
        return {"ok": False, "reason": "file changed while it was being decoded; run prepare "
                                       "again"}
    _save_array(Path(wave_path), wave)
    _save_json(Path(meta_path), {"media": os.path.realpath(media), "stamp": stamp,
                                 "notes": notes, "params": prep_params(image_size, sample_rate)})
    _save_array(Path(frames_path), frames)  # written last: its presence marks completion
    return {"ok": True, "notes": notes}


@dataclass
class _Job:
    media: str
    stamp: str
    clip_ids: list[str]
    stale: list[str] = field(default_factory=list)  # keys of older versions of the same path


def prepare(index: DatasetIndex, cache_dir: str | Path, image_size: int = 224,
            sample_rate: int = 48000, workers: int = 1, on_bad_media: str = "fail",
            progress: bool = True) -> PrepareReport:
    """Decode every clip of ``index`` once into the cache; returns (and writes) the report.

    ``workers`` > 1: that many processes, each decoding with one thread."""
    if on_bad_media not in ON_BAD_MEDIA:
        raise ValueError(f"on_bad_media must be fail or skip, got {on_bad_media!r}")
    from avprompt.progress import progress as progress_bar

    start = time.perf_counter()
    cache = MediaCache.open(cache_dir, index.name, image_size, sample_rate)
    for sub in _SUBDIRS:
        (cache.path / sub).mkdir(parents=True, exist_ok=True)
    _save_json(cache.path / "prep.json", cache.params)
    report_path = cache.path / "report.json"
    jobs: dict[str, _Job] = {}
    stamps: dict[str, str] = {}  # one stat per media file, however many rows share it
    for r in index.records:
        media = str(r.media)
        stamp = stamps.setdefault(media, media_stamp(media))
        jobs.setdefault(cache.key(r, stamp), _Job(media, stamp, [])).clip_ids.append(r.clip_id)
    report = PrepareReport(cache=str(cache.path), total=len(jobs))

    def note(job: _Job, notes: list[str]) -> None:
        if notes:
            report.handled.append({"media": job.media, "clip_ids": job.clip_ids, "notes": notes})
            report.clip_notes.update((c, notes) for c in job.clip_ids)

    todo = []
    present = cache.versions()  # listed once: a glob per clip would be quadratic in clips
    for key, job in jobs.items():
        if cache.has(key):
            report.reused += 1
            note(job, cache.notes(key))
        else:
            job.stale = sorted(present.get(key.rsplit("-", 1)[0], set()) - {key})
            f, w = cache.files(key)
            # several processes: one decoding thread each. FFmpeg's default (a thread per core
            # in every process) oversubscribes the cores: 688 SynthAV clips on 2 cores took
            # 8.3 s with it and 5.1 s without, giving the same arrays
            todo.append((key, (job.media, job.stamp, str(f), str(w), str(cache.meta_file(key)),
                               image_size, sample_rate, 1 if workers > 1 else 0)))

    def write_report() -> None:
        report.bad.sort(key=lambda b: b["media"])
        report.handled.sort(key=lambda h: h["media"])
        report.changed.sort(key=lambda c: c["media"])
        report.seconds = time.perf_counter() - start
        _save_json(report_path, report.to_dict())

    def finish(key: str, res: dict) -> None:
        job = jobs[key]
        # arrays of an older version of this file are never valid again, whatever happened now
        was_cached = any(cache.files(k)[0].is_file() for k in job.stale)
        for k in job.stale:
            cache.remove(k)
        if res["ok"]:
            report.decoded += 1
            if was_cached:
                report.changed.append({"media": job.media, "clip_ids": job.clip_ids})
                report.redecoded_changed += len(job.clip_ids)
            note(job, res["notes"])
            return
        report.bad.append({"media": job.media, "clip_ids": job.clip_ids,
                           "reason": res["reason"]})
        if on_bad_media == "fail":
            write_report()
            raise ValueError(f"{job.media}: {res['reason']}; fix or remove the file, or pass "
                             f"--on-bad-media skip to list it in {report_path} and go on")

    bar = progress_bar(total=len(todo), desc=f"prepare {index.name}", unit="clip", disable=not progress)
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
    write_report()
    return report


def load_clip(cache: MediaCache | str | Path, clip: ClipRecord) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped ``frames`` uint8 ``(10, H, W, 3)`` and ``wave`` float32 ``(10 * sr,)``."""
    if not isinstance(cache, MediaCache):
        cache = MediaCache.from_path(cache)
    key = cache.key(clip)
    f, w = cache.files(key)
    if not (f.is_file() and w.is_file()):
        if cache.other_versions(key, complete=True):
            raise FileNotFoundError(f"clip {clip.clip_id}: {clip.media} changed since `avprompt "
                                    "data prepare` decoded it (size or modification time); run "
                                    "it again to re-decode")
        raise FileNotFoundError(f"clip {clip.clip_id} ({clip.media}) is not in the media cache "
                                f"{cache.path}; run `avprompt data prepare` (bad media are "
                                "listed in its report.json)")
    return np.load(f, mmap_mode="r"), np.load(w, mmap_mode="r")
