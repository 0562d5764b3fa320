"""Fit-time selection on the engine's ``score`` (the task's primary metric on validation): Tip-Adapter
(-F) alpha/beta on the (fused) forward output, the linear probe's C; without ``score`` the old rules."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from avprompt.registry import discover
from avprompt.task import TaskSpec

SEG = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=3)
VID = TaskSpec("ave-cls", "video", ("dog bark", "car horn", "violin"), num_segments=3)
SMALL_GRID = dict(search_beta_steps=4, search_alpha_steps=3)


def build(key, encoders, task, **overrides):
    cls = discover()[key]
    torch.manual_seed(0)
    return cls(encoders, task, cls.default_config(**overrides))


def features(make_batch, encoders, task, n, seed, modalities="v"):
    batch = make_batch(encoders, task, batch_size=n, seed=seed)
    out = {k: v for k, v in batch.items() if k not in ("frames", "audio")}
    for m in modalities:
        out["feat_" + m] = encoders.encode(batch, m)
    return out


def output(method, feats) -> np.ndarray:
    """The method's forward output on ``feats`` as the score sees it."""
    with torch.no_grad():
        return method.eval()(feats).float().cpu().numpy()


def fixed_tip(key, encoders, task, train, modality="v", **pairs):
    """A Tip-Adapter fitted without search, then set to the given alpha_m/beta_m."""
    tip = build(key, encoders, task, modality=modality, search=False)
    tip.fit(train, None)
    for name, value in pairs.items():
        getattr(tip, name).fill_(value)
    return tip


def fit_then_select(method, train, val, score=None) -> dict:
    """What the engine does around training (none here): ``fit``, then ``after_training`` where a
    method defines it (Tip-Adapter-F searches alpha/beta on its fine-tuned cache there)."""
    from avprompt.method import Method
    out = method.fit(train, val, score=score)
    if type(method).after_training is not Method.after_training:
        out = {**out, **method.after_training(val, score=score)}
    return out


def needle(target: np.ndarray, calls: list | None = None):
    """Score 1.0 only for logits equal to ``target``; NaN otherwise (NaN ranks worst)."""
    def score(logits):
        if calls is not None:
            calls.append(np.asarray(logits).shape)
        return 1.0 if np.allclose(logits, target, atol=1e-5) else float("nan")
    return score


# ----- the contract --------------------------------------------------------------------------
def test_every_fitting_method_takes_a_score(tiny_encoders, batch_factory):
    from avprompt.method import Method
    assert inspect.signature(Method.fit).parameters["score"].default is None
    for key, cls in sorted(discover().items()):
        if not cls.fits:
            continue
        assert "score" in inspect.signature(cls.fit).parameters, key
        for mod in cls.supported_modalities:
            for task in (SEG, VID):
                feats = features(batch_factory, tiny_encoders, task, 4, seed=1, modalities="va")
                method = build(key, tiny_encoders, task, modality=mod, **(
                    SMALL_GRID if key.startswith("tip-adapter") else {}))
                shapes = []
                out = fit_then_select(method, feats, feats, score=lambda x: shapes.append(np.shape(x)) or 0.0)
                expect = (4, 3, task.num_outputs) if task.level == "segment" else (4, task.num_outputs)
                assert shapes and set(shapes) == {expect}, (key, mod, task.name)
                assert out["val_primary"] == 0.0


# ----- Tip-Adapter -----------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["tip-adapter", "tip-adapter-f"])
@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_tip_adapter_selects_the_candidate_the_score_rewards(key, task, tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, task, 4, seed=3)
    val = features(batch_factory, tiny_encoders, task, 3, seed=4)
    tip = build(key, tiny_encoders, task, **SMALL_GRID)
    betas, alphas = tip.grid()
    target = output(fixed_tip(key, tiny_encoders, task, train, alpha_v=alphas[2], beta_v=betas[1]), val)
    calls = []
    out = fit_then_select(tip, train, val, score=needle(target, calls))
    assert (out["alpha_v"], out["beta_v"]) == pytest.approx((alphas[2], betas[1]))
    assert out["val_primary"] == 1.0 and math.isnan(out["val_primary_default"])
    assert out["search_evaluations"] == 1 + len(betas) * len(alphas) == len(calls)
    assert "val_accuracy_v" not in out
    assert np.allclose(output(tip, val), target, atol=1e-5)  # what was selected is what runs


