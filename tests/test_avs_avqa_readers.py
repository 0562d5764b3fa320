"""AVSBench-object (S4, MS3) and MUSIC-AVQA readers: the real metadata files, ``data stats``
through the CLI, bad input as one-line errors, and hand-built media layouts."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from avprompt.cli import app
from avprompt.data.avsbench import FRAMES_PER_VIDEO, read_avsbench
from avprompt.data.musicavqa import QUESTION_TYPES, fill_template, read_musicavqa
from avprompt.data.stats import stats


def _cli(*args: str):
    return CliRunner().invoke(app, ["data", "stats", *args])


def _one_line_error(excinfo, path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# ---------------------------------------------------------------- AVSBench, real metadata
@pytest.mark.annotations
def test_s4_published_statistics(annotations_root):
    idx = read_avsbench(annotations_root / "avsbench", "s4")
    assert len(idx.records) == 4932
    assert {s: len(idx.split(s)) for s in ("train", "val", "test")} == {
        "train": 3452, "val": 740, "test": 740}
    assert len(idx.categories) == 23 and idx.categories == sorted(idx.categories)
    assert "helicopter" in idx.categories
    assert idx.quirks == {}
    assert all(len(r.frames) == FRAMES_PER_VIDEO for r in idx.records)
    assert {len(r.masks) for r in idx.split("train")} == {1}
    assert {len(r.masks) for r in idx.split("val") + idx.split("test")} == {5}
    (r,) = [x for x in idx.records if x.video_id == "0yQFLuXBbTo"]  # 0yQFLuXBbTo,5,helicopter,train
    assert (r.split, r.category, r.start) == ("train", "helicopter", 5)
    assert r.frames[2].endswith("s4_data/visual_frames/train/helicopter/0yQFLuXBbTo/0yQFLuXBbTo_3.png")
    assert r.masks == [r.frames[0].replace("visual_frames", "gt_masks")]
    assert r.log_mel.endswith("audio_log_mel/train/helicopter/0yQFLuXBbTo.pkl")
    assert r.audio.endswith("audio_wav/train/helicopter/0yQFLuXBbTo.wav")


@pytest.mark.annotations
def test_ms3_published_statistics(annotations_root):
    idx = read_avsbench(annotations_root / "avsbench", "ms3")
    assert len(idx.records) == 424
    assert {s: len(idx.split(s)) for s in ("train", "val", "test")} == {
        "train": 296, "val": 64, "test": 64}
    assert idx.categories == [] and idx.quirks == {}
    assert all(len(r.masks) == 5 and r.category is None and r.start is None for r in idx.records)
    (r,) = [x for x in idx.records if x.video_id == "xv7eM6-UmkY_36"]
    assert r.split == "val"
    assert r.frames[0].endswith("ms3_data/visual_frames/xv7eM6-UmkY_36/xv7eM6-UmkY_36.mp4_1.png")
    assert r.masks[4].endswith("ms3_data/gt_masks/val/xv7eM6-UmkY_36/xv7eM6-UmkY_36_5.png")


@pytest.mark.annotations
def test_avs_cli_stats_on_real_metadata(annotations_root):
    root = str(annotations_root / "avsbench")
    r = _cli("--dataset", "avs-s4", "--root", root)
    assert r.exit_code == 0, r.output
    assert "avs-s4: 4932 rows, 23 categories, splits train 3452, val 740, test 740" in r.output
    assert "masks train 3452, val 3700, test 3700" in r.output
    assert "complete 0" in r.output  # annotation-only copy: no media
    r = _cli("--dataset", "avs-ms3", "--root", root, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["splits"] == {"train": 296, "val": 64, "test": 64} and s["rows"] == 424
    assert s["media_present"]["complete"] == 0 and s["quirks"] == {}


# ---------------------------------------------------------------- MUSIC-AVQA, real val files
@pytest.mark.annotations
def test_musicavqa_update_val(annotations_root):
    idx = read_musicavqa(annotations_root / "musicavqa")
    assert idx.source == "json_update" and set(idx.files) == {"val"}
    assert idx.rows_read == {"val": 4568} and len(idx.questions) == 4568
    assert "duplicate_question_id" not in idx.quirks
    pairs = {(q.group, q.qtype) for q in idx.questions}
    assert len(pairs) == 9 and pairs == {(g, t) for g, ts in QUESTION_TYPES.items() for t in ts}
    assert len(idx.answers) == 41 and idx.answers[0] == "yes"  # first question answers "yes"
    assert {"yes", "no", "zero", "more than ten", "simultaneously"} <= set(idx.answers)
    assert "ten" not in idx.answers  # the 42nd answer never occurs in val
    # question 10 of video 00000108, checked by hand against the file
    (q,) = [x for x in idx.questions if x.question_id == 10]
    assert q.template == "Is the <Object> louder than the <Object>?"
    assert q.templ_values == ["guzheng", "piano"]
    assert q.question == "Is the guzheng louder than the piano?"
    assert (q.video_id, q.group, q.qtype, q.answer, q.deleted) == (
        "00000108", "Audio", "Comparative", "yes", False)
    assert q.video == str(annotations_root / "musicavqa" / "videos" / "00000108.mp4")
    assert all("<" not in x.question for x in idx.questions)


@pytest.mark.annotations
def test_musicavqa_original_val_duplicates(annotations_root):
    folder = annotations_root / "musicavqa"
    raw = json.loads((folder / "json" / "avqa-val.json").read_text())
    ids = [r["question_id"] for r in raw]
    measured = len(ids) - len(set(ids))  # rows whose question id was already listed
    assert len(raw) == 4595 and measured > 0
    idx = read_musicavqa(folder, prefer="original")
    assert idx.source == "json" and idx.rows_read == {"val": 4595}
    assert idx.quirks["duplicate_question_id"] == measured
    assert len(idx.questions) == 4595 - measured == 4568
    # the first row of each duplicated id is kept
    (q,) = [x for x in idx.questions if x.question_id == 291]
    assert q.answer == next(r["anser"] for r in raw if r["question_id"] == 291)
    # the same count through `data stats` (a --root at the json folder reads exactly it)
    r = _cli("--dataset", "musicavqa", "--root", str(folder / "json"), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["source"] == "json" and s["rows_read"] == {"val": 4595}
    assert s["splits"] == {"val": 4568} and s["quirks"]["duplicate_question_id"] == measured
    r = _cli("--dataset", "musicavqa", "--root", str(folder / "json"))
    assert r.exit_code == 0, r.output
    assert "val 4568 (read 4595)" in r.output
    assert f"duplicate_question_id {measured}" in r.output


@pytest.mark.annotations
def test_musicavqa_cli_stats_update(annotations_root):
    r = _cli("--dataset", "musicavqa", "--root", str(annotations_root / "musicavqa"))
    assert r.exit_code == 0, r.output
    assert "musicavqa (json_update): 4568 questions, splits val 4568 (read 4568); " \
           "9 question types, 41 answers" in r.output
    assert "Audio-Visual/Temporal 411" in r.output
    assert "duplicate_question_id" not in r.output


# ---------------------------------------------------------------- bad input
def _write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("subset,text,pattern", [
    ("s4", "video,start,category,split\na,0,dog,train\n", r":1: header .* is not 'name,start"),
    ("s4", "name,start,category,split\na,0,dog,train\nb,0,dog,trian\n", r":3: unknown split 'trian'"),
    ("s4", "name,start,category,split\na,0,dog\n", r":2: expected 4 comma-separated fields"),
    ("s4", "name,start,category,split\na,0,,train\n", r":2: empty category"),
    ("s4", "name,start,category,split\na,x,dog,train\n", r":2: start 'x' is not an integer"),
    ("s4", "name,start,category,split\n", r"is empty"),
    ("ms3", "name,start,category,split\na,0,dog,train\n", r":1: header .* is not 'video_id,split'"),
    ("ms3", "", r"is empty"),
])
def test_avs_bad_csv_is_one_line_error(tmp_path, subset, text, pattern):
    path = _write(tmp_path / f"{subset}_meta_data.csv", text)
    with pytest.raises(ValueError) as e:
        read_avsbench(tmp_path, subset)
    assert re.search(pattern, _one_line_error(e, path))


def test_avs_unknown_subset_and_missing_csv(tmp_path):
    with pytest.raises(ValueError, match="unknown AVSBench subset 's5'"):
        read_avsbench(tmp_path, "s5")
    with pytest.raises(FileNotFoundError) as e:
        read_avsbench(tmp_path, "ms3")
    assert "Multi-sources/ms3_meta_data.csv" in _one_line_error(e, tmp_path)
    r = _cli("--dataset", "avs-s4", "--root", str(tmp_path))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "Traceback" not in r.output


def test_avs_duplicates_are_counted(tmp_path):
    _write(tmp_path / "ms3_meta_data.csv", "video_id,split\na,train\na,train\na,test\nb,val\n")
    idx = read_avsbench(tmp_path, "ms3")
    assert [(r.video_id, r.split) for r in idx.records] == [("a", "train"), ("a", "test"), ("b", "val")]
    assert idx.quirks == {"duplicate_video_id": 1, "video_in_two_splits": 1}
    s = json.loads(_cli("--dataset", "avs-ms3", "--root", str(tmp_path), "--json").output)
    assert s["quirks"]["duplicate_video_id"] == 1


def _question(qid, content="Is the <Object> louder than the <Object>?", values='["a", "b"]',
              answer="yes", **kw):
    return {"video_id": "00000001", "question_id": qid, "type": '["Audio", "Comparative"]',
            "question_content": content, "templ_values": values, "question_deleted": 0,
            "anser": answer, **kw}


def test_musicavqa_malformed_json_is_one_line_error(tmp_path):
    path = _write(tmp_path / "json_update" / "avqa-val.json", '[{"video_id": "1",\n  "question_id": }]')
    with pytest.raises(ValueError) as e:
        read_musicavqa(tmp_path)
    msg = _one_line_error(e, path)
    assert f"{path}:2: malformed JSON" in msg
    r = _cli("--dataset", "musicavqa", "--root", str(tmp_path))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and str(path) in r.output


def test_musicavqa_more_placeholders_than_values_is_one_line_error(tmp_path):
    path = _write(tmp_path / "json" / "avqa-test.json",
                  json.dumps([_question(1), _question(2, values='["a"]')]))
    with pytest.raises(ValueError) as e:
        read_musicavqa(tmp_path)
    msg = _one_line_error(e, path)
    assert "record 1 (question_id 2): 2 placeholders" in msg and "1 templ_values" in msg


@pytest.mark.parametrize("record,pattern", [
    ({"video_id": "1", "question_id": 3}, r"record 0 \(question_id 3\): missing type, "),
    (_question(4, type="Audio"), r"type 'Audio' is not a JSON-encoded list"),
    (_question(5, type='["Audio"]'), r"is not \[group, type\]"),
])
def test_musicavqa_bad_records(tmp_path, record, pattern):
    path = _write(tmp_path / "json" / "avqa-train.json", json.dumps([record]))
    with pytest.raises(ValueError) as e:
        read_musicavqa(tmp_path)
    assert re.search(pattern, _one_line_error(e, path))


def test_musicavqa_no_files_and_not_a_list(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        read_musicavqa(tmp_path)
    assert "json_update/" in _one_line_error(e, tmp_path)
    path = _write(tmp_path / "json" / "avqa-val.json", '{"a": 1}')
    with pytest.raises(ValueError) as e:
        read_musicavqa(tmp_path)
    assert "expected a JSON list" in _one_line_error(e, path)


def test_musicavqa_quirks_answers_and_preference(tmp_path):
    train = [_question(1, answer="two"), _question(2, values='["a", "b", "c"]', answer="yes"),
             _question(3, type='["Audio", "Dancing"]', answer="no")]
    val = [_question(2, answer="no"), _question(7, content="Is <X> here?", values='["it"]', answer="maybe"),
           {**_question(8, answer="three", question_deleted=1), "answer": "three"}]
    test = [_question(9, answer="yes")]
    for name, rows in (("train", train), ("val", val), ("test", test)):
        _write(tmp_path / "json" / f"avqa-{name}.json", json.dumps(rows))
    _write(tmp_path / "json_update" / "avqa-val.json", json.dumps([_question(1)]))
    idx = read_musicavqa(tmp_path, prefer="original")
    assert idx.source == "json" and list(idx.files) == ["train", "val", "test"]
    assert idx.answers == ["two", "yes", "no", "maybe", "three"]  # train first, then val, test
    assert idx.quirks == {"duplicate_question_id": 1, "duplicate_conflicting_answer": 1,
                          "unused_templ_values": 1, "unknown_type": 1, "unknown_placeholder": 1,
                          "question_deleted": 1}
    assert [q.question_id for q in idx.questions] == [1, 2, 3, 7, 8, 9]
    assert idx.questions[3].question == "Is it here?"
    assert read_musicavqa(tmp_path).source == "json_update"  # preferred when present
    assert fill_template("<FL> <LR> <TH>", ["first", "left"]) == ("first left <TH>", 3, [])


# ---------------------------------------------------------------- hand-built media layouts
def _png(path, value: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_s4_layout_resolves_and_counts_media(tmp_path):
    root = tmp_path / "AVSBench-object"
    _write(root / "Single-source" / "s4_meta_data.csv",
           "name,start,category,split\nvidA,0,dog,train\nvidB,3,cat,test\nvidC,1,cat,val\n")
    base = root / "Single-source" / "s4_data"
    for k in range(1, 6):
        _png(base / "visual_frames" / "train" / "dog" / "vidA" / f"vidA_{k}.png", k)
        _png(base / "visual_frames" / "test" / "cat" / "vidB" / f"vidB_{k}.png", k)
        _png(base / "gt_masks" / "test" / "cat" / "vidB" / f"vidB_{k}.png", 255)
    _png(base / "gt_masks" / "train" / "dog" / "vidA" / "vidA_1.png", 255)  # train: frame 1 only
    _png(base / "visual_frames" / "val" / "cat" / "vidC" / "vidC_1.png")  # val: 4 frames missing
    _write(base / "audio_wav" / "train" / "dog" / "vidA.wav", "")
    _write(base / "audio_log_mel" / "test" / "cat" / "vidB.pkl", "")
    idx = read_avsbench(root, "s4")
    a, b, c = idx.records
    assert all(Path(p).is_file() for p in a.frames + a.masks + b.frames + b.masks)
    assert len(a.masks) == 1 and len(b.masks) == 5 and a.mask_frames == [0]
    assert idx.categories == ["cat", "dog"]
    assert idx.media_counts() == {"frames": 2, "masks": 2, "audio_wav": 1, "log_mel": 1, "complete": 2}
    s = stats("avs-s4", root)
    assert s["media_present"]["complete"] == 2 and s["per_category"]["test"] == {"cat": 1}
    r = _cli("--dataset", "avs-s4", "--root", str(root))
    assert r.exit_code == 0, r.output
    assert "avs-s4: 3 rows, 2 categories, splits train 1, val 1, test 1" in r.output
    assert "frames 2, masks 2, audio_wav 1, log_mel 1, complete 2" in r.output


def test_ms3_layout_frames_without_split_folder(tmp_path):
    root = tmp_path / "avsbench"  # flat: the CSV beside ms3_data/
    _write(root / "ms3_meta_data.csv", "video_id,split\nxv7_36,val\nab_1,train\n")
    base = root / "ms3_data"
    for k in range(1, 6):
        _png(base / "visual_frames" / "xv7_36" / f"xv7_36.mp4_{k}.png", k)
        _png(base / "gt_masks" / "val" / "xv7_36" / f"xv7_36_{k}.png", 255)
        _png(base / "visual_frames" / "ab_1" / f"ab_1.mp4_{k}.png", k)
    _write(base / "audio_log_mel" / "val" / "xv7_36.pkl", "")
    idx = read_avsbench(root, "ms3")
    v, t = idx.records
    assert v.frames[4] == str(base / "visual_frames" / "xv7_36" / "xv7_36.mp4_5.png")
    assert v.masks[0] == str(base / "gt_masks" / "val" / "xv7_36" / "xv7_36_1.png")
    assert v.log_mel == str(base / "audio_log_mel" / "val" / "xv7_36.pkl")
    assert idx.media_counts() == {"frames": 2, "masks": 1, "audio_wav": 0, "log_mel": 1, "complete": 1}
    s = json.loads(_cli("--dataset", "avs-ms3", "--root", str(root), "--json").output)
    assert s["media_present"]["frames"] == 2 and s["masks"] == {"train": 5, "val": 5, "test": 0}
