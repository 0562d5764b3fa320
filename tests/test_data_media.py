"""Decoding and the preparation cache on tiny generated mp4s named after real AVE video ids."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avprompt.data.datasets import load_dataset
from avprompt.data.media import decode_clip, normalize_frames, transform_image
from avprompt.data.prepare import _HOST, MediaCache, load_clip, prepare
from avprompt.data.testmedia import segment_colour, write_test_video

SIZE, SR = 64, 16000
GOOD, SHORT, SILENT, CORRUPT, MISSING, TWICE = (
    "EsfJpLbBeb4", "hOuyJFqb4JM", "XGVkq0Kl2aw", "cfoJrTWCMeA", "7jL_B4oX7xc", "-ccciEuH9FE")


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory):
    """An AVE-shaped folder: split files for six real ids, media for five of them."""
    root = tmp_path_factory.mktemp("ave")
    rows = [f"Bark&{GOOD}&good&0&10", f"Bark&{SHORT}&good&0&3", f"Cat&{SILENT}&good&2&8",
            f"Cat&{CORRUPT}&good&0&10", f"Bark&{MISSING}&good&0&10",
            f"Male speech, man speaking&{TWICE}&good&5&10",
            f"Female speech, woman speaking&{TWICE}&good&5&10"]
    (root / "trainSet.txt").write_text("\n".join(rows[:4] + rows[5:]) + "\n")
    (root / "valSet.txt").write_text(rows[4] + "\n")
    (root / "testSet.txt").write_text("")
    video = root / "AVE"
    write_test_video(video / f"{GOOD}.mp4", sample_rate=SR)
    write_test_video(video / f"{SHORT}.mp4", seconds=3, sample_rate=SR)
    write_test_video(video / f"{SILENT}.mp4", fps=29.97, audio=False)
    write_test_video(video / f"{TWICE}.mp4", fps=7.5, sample_rate=22050)
    good = (video / f"{GOOD}.mp4").read_bytes()
    (video / f"{CORRUPT}.mp4").write_bytes(good[: len(good) // 3][::-1])  # scrambled bytes
    return root


def test_decode_picks_segment_centre_frames(ave_root):
    frames, wave, notes = decode_clip(ave_root / "AVE" / f"{GOOD}.mp4", SIZE, SR)
    assert frames.shape == (10, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert wave.shape == (10 * SR,) and wave.dtype == np.float32
    assert notes == []
    centre = frames[:, SIZE // 2, SIZE // 2].astype(int)
    expected = np.array([segment_colour(t) for t in range(10)])
    assert np.abs(centre - expected).max() <= 6  # H.264 colour rounding only
    assert 0.2 < np.abs(wave).max() < 0.4  # the 0.3 sine survived resampling


def test_decoding_threads_do_not_change_the_arrays(ave_root):
    """Workers of ``prepare`` decode with one thread each (threads=1); FFmpeg's own choice
    (threads=0) must give the same frames and wave, or the cache would depend on --workers."""
    for name in (GOOD, TWICE):
        auto = decode_clip(ave_root / "AVE" / f"{name}.mp4", SIZE, SR, threads=0)
        one = decode_clip(ave_root / "AVE" / f"{name}.mp4", SIZE, SR, threads=1)
        assert np.array_equal(auto[0], one[0]) and np.array_equal(auto[1], one[1]) and auto[2] == one[2]


def test_transform_matches_open_clip():
    import open_clip

    tf = open_clip.image_transform(SIZE, is_train=False)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (50, 90, 3), dtype=np.uint8))
    ours = normalize_frames(transform_image(img, SIZE))
    assert np.allclose(ours, tf(img).numpy(), atol=1e-5)


def test_prepare_skip_reports_bad_and_handled(ave_root, tmp_path):
    index = load_dataset("ave", ave_root)
    report = prepare(index, tmp_path, SIZE, SR, workers=1, on_bad_media="skip", progress=False)
    assert report.total == 6 and report.decoded == 4  # TWICE's two rows share one file
    reasons = {b["clip_ids"][0]: b["reason"] for b in report.bad}
    assert reasons[MISSING] == "missing file" and "cannot decode" in reasons[CORRUPT]
    handled = {h["media"].rsplit("/", 1)[1][:-4]: " ".join(h["notes"]) for h in report.handled}
    assert "silence" in handled[SILENT] and "repeat-padded" in handled[SHORT]
    saved = json.loads((MediaCache.from_path(report.cache).path / "report.json").read_text())
    assert saved["bad"] == report.bad
    recs = {r.clip_id: r for r in index.records}
    frames, wave = load_clip(report.cache, recs[SILENT])
    assert frames.shape == (10, SIZE, SIZE, 3) and wave.shape == (10 * SR,)
    assert not np.any(wave)
    frames, wave = load_clip(report.cache, recs[SHORT])
    # 3 s of tone tiled 3 times (repeat-pad), the last ~1 s zero-padded, as laion-clap does
    rms = np.sqrt((np.asarray(wave).reshape(10, SR) ** 2).mean(1))
    assert (rms[:9] > 0.15).all() and not np.any(wave[-SR // 2:])
    assert np.array_equal(frames[9], frames[3])  # past the end: the last frame is reused
    a, _ = load_clip(report.cache, recs[f"{TWICE}#1"])
    b, _ = load_clip(report.cache, recs[f"{TWICE}#2"])
    assert np.array_equal(a, b)
    with pytest.raises(FileNotFoundError, match=CORRUPT):
        load_clip(report.cache, recs[CORRUPT])
    assert report.clip_notes[SHORT] == next(h["notes"] for h in report.handled
                                            if h["clip_ids"] == [SHORT])
    assert report.clip_notes[f"{TWICE}#1"] == report.clip_notes[f"{TWICE}#2"] == [
        "audio resampled 22050 Hz -> 16000 Hz"]
    assert report.bad_reasons == {MISSING: "missing file", CORRUPT: reasons[CORRUPT]}
    again = prepare(index, tmp_path, SIZE, SR, on_bad_media="skip", progress=False)
    assert again.reused == 4 and again.decoded == 0  # resumed from the cache
    # notes are stored with the arrays: a rerun that decodes nothing still reports them
    assert again.clip_notes == report.clip_notes and again.handled == report.handled
    assert again.redecoded_changed == 0 and again.summary() == (
        "2 clips skipped as bad media, 0 re-decoded (changed)")
    saved = json.loads((Path(report.cache) / "report.json").read_text())
    assert saved["clip_notes"] == report.clip_notes
    other = prepare(index, tmp_path, SIZE + 8, SR, on_bad_media="skip", progress=False)
    assert other.cache != report.cache and other.decoded == 4


def test_prepare_fail_names_file_and_option(ave_root, tmp_path):
    index = load_dataset("ave", ave_root)
    index.records = [r for r in index.records if r.video_id in (GOOD, CORRUPT)]
    with pytest.raises(ValueError, match=rf"{CORRUPT}\.mp4: cannot decode.*--on-bad-media skip"):
        prepare(index, tmp_path, SIZE, SR, workers=2, progress=False)


def test_pre_extracted_layout(tmp_path):
    d = tmp_path / "frames" / GOOD
    d.mkdir(parents=True)
    for i in range(20):  # 2 fps
        img = np.full((48, 80, 3), segment_colour(i // 2), np.uint8)
        Image.fromarray(img).save(d / f"{i + 1:08d}.jpg")
    (tmp_path / "wave").mkdir()
    np.save(tmp_path / "wave" / f"{GOOD}.npy", np.ones((10, 32000), np.float32) * 0.1)
    frames, wave, notes = decode_clip(d, SIZE, SR)
    assert frames.shape == (10, SIZE, SIZE, 3) and wave.shape == (10 * SR,)
    assert notes == ["audio resampled 32000 Hz -> 16000 Hz",
                     "frames upscaled (80x48, shortest side to 64)"]
    assert np.abs(frames[:, 0, 0].astype(int) - [segment_colour(t) for t in range(10)]).max() < 8
    assert abs(float(np.median(wave)) - 0.1) < 1e-3


def _ave_folder(root, ids, **video):
    """An AVE-shaped folder listing ``ids`` in trainSet.txt, one mp4 per id."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "trainSet.txt").write_text("".join(f"Bark&{v}&good&0&10\n" for v in ids))
    (root / "valSet.txt").write_text("")
    (root / "testSet.txt").write_text("")
    for v in ids:
        write_test_video(root / "AVE" / f"{v}.mp4", sample_rate=SR, **video)
    return load_dataset("ave", root)


