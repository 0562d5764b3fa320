"""DG-SCT with ``audio_pass=clip``: one audio-tower pass per clip, guidance per segment span.

On the shipped 10 s-window SynthAV audio tower (spec ``synthav-10s``): which span each HTS-AT
token hears (checked against the tower's own patch embedding), that A2V guides frame t with span
t's audio tokens only and V2A updates a token with its own span's frame only (exact locality), and
that a sweep cell runs and records the pass."""
from __future__ import annotations

import pytest
import torch
from avprompt.flops import flop_counter

from avprompt.encoders import load_encoders
from avprompt.registry import get_method
from avprompt.task import TaskSpec

T = 10


@pytest.fixture(scope="module")
def enc():
    return load_encoders("synthav-10s")


@pytest.fixture(scope="module")
def dgsct(enc):
    cls = get_method("dg-sct")
    task = TaskSpec("ave", "segment", tuple("abcd"), num_segments=T)
    m = cls(enc, task, cls.default_config(audio_pass="clip"))
    return m.eval()  # BatchNorm on running statistics: rows do not share batch statistics


@pytest.mark.parametrize("spec", ["synthav-10s", "clap=HTSAT-tiny"])
def test_span_weights_match_the_tokens_a_sound_reaches(spec):
    """Sound added in the middle of span 7 changes, at HTS-AT's first stage, only tokens that the
    span weights place (partly) in span 7, and most of span 7's tokens (the embedded 10 s tower:
    16 mel bands, freq_ratio 4; laion-clap's HTSAT-tiny at real size: 48 kHz, 64 mel bands)."""
    at = load_encoders(spec, modalities="a").audio
    rate = at.sample_rate
    g = torch.Generator().manual_seed(0)
    wave = 0.02 * torch.randn(1, T * rate, generator=g)
    loud = wave.clone()
    loud[:, int(7.25 * rate):int(7.75 * rate)] += 0.3 * torch.randn(1, rate // 2, generator=g)
    with torch.no_grad():
        changed = (at.embed(loud) - at.embed(wave)).abs().amax(-1)[0] > 1e-4  # (L,)
    w = at.span_weights(changed.numel(), T * rate, T)
    assert torch.allclose(w.sum(0), torch.ones(changed.numel(), dtype=w.dtype))
    assert changed.any() and bool((w[7][changed] > 0).all())
    assert changed[w[7] == 1].float().mean() > 0.5
    with pytest.raises(ValueError, match="square grid"):
        at.span_weights(250, T * rate, T)


def test_each_frame_is_guided_by_its_own_span_and_each_token_by_its_own_frame(enc, dgsct):
    """First injection point, clip pass: audio changed only inside span 7 changes the A2V update
    of frame 7 alone; frame 2 changed changes the V2A update of span-2 tokens alone."""
    import copy
    pair = copy.deepcopy(dgsct.injections["0_attn"])
    with torch.no_grad():  # leave the zero-initialised output gates and zero weights: random values
        g = torch.Generator().manual_seed(1)
        for p in pair.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    with torch.no_grad():
        v_tok = enc.vision.embed(torch.randn(2 * T, 3, enc.vision.image_size, enc.vision.image_size))
        a_tok = enc.audio.embed(0.1 * torch.randn(2, T * enc.audio.sample_rate))
    spans = enc.audio.span_weights(a_tok.shape[1], T * enc.audio.sample_rate, T).float()
    with torch.no_grad():
        dv, da = pair(v_tok, a_tok, T, spans)
        assert dv.shape == v_tok.shape and da.shape == a_tok.shape
        inside7 = spans[7] == 1
        a2 = a_tok.clone()
        a2[:, inside7] += torch.randn_like(a2[:, inside7])
        dv2, _ = pair(v_tok, a2, T, spans)
        moved = (dv2 - dv).abs().amax((1, 2)).view(2, T) > 1e-6
        assert moved[:, 7].all() and not moved[:, [t for t in range(T) if t != 7]].any(), moved
        v2 = v_tok.clone().view(2, T, *v_tok.shape[1:])
        v2[:, 2] += torch.randn_like(v2[:, 2])
        _, da2 = pair(v2.flatten(0, 1), a_tok, T, spans)
        tokens_moved = (da2 - da).abs().amax((0, 2)) > 1e-6  # (L_a,)
        assert tokens_moved.any() and bool((spans[2][tokens_moved] > 0).all())
        assert tokens_moved[spans[2] == 1].all()


def test_clip_pass_trains_the_modules_only_and_costs_less(enc):
    cls = get_method("dg-sct")
    task = TaskSpec("ave", "segment", tuple("abcd"), num_segments=T)
    batch = {"frames": torch.randn(1, T, 3, enc.vision.image_size, enc.vision.image_size),
             "audio": 0.1 * torch.randn(1, T, enc.audio.sample_rate)}
    flops = {}
    for mode in ("segment", "clip"):
        torch.manual_seed(0)
        m = cls(enc, task, cls.default_config(audio_pass=mode))
        with flop_counter() as fc:
            fv, fa = m.embed(batch)
        flops[mode] = fc.get_total_flops()
        assert fv.shape[:2] == fa.shape[:2] == (1, T)
    (fv.pow(2).sum() + fa.pow(2).sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.injections.parameters())
    assert all(p.grad is None for p in enc.parameters())
    # the frozen audio blocks run once per clip instead of T times; DG-SCT's modules (V2A once per
    # frame over the clip's tokens) and the vision tower do the same work: 2.04 -> 1.57 GFLOP here
    # (FFT spectrogram counted; with the conv STFT it was 7.25 -> 2.09, the STFT dominating)
    assert flops["clip"] < 0.85 * flops["segment"], flops


def test_a_sweep_cell_runs_with_the_clip_pass(tiny_world, tmp_path, monkeypatch):
    from avprompt.bench import BenchConfig, run_bench
    from avprompt.results import read_result
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    cfg = BenchConfig(shots=[1], seeds=[1], tasks=["ave"], methods="dg-sct", backbones="synthav-10s",
                      synth_size="tiny", out=str(tmp_path / "o"), audio_pass="clip", max_epochs_in_network=1)
    out = run_bench(cfg, echo=lambda *_: None)
    assert out["failed"] == 0 and out["ran"] == 1
    rec = read_result(next((tmp_path / "o").rglob("seed1.json")))
    assert rec["status"] == "ok" and rec["config"]["audio_pass"] == "clip"


def test_checkpointed_modules_give_the_same_clip_pass_and_explain_refuses_it(enc, dgsct):
    from avprompt.dgsct.injection import embed_paired
    from avprompt.explain import attention_maps
    batch = {"frames": torch.randn(1, T, 3, enc.vision.image_size, enc.vision.image_size),
             "audio": 0.1 * torch.randn(1, T, enc.audio.sample_rate)}
    outs = [embed_paired(enc, dgsct.injections, dgsct.pairs, batch, checkpoint_modules=ck, audio_pass="clip")
            for ck in (False, True)]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*outs))
    with pytest.raises(ValueError, match="audio_pass=clip"):
        attention_maps(dgsct, batch)
