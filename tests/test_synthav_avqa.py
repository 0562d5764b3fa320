"""SynthAV AVQA set: MUSIC-AVQA schema, closed answers, media, answers agree with the pixels and
samples, determinism, idempotence."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avprompt.synthav.avqa_questions import (ANSWERS, INSTRUMENTS, PLACEHOLDER, SLOTS, TYPES,
                                             Scene, constant_floors)
from avprompt.synthav.avqa_set import META_FILE, SPLITS, TRUTH_FILE, generate_avqa
from avprompt.synthav.media import FPS, decode_mp4
from avprompt.synthav.render import COLOUR_RGB, SAMPLE_RATE
from avprompt.synthav.scenes import T

REAL_VAL = Path(__file__).resolve().parents[2] / "shared/data/musicavqa/json_update/avqa-val.json"
TYPE_STRINGS = {json.dumps(list(t)) for t in TYPES}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny sets from one seed, one written in-process and one by two workers."""
    a = generate_avqa(tmp_path_factory.mktemp("a") / "avqa", size="tiny", seed=5, workers=1)
    b = generate_avqa(tmp_path_factory.mktemp("b") / "avqa", size="tiny", seed=5, workers=2)
    return a, b


def _records(root: Path, split: str) -> list[dict]:
    return json.loads((root / "json_update" / f"avqa-{split}.json").read_text())


def _scenes(root: Path) -> dict[str, Scene]:
    truth = json.loads((root / TRUTH_FILE).read_text())
    return {s["video_id"]: Scene.from_json(s) for s in truth["scenes"]}


def test_schema_matches_real_file(sets):
    root = sets[0]
    keys = ["video_id", "question_id", "type", "question_content", "templ_values",
            "question_deleted", "anser"]
    ids = set()
    for split in SPLITS:
        recs = _records(root, split)
        assert isinstance(recs, list) and recs
        for r in recs:
            assert list(r) == keys
            assert isinstance(r["question_id"], int) and r["question_id"] not in ids
            ids.add(r["question_id"])
            assert isinstance(r["video_id"], str) and r["question_deleted"] == 0
            assert r["type"] in TYPE_STRINGS and tuple(json.loads(r["type"])) in TYPES
            values = json.loads(r["templ_values"])
            assert isinstance(values, list) and all(isinstance(v, str) for v in values)
            assert len(PLACEHOLDER.findall(r["question_content"])) == len(values), r
            assert r["question_content"].count("<") == len(values), r
            assert r["anser"] in ANSWERS


def test_keys_and_encodings_as_in_the_real_val_file(sets):
    if not REAL_VAL.is_file():
        pytest.skip(f"real MUSIC-AVQA file not found at {REAL_VAL}")
    real = json.loads(REAL_VAL.read_text())[0]
    ours = _records(sets[0], "val")[0]
    assert list(ours) == list(real)
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in real.items()}
    # type is written with the same separators as the original ('["Audio", "Counting"]')
    assert json.dumps(json.loads(real["type"])) == real["type"]
    real_text = REAL_VAL.read_text()
    ours_text = (sets[0] / "json_update" / "avqa-val.json").read_text()
    assert real_text.startswith('[\n  {\n    "video_id": ') and ours_text.startswith(
        '[\n  {\n    "video_id": ')


def test_all_types_present_and_answers_balanced(sets):
    root = sets[0]
    meta = json.loads((root / META_FILE).read_text())
    train = _records(root, "train")
    assert {r["type"] for r in train} == TYPE_STRINGS
    assert meta["questions"] == {s: len(_records(root, s)) for s in SPLITS}
    assert meta["answers"] == list(ANSWERS)
    floors = meta["constant_floor"]
    assert floors == constant_floors(train, _records(root, "test"))
    assert set(floors) == TYPE_STRINGS | {"all"}


def test_small_set_answers_are_balanced():
    """Questions only (no media) of the default size: yes/no near 50/50 and low floors per type."""
    from avprompt.synthav.avqa_set import build_questions, build_scenes
    q = build_questions(build_scenes("small", 0), 0)
    assert [len({r["video_id"] for r in q[s]}) for s in SPLITS] == [240, 60, 120]
    for split in SPLITS:
        for t in TYPE_STRINGS:
            answers = [r["anser"] for r in q[split] if r["type"] == t]
            assert len(answers) >= 20, (split, t)
            assert abs(answers.count("yes") - answers.count("no")) <= 1, (split, t)
    floors = constant_floors(q["train"], q["test"])
    assert all(f["accuracy"] <= 0.6 for f in floors.values()), floors


