"""Encoder modes (avprompt.supervised.encoder_modes): shapes, frozen == Encoders.encode, zero-init
equivalence of the in-network modes, gradients reach the modes' modules and never the towers, DG-SCT
switches, and one copy of DG-SCT's injection code (the method and the mode agree)."""
from __future__ import annotations

import pytest
import torch

from avprompt.supervised.encoder_modes import MODES, EncoderConfig, build_encoder_mode
from avprompt.task import TaskSpec

B, T = 2, 2
SEG = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=T)


@pytest.fixture(scope="module")
def enc():
    from avprompt.encoders import load_encoders
    return load_encoders("synthav")  # the embedded towers: small, fast on CPU


@pytest.fixture(scope="module")
def batch(enc):
    from conftest import make_batch
    return make_batch(enc, SEG, batch_size=B)


def build(enc, mode, seed=0, **kw):
    torch.manual_seed(seed)
    return build_encoder_mode(enc, EncoderConfig(mode=mode, **kw))


def open_gates(mode, value=0.1):
    """Zero-initialised output gates block every gradient but their own: open them for checks."""
    with torch.no_grad():
        for name, p in mode.named_parameters():
            if name.endswith("gate") or name.endswith("gate_cross"):
                p.fill_(value)


def step(mode, batch, lr=1e-2):
    """One Adam step on a toy loss; returns the towers' state before it."""
    enc = mode.encoders
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    opt = torch.optim.Adam(mode.trainable_parameters(), lr=lr)
    f_v, f_a = mode(batch)
    (f_v.square().mean() + f_a.square().mean()).backward()
    opt.step()
    return before


def assert_towers_untouched(enc, before):
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("name", MODES)
def test_shapes_and_dims(enc, batch, name):
    m = build(enc, name)
    with torch.no_grad():
        f_v, f_a = m(batch)
    d_v, d_a = m.dims
    assert f_v.shape == (B, T, d_v) and f_a.shape == (B, T, d_a)
    assert m.runs_on == ("features" if name == "frozen" else "network")
    assert not any(k.startswith("encoders.") for k in m.state_dict())  # the towers are held, not owned


def test_frozen_is_encode_and_reads_the_cache(enc, batch):
    m = build(enc, "frozen")
    assert m.trainable_parameters() == [] and len(list(m.parameters())) == 0
    f_v, f_a = m(batch)
    assert torch.equal(f_v, enc.encode(batch, "v")) and torch.equal(f_a, enc.encode(batch, "a"))
    cached = {"feat_v": torch.randn(B, T, m.dims[0]), "feat_a": torch.randn(B, T, m.dims[1])}
    out = m(cached)  # no frames / audio: the cached features are used as they are
    assert out[0] is cached["feat_v"] and out[1] is cached["feat_a"]


