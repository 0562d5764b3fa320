"""Decoding and the preparation cache on tiny generated mp4s named after real AVE video ids."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from avprompt.data.datasets import load_dataset
from avprompt.data.media import decode_clip, normalize_frames, transform_image
from avprompt.data.prepare import MediaCache, load_clip, prepare
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
    again = prepare(index, tmp_path, SIZE, SR, on_bad_media="skip", progress=False)
    assert again.reused == 4 and again.decoded == 0  # resumed from the cache
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
    assert frames.shape == (10, SIZE, SIZE, 3) and wave.shape == (10 * SR,) and notes == []
    assert np.abs(frames[:, 0, 0].astype(int) - [segment_colour(t) for t in range(10)]).max() < 8
    assert abs(float(np.median(wave)) - 0.1) < 1e-3