def test_yes_no_never_differ_by_more_than_one(sets):
    for split in SPLITS:
        for t in TYPE_STRINGS:
            answers = [r["anser"] for r in _records(sets[0], split) if r["type"] == t]
            assert abs(answers.count("yes") - answers.count("no")) <= 1, (split, t)


def test_constant_floor_function():
    def rec(t: str, a: str) -> dict:
        return {"type": json.dumps(["Audio", t]), "anser": a}
    train = [rec("Counting", "two"), rec("Counting", "two"), rec("Counting", "one"),
             rec("Comparative", "yes"), rec("Comparative", "no")]
    test = [rec("Counting", "two"), rec("Counting", "one"), rec("Comparative", "no")]
    f = constant_floors(train, test)
    assert f['["Audio", "Counting"]'] == {"answer": "two", "accuracy": 0.5, "n_test": 2}
    assert f['["Audio", "Comparative"]']["answer"] == "no"  # tie: alphabetical, order-free
    assert f["all"]["answer"] == "two" and f["all"]["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert f['["Visual", "Counting"]']["accuracy"] is None


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of float RGB (..., 3)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360


def _colour_map(frame: np.ndarray) -> np.ndarray:
    """Per pixel: index of the SynthAV colour of nearest hue, -1 for greyish (background) pixels.

    Hue, not RGB distance: shading scales brightness and the yuv round trip shifts RGB values by
    tens of levels (red comes back near (225, 0, 60)), while hues stay far apart (>= 25 degrees).
    """
    img = frame.astype(float)
    ref = _hue(np.array(list(COLOUR_RGB.values()), float))
    d = np.abs((_hue(img)[..., None] - ref + 180) % 360 - 180)
    out = d.argmin(-1)
    out[(img.max(-1) - img.min(-1) < 90) | (d.min(-1) > 20)] = -1
    return out


def _centroids(frames: np.ndarray) -> dict[str, float | None]:
    """Mean x (fraction of the width) of every colour's pixels over a few frames, None if absent.

    An object covers 50-150 pixels; antialiased edges of one colour over the background can take
    the hue of a neighbouring colour on a few pixels, hence the count threshold.
    """
    names = list(COLOUR_RGB)
    counts: dict[str, list[int]] = {n: [] for n in names}
    xs: dict[str, list[float]] = {n: [] for n in names}
    for f in frames[:: max(1, len(frames) // 5)]:
        cmap = _colour_map(f)
        for i, n in enumerate(names):
            yy, xx = np.nonzero(cmap == i)
            counts[n].append(len(xx))
            if len(xx):
                xs[n].append((xx.mean() + 0.5) / f.shape[1])
    return {n: (float(np.mean(xs[n])) if np.median(counts[n]) >= 25 else None) for n in names}


def test_videos_decode_and_answers_match_the_media(sets):
    root = sets[0]
    scenes = _scenes(root)
    assert sorted(p.stem for p in (root / "videos").glob("*.mp4")) == sorted(scenes)
    by_video: dict[str, list[dict]] = {}
    for split in SPLITS:
        for r in _records(root, split):
            by_video.setdefault(r["video_id"], []).append(r)
    checked = {"location": 0, "absent": 0, "silence": 0}
    for vid, scene in scenes.items():
        frames, audio, rate = decode_mp4(root / "videos" / f"{vid}.mp4")
        assert rate == SAMPLE_RATE and frames.shape[0] == T * FPS
        assert T * SAMPLE_RATE <= len(audio) <= T * SAMPLE_RATE + 2048  # 10 s plus AAC padding
        where = _centroids(frames)
        colour_of = {INSTRUMENTS[p.instrument].colour: p for p in scene.players}
        for colour, x in where.items():  # every coloured blob is a visible instrument of the scene
            if x is not None:
                assert colour in colour_of and colour_of[colour].visible, (vid, colour)
        for p in scene.players:
            x = where[INSTRUMENTS[p.instrument].colour]
            if p.visible:  # pixel centroid in the third named by the slot
                assert x is not None and SLOTS[min(int(x * 3), 2)] == SLOTS[p.slot], (vid, p, x)
            else:
                assert x is None, (vid, p, x)
        # audio: a second is loud exactly when an instrument sounds in it (noise floor <= 0.015)
        rms = np.sqrt((audio[:T * SAMPLE_RATE].reshape(T, -1).astype(float) ** 2).mean(-1))
        for t in range(T):
            heard = any(p.audible_at(t) for p in scene.players)
            assert (rms[t] > 0.035) == heard, (vid, t, rms[t])
        for r in by_video.get(vid, []):
            q, values, a = r["question_content"], json.loads(r["templ_values"]), r["anser"]
            if q == "Where is the <Object>?":
                colour = next(k.colour for k in INSTRUMENTS if f"{k.colour}_{k.shape}" == values[0])
                assert SLOTS[min(int(where[colour] * 3), 2)] == a
                checked["location"] += 1
            elif q == "Is there a <Object> in the entire video?" and a == "no":
                kind = next(k for k in INSTRUMENTS if f"{k.colour}_{k.shape}" == values[0])
                shown = {INSTRUMENTS[p.instrument] for p in scene.players if p.visible}
                # the colour may belong to another, visible instrument; the kind is not on screen
                assert kind not in shown
                checked["absent"] += 1
            elif q == "How many instruments were heard throughout the video?" and a == "zero":
                assert rms.max() < 0.035
                checked["silence"] += 1
    assert checked["location"] > 0


def test_answers_follow_the_scene(sets):
    root = sets[0]
    scenes = _scenes(root)
    for split in SPLITS:
        for r in _records(root, split):
            s = scenes[r["video_id"]]
            assert s.split == split
            q, v, a = r["question_content"], json.loads(r["templ_values"]), r["anser"]
            named = {p.name: p for p in s.players}
            heard = [p for p in s.players if p.sounding]
            if q == "How many instruments were heard throughout the video?":
                assert a == ANSWERS[len(heard)]
            elif q == "How many instruments are sounding in the video?":
                assert a == ANSWERS[sum(p.visible for p in heard)]
            elif q == "Is the <Object> louder than the <Object>?":
                assert a == ("yes" if named[v[0]].gain > named[v[1]].gain else "no")
            elif q == "Is the instrument on the <LR> louder than the instrument on the <LR>?":
                at = {SLOTS[p.slot]: p for p in s.players if p.visible}
                assert a == ("yes" if at[v[0]].gain > at[v[1]].gain else "no")
            elif q == "Is the <Object> in the video making a sound?":
                assert named[v[0]].visible and a == ("yes" if named[v[0]].sounding else "no")
            elif q == "Which instrument makes the sound <FL>?":
                on = [p.onset for p in heard]
                target = min(on) if v[0] == "first" else max(on)
                hits = [p.name for p in heard if p.onset == target]
                assert a == (hits[0] if len(hits) == 1 else "simultaneously")


def test_same_seed_same_set_and_rerun_is_a_no_op(sets):
    a, b = sets
    for split in SPLITS:
        rel = f"json_update/avqa-{split}.json"
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / TRUTH_FILE).read_bytes() == (b / TRUTH_FILE).read_bytes()
    ma, mb = (json.loads((x / META_FILE).read_text()) for x in (a, b))
    assert ma["files"] == mb["files"]  # identical mp4 bytes too, whatever the worker count
    stamp = (a / META_FILE).stat().st_mtime_ns
    assert generate_avqa(a, size="tiny", seed=5) == a
    assert (a / META_FILE).stat().st_mtime_ns == stamp
    assert not list(a.rglob("*.part*"))


def test_other_seed_other_set_and_bad_size(tmp_path):
    from avprompt.synthav.avqa_set import build_questions, build_scenes
    q0, q1 = (build_questions(build_scenes("tiny", s), s) for s in (0, 1))
    assert q0["train"] != q1["train"]
    with pytest.raises(ValueError, match="size"):
        generate_avqa(tmp_path / "x", size="huge")


def test_the_musicavqa_reader_reads_the_generated_set(sets):
    from avprompt.data.musicavqa import read_musicavqa
    root = sets[0]
    index = read_musicavqa(root)
    meta = json.loads((root / "synthav_avqa.json").read_text())
    assert index.source == "json_update" and not index.quirks.get("duplicate_question_id")
    for split in ("train", "val", "test"):
        rows = json.loads((root / "json_update" / f"avqa-{split}.json").read_text())
        assert len(index.split(split)) == len(rows)
        assert all(q.video and Path(q.video).is_file() for q in index.split(split))
    assert all("<" not in q.question for q in index.questions)  # every placeholder filled
    assert set(index.answers) <= set(meta["answers"])
