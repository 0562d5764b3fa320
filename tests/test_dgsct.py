"""DG-SCT: shapes, zero-init equivalence, frozen weights, gradient routing per switch, branch
weights, the multi-positive loss, a golden regression and overfitting a tiny batch."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avprompt.dgsct.loss import branch_weights, contrastive_loss, dgsct_loss, loss_floor
from avprompt.dgsct.method import DGSCT, reference_config
from avprompt.task import TaskSpec

SEG = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=3)
VID = TaskSpec("ave-cls", "video", ("dog bark", "car horn", "violin"), num_segments=3)
GOLDEN = Path(__file__).parent / "golden" / "dgsct_tiny.pt"


def build(enc, task=SEG, seed=0, **overrides):
    torch.manual_seed(seed)
    return DGSCT(enc, task, DGSCT.default_config(**overrides))


def open_gates(method, value=0.1):
    """Zero-initialised output gates (and the residual heads' zero last layers) block every gradient
    but their own: open them for checks."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in method.named_parameters():
            if name.endswith("gate"):
                p.fill_(value)
            elif name.startswith("head_") and ".mlp.2." in name:
                p.copy_(value * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_shapes(tiny_encoders, batch_factory, task):
    m = build(tiny_encoders, task)
    batch = batch_factory(tiny_encoders, task)
    out = m(batch)
    assert out.shape == ((2, 3, 4) if task.level == "segment" else (2, 3))
    assert m.segment_logits(batch).shape == (2, 3, task.num_outputs)


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_zero_init_equals_frozen_encoders(tiny_encoders, batch_factory, preset):
    m = build(tiny_encoders, preset=preset).train()
    batch = batch_factory(tiny_encoders, SEG)
    with torch.no_grad():
        f_v, f_a = m.embed(batch)
    assert torch.allclose(f_v, tiny_encoders.encode(batch, "v"), atol=1e-6)
    assert torch.allclose(f_a, tiny_encoders.encode(batch, "a"), atol=1e-6)
    open_gates(m)  # the check can fail: open gates change the embeddings
    with torch.no_grad():
        assert not torch.allclose(m.embed(batch)[0], f_v, atol=1e-4)


def test_frozen_weights_bit_identical_after_step(tiny_encoders, batch_factory):
    m = build(tiny_encoders)
    open_gates(m)
    batch = batch_factory(tiny_encoders, SEG)
    before = {k: v.clone() for k, v in tiny_encoders.state_dict().items()}
    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-2)
    m.loss(m(batch), batch).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in tiny_encoders.state_dict().items())
    assert all(p.grad is None for p in tiny_encoders.parameters())


SWITCHES = {  # config -> (sub-module name fragments that must get gradients, that must not exist)
    "all": ({}, ["prompt", "ch_", "sp_", "rnn", "t_out", "a2v", "v2a", "prompt_v.ctx", "head_"], []),
    "no-channel": ({"use_channel": False}, ["sp_", "rnn"], ["ch_"]),
    "no-spatial": ({"use_spatial": False}, ["ch_", "rnn"], ["sp_"]),
    "no-temporal": ({"use_temporal": False}, ["ch_", "sp_"], ["rnn", "t_out"]),
    "no-a2v": ({"a2v": False}, ["v2a"], ["a2v"]),
    "no-v2a": ({"v2a": False}, ["a2v"], ["v2a"]),
    "linear-temporal": ({"temporal": "linear"}, ["t_out"], ["rnn"]),
    "reference": ({"preset": "reference"}, ["latent", "out.down", "adapter_v", "t_out", "av_audio"],
                  ["rnn", "head_", "log_scale"]),
    "temporal-all": ({"temporal_layers": "all"}, ["rnn"], []),
}


@pytest.mark.parametrize("name", list(SWITCHES))
def test_gradients_follow_switches(tiny_encoders, batch_factory, name):
    overrides, on, off = SWITCHES[name]
    m = build(tiny_encoders, **overrides).train()
    open_gates(m)
    batch = batch_factory(tiny_encoders, SEG)
    m.loss(m(batch), batch).backward()
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    for frag in off:
        assert not any(frag in n for n in names), f"{frag} exists although switched off"
    for frag in on:
        hit = [n for n, p in m.named_parameters() if frag in n and p.requires_grad]
        assert hit, f"no parameter named like {frag}"
        dead = [n for n in hit if m.get_parameter(n).grad is None or
                m.get_parameter(n).grad.abs().sum() == 0]
        assert not dead, f"no gradient reaches {dead[:3]}"
    # every injected module of every paired layer is reached, in both points
    for key, pair in m.injections.items():
        for mod in (pair.a2v, pair.v2a):
            if mod is not None:
                assert mod.prompt.channels.weight.grad.abs().sum() > 0, key


