"""`avprompt predict`: a cell saved by `bench --save-checkpoints` labels a SynthAV test video
exactly as the sweep scored it (the stored per-video predictions), for every method kind."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avprompt.bench import BenchConfig, _workspace, run_bench
from avprompt.cli import app
from avprompt.predict import checkpoint_path, load_cell, predict_videos
from avprompt.results import load_results, read_predictions

METHODS = {  # one per kind: zero-shot, fit, fit-then-train, train on features, train in the network
    "zeroshot-clip@v": "v", "linear-probe@v": "v", "tip-adapter-f@v": "v", "coop@v": "v", "dg-sct@av": "av"}


@pytest.fixture(scope="module")
def saved(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict-store")
    cfg = BenchConfig(data=str(tiny_world), backbones="tiny", tasks=["ave"], shots=[1], seeds=[1],
                      methods="zeroshot-clip,linear-probe,tip-adapter-f,coop,dg-sct", modality="auto",
                      out=str(out), synth_size="tiny", max_epochs=2, max_epochs_in_network=1,
                      save_checkpoints=True)
    assert run_bench(cfg, echo=lambda *_: None)["failed"] == 0
    records = {f"{r['key']['method']}@{r['key']['modality']}": r for r in load_results(out)
               if r["status"] == "ok"}
    media = {r.clip_id: r.media for r in _workspace(cfg).index("ave").records}
    return records, media


@pytest.mark.parametrize("method_id", list(METHODS))
def test_predict_reproduces_the_cells_test_predictions(saved, method_id):
    records, media = saved
    rec = records[method_id]
    assert checkpoint_path(rec["_path"]).is_file() and rec["checkpoint"].endswith(".ckpt.pt")
    preds = read_predictions(rec)
    method, blob = load_cell(rec["_path"])
    assert blob["method"] == method_id.split("@")[0]
    for i in (0, len(preds["clip_ids"]) - 1):
        got = predict_videos(method, [media[str(preds["clip_ids"][i])]])[0]
        want = torch.from_numpy(preds["logits"][i].astype(np.float32)).softmax(-1)  # (T, K+1)
        probs = np.array([s["prob"] for s in got["segments"]])
        assert [s["label"] for s in got["segments"]] == [
            (list(method.task.class_names) + ["background"])[int(k)] for k in want.argmax(-1)]
        assert np.allclose(probs, want.max(-1).values.numpy(), atol=2e-2)


def test_predict_cli_and_bad_inputs(saved, tmp_path, capsys):
    records, media = saved
    rec = records["linear-probe@v"]
    video = next(iter(media.values()))
    runner = CliRunner()
    res = runner.invoke(app, ["predict", rec["_path"], str(video), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "video,segment,label,prob" and len(res.stdout.splitlines()) == 12
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    from avprompt.cli import main
    for args, words in [([rec["_path"], str(bad)], "broken.mp4"),
                        ([str(tmp_path / "nope.json"), str(video)], "no cell checkpoint")]:
        with pytest.raises(SystemExit) as info:
            main(["predict", *args])
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and words in err and len(err.splitlines()) == 1, err
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"path\n{video}\n{video}\n")
    res = runner.invoke(app, ["predict", rec["_path"], f"manifest:{manifest}", "--format", "json"])
    assert res.exit_code == 0 and res.stdout.count('"video":') == 2


# ----------------------------------------------------------------- supervised cells (`avprompt train`)
@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    """Tiny ave-sup and avvp cells (frozen encoder, 2 epochs) with their checkpoints."""
    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.commands import train_supervised
    from avprompt.supervised.run import TrainConfig
    out = tmp_path_factory.mktemp("predict-supervised")
    cells = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
        ws = Workspace("synthav", "tiny", "cpu", "tiny")
        for task in ("ave-sup", "avvp"):
            res = train_supervised(TrainConfig(task=task, backbones="tiny", max_epochs=2, seeds=[1],
                                               synth_size="tiny", out=str(out)))
            assert res[0]["status"] == "ok"
            cells[task] = (res[0]["path"], {r.clip_id: r.media for r in ws.index(task).records})
    return cells


@pytest.mark.parametrize("task", ["ave-sup", "avvp"])
def test_predict_reproduces_a_supervised_cells_test_predictions(trained, task):
    path, media = trained[task]
    preds = read_predictions(path)
    cell, blob = load_cell(path)
    assert blob["method"] == {"ave-sup": "cmbs+frozen", "avvp": "mmil+frozen"}[task]
    assert blob["task"]["name"] == task
    assert "class_names" in torch.load(checkpoint_path(path), weights_only=False)["task"]  # saved by train
    names = cell.class_names
    for i in (0, len(preds["clip_ids"]) - 1):
        got = predict_videos(cell, [media[str(preds["clip_ids"][i])]])[0]
        assert set(got) >= {"video", "label", "prob", "segments", "notes"} and len(got["segments"]) == 10
        probs = np.array([s["prob"] for s in got["segments"]])
        if task == "ave-sup":  # (T, C + 1) scores, background last: argmax = the head's decision
            want = torch.from_numpy(preds["segment_scores"][i]).softmax(-1)
            assert [s["label"] for s in got["segments"]] == [(names + ["background"])[int(k)] for k in want.argmax(-1)]
            assert np.allclose(probs, want.max(-1).values.numpy(), atol=2e-3)
        else:  # multi-label: the top event per segment, the reference rule's events, the video's top event
            both = np.maximum(preds["seg_prob_audio"][i], preds["seg_prob_visual"][i])  # (T, C)
            assert [s["label"] for s in got["segments"]] == [names[int(k)] for k in both.argmax(-1)]
            assert np.allclose(probs, both.max(-1), atol=2e-3)
            vp = preds["video_prob"][i]
            assert got["label"] == names[int(vp.argmax())] and got["prob"] == pytest.approx(float(vp.max()), abs=2e-3)
            for s in got["segments"]:
                t = s["t"]
                keep = {names[c] for c in range(len(names)) if vp[c] >= 0.5 and
                        max(preds["seg_prob_audio"][i][t, c], preds["seg_prob_visual"][i][t, c]) >= 0.5}
                assert {e["label"] for e in s["events"]} == keep
            assert any("multi-label" in n for n in got["notes"])


def test_predict_cli_on_a_supervised_cell_and_an_old_checkpoint(trained, tmp_path):
    import json
    import shutil
    path, media = trained["ave-sup"]
    video = next(iter(media.values()))
    res = CliRunner().invoke(app, ["predict", path, str(video), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == "cmbs+frozen" and out["task"] == "ave-sup" and len(out["videos"][0]["segments"]) == 10
    # a checkpoint saved before it held its class names: read from the cell's JSON beside it
    blob = torch.load(checkpoint_path(path), weights_only=False)
    for k in ("task", "method", "head_context"):
        blob.pop(k)
    torch.save(blob, tmp_path / "seed1.ckpt.pt")
    shutil.copy(path, tmp_path / "seed1.json")
    cell, old = load_cell(tmp_path / "seed1.json")
    assert old["method"] == "cmbs+frozen"
    assert predict_videos(cell, [video])[0]["segments"] == out["videos"][0]["segments"]


@pytest.mark.parametrize("case, words", [
    ("avs-s4", "avprompt eval --checkpoint"), ("avqa", "answers to questions"),
    ("garbage", "cannot be read"), ("weights", "was trained on backbones"), ("missing", "avprompt train")])
def test_predict_refuses_unsupported_supervised_cells_in_one_line(trained, tmp_path, capsys, case, words):
    from avprompt.cli import main
    path, media = trained["ave-sup"]
    video = str(next(iter(media.values())))
    ckpt = tmp_path / "seed1.ckpt.pt"
    blob = torch.load(checkpoint_path(path), weights_only=False)
    if case in ("avs-s4", "avqa"):
        blob["train_config"]["task"] = case
        torch.save(blob, ckpt)
    elif case == "weights":
        blob["identity"]["backbones"]["fingerprint"] = "avp-vit-tiny@other+avp-htsat-tiny@other"
        torch.save(blob, ckpt)
    elif case == "garbage":
        ckpt.write_bytes(b"not a checkpoint")
    else:  # a supervised cell's JSON without its checkpoint
        import shutil
        ckpt = tmp_path / "seed1.json"
        shutil.copy(path, ckpt)
    with pytest.raises(SystemExit) as info:
        main(["predict", str(ckpt), video])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and words in err and len(err.splitlines()) == 1, err
    assert case == "missing" or str(ckpt) in err
