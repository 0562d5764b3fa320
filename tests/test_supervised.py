"""Supervised tasks end to end on the tiny SynthAV world: `avprompt train` / `eval`, the store,
in-network encoder modes with frozen towers, one-line errors, paired comparison, and heads that
learn a problem with a known answer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def test_train_writes_a_full_cell_that_eval_and_resume_reproduce(tiny_env, tmp_path, train_cfg):
    from avprompt.supervised.commands import eval_checkpoint, train_supervised
    out = train_supervised(train_cfg(task="ave-sup"))
    assert len(out) == 1 and not out[0]["reused"]
    path = tmp_path / "supervised" / "synthav-tiny-0" / "standard" / "ave-sup" / "cmbs+frozen"
    rec_path = next(path.rglob("full/seed1.json"))
    rec = json.loads(rec_path.read_text())
    assert rec["key"]["shots"] == "full" and rec["status"] == "ok"
    m = rec["metrics"]
    assert m["primary"] == m["segment_acc"] and 0 <= m["primary"] <= 100
    assert 0 < m["floor"] <= 100 and rec["config"]["head"] == "cmbs"
    assert rec["config"]["encoder"]["mode"] == "frozen"
    pred = np.load(rec_path.with_suffix(".pred.npz"))
    assert len(pred["clip_ids"]) == rec["extra"]["n_test"] == pred["segment_scores"].shape[0]
    assert np.isclose(pred["video_segment_acc"].mean(), m["primary"])
    # the checkpoint rebuilds the same model: the same score on the same test videos
    res = eval_checkpoint(rec_path.with_suffix(".ckpt.pt"))
    assert res["primary"] == pytest.approx(m["primary"], abs=1e-6)
    # same identity -> reused, not recomputed
    mtime = rec_path.stat().st_mtime_ns
    again = train_supervised(train_cfg(task="ave-sup"))
    assert again[0]["reused"] and rec_path.stat().st_mtime_ns == mtime
    # another config -> stale -> recomputed
    again = train_supervised(train_cfg(task="ave-sup", overrides={"lr": "5e-4"}))
    assert not again[0]["reused"]


def test_avvp_reports_every_parsing_metric(tiny_env, tmp_path, train_cfg):
    from avprompt.data.avvp_metrics import METRICS
    from avprompt.supervised.commands import train_supervised
    train_supervised(train_cfg(task="avvp"))
    rec = json.loads(next(tmp_path.rglob("avvp/mmil+frozen/**/seed1.json")).read_text())
    assert set(METRICS) <= set(rec["metrics"]) and rec["metrics"]["primary"] == rec["metrics"]["seg_type"]
    assert set(METRICS) <= set(rec["metrics"]["floors"])


@pytest.mark.parametrize("mode", ["dg-sct", "lavish"])
def test_in_network_modes_train_and_leave_the_towers_frozen(tiny_env, tmp_path, mode, train_cfg):
    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.run import resolve, run_seed
    cfg = train_cfg(task="ave-sup", encoder=mode, max_epochs=1)
    ws = Workspace("synthav", "tiny", "cpu", "tiny")
    before = {k: v.clone() for k, v in ws.encoders.state_dict().items()}
    res = run_seed(ws, cfg, resolve(cfg), 1)
    assert res["report"].steps > 0 and res["extra"]["trainable_params"] > 0
    assert all(torch.equal(before[k], v) for k, v in ws.encoders.state_dict().items())
    state = res["model"].trainable_state()
    assert state and not any(k.startswith("encoders.") for k in state)
    assert any(k.startswith("mode.") for k in state)


@pytest.mark.parametrize("args, message", [
    (["--task", "ave-cls"], "is a few-shot task"),
    (["--task", "ave-sup", "--head", "mmil"], "--head mmil serves avvp, not ave-sup"),
    (["--task", "ave-sup", "--set", "bogus=1"], "--set bogus=...: not a field"),
    (["--task", "ave-sup", "--encoder", "nope"], "encoder mode 'nope' is unknown"),
    (["--task", "nope"], "unknown task"),
])
def test_bad_train_options_are_one_line_errors(tiny_env, tmp_path, args, message, capsys):
    from avprompt.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", *args, "--backbones", "tiny", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_comparison_pairs_modes_on_the_same_videos_and_seeds(tiny_env, tmp_path, train_cfg):
    from avprompt.supervised.commands import train_supervised
    from avprompt.supervised.compare import comparison, format_comparison
    for mode in ("frozen", "lavish"):
        train_supervised(train_cfg(task="ave-sup", encoder=mode, seeds=[1, 2], max_epochs=1))
    rows = {r["method"]: r for r in comparison(tmp_path / "supervised", "ave-sup")}
    assert set(rows) == {"cmbs+frozen", "cmbs+lavish"}
    lav = rows["cmbs+lavish"]
    assert lav["n_seeds"] == 2 and lav["vs"]["baseline"] == "cmbs+frozen"
    # the paired estimate is the difference of the two means (same videos, same seeds)
    assert lav["vs"]["diff"] == pytest.approx(lav["mean"] - rows["cmbs+frozen"]["mean"], abs=1e-9)
    lo, hi = lav["vs"]["ci"]
    assert lo <= lav["vs"]["diff"] <= hi
    assert "cmbs+lavish" in format_comparison(list(rows.values()), "ave-sup")


def _toy(n, C, T=10, seed=0):
    """Class c's event: segments [s, e) carry a one-hot of c in both modalities; background: noise."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, C, (n,), generator=g)
    seg = torch.full((n, T), C)
    f = torch.randn(n, T, 8, generator=g) * 0.3
    for i in range(n):
        s = int(torch.randint(0, 5, (1,), generator=g))
        seg[i, s: s + 5] = label[i]
        f[i, s: s + 5, label[i]] += 2.0
    return f, seg, label