def test_reference_preset_resolves_every_choice(tiny_encoders):
    m = DGSCT(tiny_encoders, SEG, reference_config())
    assert m.choices == dict(temporal="linear", temporal_layers="all", fusion="sum", placement="reference",
                             heads="none", clip_adapter=True, loss="reference", scales="stored", alpha=0.2,
                             beta=0.05, gamma=0.01, combine="reference", spatial="reference", guide_relu=True,
                             latent_tokens=2)
    m2 = build(tiny_encoders, VID, preset="reference", fusion="paper")
    assert m2.choices["fusion"] == "paper" and m2.choices["gamma"] == 0.05
    pre = build(tiny_encoders, SEG, preset="reference-pretrain")  # gamma 0.05 even on a segment task
    assert (pre.choices["alpha"], pre.choices["beta"], pre.choices["gamma"], pre.choices["fusion"]) == \
        (0.3, 0.01, 0.05, "per-class")
    with pytest.raises(ValueError, match="temporal_layers='first'"):
        build(tiny_encoders, temporal_layers="first")


@pytest.mark.parametrize("preset", ["paper", "reference"])
@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_effective_config_resolves_the_preset(tiny_encoders, preset, task):
    m = build(tiny_encoders, task, preset=preset)
    assert m.config.temporal is None and m.config.gamma is None  # the config leaves them to the preset
    eff = m.effective_config()
    resolved = ("temporal", "temporal_layers", "fusion", "placement", "heads", "clip_adapter", "loss",
                "scales", "alpha", "beta", "gamma", "combine", "spatial", "guide_relu", "latent_tokens")
    assert all(eff[k] is not None for k in resolved) and not [k for k, v in eff.items() if v is None]
    assert {k: eff[k] for k in resolved} == m.choices
    assert eff["gamma"] == (0.01 if task is SEG else 0.05)
    assert m.reference_changes() == []


def test_learned_context_that_does_not_fit_is_shrunk_and_recorded(tiny_encoders):
    long = TaskSpec("ave", "segment", ("dog bark", "a very long class name with many many words"), num_segments=3)
    with pytest.warns(UserWarning, match="does not fit the text context length 16"):
        m = build(tiny_encoders, long, n_ctx=8)
    ids = m.prompt_v.ids[1]  # the long name's prompt: its EOT must not have been cut off
    n = m.prompt_v.ctx.shape[0]
    assert int(ids.argmax()) == 1 + n + 9 + 1  # SOS, ctx, 9 name tokens, "."
    assert m.effective_config()["n_ctx"] == n < 8
    assert [c["field"] for c in m.reference_changes()] == ["n_ctx"]
    assert m.templates["v"] == [f"[{n} learned context tokens] {{}}."]


def test_branch_weights_sum_to_one_and_follow_confidence():
    torch.manual_seed(0)
    l_a = torch.randn(5, 4)
    flat_v, sharp_v = torch.zeros(5, 4), torch.zeros(5, 4)
    sharp_v[:, 1] = 8.0
    w1_flat, w2_flat = branch_weights(flat_v, l_a)
    w1_sharp, w2_sharp = branch_weights(sharp_v, l_a)
    assert torch.allclose(w1_flat + w2_flat, torch.ones(5)) and torch.allclose(w1_sharp + w2_sharp, torch.ones(5))
    assert (w1_sharp > w1_flat).all()


def test_fusion_modes(tiny_encoders, batch_factory):
    batch = batch_factory(tiny_encoders, SEG)
    torch.manual_seed(1)
    paper, ref = build(tiny_encoders, fusion="paper"), build(tiny_encoders, fusion="sum")
    ref.load_state_dict(paper.state_dict())
    with torch.no_grad():
        l_v, l_a = paper.branch_logits(batch)
        w1, w2 = branch_weights(l_v, l_a)
        assert torch.allclose(paper(batch), w1[..., None] * l_v + w2[..., None] * l_a, atol=1e-5)
        assert torch.allclose(ref(batch), 2 * l_v + 2 * l_a, atol=1e-5)


