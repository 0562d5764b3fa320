"""DG-SCT against the paper's equations and the released code's facts, each written out here.

Nothing below reuses the implementation's formulas: eq. 3-7 are spelled out with the modules'
weights, the step-0 logits are computed from the frozen towers as zero-shot CLIP / CLAP would,
and each reference-code component is checked on a case computed by hand from METHODS.md.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avprompt.dgsct.loss import audio_visual_logits, fuse, reference_ce_weight, reference_loss
from avprompt.dgsct.method import DGSCT
from avprompt.dgsct.modules import CrossModalAttention, DGSCTPair, ModuleOptions
from avprompt.registry import get_method
from avprompt.task import TaskSpec

SEG = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=3)
VID = TaskSpec("ave-cls", "video", ("dog bark", "car horn", "violin"), num_segments=3)


def build(enc, task=SEG, seed=0, **overrides):
    torch.manual_seed(seed)
    return DGSCT(enc, task, DGSCT.default_config(**overrides))


def _zero_shot(enc, batch, m, prompts, scale):
    """scale * cos(frozen embedding, frozen text feature of each prompt): zero-shot, by hand."""
    tower = enc.tower(m)
    f = F.normalize(enc.encode(batch, m).float(), dim=-1)
    with torch.no_grad():
        t = F.normalize(tower.text.encode(prompts).float(), dim=-1)
    return scale * f @ t.T


# ----- paper mode starts from zero-shot ------------------------------------------------------
@pytest.mark.parametrize("task", [SEG, VID], ids=["segment", "video"])
def test_step0_logits_equal_zero_shot_clip_and_clap(tiny_encoders, batch_factory, task):
    m = build(tiny_encoders, task).eval()
    batch = batch_factory(tiny_encoders, task)
    with torch.no_grad():
        l_v, l_a = m.branch_logits(batch)
    s_v = tiny_encoders.vision.logit_scale.clamp(max=100)
    s_a = tiny_encoders.audio.logit_scale.clamp(max=100)
    zs_v = _zero_shot(tiny_encoders, batch, "v", [f"a photo of a {n}." for n in task.prompt_names], s_v)
    zs_a = _zero_shot(tiny_encoders, batch, "a", [f"The sounds of {n}" for n in task.prompt_names], s_a)
    assert torch.allclose(l_v, zs_v, atol=1e-4), (l_v - zs_v).abs().max()
    assert torch.allclose(l_a, zs_a, atol=1e-4), (l_a - zs_a).abs().max()
    # and the product's own zero-shot CLIP baseline on the same template gives the same numbers
    zs = get_method("zeroshot-clip")
    base = zs(tiny_encoders, task, zs.default_config(modality="v", clip_templates="clip"))
    with torch.no_grad():
        assert torch.allclose(base.segment_logits(batch), l_v, atol=1e-4)
    # the check can fail: a random context (the old init) breaks the equality
    rnd = build(tiny_encoders, task, ctx_init="")
    with torch.no_grad():
        assert not torch.allclose(rnd.branch_logits(batch)[0], zs_v, atol=1e-2)


def test_plain_mlp_heads_do_not_start_from_zero_shot(tiny_encoders, batch_factory):
    m = build(tiny_encoders, heads="mlp").eval()
    batch = batch_factory(tiny_encoders, SEG)
    s_a = tiny_encoders.audio.logit_scale.clamp(max=100)
    zs_a = _zero_shot(tiny_encoders, batch, "a", [f"The sounds of {n}" for n in SEG.prompt_names], s_a)
    with torch.no_grad():
        assert not torch.allclose(m.branch_logits(batch)[1], zs_a, atol=1e-2)
    assert m.effective_config()["head_dim"] == tiny_encoders.vision.embed_dim
    with pytest.raises(ValueError, match="head_dim=8 applies to heads=mlp"):
        build(tiny_encoders, head_dim=8)


# ----- eq. 3-7 written out ---------------------------------------------------------------------
def _lin(layer, x):
    return x @ layer.weight.T + layer.bias


def _gru_last_hidden_all(gru, seq):
    """h_t of a one-layer GRU over seq (B, T, C), written out: r, z, n gates (PyTorch's order)."""
    w_ih, w_hh, b_ih, b_hh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    h = seq.new_zeros(seq.shape[0], gru.hidden_size)
    out = []
    for t in range(seq.shape[1]):
        gi, gh = seq[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out, 1)


def test_equations_3_to_7_by_hand():
    torch.manual_seed(0)
    B, T, Lg, Cg, L, C = 2, 3, 5, 6, 7, 8
    opts = ModuleOptions(alpha=0.2, beta=0.05, gamma=0.3, hidden=4)
    pair = DGSCTPair((L, C), (Lg, Cg), opts)  # a2v: audio (Lg, Cg) guides vision (L, C)
    mod = pair.a2v
    with torch.no_grad():
        mod.gate.fill_(0.7)
    v = torch.randn(B * T, L, C)
    a = torch.randn(B * T, Lg, Cg)
    with torch.no_grad():
        omega_v, omega_a = pair(v, a, T)
        # psi: 1x1 conv over tokens (Lg -> L), then Linear(Cg -> C)
        conv = mod.prompt.tokens
        g = torch.einsum("ol,nlc->noc", conv.weight[:, :, 0], a) + conv.bias[None, :, None]
        g = _lin(mod.prompt.channels, g)  # a' (N, L, C)
        # eq. 3: a'' = mean over tokens; a_cm = Th_a(a'') * Th_v(v); M_c = sigmoid(Phi(GAP(a_cm)))
        a_cm = _lin(mod.ch_guide, g.mean(1, keepdim=True)) * _lin(mod.ch_target, v)
        q = a_cm.mean(1, keepdim=True)
        m_c = torch.sigmoid(_lin(mod.ch_bottleneck[2], torch.relu(_lin(mod.ch_bottleneck[0], q))))
        # eq. 4: v_c = (M_c + 1) v; M_s = sigmoid(Th_s(Th_a^s(a') * Th_v^s(v_c)))
        v_c = (m_c + 1) * v
        m_s = torch.sigmoid(_lin(mod.sp_out, _lin(mod.sp_guide, g) * _lin(mod.sp_target, v_c)))
        # eq. 5: G^v = sigmoid(Th_t(RNN({a_t^cf}))), a^cf the V2A side's frequency-channel attentive audio
        v2a = pair.v2a
        _, m_a, _ = v2a.attend(v, a)
        a_cf = ((m_a + 1) * a).mean(1).view(B, T, Cg)
        gate = torch.sigmoid(_lin(mod.t_out, _gru_last_hidden_all(mod.rnn, a_cf))).reshape(B * T, 1, 1)
        # eq. 6-7: v_cs = (alpha M_c + beta M_s + 1) v; v_cst = (gamma G + 1) v_cs; Omega = gate * v_cst
        v_cs = (0.2 * m_c + 0.05 * m_s + 1) * v
        expected = 0.7 * (0.3 * gate + 1) * v_cs
    assert torch.allclose(omega_v, expected, atol=1e-5), (omega_v - expected).abs().max()
    assert omega_a.shape == a.shape


@pytest.mark.parametrize("kind", ["rnn", "linear"])
def test_temporal_gate_never_mixes_clips(kind):
    torch.manual_seed(0)
    B, T = 3, 4
    pair = DGSCTPair((5, 8), (6, 10), ModuleOptions(temporal_kind=kind))
    with torch.no_grad():
        for p in (pair.a2v.gate, pair.v2a.gate):
            p.fill_(1.0)
        v, a = torch.randn(B * T, 5, 8), torch.randn(B * T, 6, 10)
        dv, da = pair(v, a, T)
        a2, v2 = a.clone(), v.clone()
        a2[T:2 * T] += 5 * torch.randn_like(a2[T:2 * T])  # change clip 1 only
        v2[T:2 * T] += 5 * torch.randn_like(v2[T:2 * T])
        dv2, da2 = pair(v2, a2, T)
    for clip in (0, 2):
        rows = slice(clip * T, (clip + 1) * T)
        assert torch.allclose(dv[rows], dv2[rows], atol=1e-6) and torch.allclose(da[rows], da2[rows], atol=1e-6)
    assert not torch.allclose(dv[T:2 * T], dv2[T:2 * T])


def test_temporal_gate_only_in_the_last_layer_by_default(tiny_encoders):
    m = build(tiny_encoders)
    last = len(m.pairs) - 1
    with_rnn = {n.split(".")[1] for n, _ in m.named_parameters() if ".rnn." in n}
    assert with_rnn == {f"{last}_attn", f"{last}_mlp"}
    every = build(tiny_encoders, temporal_layers="all")
    assert {n.split(".")[1] for n, _ in every.named_parameters() if ".rnn." in n} == set(m.injections)


# ----- the released code (preset="reference") ------------------------------------------------
def test_reference_logits_clip_adapter_and_stored_clap_scale(tiny_encoders, batch_factory):
    m = build(tiny_encoders, preset="reference").eval()
    batch = batch_factory(tiny_encoders, SEG)
    names = SEG.prompt_names
    with torch.no_grad():
        l_v, l_a = m.branch_logits(batch)
        # CLAP side: frozen features of "The sounds of {}", logit_scale_a as stored (log of the exp'd scale)
        stored = math.log(float(tiny_encoders.audio.logit_scale))
        zs_a = _zero_shot(tiny_encoders, batch, "a", [f"The sounds of {n}" for n in names], stored)
        assert torch.allclose(l_a, zs_a, atol=1e-4)
        # CLIP side: f' = 0.2 relu(W2 relu(W1 f)) + 0.8 f on the visual and the text features, exp(scale)
        def adapt(ad, f):
            w1, w2 = ad.fc[0].weight, ad.fc[2].weight
            return 0.2 * torch.relu(torch.relu(f @ w1.T) @ w2.T) + 0.8 * f
        f_v = adapt(m.adapter_v, tiny_encoders.encode(batch, "v").float())
        t_v = adapt(m.adapter_tv, tiny_encoders.vision.text.encode([f"a photo of a {n}." for n in names]).float())
        expected = float(tiny_encoders.vision.logit_scale) * F.normalize(f_v, dim=-1) @ F.normalize(t_v, dim=-1).T
        assert torch.allclose(l_v, expected, atol=1e-4)
        assert torch.allclose(m(batch), 2 * l_v + 2 * l_a, atol=1e-4)  # score = 2 l_v + 2 l_a
    assert not any(n.startswith(("head_", "log_scale")) for n, _ in m.named_parameters())


def test_reference_loss_weights_by_epoch_by_hand():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    labels = torch.tensor([0, 2])
    av = torch.tensor([[3.0, 1.0], [0.0, 2.0]])
    ce = -(math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
           + math.log(1 / (math.exp(0.5) + math.exp(1.5) + 1))) / 2
    l_ai = -(math.log(math.exp(3) / (math.exp(3) + math.exp(1))) + math.log(math.exp(2) / (1 + math.exp(2)))) / 2
    l_ia = -(math.log(math.exp(3) / (math.exp(3) + 1)) + math.log(math.exp(2) / (math.exp(1) + math.exp(2)))) / 2
    for epoch, w in ((0, 500), (9, 500), (10, 5), (40, 5)):  # the code's epochs 1-10 weigh CE x500
        assert reference_ce_weight(epoch) == w
        got = reference_loss(scores, labels, av, epoch).item()
        assert got == pytest.approx(w * ce + 2 * l_ai + 1.5 * l_ia, rel=1e-5)
    # audio-visual logits: segment means, normalised, scale 100
    video = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 4.0]]])
    audio = torch.tensor([[[0.0, 1.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 0.0]]])
    assert torch.allclose(audio_visual_logits(video, audio, 100.0), torch.tensor([[0.0, 100.0], [100.0, 0.0]]))


