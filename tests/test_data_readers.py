"""Readers against the real annotation files, plus manifests, synthetic VGG-Sound files and stats."""
from __future__ import annotations

import json
import shutil

import pytest

from avprompt.data.datasets import export_manifest, load_dataset
from avprompt.data.llp import LLP_CLASSES
from avprompt.data.records import ClipRecord, DatasetIndex
from avprompt.data.stats import index_stats


def _by_video(index, vid):
    return [r for r in index.records if r.video_id == vid]


# ---------------------------------------------------------------- AVE
@pytest.mark.annotations
def test_ave_published_statistics(ave, annotations_root):
    assert len(ave.records) == 4143
    assert {s: len(ave.split(s)) for s in ("train", "val", "test")} == {
        "train": 3339, "val": 402, "test": 402}
    cats = (annotations_root / "ave" / "categories.txt").read_text().split("\n")
    assert ave.classes == [c.strip() for c in cats if c.strip()]
    assert len(ave.classes) == 28
    assert len({r.clip_id for r in ave.records}) == len(ave.records)


@pytest.mark.annotations
def test_ave_segments_and_quirks(ave):
    (row,) = _by_video(ave, "fCZi6I6kPpU")  # Church bell, 6 & 10 in trainSet.txt
    assert row.segment_labels == [-1] * 6 + [0] * 4 and row.video_labels == [0]
    (zero,) = _by_video(ave, "VWi2ENBuTbw")  # the zero-length row (0 & 0)
    assert zero.segment_labels == [-1] * 10 and zero.video_labels == [0]
    two = _by_video(ave, "0qvQIuQoODo")  # male speech in train, female speech in test
    assert sorted(r.split for r in two) == ["test", "train"]
    assert sorted(r.clip_id for r in two) == ["0qvQIuQoODo#1", "0qvQIuQoODo#2"]
    assert ave.quirks["zero_length_event"] == 1
    assert ave.quirks["video_in_two_splits"] > 0
    assert ave.quirks["video_multiple_rows"] >= ave.quirks["video_in_two_splits"]


@pytest.mark.annotations
def test_ave_header_optional(ave, annotations_root, tmp_path):
    for f in (annotations_root / "ave").glob("*.txt"):
        shutil.copy(f, tmp_path / f.name)
    lines = (tmp_path / "Annotations.txt").read_text().splitlines()
    assert lines[0].startswith("Category&")
    (tmp_path / "Annotations.txt").write_text("\n".join(lines[1:]) + "\n")
    again = load_dataset("ave", tmp_path)
    assert again.classes == ave.classes
    assert [(r.clip_id, r.segment_labels) for r in again.records] == [
        (r.clip_id, r.segment_labels) for r in ave.records]


def test_ave_bad_row_names_file_and_line(tmp_path):
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt", "Annotations.txt"):
        (tmp_path / name).write_text("Bark&abcdefghijk&good&0&10\n")
    (tmp_path / "testSet.txt").write_text("Bark&abcdefghijk&good&0\n")
    with pytest.raises(ValueError, match=r"testSet.txt:1: expected 5"):
        load_dataset("ave", tmp_path)


def test_pre_extracted_layout_is_found(tmp_path):
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (tmp_path / name).write_text("Bark&abcdefghijk&good&2&5\n")
    (tmp_path / "frames" / "abcdefghijk").mkdir(parents=True)
    index = load_dataset("ave", tmp_path)
    assert index.records[0].media.endswith("frames/abcdefghijk")
    assert index.records[0].clip_id == "abcdefghijk#1"


# ---------------------------------------------------------------- LLP
@pytest.mark.annotations
def test_llp_published_statistics_and_quirks(llp):
    assert {s: len(llp.split(s)) for s in ("train", "val", "test")} == {
        "train": 10000, "val": 649, "test": 1200}
    assert llp.classes == LLP_CLASSES and len(llp.classes) == 25
    assert all(r.video_id == r.clip_id[:11] for r in llp.records)
    for quirk in ("dense_unmatched_rows", "dense_empty_interval", "dense_label_outside_weak",
                  "weak_duplicate_label"):
        assert llp.quirks[quirk] > 0, quirk
    rec = {r.clip_id: r for r in llp.records}
    # "Singing" is annotated densely but is not among the weak labels: dense keeps it
    m = rec["McfGMq5A5G8_30_40"]
    singing = LLP_CLASSES.index("Singing")
    assert singing not in m.video_labels
    assert any(singing in s for s in m.audio_segments)
    # offset == onset (9, 9) marks no segment
    c = rec["CaC2xvdLC34_250_260"]
    assert c.audio_segments is not None
    assert all(set(s) <= set(range(25)) for s in c.audio_segments)
    assert rec["LcFWKgFphXI_20_30"].video_labels == [LLP_CLASSES.index("Clapping")]
    assert all(r.audio_segments is None for r in llp.split("train"))