def test_tip_adapter_ties_prefer_the_default_then_the_first_best(tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=5)
    val = features(batch_factory, tiny_encoders, SEG, 3, seed=6)
    tip = build("tip-adapter", tiny_encoders, SEG, alpha=1.3, beta=2.7, **SMALL_GRID)
    out = tip.fit(train, val, score=lambda logits: 5.0)  # every candidate ties
    assert (out["alpha_v"], out["beta_v"]) == pytest.approx((1.3, 2.7))  # off the grid: the default
    assert out["val_primary"] == out["val_primary_default"] == 5.0

    # the default loses: the first best in the reference's order (beta outer, alpha inner) wins
    betas, alphas = tip.grid()
    winners = [output(fixed_tip("tip-adapter", tiny_encoders, SEG, train, alpha_v=a, beta_v=b), val)
               for a, b in ((alphas[1], betas[2]), (alphas[0], betas[3]))]
    tip = build("tip-adapter", tiny_encoders, SEG, alpha=1.3, beta=2.7, **SMALL_GRID)
    out = tip.fit(train, val, score=lambda x: float(any(np.allclose(x, w, atol=1e-5) for w in winners)))
    assert (out["alpha_v"], out["beta_v"]) == pytest.approx((alphas[1], betas[2]))
    assert out["val_primary"] == 1.0 and out["val_primary_default"] == 0.0


def test_tip_adapter_av_selects_on_the_fused_output(tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=7, modalities="va")
    val = features(batch_factory, tiny_encoders, SEG, 3, seed=8, modalities="va")
    tip = build("tip-adapter", tiny_encoders, SEG, modality="av", **SMALL_GRID)
    betas, alphas = tip.grid()
    pick = dict(alpha_v=alphas[2], beta_v=betas[3], alpha_a=alphas[0], beta_a=betas[1])
    target = output(fixed_tip("tip-adapter", tiny_encoders, SEG, train, modality="av", **pick), val)
    seen = []

    def closeness(logits):  # a smooth score defined on the fused output only
        seen.append(np.asarray(logits).copy())
        return -float(np.abs(np.asarray(logits) - target).mean())

    out = tip.fit(train, val, score=closeness)
    assert out["val_primary"] >= max(out["val_primary_default"], out["val_primary_per_branch"])
    assert out["val_primary"] > out["val_primary_default"]
    # searches: each branch alone, then at most search_passes rounds of both on the fused output
    per_search = 1 + len(betas) * len(alphas)
    assert out["search_rounds"] <= 2 * tip.config.search_passes
    assert out["search_evaluations"] == 2 + (2 + out["search_rounds"]) * per_search == len(seen)
    fused = output(tip, val)
    assert any(np.allclose(fused, s, atol=1e-5) for s in seen)  # the score read the fused output
    assert out["val_primary"] == pytest.approx(closeness(fused), abs=1e-6)
    # selection changed the fused output: the defaults' output is further from the target
    defaults = output(fixed_tip("tip-adapter", tiny_encoders, SEG, train, modality="av"), val)
    assert closeness(fused) > closeness(defaults)


def test_tip_adapter_av_fused_search_can_differ_from_per_branch(tiny_encoders, batch_factory):
    """A score that rewards the a branch only through the fused output still moves the a pair:
    the per-branch scores of the old rule never see the other branch."""
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=9, modalities="va")
    val = features(batch_factory, tiny_encoders, SEG, 3, seed=10, modalities="va")
    tip = build("tip-adapter", tiny_encoders, SEG, modality="av", **SMALL_GRID)
    betas, alphas = tip.grid()
    pick = dict(alpha_v=1.0, beta_v=1.0, alpha_a=alphas[2], beta_a=betas[0])  # v at the default
    target = output(fixed_tip("tip-adapter", tiny_encoders, SEG, train, modality="av", **pick), val)
    out = tip.fit(train, val, score=needle(target))
    assert {k: out[k] for k in pick} == pytest.approx(pick) and out["val_primary"] == 1.0
    # alone, neither branch can hit the needle (all NaN): both start at the default; fused: v keeps
    # it (all NaN), a finds the needle, v re-searched with that a keeps the default: converged
    assert out["search_rounds"] == 3 and out["val_primary_default"] != 1.0