def test_unknown_mode_is_one_line(enc):
    with pytest.raises(ValueError, match=r"frozen\|dg-sct\|lavish") as err:
        build_encoder_mode(enc, EncoderConfig(mode="adapter"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["lavish", "dg-sct"])
def test_zero_init_equals_frozen(enc, batch, name):
    m = build(enc, name).train()
    f_v, f_a = build(enc, "frozen")(batch)
    with torch.no_grad():
        g_v, g_a = m(batch)
    assert torch.allclose(g_v, f_v, atol=1e-5) and torch.allclose(g_a, f_a, atol=1e-5)


def test_lavish_step_trains_adapters_not_towers(enc, batch):
    m = build(enc, "lavish").train()
    with torch.no_grad():
        f0 = m(batch)
    before = step(m, batch)
    assert_towers_untouched(enc, before)
    params = dict(m.named_parameters())
    assert all(p.grad is not None for p in params.values())
    gates = [n for n in params if n.endswith(".gate")]
    assert gates and all(params[n].grad.abs().sum() > 0 for n in gates)
    with torch.no_grad():
        f1 = m(batch)
    assert not torch.allclose(f1[0], f0[0], atol=1e-6) and not torch.allclose(f1[1], f0[1], atol=1e-6)


def test_lavish_open_gates_route_gradients_everywhere(enc, batch):
    """With the gates open every kind of LAVisH parameter gets a gradient (latents, both gates,
    the width bridge, the bottleneck convs and norms), in both directions."""
    m = build(enc, "lavish").train()
    open_gates(m)
    step(m, batch)
    names = [n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    for frag in ("latents", "gate_latent", "gate_cross", ".other.", ".down.", ".up.", ".ln_in.", ".bn1.",
                 ".v.", ".a."):
        assert any(frag in n for n in names), frag


def test_lavish_latent_count(enc):
    counts = {n: sum(p.numel() for p in build(enc, "lavish", lavish_latents=n).trainable_parameters())
              for n in (1, 2, 4)}
    assert counts[1] < counts[2] < counts[4]
    m = build(enc, "lavish", lavish_latents=3)
    assert all(p.shape[0] == 3 for n, p in m.named_parameters() if n.endswith("latents"))
    with pytest.raises(ValueError, match="lavish_latents=0"):
        build(enc, "lavish", lavish_latents=0)


def test_dgsct_step_trains_modules_not_towers(enc, batch):
    m = build(enc, "dg-sct").train()
    open_gates(m)
    before = step(m, batch)
    assert_towers_untouched(enc, before)
    names = [n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    for frag in ("a2v", "v2a", "prompt", "ch_", "sp_", "rnn"):
        assert any(frag in n for n in names), frag
    assert all(n.startswith("injections.") for n, _ in m.named_parameters())


SWITCHES = {"use_spatial": "sp_", "use_channel": "ch_", "use_temporal": "rnn", "a2v": ".a2v.", "v2a": ".v2a."}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_dgsct_switches_change_the_modules(enc, switch):
    full = build(enc, "dg-sct")
    off = build(enc, "dg-sct", **{switch: False})
    count = lambda m: sum(p.numel() for p in m.trainable_parameters())  # noqa: E731
    assert count(off) < count(full)
    assert any(SWITCHES[switch] in n for n, _ in full.named_parameters())
    assert not any(SWITCHES[switch] in n for n, _ in off.named_parameters())


def test_dgsct_both_directions_off_is_refused(enc):
    with pytest.raises(ValueError, match="a2v=false and v2a=false") as err:
        build(enc, "dg-sct", a2v=False, v2a=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_dgsct_mode_and_method_share_the_code(enc, batch, preset):
    """Same injection weights -> the same features from DGSCT.embed and the dg-sct encoder mode;
    the same parameter names (one copy of the injection code)."""
    from avprompt.dgsct.method import DGSCT
    method = DGSCT(enc, SEG, DGSCT.default_config(preset=preset))
    mode = build(enc, "dg-sct", seed=1, dgsct_preset=preset)
    open_gates(method.injections, 0.3)
    assert list(mode.state_dict()) == [f"injections.{k}" for k in method.injections.state_dict()]
    mode.load_state_dict({f"injections.{k}": v for k, v in method.injections.state_dict().items()})
    method.eval(), mode.eval()
    with torch.no_grad():
        m_v, m_a = method.embed(batch)
        e_v, e_a = mode(batch)
        f_v, f_a = enc.encode(batch, "v"), enc.encode(batch, "a")
    assert torch.equal(m_v, e_v) and torch.equal(m_a, e_a)
    # the open modules do act on both towers
    assert not torch.allclose(m_v, f_v, atol=1e-4) and not torch.allclose(m_a, f_a, atol=1e-4)
    assert mode.choices["gamma"] == 0.01  # resolved at level="segment"


def test_checkpointing_gives_the_same_features(enc, batch):
    for name, switch in (("lavish", "checkpoint_frozen"), ("dg-sct", "checkpoint_frozen"),
                         ("dg-sct", "checkpoint_modules")):
        a, b = build(enc, name), build(enc, name, **{switch: True})
        b.load_state_dict(a.state_dict())
        open_gates(a), open_gates(b)
        a.eval(), b.eval()
        out_a, out_b = a(batch), b(batch)
        assert torch.allclose(out_a[0], out_b[0], atol=1e-6) and torch.allclose(out_a[1], out_b[1], atol=1e-6)


@pytest.mark.parametrize("name", MODES)
def test_vision_tokens_come_from_the_same_pass(enc, batch, name):
    """``tokens=True``: every vision block's output (B, T, L, C); the last one projects to f_v; at
    initialisation every mode's tokens are the frozen ones; an opened DG-SCT/LAVisH gate changes them."""
    m = build(enc, name)
    vt = enc.vision
    B, T = batch["frames"].shape[:2]
    with torch.no_grad():
        f_v, f_a, toks = m(batch, tokens=True)
        plain_v, plain_a = m(batch)
        frozen_toks = build(enc, "frozen")(batch, tokens=True)[2]
    L = 1 + vt.grid[0] * vt.grid[1]
    assert len(toks) == len(vt.blocks) and all(t.shape == (B, T, L, vt.width) for t in toks)
    assert torch.allclose(vt.project(toks[-1].flatten(0, 1)).view(B, T, -1), f_v, atol=1e-5)
    assert torch.allclose(f_v, plain_v, atol=1e-5) and torch.allclose(f_a, plain_a, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(toks, frozen_toks))
    if name != "frozen":
        open_gates(m)
        with torch.no_grad():
            moved = m(batch, tokens=True)[2]
        assert not torch.allclose(moved[-1], frozen_toks[-1], atol=1e-4)
