"""SynthAV world generator: determinism, real file formats, media/truth agreement, difficulty."""
from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from avprompt.synthav import caption_corpus, class_sets, generate_world, oracle_ceilings
from avprompt.synthav.media import FPS, decode_mp4
from avprompt.synthav.oracle import load_truth
from avprompt.synthav.render import SAMPLE_RATE
from avprompt.synthav.scenes import sample_truth
from avprompt.synthav.vocab import (ALL_WORDS, HELDOUT_AUDIO, HELDOUT_VISUAL, check_vocabulary)
from avprompt.synthav.world import META_FILE, default_world_dir

ANNOTATION_FILES = [
    "ave/Annotations.txt", "ave/trainSet.txt", "ave/valSet.txt", "ave/testSet.txt",
    "ave/categories.txt", "llp/classes.txt", "llp/AVVP_train.csv", "llp/AVVP_val_pd.csv", "llp/AVVP_test_pd.csv",
    "llp/AVVP_eval_audio.csv", "llp/AVVP_eval_visual.csv", "llp/AVVP_dataset_full.csv",
    "vggsound40k/vggsound-avel40k_labels.csv", "vggsound40k/VggsoundAVEL40kCategories.txt",
    "ground_truth.json"]
ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{10}$")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny worlds from the same seed, one written in-process and one by two workers."""
    a = generate_world(tmp_path_factory.mktemp("a") / "w", size="tiny", seed=3, workers=1)
    b = generate_world(tmp_path_factory.mktemp("b") / "w", size="tiny", seed=3, workers=2)
    return a, b


def _rows(path: Path, delimiter: str) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def test_same_seed_same_world(worlds):
    a, b = worlds
    for rel in ANNOTATION_FILES:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    mp4s = sorted(p.relative_to(a) for p in a.rglob("*.mp4"))
    assert mp4s == sorted(p.relative_to(b) for p in b.rglob("*.mp4")) and len(mp4s) > 20
    for rel in mp4s[::4]:  # a spread of clips from all three datasets
        fa, aa, ra = decode_mp4(a / rel)
        fb, ab, rb = decode_mp4(b / rel)
        assert np.array_equal(fa, fb) and np.array_equal(aa, ab) and ra == rb, rel


def test_other_seed_other_world():
    t0, t1 = sample_truth("tiny", 0), sample_truth("tiny", 1)
    assert [c.video_id for c in t0] != [c.video_id for c in t1]
    assert [c.to_json()["tracks"] for c in t0] != [c.to_json()["tracks"] for c in t1]


def test_idempotent_and_recovers_from_interruption(worlds):
    a, _ = worlds
    meta = a / META_FILE
    stamp = meta.stat().st_mtime_ns
    assert generate_world(a, size="tiny", seed=3, workers=1) == a
    assert meta.stat().st_mtime_ns == stamp  # found complete: nothing rewritten
    # an interrupted run leaves no marker and stray files: the next run starts over cleanly
    (a / META_FILE).unlink()
    (a / "ave" / "AVE" / "stray.part.mp4").write_bytes(b"x")
    generate_world(a, size="tiny", seed=3, workers=1)
    assert meta.is_file() and not (a / "ave" / "AVE" / "stray.part.mp4").exists()


def test_ave_format(worlds):
    a, _ = worlds
    rows = _rows(a / "ave/Annotations.txt", "&")
    assert rows[0] == ["Category", "VideoID", "Quality", "StartTime", "EndTime"]
    names = (a / "ave/categories.txt").read_text().splitlines()
    assert names == class_sets()["ave"]
    split_rows = []
    for f in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        r = _rows(a / "ave" / f, "&")
        assert r and r[0][0] in names  # no header in the split files
        split_rows += r
    assert sorted(map(tuple, split_rows)) == sorted(map(tuple, rows[1:]))
    for cat, vid, quality, start, end in rows[1:]:
        assert cat in names and ID.match(vid) and quality == "good"
        assert 0 <= int(start) < int(end) <= 10
        assert (a / "ave/AVE" / f"{vid}.mp4").is_file()


def test_llp_format(worlds):
    a, _ = worlds
    names = set(class_sets()["llp"])
    assert (a / "llp/classes.txt").read_text().splitlines() == class_sets()["llp"]
    weak: dict[str, set[str]] = {}
    for f in ("AVVP_train.csv", "AVVP_val_pd.csv", "AVVP_test_pd.csv"):
        rows = _rows(a / "llp" / f, "\t")
        assert rows[0] == ["filename", "event_labels"] and len(rows) > 1
        for fname, labels in rows[1:]:
            vid, start, end = fname[:11], *fname[12:].split("_")
            assert ID.match(vid) and fname[11] == "_" and int(end) - int(start) == 10
            assert set(labels.split(",")) <= names
            assert (a / "llp/LLP_dataset/video" / f"{vid}.mp4").is_file()
            weak[fname] = set(labels.split(","))
    train = {r[0] for r in _rows(a / "llp/AVVP_train.csv", "\t")[1:]}
    dense: dict[str, set[str]] = {}
    for f in ("AVVP_eval_audio.csv", "AVVP_eval_visual.csv"):
        rows = _rows(a / "llp" / f, "\t")
        assert rows[0] == ["filename", "onset", "offset", "event_labels"]
        for fname, on, off, label in rows[1:]:
            assert fname in weak and fname not in train and label in names
            assert 0 <= int(on) < int(off) <= 10
            dense.setdefault(fname, set()).add(label)
    # every weak label of a val/test video is an audio or a visual event of it
    assert all(dense[f] == weak[f] for f in dense) and set(dense) == set(weak) - train