def test_reference_method_loss_follows_the_epoch(tiny_encoders, batch_factory):
    m = build(tiny_encoders, preset="reference").train()
    batch = batch_factory(tiny_encoders, SEG)
    losses = {}
    for epoch in (0, 10):
        m.start_epoch(epoch)
        with torch.no_grad():
            out = m(batch)
            losses[epoch] = m.loss(out, batch).item()
            ce = F.cross_entropy(out.flatten(0, 1), batch["segment_labels"].flatten()).item()
    assert losses[0] - losses[10] == pytest.approx(495 * ce, rel=1e-4)


def test_fusion_by_hand():
    l_v, l_a = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 3.0]])
    assert torch.allclose(fuse(l_v, l_a, "sum"), torch.tensor([[6.0, 4.0]]))
    # per-class (pre-training / zero-shot code): w1 = l_v / (l_v + l_a) per class
    assert torch.allclose(fuse(l_v, l_a, "per-class"), torch.tensor([[5 / 3, 10 / 2]]))
    p_v, p_a = torch.softmax(l_v, -1).max(), torch.softmax(l_a, -1).max()
    w1 = p_v / (p_v + p_a)
    assert torch.allclose(fuse(l_v, l_a, "paper"), w1 * l_v + (1 - w1) * l_a)