def test_tip_adapter_without_score_keeps_the_accuracy_rule(tiny_encoders, batch_factory):
    from avprompt.baselines.tip_adapter import accuracy
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=11, modalities="va")
    val = features(batch_factory, tiny_encoders, SEG, 3, seed=12, modalities="va")
    tip = build("tip-adapter", tiny_encoders, SEG, modality="av", **SMALL_GRID)
    out = tip.fit(train, val)
    assert "val_primary" not in out and {"val_accuracy_v", "val_accuracy_a"} <= set(out)
    with torch.no_grad():
        v_only = tip.branch_logits(val["feat_v"], "v")
    assert out["val_accuracy_v"] == pytest.approx(accuracy(v_only, val, SEG))


def test_tip_adapter_score_without_search_reports_the_configured_pair(tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, VID, 4, seed=13)
    val = features(batch_factory, tiny_encoders, VID, 3, seed=14)
    tip = build("tip-adapter", tiny_encoders, VID, search=False, alpha=2.0, beta=3.0)
    out = tip.fit(train, val, score=lambda x: float(np.asarray(x).sum()))
    assert (out["alpha_v"], out["beta_v"]) == (2.0, 3.0)
    assert out["val_primary"] == pytest.approx(float(output(tip, val).sum()), rel=1e-5)