def test_vggsound40k_format(worlds):
    a, _ = worlds
    names = (a / "vggsound40k/VggsoundAVEL40kCategories.txt").read_text().splitlines()
    assert names == class_sets()["vggsound40k"]
    rows = _rows(a / "vggsound40k/vggsound-avel40k_labels.csv", ",")
    assert rows[0] == ["split", "category", "video_id", "label"]
    for split, cat, vid, label in rows[1:]:
        seg = ast.literal_eval(label)
        assert split in ("train", "val", "test") and cat in names and ID.match(vid)
        assert len(seg) == 10 and set(seg) <= {0, 1} and sum(seg) >= 2
        assert (a / "vggsound40k/video" / f"{vid}.mp4").is_file()


def test_media_agrees_with_truth(worlds):
    """Saturated pixels exactly where an object is visible; louder audio where a source sounds."""
    a, _ = worlds
    for clip in [c for c in load_truth(a) if c.dataset == "ave"][:6]:
        frames, audio, rate = decode_mp4(a / "ave/AVE" / f"{clip.video_id}.mp4")
        assert frames.shape == (10 * FPS, 64, 64, 3) and rate == SAMPLE_RATE
        assert audio.shape[0] >= 10 * rate
        vis, aud = clip.visible_sets(), clip.audible_sets()
        for t in range(10):
            img = frames[t * FPS + FPS // 2].astype(int)
            colourful = ((img.max(-1) - img.min(-1)) > 80).sum()
            assert (colourful > 40) == bool(vis[t]), (clip.video_id, t)
        rms = [float(np.sqrt(np.mean(audio[t * rate:(t + 1) * rate] ** 2))) for t in range(10)]
        loud = [r for r, s in zip(rms, aud) if s]
        quiet = [r for r, s in zip(rms, aud) if not s]
        if loud and quiet:
            assert min(loud) > 1.5 * max(quiet), clip.video_id


def test_oracle_ceilings_order(worlds):
    a, _ = worlds
    assert oracle_ceilings(a) == json.loads((a / META_FILE).read_text())["oracle_ceilings"]
    o = oracle_ceilings(sample_truth("small", 0))
    for ds in ("ave", "vggsound40k"):
        r = o[ds]
        assert r["audio_visual"] == 1.0
        assert r["audio_visual"] - r["visual_only"] > 0.15
        assert r["audio_visual"] - r["audio_only"] > 0.15
        assert min(r["visual_only"], r["audio_only"]) > r["background"]
    assert 0 < o["llp"]["videos_audio_events_differ_from_visual"] < 1


def test_class_sets_disjoint_but_share_words():
    check_vocabulary()
    sets = class_sets()
    ave, llp = set(sets["ave"]), {n.replace("_", " ") for n in sets["llp"]}
    pre = set(sets["vggsound40k"])
    assert not (ave | llp) & pre and ave != llp
    words = lambda names: {w for n in names for w in n.split()}  # noqa: E731
    assert words(ave) <= words(pre) | set(ALL_WORDS) and words(ave) & words(pre)
    assert words(llp) & words(pre)


def test_caption_corpus():
    seen = caption_corpus(12, seed=1, split="seen")
    assert seen["images"].shape == (12, 64, 64, 3) and seen["images"].dtype == np.uint8
    assert seen["audio"].shape == (12, 16000) and seen["audio"].dtype == np.float32
    assert len(seen["captions"]) == len(seen["attributes"]) == 12
    again = caption_corpus(12, seed=1, split="seen")
    assert np.array_equal(seen["images"], again["images"])
    assert np.array_equal(seen["audio"], again["audio"])
    held = caption_corpus(12, seed=1, split="heldout", image_size=32, sample_rate=8000)
    assert held["images"].shape == (12, 32, 32, 3) and held["audio"].shape == (12, 8000)
    for a in held["attributes"]:
        assert (a["colour"], a["shape"]) in HELDOUT_VISUAL
        assert (a["pitch"], a["timbre"]) in HELDOUT_AUDIO
    for a, cap in zip(seen["attributes"], seen["image_captions"]):
        assert (a["colour"], a["shape"]) not in HELDOUT_VISUAL
        assert cap.endswith(f" {a['colour']} {a['shape']}") and cap.split()[0] in ("a", "an")
    with pytest.raises(ValueError, match="split"):
        caption_corpus(1, split="test")


def test_bad_size_and_default_dir(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="size"):
        generate_world(tmp_path, size="huge")
    monkeypatch.setenv("AVPROMPT_CACHE", str(tmp_path))
    assert default_world_dir("small", 4) == tmp_path / "synthav-small-4"
