"""AVSBench-object segmentation tasks (avs-s4, avs-ms3) end to end on the tiny SynthAV world: the
``avs`` example source, the TPAVI-style head, `avprompt train` / `eval`, in-network modes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def _source(task: str, data: str = "synthav"):
    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.sources import source_for
    from avprompt.tasks import get_task
    ws = Workspace(data, "tiny", "cpu", "tiny")
    return ws, source_for(ws, get_task(task))


def test_s4_trains_into_a_cell_that_eval_reproduces(tiny_env, tmp_path, train_cfg):
    from avprompt.supervised.commands import eval_checkpoint, train_supervised
    out = train_supervised(train_cfg(task="avs-s4"))
    assert len(out) == 1 and not out[0]["reused"]
    rec_path = next(tmp_path.rglob("avs-s4/tpavi+frozen/**/full/seed1.json"))
    rec = json.loads(rec_path.read_text())
    m = rec["metrics"]
    assert rec["status"] == "ok" and m["primary_metric"] == "miou" and m["primary"] == m["miou"]
    assert 0 <= m["miou"] <= 100 and 0 <= m["fscore"] <= 100
    assert set(m["floors"]) == {"miou", "fscore"} and 0 < m["floor"] <= 100
    assert set(rec["extra"]["avs_floors"]) == {"all_background", "all_foreground", "centre_box"}
    assert rec["identity"]["data"]["dataset"] == "avsbench-s4"
    pred = np.load(rec_path.with_suffix(".pred.npz"))
    n = rec["extra"]["n_test"]
    assert len(pred["clip_ids"]) == n and pred["mask_prob_u8"].shape == (n, 5, 28, 28)
    assert np.isclose(pred["video_miou"].mean(), m["miou"])  # 5 frames per video: video mean = frame mean
    res = eval_checkpoint(rec_path.with_suffix(".ckpt.pt"))
    assert res["primary"] == pytest.approx(m["miou"], abs=1e-6)
    assert res["metrics"]["fscore"] == pytest.approx(m["fscore"], abs=1e-6)


def test_ms3_trains(tiny_env, tmp_path, train_cfg):
    from avprompt.supervised.commands import train_supervised
    out = train_supervised(train_cfg(task="avs-ms3", max_epochs=1))
    rec = json.loads(next(tmp_path.rglob("avs-ms3/tpavi+frozen/**/seed1.json")).read_text())
    assert out[0]["status"] == "ok" and 0 <= rec["metrics"]["miou"] <= 100
    assert rec["class_names"] == ["foreground"]


def test_dgsct_mode_trains_the_s4_head_and_leaves_the_towers_frozen(tiny_env, tmp_path, train_cfg):
    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.run import resolve, run_seed
    cfg = train_cfg(task="avs-s4", encoder="dg-sct", max_epochs=1)
    ws = Workspace("synthav", "tiny", "cpu", "tiny")
    before = {k: v.clone() for k, v in ws.encoders.state_dict().items()}
    res = run_seed(ws, cfg, resolve(cfg), 1)
    assert res["report"].steps > 0
    assert all(torch.equal(before[k], v) for k, v in ws.encoders.state_dict().items())
    state = res["model"].trainable_state()
    assert any(k.startswith("mode.") for k in state) and any(k.startswith("head.") for k in state)


def test_batches_have_the_documented_shapes(tiny_env):
    from avprompt.supervised.encoder_modes import FrozenMode
    ws, src = _source("avs-s4")
    vt, at = ws.encoders.vision, ws.encoders.audio
    model = type("M", (), {"mode": FrozenMode(ws.encoders, None)})()
    b = next(iter(src.batches(model, "train", 3)))
    S, sr = vt.image_size, at.sample_rate
    assert b["frames"].shape == (3, 5, 3, S, S) and b["audio"].shape == (3, 5, sr)
    assert b["masks"].shape == (3, 5, 224, 224) and set(b["masks"].unique().tolist()) <= {0.0, 1.0}
    assert b["feat_a"].shape == (3, 5, at.embed_dim)
    # S4 trains on frame 1's mask only; the other frames carry no mask
    assert b["mask_valid"].tolist() == [[True, False, False, False, False]] * 3
    assert b["masks"][:, 1:].sum() == 0
    v = next(iter(src.batches(model, "val", 2)))
    assert v["mask_valid"].all()
    # the audio embeddings of the batch are the frozen tower's own
    assert torch.allclose(b["feat_a"], ws.encoders.encode(b, "a"), atol=1e-5)


@pytest.mark.parametrize("task", ["avs-s4", "avs-ms3"])
def test_perfect_prediction_scores_100(tiny_env, task):
    _, src = _source(task)
    gts, _ = src._truth("test")
    metrics, per_unit = src.score({"mask_prob": gts.astype(np.float32)}, "test")
    assert metrics["miou"] == pytest.approx(100) and metrics["fscore"] == pytest.approx(100)
    assert np.allclose(per_unit["miou"], 100) and len(per_unit["miou"]) == len(src.ids("test"))
    # a constant map scores what the floors say, and never above the best of them
    zeros = np.zeros_like(gts, np.float32)
    floors = src.floors("test", ["miou", "fscore"])
    assert src.score({"mask_prob": zeros}, "test")[0]["miou"] == pytest.approx(
        src.avs_floors("test")["all_background"]["miou"])
    assert 0 < floors["miou"] < 100


def test_bad_data_root_is_a_one_line_error(tiny_env, tmp_path):
    (tmp_path / "avsbench").mkdir()
    _, src = _source("avs-s4", data=str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        src.splits()
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "avsbench") in msg and "s4_meta_data.csv" in msg


def test_decoded_videos_come_back_from_the_disk_cache(tiny_env, monkeypatch):
    """A second source (a new run) reads the decoded arrays from disk without opening a PNG or a
    wav, and gets the same arrays; memory holds at most MEMORY_VIDEOS videos."""
    import avprompt.supervised.sources.avs as avs
    _, first = _source("avs-s4")
    recs = first.splits()["test"][:3]
    decoded = [first._decode(r) for r in recs]
    assert all(first.disk_path(r).is_file() for r in recs)
    _, second = _source("avs-s4")
    second.splits()

    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of read from the disk cache")
    monkeypatch.setattr(avs.AVSSource, "_read_video", no_decoding)
    monkeypatch.setattr(avs, "MEMORY_VIDEOS", 2)
    for r, want in zip(recs, decoded):
        got = second._decode(r)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert len(second._cache) == 2