def test_cmbs_learns_localisation_with_a_known_answer():
    """Through the shared loop: well above the constant (background) floor on held-out toy videos."""
    from avprompt.engine.loop import train
    from avprompt.heads import get_head
    from avprompt.supervised.run import SupervisedModel
    from avprompt.encoders import load_encoders

    C = 4
    cls = get_head("cmbs")
    torch.manual_seed(0)
    head = cls((8, 8), C, cls.config_class(epochs=15, hidden=32))

    class Toy(torch.nn.Module):
        runs_on = "features"

        def forward(self, b):
            return b["feat_v"], b["feat_a"]

        def trainable_parameters(self):
            return []
    model = SupervisedModel(load_encoders("tiny"), Toy(), head)
    f, seg, label = _toy(96, C)
    batches = [{"feat_v": f[i:i + 16], "feat_a": f[i:i + 16], "segment_labels": seg[i:i + 16],
                "label": label[i:i + 16]} for i in range(0, 96, 16)]
    train(model, lambda e: batches, None, 15, torch.device("cpu"))
    ft, st, _ = _toy(64, C, seed=1)
    model.eval()
    with torch.no_grad():
        pred = head.predict(head(ft, ft))["segment_scores"].argmax(-1)
    acc = (pred == st).float().mean().item() * 100
    floor = max((st == c).float().mean().item() for c in range(C + 1)) * 100
    assert acc > floor + 30, (acc, floor)


def test_data_stats_shows_the_dense_llp_annotations(annotations_root):
    """`data stats --dataset llp` on the real files: every test video has dense rows (1200), and
    the constant floors and the weak-label ceiling of the AVVP metrics are printed."""
    from typer.testing import CliRunner

    from avprompt.cli import app
    r = CliRunner().invoke(app, ["data", "stats", "--dataset", "llp", "--root", str(annotations_root / "llp")])
    assert r.exit_code == 0, r.output
    assert "avvp test: 1200 videos, 1200 with dense rows; events audio 2638, visual 1625" in r.output
    assert "avvp val: 649 videos, 649 with dense rows" in r.output
    assert "avvp test nothing" in r.output and "avvp test weak_oracle" in r.output