# ----- linear probe ----------------------------------------------------------------------------
def separable(task, n, dim, seed, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(task.num_outputs, dim, generator=torch.Generator().manual_seed(123))
    t = task.num_segments
    if task.level == "segment":
        seg = torch.randint(0, task.num_outputs, (n, t), generator=g)
        return {"feat_v": centres[seg] + noise * torch.randn(n, t, dim, generator=g), "segment_labels": seg}
    label = torch.randint(0, task.num_outputs, (n,), generator=g)
    return {"feat_v": centres[label][:, None] + noise * torch.randn(n, t, dim, generator=g), "label": label}


def probe_output(encoders, task, train, c, val):
    probe = build("linear-probe", encoders, task, c=c)
    probe.fit(train, None)  # no validation features: trained with config.c
    return output(probe, val)


@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_linear_probe_selects_by_score_not_accuracy(task, tiny_encoders):
    dim = tiny_encoders.vision.embed_dim
    train, val = separable(task, 16, dim, seed=1), separable(task, 8, dim, seed=2)
    by_accuracy = build("linear-probe", tiny_encoders, task).fit(train, val)
    grid = build("linear-probe", tiny_encoders, task).config.c_grid
    wanted = grid[-1] if by_accuracy["C"] != grid[-1] else grid[0]
    assert wanted != by_accuracy["C"]  # accuracy picks another C: the two rules disagree here
    target = probe_output(tiny_encoders, task, train, wanted, val)
    shapes = []
    probe = build("linear-probe", tiny_encoders, task)
    out = probe.fit(train, val, score=needle(target, shapes))
    assert out["C"] == wanted and out["val_primary"] == 1.0 and "val_accuracy" not in out
    assert np.allclose(output(probe, val), target, atol=1e-5)
    # the score read the full forward output (segment tasks: every segment, background column)
    expect = (8, 3, task.num_outputs) if task.level == "segment" else (8, task.num_outputs)
    assert shapes == [expect] * len(grid)


def test_linear_probe_prefers_the_smallest_c_when_the_score_says_so(tiny_encoders):
    dim = tiny_encoders.vision.embed_dim
    train, val = separable(VID, 16, dim, seed=3), separable(VID, 8, dim, seed=4)
    probe = build("linear-probe", tiny_encoders, VID)
    # outputs that vary least across clips (the most regularised weights) score best; the
    # intercepts (not regularised) are constant across clips and do not count
    spread = []
    out = probe.fit(train, val, score=lambda x: spread.append(-float(np.var(x, axis=0).mean())) or spread[-1])
    assert spread == sorted(spread, reverse=True)  # the premise: the spread grows with C
    assert out["C"] == min(probe.config.c_grid)


def test_linear_probe_ties_go_to_the_larger_c(tiny_encoders):
    dim = tiny_encoders.vision.embed_dim
    train, val = separable(SEG, 16, dim, seed=5), separable(SEG, 8, dim, seed=6)
    probe = build("linear-probe", tiny_encoders, SEG, c_grid=(1e-2, 10.0, 1.0))
    assert probe.fit(train, val, score=lambda x: 1.0)["C"] == 10.0
    nan_but_one = probe_output(tiny_encoders, SEG, train, 1e-2, val)
    out = probe.fit(train, val, score=needle(nan_but_one))  # NaN ranks below any number
    assert out["C"] == 1e-2 and out["val_primary"] == 1.0


def test_linear_probe_without_score_keeps_the_accuracy_rule(tiny_encoders):
    dim = tiny_encoders.vision.embed_dim
    train, val = separable(VID, 16, dim, seed=7), separable(VID, 8, dim, seed=8)
    out = build("linear-probe", tiny_encoders, VID).fit(train, val)
    assert "val_primary" not in out and out["val_accuracy"] > 0.9


def test_tip_adapter_av_cache_memo_changes_nothing(tiny_encoders, batch_factory, monkeypatch):
    import avprompt.baselines.tip_adapter as tip_module
    train = features(batch_factory, tiny_encoders, VID, 4, seed=15, modalities="va")
    val = features(batch_factory, tiny_encoders, VID, 3, seed=16, modalities="va")
    score = lambda x: float(np.round(np.asarray(x).max(-1).mean(), 3))  # noqa: E731 (ties on purpose)
    runs = []
    for budget in (tip_module.CACHE_MEMO_BYTES, 0):  # kept across searches / recomputed each time
        monkeypatch.setattr(tip_module, "CACHE_MEMO_BYTES", budget)
        runs.append(build("tip-adapter", tiny_encoders, VID, modality="av", **SMALL_GRID).fit(train, val, score=score))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("key", ["tip-adapter", "tip-adapter-f", "linear-probe"])
@pytest.mark.parametrize("task_name,protocol", [("ave", "standard"), ("ave-cls", "standard"),
                                                ("llp-cls", "standard"), ("llp-cls", "reference")])
def test_fit_with_the_engines_primary_metric(key, task_name, protocol, tiny_encoders, batch_factory):
    """The engine's score: ``compute_metrics(task, protocol, logits, val_records)["primary"]``."""
    from avprompt.data.metrics import compute_metrics
    from avprompt.data.records import ClipRecord
    level = "segment" if task_name == "ave" else "video"
    task = TaskSpec(task_name, level, ("dog bark", "car horn", "violin"), num_segments=3)
    train = features(batch_factory, tiny_encoders, task, 6, seed=17, modalities="va")
    val = features(batch_factory, tiny_encoders, task, 5, seed=18, modalities="va")
    k = len(task.class_names)
    records = []
    for i, (seg, label) in enumerate(zip(val["segment_labels"].tolist(), val["label"].tolist())):
        seg = [s if s < k else -1 for s in seg]
        records.append(ClipRecord(f"c{i}", f"v{i}", "", "val", seg, sorted({label} | {s for s in seg if s >= 0})))
    for mod in ("v", "av"):
        method = build(key, tiny_encoders, task, modality=mod, **(SMALL_GRID if key != "linear-probe" else {}))
        out = fit_then_select(method, train, val, score=lambda logits: compute_metrics(
            task_name, protocol, logits, records)["primary"])
        expect = compute_metrics(task_name, protocol, output(method, val), records)["primary"]
        assert out["val_primary"] == pytest.approx(expect, abs=1e-6)


def test_tip_adapter_f_fine_tunes_at_the_initial_pair_and_searches_after(tiny_encoders, batch_factory):
    """The reference's order: fit builds the cache only (keys fine-tuned at init alpha/beta); the
    alpha/beta search runs on the fine-tuned keys, after training."""
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=21)
    val = features(batch_factory, tiny_encoders, SEG, 3, seed=22)
    tipf = build("tip-adapter-f", tiny_encoders, SEG, alpha=1.3, beta=2.7, **SMALL_GRID)
    calls = []
    out = tipf.fit(train, val, score=lambda x: calls.append(1) or 0.0)
    assert not calls and (out["alpha_v"], out["beta_v"]) == pytest.approx((1.3, 2.7))
    with torch.no_grad():  # "fine-tuning": the keys move
        tipf.cache_keys["v"].weight.mul_(-1.0)
    betas, alphas = tipf.grid()
    fixed = fixed_tip("tip-adapter-f", tiny_encoders, SEG, train, alpha_v=alphas[1], beta_v=betas[2])
    with torch.no_grad():
        fixed.cache_keys["v"].weight.mul_(-1.0)
    after = tipf.after_training(val, score=needle(output(fixed, val)))
    assert (after["alpha_v"], after["beta_v"]) == pytest.approx((alphas[1], betas[2]))
    assert after["val_primary"] == 1.0
