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
