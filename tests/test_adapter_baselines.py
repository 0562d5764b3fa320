"""Method-specific checks of CLIP-Adapter, Tip-Adapter(-F) and the linear probe (tiny encoders)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avprompt.registry import discover
from avprompt.task import TaskSpec

SEG = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=3)
VID = TaskSpec("ave-cls", "video", ("dog bark", "car horn", "violin"), num_segments=3)


def build(key, encoders, task, **overrides):
    cls = discover()[key]
    torch.manual_seed(0)
    return cls(encoders, task, cls.default_config(**overrides))


def features(make_batch, encoders, task, n, seed, modalities="v"):
    """Frozen features of n random clips plus labels (what the engine passes to ``fit``)."""
    batch = make_batch(encoders, task, batch_size=n, seed=seed)
    out = {k: v for k, v in batch.items() if k not in ("frames", "audio")}
    for m in modalities:
        out["feat_" + m] = encoders.encode(batch, m)
    return out


def separable(task, n, dim=32, seed=0, noise=0.3):
    """Features whose class is a fixed random direction plus noise: (n, T, dim) and labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(task.num_outputs, dim, generator=torch.Generator().manual_seed(123))
    t = task.num_segments
    if task.level == "segment":
        seg = torch.randint(0, task.num_outputs, (n, t), generator=g)
        feat = centres[seg] + noise * torch.randn(n, t, dim, generator=g)
        return {"feat_v": feat, "segment_labels": seg}
    label = torch.randint(0, task.num_outputs, (n,), generator=g)
    feat = centres[label][:, None] + noise * torch.randn(n, t, dim, generator=g)
    return {"feat_v": feat, "label": label}


# ----- CLIP-Adapter -------------------------------------------------------------------------
def test_clip_adapter_width_and_ratio_semantics(tiny_encoders, batch_factory):
    feats = features(batch_factory, tiny_encoders, SEG, 2, seed=1)
    d = tiny_encoders.vision.embed_dim
    zs = build("zeroshot-clip", tiny_encoders, SEG).eval()(feats)
    ad = build("clip-adapter", tiny_encoders, SEG).eval()
    first, second = ad.adapters["v"].fc[0], ad.adapters["v"].fc[2]
    assert (first.in_features, first.out_features, second.out_features) == (d, d // 4, d)
    assert first.bias is None and second.bias is None
    with torch.no_grad():
        f = feats["feat_v"]
        a = ad.adapters["v"](f)
        for ratio in (0.0, 0.2, 1.0):
            ad.config.ratio = ratio
            expect = ad.scale_v * F.normalize(ratio * a + (1 - ratio) * f, dim=-1) @ ad.text_v.T
            assert torch.allclose(ad(feats), expect, atol=1e-5)
        ad.config.ratio = 0.0  # no adapter contribution: exactly zero-shot
        assert torch.allclose(ad(feats), zs, atol=1e-5)
        ad.config.ratio = 0.2
        assert not torch.allclose(ad(feats), zs, atol=1e-3)


def test_clip_adapter_av_is_mean_of_branches(tiny_encoders, batch_factory):
    feats = features(batch_factory, tiny_encoders, VID, 2, seed=2, modalities="va")
    av = build("clip-adapter", tiny_encoders, VID, modality="av").eval()
    assert set(av.adapters) == {"v", "a"}
    with torch.no_grad():
        parts = [av.scale_v * av.adapt(feats["feat_v"], "v") @ av.text_v.T,
                 av.scale_a * av.adapt(feats["feat_a"], "a") @ av.text_a.T]
        assert torch.allclose(av(feats), ((parts[0] + parts[1]) / 2).mean(1), atol=1e-5)


def test_clip_adapter_rejects_bad_ratio(tiny_encoders):
    with pytest.raises(ValueError, match="ratio"):
        build("clip-adapter", tiny_encoders, SEG, ratio=1.5)


# ----- Tip-Adapter --------------------------------------------------------------------------
@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_tip_adapter_cache_shapes(task, tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, task, 4, seed=3, modalities="va")
    tip = build("tip-adapter", tiny_encoders, task, modality="av", search=False)
    out = tip.fit(train, None)
    n_keys = 4 * task.num_segments if task.level == "segment" else 4
    for m in "va":
        d = tiny_encoders.tower(m).embed_dim
        keys, values = tip.cache_keys[m].weight, getattr(tip, f"values_{m}")
        assert keys.shape == (n_keys, d) and values.shape == (n_keys, task.num_outputs)
        assert torch.allclose(keys.norm(dim=-1), torch.ones(n_keys), atol=1e-5)
        assert torch.equal(values.sum(-1), torch.ones(n_keys))  # one-hot rows
        assert out[f"cache_size_{m}"] == n_keys and not keys.requires_grad
    labels = train["segment_labels"].flatten() if task.level == "segment" else train["label"]
    assert torch.equal(tip.values_v.argmax(-1), labels)


def test_tip_adapter_alpha_zero_is_zero_shot(tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=4)
    test = features(batch_factory, tiny_encoders, SEG, 2, seed=5)
    zs = build("zeroshot-clip", tiny_encoders, SEG).eval()
    tip = build("tip-adapter", tiny_encoders, SEG, alpha=0.0, search=False)
    tip.fit(train, None)
    with torch.no_grad():
        assert torch.allclose(tip.eval()(test), zs(test), atol=1e-5)
        tip.alpha_v.fill_(1.0)
        assert not torch.allclose(tip(test), zs(test), atol=1e-3)


def test_tip_adapter_search_reports_validation_accuracy(tiny_encoders, batch_factory):
    from avprompt.baselines.tip_adapter import accuracy
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=6)
    val = features(batch_factory, tiny_encoders, SEG, 3, seed=7)
    tip = build("tip-adapter", tiny_encoders, SEG, search_beta_steps=10, search_alpha_steps=5)
    out = tip.fit(train, val)
    assert out["alpha_v"] == pytest.approx(float(tip.alpha_v)) and 0.1 <= out["alpha_v"] < 5.0
    assert 0.1 <= out["beta_v"] < 12.0
    with torch.no_grad():
        assert out["val_accuracy_v"] == pytest.approx(accuracy(tip.eval()(val), val, SEG))


