"""The avqa supervised task end to end on the tiny SynthAV world: the ``avqa`` example source
(videos with all their questions per batch, question order, scoring, floors), the ST-AVQA-style head
through `avprompt train` / `eval`, an in-network mode with frozen towers, one-line data errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture
def source_model(tiny_env, tmp_path, train_cfg):
    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.run import build_model, resolve
    from avprompt.supervised.sources import source_for
    cfg = train_cfg(task="avqa")
    setup = resolve(cfg)
    ws = Workspace("synthav", "tiny", "cpu", "tiny")
    src = source_for(ws, setup.task)
    return src, build_model(ws, setup, src)


def test_train_writes_a_cell_with_groups_and_floors_that_eval_reproduces(tiny_env, tmp_path, train_cfg):
    from avprompt.supervised.commands import eval_checkpoint, train_supervised
    from avprompt.tasks import get_task
    out = train_supervised(train_cfg(task="avqa"))
    assert len(out) == 1 and not out[0]["reused"]
    rec_path = next(tmp_path.rglob("avqa/st-avqa+frozen/**/full/seed1.json"))
    rec = json.loads(rec_path.read_text())
    m = rec["metrics"]
    assert rec["status"] == "ok" and m["primary_metric"] == "acc" and m["primary"] == m["acc"]
    assert {"acc_audio", "acc_visual", "acc_av"} <= set(m) and set(m) >= {"floors", "floor"}
    assert all(0 <= m[k] <= 100 for k in get_task("avqa").metrics if k in m)
    assert {"acc", "acc_audio", "acc_visual", "acc_av"} <= set(m["floors"]) and 0 < m["floor"] <= 100
    pred = np.load(rec_path.with_suffix(".pred.npz"))
    n_q = rec["extra"]["n_test_questions"]
    assert len(pred["clip_ids"]) == len(pred["answer"]) == len(pred["video_acc"]) == n_q
    assert np.isclose(pred["video_acc"].mean(), m["acc"])
    res = eval_checkpoint(rec_path.with_suffix(".ckpt.pt"))
    assert res["primary"] == pytest.approx(m["primary"], abs=1e-6)


def test_dgsct_mode_runs_and_leaves_the_towers_frozen(tiny_env, tmp_path, train_cfg):
    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.run import resolve, run_seed
    cfg = train_cfg(task="avqa", encoder="dg-sct", max_epochs=1)
    ws = Workspace("synthav", "tiny", "cpu", "tiny")
    before = {k: v.clone() for k, v in ws.encoders.state_dict().items()}
    res = run_seed(ws, cfg, resolve(cfg), 1)
    assert res["report"].steps > 0 and 0 <= res["metrics"]["acc"] <= 100
    assert all(torch.equal(before[k], v) for k, v in ws.encoders.state_dict().items())
    assert any(k.startswith("mode.") for k in res["model"].trainable_state())


def test_batches_carry_videos_and_their_questions(source_model):
    src, model = source_model
    examples = src.splits()["train"]
    V = src.context()["vocab_size"]
    seen = 0
    for b in src.batches(model, "train", 3):
        chunk = examples[seen: seen + 3]
        B_v, B_q = len(chunk), sum(len(e.questions) for e in chunk)
        assert b["frames"].shape[:2] == (B_v, 10) and b["feat_a"].shape[:2] == (B_v, 10)
        assert b["question"].shape[0] == b["question_len"].shape[0] == b["answer"].shape[0] == B_q
        assert b["question"].dtype == b["answer"].dtype == torch.long
        assert int(b["question"].max()) < V and int(b["question_len"].min()) >= 1
        # padding beyond each question's length, words within it
        L = b["question"].shape[1]
        assert ((torch.arange(L) >= b["question_len"][:, None]) == (b["question"] == 0)).all()
        rows = [i for i, e in enumerate(chunk) for _ in e.questions]
        assert b["question_video"].tolist() == rows
        aid = {a: i for i, a in enumerate(src.class_names)}
        assert b["answer"].tolist() == [aid[q.answer] for e in chunk for q in e.questions]
        seen += B_v
    assert seen == len(examples)


def test_perfect_predictions_score_100_and_ids_follow_prediction_order(source_model):
    from avprompt.supervised.run import predict
    src, model = source_model
    for split in ("val", "test"):
        qs = src.questions(split)
        truth = np.array([src.class_names.index(q.answer) for q in qs])
        metrics, per_q = src.score({"answer_scores": np.eye(src.num_classes)[truth]}, split)
        assert metrics and all(v == 100.0 for v in metrics.values())
        assert set(per_q) == {"acc"} and (per_q["acc"] == 100).all()
        ids = src.ids(split)
        assert list(ids) == [q.question_id for q in qs] and len(set(ids)) == len(ids)
        # the model's predictions come out in exactly that order, one row per question
        preds = predict(model, src.batches(model, split, 2), torch.device("cpu"))
        assert preds["answer_scores"].shape == (len(ids), src.num_classes)
        answers = np.concatenate([b["answer"].numpy() for b in src.batches(model, split, 2)])
        assert (answers == truth).all()
    floors = src.floors("test", ["acc"])
    assert 0 < floors["acc"] <= 100 and set(floors) <= set(metrics) | {"acc"}
    assert src.stored_predictions({"answer_scores": np.eye(3)})["answer"].tolist() == [0, 1, 2]
    ident = src.data_identity()
    assert ident["dataset"] == "musicavqa" and len(ident["annotations"]) == 16


def test_vocabulary_is_train_words_with_padding_and_unknown(source_model):
    src, _ = source_model
    assert src.vocab["<pad>"] == 0 and src.vocab["<unk>"] == 1 and "?" not in "".join(src.vocab)
    assert src.encode("zzzunseen word?")[0] == 1
    q = src.questions("train")[0]
    assert 1 not in src.encode(q.question)


def test_bad_data_root_is_a_one_line_error(tiny_env, tmp_path, capsys):
    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.sources import source_for
    from avprompt.tasks import get_task
    empty = tmp_path / "data"
    empty.mkdir()
    src = source_for(Workspace(str(empty), "tiny", "cpu"), get_task("avqa"))
    with pytest.raises(FileNotFoundError) as e:
        src.splits()
    msg = str(e.value)
    assert "\n" not in msg and str(empty / "musicavqa") in msg and "avqa-" in msg
    from avprompt.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "--task", "avqa", "--data", str(empty), "--backbones", "tiny", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code != 0 and "musicavqa" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