def test_two_folders_with_same_file_names_never_mix(tmp_path):
    low = _ave_folder(tmp_path / "a", [GOOD], tone_hz=220.0)
    high = _ave_folder(tmp_path / "b", [GOOD], tone_hz=1760.0, seconds=4)
    first = prepare(low, tmp_path / "cache", SIZE, SR, progress=False)
    second = prepare(high, tmp_path / "cache", SIZE, SR, progress=False)
    assert first.cache == second.cache  # same dataset name and parameters: one folder
    assert second.decoded == 1 and second.reused == 0
    for index in (low, high):
        frames, wave = load_clip(second.cache, index.records[0])
        want_f, want_w, _ = decode_clip(index.records[0].media, SIZE, SR)
        assert np.array_equal(frames, want_f) and np.array_equal(wave, want_w)
    assert second.clip_notes[GOOD][0].startswith("short video")
    assert GOOD not in first.clip_notes


def test_file_replaced_in_place_is_decoded_again(tmp_path):
    index = _ave_folder(tmp_path / "ave", [GOOD, SHORT], tone_hz=220.0)
    cache = tmp_path / "cache"
    prepare(index, cache, SIZE, SR, progress=False)
    rec = {r.clip_id: r for r in index.records}
    old_wave = np.array(load_clip(MediaCache.open(cache, "ave", SIZE, SR), rec[GOOD])[1])
    path = Path(rec[GOOD].media)
    before = path.stat().st_mtime_ns
    write_test_video(path, sample_rate=SR, tone_hz=1760.0)  # same name, new content
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a coarse clock may not move
    mc = MediaCache.open(cache, "ave", SIZE, SR)
    with pytest.raises(FileNotFoundError, match=rf"{GOOD}: .*{GOOD}.mp4 changed since"):
        load_clip(mc, rec[GOOD])  # never the old arrays
    again = prepare(index, cache, SIZE, SR, progress=False)
    assert (again.decoded, again.reused, again.redecoded_changed) == (1, 1, 1)
    assert again.redecoded == 1 and again.changed_clip_ids == {GOOD}
    assert again.changed == [{"media": str(path), "clip_ids": [GOOD]}]
    assert again.summary() == "0 clips skipped as bad media, 1 re-decoded (changed)"
    new_wave = np.asarray(load_clip(mc, rec[GOOD])[1])
    assert np.array_equal(new_wave, decode_clip(path, SIZE, SR)[1])
    assert not np.allclose(new_wave, old_wave, atol=0.05)
    # the old version's arrays are gone: one entry per file in every sub-folder
    for sub in ("frames", "wave", "meta"):
        assert len(list((mc.path / sub).glob(f"{GOOD}-*"))) == 1, sub
    # only the modification time changes (touch): decoded again, counted as changed
    os.utime(path, ns=(before + 2 * 10**9, before + 2 * 10**9))
    touched = prepare(index, cache, SIZE, SR, progress=False)
    assert touched.redecoded_changed == 1 and touched.reused == 1


