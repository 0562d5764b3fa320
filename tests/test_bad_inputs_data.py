"""Bad or unusual data inputs: each is accepted as documented or fails with one line naming the
file (and row) and what to do; through the CLI that line comes with exit code 2."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from avprompt.cli import app, main
from avprompt.config import load_config_file
from avprompt.data.datasets import load_dataset
from avprompt.data.prepare import load_clip, prepare

BOM = "\ufeff"
ID1, ID2 = "EsfJpLbBeb4", "hOuyJFqb4JM"  # real AVE ids


def _ave(root, rows=f"Bark&{ID1}&good&0&10\n", ann=None):
    root.mkdir(parents=True, exist_ok=True)
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (root / name).write_text(rows)
    if ann is not None:
        (root / "Annotations.txt").write_text(ann)
    return root


def _llp(root, train="filename\tevent_labels\nBjCEufrlXm4_20_30\tSpeech,Dog\n"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "AVVP_train.csv").write_text(train)
    (root / "AVVP_val_pd.csv").write_text("filename\tevent_labels\nKSRjje7GH44_60_70\tBlender\n")
    (root / "AVVP_test_pd.csv").write_text("filename\tevent_labels\n4YdbENYcIyE_23_33\tDog\n")
    return root


def _cli(*args):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


# ---------------------------------------------------------------- manifests: list columns
def test_jsonl_labels_as_a_string_is_rejected_naming_the_row(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"classes": ["dog", "cat"]}\n'
                 '{"media": "a.mp4", "split": "train", "labels": ["cat"]}\n'
                 '{"media": "b.mp4", "split": "test", "labels": "dog"}\n')
    with pytest.raises(ValueError, match=r'm\.jsonl:3: \'labels\' must be a JSON list, got the '
                                         r'string "dog"; write "labels": \["dog"\]'):
        load_dataset(f"manifest:{m}")
    m.write_text('{"media": "a.mp4", "split": "train", "audio_segments": '
                 '["dog", [], [], [], [], [], [], [], [], []]}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:1: 'audio_segments' needs one list"):
        load_dataset(f"manifest:{m}")
    m.write_text('["a.mp4", "train"]\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:1: each line must be a JSON object"):
        load_dataset(f"manifest:{m}")
    code, out = _cli("data", "stats", "--dataset", f"manifest:{m}")
    assert code == 2 and out.count("\n") == 1 and "m.jsonl:1" in out


def test_csv_manifest_without_media_column_names_it(tmp_path):
    (tmp_path / "m.csv").write_text("path,split\na.mp4,train\n")
    with pytest.raises(ValueError, match=r"m\.csv:1: no column 'media' in the header"):
        load_dataset(f"manifest:{tmp_path / 'm.csv'}")


# ---------------------------------------------------------------- encodings
def test_utf8_bom_is_accepted_everywhere(tmp_path):
    ave = _ave(tmp_path / "ave", ann=BOM + f"Category&VideoID&Quality&StartTime&EndTime\n"
                                            f"Bark&{ID1}&good&0&10\n")
    (ave / "trainSet.txt").write_text(BOM + f"Bark&{ID1}&good&2&5\n")
    index = load_dataset("ave", ave)
    assert index.classes == ["Bark"] and index.records[0].segment_labels[2] == 0
    llp = _llp(tmp_path / "llp", BOM + "filename\tevent_labels\nBjCEufrlXm4_20_30\tDog\n")
    assert len(load_dataset("llp", llp).split("train")) == 1
    vgg = tmp_path / "vgg"
    vgg.mkdir()
    (vgg / "stat.csv").write_text(BOM + "dog barking,10,animals\n")
    (vgg / "test.csv").write_text(BOM + "abcdefghijk_000010.mp4,dog barking\n")
    assert load_dataset("vggsound", vgg).classes == ["dog barking"]
    (vgg / "vggsound-avel40k_labels.csv").write_text(
        BOM + 'split,category,video_id,label\ntrain,dog barking,1,"[1,1,1,1,1,0,0,0,0,0]"\n')
    (vgg / "VggsoundAVEL40kCategories.txt").write_text(BOM + "dog barking\n")
    assert load_dataset("vggsound40k", vgg).classes == ["dog barking"]
    (tmp_path / "m.csv").write_text(BOM + "# classes: dog|cat\nmedia,split,labels\na.mp4,test,cat\n")
    m = load_dataset(f"manifest:{tmp_path / 'm.csv'}")
    assert m.classes == ["dog", "cat"] and m.records[0].video_labels == [1]
    (tmp_path / "m.jsonl").write_text(BOM + '{"media": "a.mp4", "split": "val"}\n')
    assert load_dataset(f"manifest:{tmp_path / 'm.jsonl'}").records[0].split == "val"


@pytest.mark.annotations
def test_real_ave_files_with_bom_read_the_same(ave, annotations_root, tmp_path):
    for f in (annotations_root / "ave").glob("*.txt"):
        (tmp_path / f.name).write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    again = load_dataset("ave", tmp_path)
    assert again.classes == ave.classes
    assert [(r.clip_id, r.segment_labels) for r in again.records] == [
        (r.clip_id, r.segment_labels) for r in ave.records]


def test_non_utf8_annotation_and_manifest_name_file_and_line(tmp_path):
    ave = _ave(tmp_path / "ave")
    (ave / "Annotations.txt").write_bytes(b"Category&VideoID&Quality&StartTime&EndTime\n"
                                          b"Bark&" + ID1.encode() + b"&good&0&10\n"
                                          b"Caf\xe9&" + ID2.encode() + b"&good&0&10\n")
    with pytest.raises(ValueError, match=r"Annotations\.txt:3: not UTF-8 text \(byte 0xe9"):
        load_dataset("ave", ave)
    (tmp_path / "m.csv").write_bytes(b"media,split\n\xff.mp4,train\n")
    with pytest.raises(ValueError, match=r"m\.csv:2: not UTF-8 text .*save the manifest as UTF-8"):
        load_dataset(f"manifest:{tmp_path / 'm.csv'}")
    code, out = _cli("data", "stats", "--dataset", "ave", "--root", str(ave))
    assert code == 2 and out.startswith("error: ") and out.count("\n") == 1


# ---------------------------------------------------------------- config files
def test_config_file_encoding_and_syntax_errors(tmp_path, capsys):
    bad = tmp_path / "suite.toml"
    bad.write_bytes(b'seeds = "1"\nmethods = "caf\xe9"\n')
    with pytest.raises(ValueError, match=r"config file .*suite\.toml:2: not UTF-8 text"):
        load_config_file(bad)
    bad.write_text('seeds = "1"\nshots = \n')
    with pytest.raises(ValueError, match=r"suite\.toml: invalid TOML: .*\(at line 2, column 9\)"):
        load_config_file(bad)
    y = tmp_path / "suite.yaml"
    y.write_text("seeds: 1\nmethods: [a, b\nshots: 2\n")
    with pytest.raises(ValueError, match=r"suite\.yaml: invalid YAML: .*\(at line 3, column \d+\)"):
        load_config_file(y)
    y.write_text("- seeds\n- shots\n")
    with pytest.raises(ValueError, match=r"suite\.yaml: expected key = value settings"):
        load_config_file(y)
    bom = tmp_path / "ok.toml"
    bom.write_text(BOM + 'seeds = "1,2"\n')
    assert load_config_file(bom) == {"seeds": "1,2"}
    y.write_text("seeds: 1\nmethods: [a, b\n")
    with pytest.raises(SystemExit) as exit_:  # through main(): library errors become one line
        main(["bench", "--config", str(y), "--tasks", "ave"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: config file {y}: invalid YAML: ") and "(at line 3" in err


# ---------------------------------------------------------------- empty files
@pytest.mark.parametrize("case", ["ave-annotations", "ave-header-only", "ave-all-splits",
                                  "llp-train", "llp-dense", "vgg-test", "vgg40k", "vgg40k-header",
                                  "manifest-csv", "manifest-jsonl"])
def test_empty_annotation_file_is_named(tmp_path, case):
    spec, root, name = case.split("-")[0], tmp_path, None
    if spec == "ave":
        rows = "" if case == "ave-all-splits" else f"Bark&{ID1}&good&0&10\n"
        ann = "Category&VideoID&Quality&StartTime&EndTime\n" if "header" in case else ""
        _ave(root, rows, ann)
        name = "trainSet.txt, valSet.txt and testSet.txt" if "splits" in case else "Annotations.txt"
    elif spec == "llp":
        _llp(root, "" if case == "llp-train" else "filename\tevent_labels\nBjCEufrlXm4_20_30\tDog\n")
        name = "AVVP_train.csv" if case == "llp-train" else "AVVP_eval_audio.csv"
        if case == "llp-dense":
            (root / name).write_text("filename\tonset\toffset\tevent_labels\n")
    elif case == "vgg-test":
        (root / "test.csv").write_text("\n")
        name, spec = "test.csv", "vggsound"
    elif spec == "vgg40k":
        (root / "vggsound-avel40k_labels.csv").write_text(
            "split,category,video_id,label\n" if "header" in case else "")
        name, spec = "vggsound-avel40k_labels.csv", "vggsound40k"
    else:
        name = "m.csv" if case.endswith("csv") else "m.jsonl"
        (root / name).write_text("media,split\n" if name == "m.csv" else '{"classes": ["a"]}\n')
        spec = f"manifest:{root / name}"
    with pytest.raises(ValueError, match=rf"{name}.* (is|are all) empty"):
        load_dataset(spec, root)


# ---------------------------------------------------------------- export-manifest
def test_export_manifest_with_relative_root_resolves_from_anywhere(tmp_path, monkeypatch):
    data = _ave(tmp_path / "data" / "ave", f"Bark&{ID1}&good&0&10\nBark&{ID2}&good&0&10\n")
    (data / "AVE").mkdir()
    for v in (ID1, ID2):
        (data / "AVE" / f"{v}.mp4").write_bytes(b"")  # stats only checks that media exist
    monkeypatch.chdir(tmp_path / "data")
    code, out = _cli("data", "export-manifest", "--dataset", "ave", "--root", "ave",
                     "--out", "manifests/ave.csv")
    assert code == 0, out
    monkeypatch.chdir(tmp_path)
    code, out = _cli("data", "stats", "--dataset", "manifest:data/manifests/ave.csv", "--json")
    assert code == 0, out
    assert json.loads(out)["media_present"] == 6  # 2 videos x 3 split files
    # a hand-written manifest's relative media resolve against the manifest's folder
    (tmp_path / "data" / "own.jsonl").write_text(f'{{"media": "ave/AVE/{ID1}.mp4", "split": "test"}}\n')
    own = load_dataset("manifest:data/own.jsonl")
    assert own.records[0].media == str(data / "AVE" / f"{ID1}.mp4")


def test_export_manifest_without_dataset_prints_the_columns():
    code, out = _cli("data", "export-manifest")
    assert code == 0, out
    for column in ("media", "split", "clip_id", "labels", "segment_labels", "audio_segments"):
        assert f"\n{column} " in out, column
    assert "manifest:FILE" in out
    code, out = _cli("data", "export-manifest", "--dataset", "ave")
    assert code == 2 and "--out" in out


# ---------------------------------------------------------------- VGG-Sound 40K by header names
def test_vggsound40k_columns_by_name(tmp_path):
    (tmp_path / "VggsoundAVEL40kCategories.txt").write_text("dog barking\ncat meowing\n")
    csv = tmp_path / "vggsound-avel40k_labels.csv"
    # pandas' to_csv adds an unnamed index column; columns in another order
    csv.write_text(',video_id,label,category,split\n'
                   '0,12,"[0, 0, 1, 1, 1, 0, 0, 0, 0, 0]",cat meowing,train\n'
                   '1,7,"[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",dog barking,test\n')
    index = load_dataset("vggsound40k", tmp_path)
    assert [(r.video_id, r.split, r.video_labels) for r in index.records] == [
        ("12", "train", [1]), ("7", "test", [0])]
    assert index.records[0].segment_labels == [-1, -1, 1, 1, 1, -1, -1, -1, -1, -1]
    csv.write_text('split,category,video_id\ntrain,cat meowing,12\n')
    with pytest.raises(ValueError, match=r"labels\.csv:1: header has no column 'label'"):
        load_dataset("vggsound40k", tmp_path)
    csv.write_text('train,cat meowing,12,"[0, 0, 1, 1, 1, 0, 0, 0, 0, 0]"\n')
    with pytest.raises(ValueError, match=r"labels\.csv:1: no header line; add "
                                         r"'split,category,video_id,label'"):
        load_dataset("vggsound40k", tmp_path)
    csv.write_text('split,category,video_id,label\ntrain,cat meowing,12,"[0, 2, 1]"\n')
    with pytest.raises(ValueError, match=r"labels\.csv:2: label must list 10 0/1 values"):
        load_dataset("vggsound40k", tmp_path)


# ---------------------------------------------------------------- DG-SCT's pre-extracted layout
def _frames(folder, n=10, size=(40, 30)):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size[1], size[0], 3), 20 * i, np.uint8)).save(
            folder / f"{i + 1:08d}.jpg")


def test_dgsct_llp_layout_is_recognised_and_decoded(tmp_path):
    root = _llp(tmp_path / "AVVP")  # DG-SCT's data/AVVP
    _frames(root / "LLP_dataset" / "frame" / "BjCEufrlXm4")
    (root / "LLP_dataset" / "wave").mkdir()
    np.save(root / "LLP_dataset" / "wave" / "BjCEufrlXm4.npy", np.full((10, 32000), 0.2, np.float32))
    index = load_dataset("llp", root)
    rec = index.split("train")[0]
    assert rec.media == str(root / "LLP_dataset" / "frame" / "BjCEufrlXm4")
    index.records = [rec]
    report = prepare(index, tmp_path / "cache", 32, 16000, progress=False)
    assert report.decoded == 1 and not any("silence" in n for n in report.clip_notes[rec.clip_id])
    frames, wave = load_clip(report.cache, rec)
    assert frames.shape == (10, 32, 32, 3) and abs(float(np.median(wave)) - 0.2) < 1e-3


def test_dgsct_vggsound_numeric_ids_and_ave_folder(tmp_path):
    vgg = tmp_path / "vggsound"  # DG-SCT's data/vggsound: frames/<id zero-padded to 6>/
    _frames(vgg / "frames" / "000012")
    (vgg / "vggsound-avel40k_labels.csv").write_text(
        'split,category,video_id,label\ntrain,dog,12,"[1,1,1,1,1,1,1,1,1,1]"\n')
    assert load_dataset("vggsound40k", vgg).records[0].media == str(vgg / "frames" / "000012")
    ave = tmp_path / "AVE"  # DG-SCT's data/AVE: h5 row orders instead of the split files
    ave.mkdir()
    (ave / "Annotations.txt").write_text(f"Category&VideoID&Quality&StartTime&EndTime\n"
                                         f"Bark&{ID1}&good&0&10\n")
    for name in ("train_order.h5", "test_order.h5", "labels.h5"):
        (ave / name).write_bytes(b"")
    _frames(ave / "frames" / ID1)
    with pytest.raises(FileNotFoundError, match=r"DG-SCT's AVE layout .* has no trainSet\.txt; "
                                                r"copy trainSet\.txt, valSet\.txt and testSet"):
        load_dataset("ave", ave)
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        shutil.copy(ave / "Annotations.txt", ave / name)
    assert load_dataset("ave", ave).records[0].media == str(ave / "frames" / ID1)