def test_multi_positive_loss_is_clip_loss_when_classes_differ():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(7, 8), dim=-1)
    labels = torch.tensor([4, 0, 6, 2, 3])
    logits = 10 * img @ txt.T  # (N, K)
    s = 10 * img @ txt[labels].T  # CLIP's (N, N) matrix: text of sample j in column j
    clip = 0.5 * (F.cross_entropy(s, torch.arange(5)) + F.cross_entropy(s.T, torch.arange(5)))
    assert torch.allclose(contrastive_loss(logits, labels).sum(), clip, atol=1e-6)
    # shared classes: the two samples of class 0 are both positives of its prompt
    shared = torch.tensor([0, 0, 6, 2, 3])
    per = contrastive_loss(logits, shared)
    u = torch.tensor([0, 2, 3, 6])
    sim = logits[:, u]
    i2t = F.cross_entropy(sim, torch.tensor([0, 0, 3, 1, 2]))
    lp = sim.log_softmax(0)
    t2i = (-(lp[0, 0] + lp[1, 0]) / 2 - lp[3, 1] - lp[4, 2] - lp[2, 3]) / 4
    assert torch.allclose(per.sum(), 0.5 * (i2t + t2i), atol=1e-6)
    assert loss_floor(shared) == pytest.approx(0.5 * torch.tensor(2.0).log().item() / 4)
    # equal weights give the mean of the two branch losses
    both = dgsct_loss(logits, logits, shared)
    assert torch.allclose(both, per.sum(), atol=1e-6)


def test_clap_text_features_are_cached_once(tiny_encoders, batch_factory, monkeypatch):
    m = build(tiny_encoders)
    calls = []
    text = tiny_encoders.audio.text
    orig = text.encode
    monkeypatch.setattr(text, "encode", lambda *a, **k: calls.append(1) or orig(*a, **k))
    batch = batch_factory(tiny_encoders, SEG)
    with torch.no_grad():
        cached = m(batch)
    assert calls == []
    m.config.cache_text = False
    with torch.no_grad():
        assert torch.allclose(m(batch), cached, atol=1e-5)
    assert len(calls) == SEG.num_outputs


def test_checkpointing_gives_the_same_gradients(tiny_encoders, batch_factory):
    batch = batch_factory(tiny_encoders, SEG)
    grads = []
    for frozen, modules in ((False, False), (True, False), (False, True), (True, True)):
        m = build(tiny_encoders, checkpoint_frozen=frozen, checkpoint_modules=modules)
        open_gates(m)
        m.loss(m(batch), batch).backward()
        grads.append(m.injections["0_attn"].a2v.prompt.channels.weight.grad.clone())
    assert all(torch.allclose(grads[0], g, atol=1e-6) for g in grads[1:])


def golden_logits(enc, batch_factory):
    m = build(enc, seed=3)
    open_gates(m, 0.5)
    with torch.no_grad():
        return m(batch_factory(enc, SEG, seed=5))


def test_golden_regression(tiny_encoders, batch_factory):
    """Fixed-seed logits of DG-SCT (gates opened) on the tiny encoders.

    Regenerate after an intended change: AVPROMPT_REGEN_GOLDEN=1 pytest tests/test_dgsct.py -k golden
    """
    logits = golden_logits(tiny_encoders, batch_factory)
    if os.environ.get("AVPROMPT_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        torch.save({"logits": logits}, GOLDEN)
    ref = torch.load(GOLDEN)["logits"]
    assert torch.allclose(logits, ref, atol=1e-4), (logits - ref).abs().max()


def test_overfits_a_tiny_batch(tiny_encoders, batch_factory):
    m = build(tiny_encoders).train()
    batch = batch_factory(tiny_encoders, SEG, seed=2)
    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = m.loss(m(batch), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.trainable_parameters(), 0.5)
        opt.step()
        losses.append(loss.item())
    floor = loss_floor(batch["segment_labels"].flatten()).item()  # shared classes: log |P_c| > 0
    assert losses[-1] - floor < (losses[0] - floor) / 10, (floor, losses[::5])
    m.eval()
    with torch.no_grad():
        pred = m(batch).argmax(-1)
    assert (pred == batch["segment_labels"]).float().mean() == 1.0