def test_reference_placement_order(tiny_encoders, batch_factory):
    """p1 reads vision after attention and audio after its whole block and is added before the vision
    MLP; p2 reads the vision MLP's input (p1 included) and the audio tokens with p1 added."""
    m = build(tiny_encoders, preset="reference")
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("gate"):
                p.fill_(0.5)
    seen = {}
    for point in ("attn", "mlp"):
        pair = m.injections[f"0_{point}"]
        orig = pair.forward

        def spy(v, a, T, point=point, orig=orig):
            out = orig(v, a, T)
            seen[point] = (v.clone(), a.clone(), out[0].clone(), out[1].clone())
            return out
        pair.forward = spy
    batch = batch_factory(tiny_encoders, SEG)
    with torch.no_grad():
        m.embed(batch)
    vt, at = tiny_encoders.vision, tiny_encoders.audio
    i, j = m.pairs[0]
    frames, audio = batch["frames"].flatten(0, 1), batch["audio"].flatten(0, 1)
    with torch.no_grad():
        xv = vt.embed(frames)
        for b in vt.blocks[:i]:
            xv = b(xv)
        xa = at.embed(audio)
        for b in at.blocks[:j]:
            xa = b(xa)
        v_attn, a_block = vt.blocks[i].attn(xv), at.blocks[j].mlp(at.blocks[j].attn(xa))
    v1, a1, dv1, da1 = seen["attn"]
    assert torch.allclose(v1, v_attn, atol=1e-5) and torch.allclose(a1, a_block, atol=1e-5)
    v2, a2, _, _ = seen["mlp"]
    assert torch.allclose(v2, v_attn + dv1, atol=1e-5)  # the MLP's input includes p1
    assert torch.allclose(a2, a_block + da1, atol=1e-5)