# ---------------------------------------------------------------- VGG-Sound
@pytest.mark.annotations
def test_vggsound_classes_from_stat_csv(annotations_root):
    index = load_dataset("vggsound", annotations_root / "vggsound")
    assert len(index.classes) == 309 and index.classes == sorted(index.classes)
    assert len(index.split("test")) == len(index.records) > 0
    assert all(r.media.endswith(f"video/{r.video_id}.mp4") for r in index.records[:5])


def test_vggsound_full_csv(tmp_path):
    (tmp_path / "vggsound.csv").write_text(
        '---g-f_I2yQ,1,"people marching",test\nabcdefghijk,30,"bird chirping, tweeting",train\n'
        'abcdefghijk,30,"bird chirping, tweeting",train\n')
    index = load_dataset("vggsound", tmp_path)
    assert index.classes == ["bird chirping, tweeting", "people marching"]
    assert [r.clip_id for r in index.records] == [
        "---g-f_I2yQ_000001", "abcdefghijk_000030", "abcdefghijk_000030#2"]
    assert index.quirks == {"duplicate_clip": 1}


def test_vggsound40k(tmp_path):
    (tmp_path / "VggsoundAVEL40kCategories.txt").write_text("dog barking\ncat meowing\n")
    (tmp_path / "vggsound-avel40k_labels.csv").write_text(
        'split,category,video_id,label\n'
        'train,cat meowing,aaaaaaaaaaa_000010,"[0, 0, 1, 1, 1, 0, 0, 0, 0, 0]"\n'
        'test,dog barking,bbbbbbbbbbb_000000,"[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"\n')
    index = load_dataset("vggsound40k", tmp_path)
    assert index.classes == ["dog barking", "cat meowing"]
    assert index.records[0].segment_labels == [-1, -1, 1, 1, 1, -1, -1, -1, -1, -1]
    assert index.records[1].split == "test" and index.records[1].video_labels == [0]


# ---------------------------------------------------------------- manifests
@pytest.mark.annotations
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_round_trip(llp, tmp_path, suffix):
    small = DatasetIndex("llp", llp.root, llp.classes,
                         llp.split("train")[:20] + llp.split("test")[:20])
    path = export_manifest(small, tmp_path / f"m{suffix}")
    back = load_dataset(f"manifest:{path}")
    assert back.classes == small.classes
    assert [(r.clip_id, r.video_id, r.split, r.video_labels, r.audio_segments,
             r.visual_segments) for r in back.records] == [
        (r.clip_id, r.video_id, r.split, r.video_labels, r.audio_segments, r.visual_segments)
        for r in small.records]


def test_own_manifest_minimal_and_errors(tmp_path):
    (tmp_path / "m.csv").write_text("media,split,labels\nclips/a.mp4,train,dog\n"
                                    "clips/b.mp4,test,cat|dog\n")
    index = load_dataset("manifest:m.csv", tmp_path)
    assert index.classes == ["dog", "cat"]
    assert index.records[0].media == str(tmp_path / "clips" / "a.mp4")
    assert index.records[1].video_labels == [0, 1] and index.records[1].clip_id == "b"
    (tmp_path / "bad.csv").write_text("media,split\na.mp4,training\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: split must be"):
        load_dataset(f"manifest:{tmp_path / 'bad.csv'}")
    with pytest.raises(ValueError, match="unknown dataset 'avee'"):
        load_dataset("avee", tmp_path)


# ---------------------------------------------------------------- stats + CLI
@pytest.mark.annotations
def test_stats_ave_and_llp(ave, llp):
    s = index_stats(ave)
    assert s["test_segments"]["event"] + s["test_segments"]["background"] == 402 * 10
    assert s["shots"]["1"] == 28 and s["quirks"]["zero_length_event"] == 1
    floor = s["floors"]["ave"]["standard"]["primary"]
    assert floor == pytest.approx(100 * s["test_segments"]["background"] / 4020)
    t = index_stats(llp)
    assert t["no_single_label_train"] == ["Speech"]
    assert t["shots"]["16"] < 16 * 25  # Speech has none, small classes fewer
    f = t["floors"]["llp-cls"]
    # a constant predictor games the reference rule (> 50 %) but not the standard primary
    assert f["reference"]["primary"] > 50 > 4 * f["standard"]["primary"]
    assert 0 < t["multi_label_test"] < 1200
    json.dumps(t)


@pytest.mark.annotations
def test_cli_stats_json_and_error(annotations_root):
    from typer.testing import CliRunner

    from avprompt.cli_data import app

    runner = CliRunner()
    res = runner.invoke(app, ["stats", "--dataset", "ave", "--root",
                              str(annotations_root / "ave"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["splits"]["train"] == 3339
    res = runner.invoke(app, ["stats", "--dataset", "ave", "--root", str(annotations_root)])
    assert res.exit_code == 2 and "trainSet.txt" in res.output


def test_records_helpers():
    r = ClipRecord("a", "a", "a.mp4", "train")
    assert r.segment_labels == [-1] * 10 and DatasetIndex("x", None, [], [r]).split("train") == [r]