def test_tip_adapter_nearest_key_wins_with_sharp_cache(tiny_encoders):
    # Huge alpha and beta: the cache term dominates and acts as a nearest-neighbour classifier,
    # so the training clips themselves are classified by their own labels.
    train = separable(VID, 12, dim=tiny_encoders.vision.embed_dim)
    tip = build("tip-adapter", tiny_encoders, VID, alpha=1e3, beta=50.0, search=False)
    tip.fit(train, None)
    with torch.no_grad():
        assert torch.equal(tip.eval()(train).argmax(-1), train["label"])


@pytest.mark.parametrize("key", ["tip-adapter", "tip-adapter-f"])
def test_tip_adapter_state_loads_into_unfitted_instance(key, tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, SEG, 4, seed=8)
    test = features(batch_factory, tiny_encoders, SEG, 2, seed=9)
    fitted = build(key, tiny_encoders, SEG, search_beta_steps=4, search_alpha_steps=3)
    fitted.fit(train, train)
    fresh = build(key, tiny_encoders, SEG)
    assert fresh.cache_keys["v"].weight.shape[0] == SEG.num_outputs  # unfitted: one key per class
    fresh.load_state_dict(fitted.state_dict())
    assert fresh.cache_keys["v"].weight.requires_grad == (key == "tip-adapter-f")
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(test), fitted.eval()(test), atol=1e-5)


def test_tip_adapter_f_trains_only_the_keys(tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, VID, 4, seed=10)
    tipf = build("tip-adapter-f", tiny_encoders, VID, search=False)
    tipf.fit(train, None)
    params = tipf.trainable_parameters()
    assert [p.shape for p in params] == [tipf.cache_keys["v"].weight.shape]
    before = params[0].detach().clone()
    opt = torch.optim.AdamW(params, lr=tipf.config.lr)
    tipf.train()
    tipf.loss(tipf(train), train).backward()
    opt.step()
    assert not torch.equal(params[0], before)
    assert discover()["tip-adapter-f"].needs_fit and not discover()["tip-adapter-f"].training_free


# ----- linear probe -------------------------------------------------------------------------
@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_linear_probe_beats_chance_on_separable_features(task, tiny_encoders):
    dim = tiny_encoders.vision.embed_dim
    train, val, test = (separable(task, n, dim, seed=s) for n, s in ((16, 1), (8, 2), (16, 3)))
    probe = build("linear-probe", tiny_encoders, task)
    out = probe.fit(train, val)
    assert out["C"] in probe.config.c_grid and out["val_accuracy"] > 0.9
    with torch.no_grad():
        logits = probe.eval()(test)
    labels = test["segment_labels"] if task.level == "segment" else test["label"]
    acc = (logits.argmax(-1) == labels).float().mean()
    assert acc > 0.9  # chance: 1 / num_outputs (0.25 or 0.33)


def test_linear_probe_binary_and_absent_classes(tiny_encoders):
    dim = tiny_encoders.vision.embed_dim
    train = separable(VID, 24, dim, seed=4)
    keep = train["label"] < 2  # class 2 never seen in training: scikit-learn's binary case
    train = {k: v[keep] for k, v in train.items()}
    probe = build("linear-probe", tiny_encoders, VID)
    probe.fit(train, train)
    with torch.no_grad():
        logits = probe.eval()(train)
    assert torch.equal(logits.argmax(-1), train["label"])
    assert torch.all(logits[:, 2] < -1e3)


def test_linear_probe_av_concatenates_branches(tiny_encoders, batch_factory):
    train = features(batch_factory, tiny_encoders, VID, 6, seed=11, modalities="va")
    probe = build("linear-probe", tiny_encoders, VID, modality="av")
    d = tiny_encoders.vision.embed_dim + tiny_encoders.audio.embed_dim
    assert probe.coef.shape == (VID.num_outputs, d)
    probe.fit(train, None)
    with torch.no_grad():
        x = torch.cat([F.normalize(train["feat_v"], dim=-1), F.normalize(train["feat_a"], dim=-1)], -1)
        assert torch.allclose(probe.eval()(train), (x @ probe.coef.T + probe.intercept).mean(1), atol=1e-5)