def test_reference_latent_tokens_stay_inside_the_adapter():
    torch.manual_seed(0)
    opts = ModuleOptions(combine="reference", guide_relu=True, latent_tokens=2, temporal_kind="linear",
                         spatial_kind="reference")
    mod = CrossModalAttention(6, 10, 5, 8, opts)
    pair = DGSCTPair((5, 8), (6, 10), opts)
    with torch.no_grad():
        for p in (pair.a2v.latent_gate, pair.v2a.latent_gate):
            p.fill_(1.0)  # the latent update is live, the output gates are still 0
        dv, da = pair(torch.randn(4, 5, 8), torch.randn(4, 6, 10), 2)
    assert torch.count_nonzero(dv) == 0 and torch.count_nonzero(da) == 0
    assert mod.sp_guide.out_features == 4  # spatial hidden width C/2
    assert mod.t_out.in_features == 8  # the linear gate reads the projected guide (target width)


def test_zero_shot_transfer_keeps_the_pretraining_gamma(tiny_encoders):
    """A checkpoint pre-trained at video level (gamma 0.05) is evaluated with 0.05 on a segment task,
    unless the user sets gamma; the engine says what it carried."""
    from avprompt.engine.cell import transfer_config
    pre = build(tiny_encoders, VID)
    ckpt = {"effective_config": pre.effective_config(), "reference_changes": []}
    overrides, carried = transfer_config(DGSCT, {}, ckpt)
    assert carried == {"alpha": 0.2, "beta": 0.05, "gamma": 0.05, "fusion": "paper"}
    target = build(tiny_encoders, SEG, **overrides)
    assert target.choices["gamma"] == 0.05 and target.injections["0_attn"].a2v.opts.gamma == 0.05
    assert build(tiny_encoders, SEG).choices["gamma"] == 0.01  # without the checkpoint: by task level
    overrides, carried = transfer_config(DGSCT, {"gamma": 0.02}, ckpt)
    assert overrides["gamma"] == 0.02 and "gamma" not in carried


