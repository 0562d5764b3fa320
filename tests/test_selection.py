"""Model selection in the one loop: the initial state competes, ties go to the later epoch,
``select=last``, "did not learn", batch never above the training set, and the learning-rate search
that never reads test."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from avprompt.engine import loop
from avprompt.registry import discover
from avprompt.task import TaskSpec

VID = TaskSpec("ave-cls", "video", ("dog bark", "car horn", "violin"), num_segments=3)


def _method(encoders, seed=0, **overrides):
    cls = discover()["clip-adapter"]
    torch.manual_seed(seed)
    return cls(encoders, VID, cls.default_config(**{"modality": "v", "warmup_epochs": 0, "lr": 0.5, **overrides}))


def _batches(encoders, batch_factory):
    batch = batch_factory(encoders, VID, batch_size=6, seed=1)
    batch["feat_v"] = encoders.encode(batch, "v")
    batch = {k: v for k, v in batch.items() if k not in ("frames", "audio")}
    return lambda epoch: [batch]


def _trainable(method):
    return {k: v.clone() for k, v in method.state_dict().items() if not k.startswith("encoders.")}


def test_constant_validation_selects_the_last_epoch(tiny_encoders, batch_factory):
    m = _method(tiny_encoders)
    report = loop.train(m, _batches(tiny_encoders, batch_factory), lambda: 50.0, 4, torch.device("cpu"))
    assert report.history[0]["epoch"] == -1 and report.initial_val == 50.0
    assert report.best_epoch == 3 and not report.did_not_learn


def test_initial_state_that_wins_is_restored_and_marked(tiny_encoders, batch_factory):
    m = _method(tiny_encoders)
    initial = _trainable(m)
    vals = iter([90.0, 10.0, 20.0, 30.0])  # initial state, then three worse epochs
    report = loop.train(m, _batches(tiny_encoders, batch_factory), lambda: next(vals), 3, torch.device("cpu"))
    assert report.best_epoch == -1 and report.did_not_learn and report.best_val == 90.0
    after = _trainable(m)
    assert all(torch.equal(after[k], initial[k]) for k in initial)  # the untrained state is what is kept


def test_initial_evaluation_sees_the_untrained_method(tiny_encoders, batch_factory):
    batches = _batches(tiny_encoders, batch_factory)
    untrained = _method(tiny_encoders)
    expected = loop.predict(untrained, batches(0), torch.device("cpu"))
    m = _method(tiny_encoders)
    seen = []

    def validate():
        seen.append(loop.predict(m, batches(0), torch.device("cpu")))
        return float(len(seen))
    loop.train(m, batches, validate, 2, torch.device("cpu"))
    assert torch.equal(torch.as_tensor(seen[0]), torch.as_tensor(expected))
    assert not torch.equal(torch.as_tensor(seen[-1]), torch.as_tensor(expected))  # training moved it


def test_select_last_keeps_the_last_epoch(tiny_encoders, batch_factory):
    m = _method(tiny_encoders)
    vals = iter([90.0, 10.0, 20.0])
    report = loop.train(m, _batches(tiny_encoders, batch_factory), lambda: next(vals), 2, torch.device("cpu"),
                        select="last")
    assert report.best_epoch == 1 and report.best_val == 20.0 and not report.did_not_learn
    with pytest.raises(ValueError, match="select='best'"):
        loop.train(m, _batches(tiny_encoders, batch_factory), None, 1, torch.device("cpu"), select="best")


def test_lr_search_never_reads_test_and_batch_fits_the_training_set(tiny_world, monkeypatch):
    """A CLIP-Adapter cell with its x1/x10/x100 search: every candidate trains and validates on
    train/val clips only; the test clips are predicted once, after the choice."""
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    import avprompt.engine.cell as cell
    from avprompt.engine.workspace import Workspace
    from avprompt.data.splits import make_split

    ws = Workspace("synthav", "tiny", synth_size="tiny")
    split = make_split(ws.index("ave-cls"), "ave-cls", "standard", shots=1, seed=1)
    test_ids = set(split.test)
    calls = []
    real = cell._batches

    def spy(ws_, task_name, task, method, records, *a, **kw):
        calls.append({r.clip_id for r in records})
        return real(ws_, task_name, task, method, records, *a, **kw)
    monkeypatch.setattr(cell, "_batches", spy)
    plan = cell.CellPlan("ave-cls", "clip-adapter", "v", 1, 1, max_epochs=2)
    out = cell.run_cell(ws, plan)
    search = out["extra"]["lr_search"]
    assert [c["multiplier"] for c in search] == [1.0, 10.0, 100.0]
    touching_test = [i for i, ids in enumerate(calls) if ids & test_ids]
    assert touching_test == [len(calls) - 1] and calls[-1] == test_ids
    # the reference batch (32) exceeds the few-shot training set: capped, and said so
    assert out["config"]["batch_size"] == out["extra"]["n_train"] < 32
    changes = {c["field"]: c for c in out["extra"]["reference_changes"]}
    assert changes["batch_size"]["reference"] == 32
    chosen = max(search, key=lambda c: c["val"])
    if chosen["multiplier"] != 1.0:
        assert changes["lr"]["used"] == pytest.approx(chosen["lr"])
    assert out["config"]["select"] == "val" and out["extra"]["history"][0]["epoch"] == -1


def test_a_selected_warm_up_epoch_is_marked_did_not_learn(tiny_encoders, batch_factory):
    m = _method(tiny_encoders, warmup_epochs=1, warmup_lr=1e-5)
    vals = iter([50.0, 60.0, 40.0, 30.0])  # initial, warm-up epoch best, then worse trained epochs
    report = loop.train(m, _batches(tiny_encoders, batch_factory), lambda: next(vals), 3, torch.device("cpu"))
    assert report.best_epoch == 0 and report.warmup_epochs == 1 and report.did_not_learn
    vals = iter([50.0, 50.0, 70.0, 30.0])  # a trained epoch wins: learned
    m = _method(tiny_encoders, warmup_epochs=1, warmup_lr=1e-5)
    report = loop.train(m, _batches(tiny_encoders, batch_factory), lambda: next(vals), 3, torch.device("cpu"))
    assert report.best_epoch == 1 and not report.did_not_learn


def test_cocoop_scales_each_branch_lr_by_its_towers_logit_scale(tiny_encoders, batch_factory):
    cls = discover()["cocoop"]
    seg = TaskSpec("ave", "segment", ("dog bark", "car horn"), num_segments=3)
    m = cls(tiny_encoders, seg, cls.default_config(modality="av", warmup_epochs=0, epochs=1, lr=1e-3))
    groups = m.param_groups()
    scales = {mod: 100.0 / float(tiny_encoders.tower(mod).logit_scale) for mod in ("v", "a")}
    assert [g["lr_scale"] for g in groups] == pytest.approx([scales["v"], scales["a"]])
    # the groups cover every trainable parameter exactly once
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.trainable_parameters())
    # what ran is recorded per branch, and the loop steps each branch at its own lr
    ran = m.effective_config()["lr"]  # one value when both towers have the same scale, else per branch
    for mod in ("v", "a"):
        assert (ran[mod] if isinstance(ran, dict) else ran) == pytest.approx(1e-3 * scales[mod], rel=1e-4)
    assert any(c["field"] == "lr" and "logit scale" in c["reason"] for c in m.reference_changes())
    opt_lrs = []
    real = loop.build_optimizer

    def spy(params, cfg):
        opt = real(params, cfg)
        opt_lrs.append(opt)
        return opt
    batch = batch_factory(tiny_encoders, seg, batch_size=2, seed=1)
    try:
        loop.build_optimizer = spy
        loop.train(m, lambda e: [batch], None, 1, torch.device("cpu"))
    finally:
        loop.build_optimizer = real
    assert [g["lr"] for g in opt_lrs[0].param_groups] == pytest.approx([1e-3 * scales["v"], 1e-3 * scales["a"]])
    none = cls(tiny_encoders, seg, cls.default_config(modality="v", lr_scale="none"))
    assert none.param_groups()[0]["lr_scale"] == 1.0 and none.effective_config()["lr"] == none.config.lr