def test_interrupted_prepare_leaves_nothing_stale(tmp_path):
    index = _ave_folder(tmp_path / "ave", [GOOD])
    report = prepare(index, tmp_path / "cache", SIZE, SR, progress=False)
    mc = MediaCache.open(tmp_path / "cache", "ave", SIZE, SR)
    key = mc.key(index.records[0])
    mc.files(key)[0].unlink()  # killed after wave + meta, before frames (the completion mark)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    frames_dir = mc.path / "frames"
    stale = frames_dir / f".{key}.npy.{_HOST}.{dead.pid}.tmp"
    live = frames_dir / f".{key}.npy.{_HOST}.{os.getpid()}.tmp"  # a running writer's
    old = frames_dir / f".{key}.npy.otherhost.1.tmp"
    recent_remote = frames_dir / f".{key}.npy.otherhost.2.tmp"
    for p in (stale, live, old, recent_remote):
        p.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    MediaCache.open(tmp_path / "cache", "ave", SIZE, SR)
    assert not stale.exists() and not old.exists()
    assert live.exists() and recent_remote.exists()
    again = prepare(index, tmp_path / "cache", SIZE, SR, progress=False)
    assert (again.decoded, again.reused, again.redecoded_changed) == (1, 0, 0)
    assert again.cache == report.cache and mc.has(key)


def _write_stereo_video(path, seconds=3, rate=44100):
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=4)
        vs.width, vs.height, vs.pix_fmt = 32, 24, "yuv420p"
        a_s = c.add_stream("aac", rate=rate)
        a_s.layout = "stereo"
        for i in range(seconds * 4):
            f = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 90, np.uint8), format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(seconds * rate) / rate
        pcm = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)]).astype(np.float32)
        for s in range(0, pcm.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, s:s + 1024]),
                                            format="fltp", layout="stereo")
            fr.sample_rate, fr.pts = rate, s
            for p in a_s.encode(fr):
                c.mux(p)
        for p in a_s.encode():
            c.mux(p)


def test_decoding_notes_long_resampled_downmixed_upscaled(tmp_path):
    long = write_test_video(tmp_path / "long.mp4", seconds=14, sample_rate=22050)
    frames, wave, notes = decode_clip(long, SIZE, SR)
    assert notes == ["long clip (14.0 s): cropped to the first 10 s",
                     "audio resampled 22050 Hz -> 16000 Hz"]
    assert wave.shape == (10 * SR,) and np.abs(wave[-SR // 2:]).max() > 0.2  # no padding
    centre = frames[:, SIZE // 2, SIZE // 2].astype(int)
    assert np.abs(centre - [segment_colour(t) for t in range(10)]).max() <= 6
    _write_stereo_video(tmp_path / "stereo.mp4")
    _, _, notes = decode_clip(tmp_path / "stereo.mp4", SIZE, SR)
    assert notes[1].startswith("short audio (3.0") and notes[1].endswith("s): repeat-padded")
    assert notes[:1] + notes[2:] == ["short video (last frame at 2.8 s): last frame repeated",
                     "audio resampled 44100 Hz -> 16000 Hz",
                     "audio downmixed 2 channels -> mono",
                     "frames upscaled (32x24, shortest side to 64)"]