@pytest.mark.parametrize("shape", [(50, 768, 4096, 96), (4096, 96, 50, 768), (7, 5, 7, 5)])
def test_prompt_projection_order_is_the_same_function(shape):
    """psi in the cheaper order equals the 1x1 conv then the Linear (the paper's order), values and
    gradients."""
    from avprompt.dgsct.modules import PromptProjection
    n_in, c_in, n_out, c_out = shape
    torch.manual_seed(0)
    psi = PromptProjection(n_in, c_in, n_out, c_out).double()
    g = torch.randn(3, n_in, c_in, dtype=torch.double, requires_grad=True)
    got = psi(g)
    want = psi.channels(psi.tokens(g))
    assert got.shape == (3, n_out, c_out) and torch.allclose(got, want, atol=1e-9)
    (gw,) = torch.autograd.grad(got.square().sum(), psi.tokens.weight)
    (ww,) = torch.autograd.grad(want.square().sum(), psi.tokens.weight)
    assert torch.allclose(gw, ww, atol=1e-7)
    assert psi.channels_first == (shape[0] * shape[1] < shape[2] * shape[3])


@pytest.mark.parametrize("c_target,hidden", [(32, 256), (96, 64)])
def test_channel_and_spatial_steps_in_the_cheaper_order_are_the_same_function(c_target, hidden):
    """Eq. 3 with the token mean taken before Th_x, and eq. 4 as a C x C bilinear form (C < 2d),
    equal the steps as written, in values and in every parameter's gradient (float64)."""
    from avprompt.dgsct.modules import CrossModalAttention, ModuleOptions
    torch.manual_seed(0)
    mod = CrossModalAttention(7, 24, 11, c_target, ModuleOptions(hidden=hidden, temporal=False)).double()
    for p in mod.parameters():  # gates and biases away from their zero init, so every term counts
        torch.nn.init.normal_(p, std=0.3)
    assert mod.spatial_bilinear == (c_target < 2 * hidden)
    guide = torch.randn(5, 7, 24, dtype=torch.double)
    x = torch.randn(5, 11, c_target, dtype=torch.double)

    def run(cheap):
        CrossModalAttention.cheapest_order = cheap
        try:
            _, m, _ = mod.attend(guide, x)
            out = mod.output(x, m, None)
        finally:
            CrossModalAttention.cheapest_order = True
        grads = torch.autograd.grad(out.sin().sum(), list(mod.parameters()), allow_unused=True)
        return out, grads
    got, g_got = run(True)
    want, g_want = run(False)
    assert torch.allclose(got, want, atol=1e-10)
    for a, b in zip(g_got, g_want):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-9))
