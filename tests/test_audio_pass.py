"""audio_pass=clip: one audio-tower pass per clip, each segment pooled from its own time span.

Built on a real-size HTS-AT-tiny (random weights; laion-clap's 10 s, 48 kHz input window): the
only tower here whose window covers a 10 s clip."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

RATE = 48000


@pytest.fixture(scope="module")
def htsat():
    from avprompt.encoders import load_encoders
    return load_encoders("clap=HTSAT-tiny", modalities="a")


def _tone_then_noise() -> torch.Tensor:
    """10 s: a 440 Hz tone for 5 s, then white noise for 5 s -> (1, 10, RATE)."""
    t = torch.arange(5 * RATE) / RATE
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t)
    noise = 0.3 * torch.randn(5 * RATE, generator=torch.Generator().manual_seed(0))
    return torch.cat([tone, noise]).view(1, 10, RATE)


def test_one_span_is_the_clip_embedding(htsat):
    wave = _tone_then_noise().flatten(1)
    tower = htsat.audio
    with torch.no_grad():
        assert torch.allclose(tower.encode_spans(wave, 1)[:, 0], tower.encode(wave), atol=1e-5)


def test_each_segment_gets_its_own_span(htsat):
    """A clip whose sound changes at 5 s: segments on the same side are closer than across it."""
    feats = htsat.encode({"audio": _tone_then_noise()}, "a", audio_pass="clip")[0]
    assert feats.shape[0] == 10
    # random weights: every embedding shares a large common part; compare what differs
    feats = F.normalize(feats - feats.mean(0), dim=-1)
    sim = feats @ feats.T
    within = (sim[:5, :5].sum() - 5 + sim[5:, 5:].sum() - 5) / 40
    across = sim[:5, 5:].mean()
    assert within > 0.3 and across < -0.3, (float(within), float(across))
    assert sim[2, 3] > sim[3, 7]  # both tone vs tone / noise


def test_clip_pass_costs_a_fraction_of_the_segment_passes(htsat):
    from avprompt.flops import flop_counter
    batch = {"audio": _tone_then_noise()}
    flops = {}
    for mode in ("segment", "clip"):
        with flop_counter() as fc:
            htsat.encode(batch, "a", audio_pass=mode)
        flops[mode] = fc.get_total_flops()
    assert flops["segment"] / flops["clip"] >= 5, flops


def test_a_tower_shorter_than_the_clip_is_a_clear_error():
    from avprompt.encoders import load_encoders
    enc = load_encoders("tiny", modalities="a")  # a 1 s window
    with pytest.raises(ValueError, match="audio_pass=segment"):
        enc.encode({"audio": torch.zeros(1, 10, enc.audio.sample_rate)}, "a", audio_pass="clip")
    with pytest.raises(ValueError, match="segment or clip"):
        enc.encode({"audio": torch.zeros(1, 10, enc.audio.sample_rate)}, "a", audio_pass="whole")


def test_in_network_methods_refuse_clip_and_the_sweep_refuses_a_short_tower(tiny_world, tmp_path, monkeypatch):
    from avprompt.bench import BenchConfig, run_bench
    from avprompt.encoders import load_encoders
    from avprompt.registry import get_method
    from avprompt.task import TaskSpec
    cls = get_method("maple")
    task = TaskSpec("ave", "segment", ("a", "b"), num_segments=2)
    with pytest.raises(ValueError, match="audio_pass=clip is not implemented for this in-network method"):
        cls(load_encoders("tiny"), task, cls.default_config(audio_pass="clip", modality="a"))
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    cfg = BenchConfig(shots=[1], seeds=[1], tasks=["ave"], methods="zeroshot-clap", backbones="tiny",
                      synth_size="tiny", out=str(tmp_path / "o"), audio_pass="clip")
    with pytest.raises(ValueError, match="--audio-pass clip: the audio tower's input window is 1 s"):
        run_bench(cfg, echo=lambda *_: None)


def test_shipped_clip_length_tower_hears_each_span():
    """The shipped 10 s SynthAV audio tower (spec synthav-10s), one pass over a clip whose sound
    changes at 5 s (low drum, then high whistle): the segment features change at 5 s, and every
    segment before the change leans more towards "low drum" than any segment after it. (Not that
    each span names its own sound: the clip's other half leaks into a span through HTS-AT's
    attention, here every span's best name is "high whistle"; that cost is what
    ``benchmarks/bench_audio_pass_accuracy.py`` measures.)"""
    import numpy as np

    from avprompt.encoders import load_encoders
    from avprompt.prompts import class_text_features
    from avprompt.synthav.render import render_audio, sample_source

    enc = load_encoders("synthav-10s", modalities="a")
    rate = enc.audio.sample_rate
    assert enc.audio.clip_samples == 10 * rate
    names = ["low drum", "high whistle"]  # two seen pairs differing in pitch and timbre
    rng = np.random.default_rng(0)
    sources = [sample_source(rng, *n.split()) for n in names]
    wave = np.concatenate([render_audio([sources[t >= 5]], float(t), 0.02, rng, 1.0, rate) for t in range(10)])
    with torch.no_grad():
        feats = enc.encode({"audio": torch.from_numpy(wave).view(1, 10, rate)}, "a", audio_pass="clip")[0]
        text = class_text_features(enc.audio.text, names, ["This is a sound of {}."])
    lean = (F.normalize(feats, dim=-1) @ text.T) @ torch.tensor([1.0, -1.0])  # (10,) drum minus whistle
    assert lean[:5].min() > lean[5:].max(), lean.tolist()
    centred = F.normalize(feats - feats.mean(0), dim=-1)
    sim = centred @ centred.T
    within = (sim[:5, :5].sum() - 5 + sim[5:, 5:].sum() - 5) / 40
    assert within > 0.5 and sim[:5, 5:].mean() < -0.5, (float(within), float(sim[:5, 5:].mean()))
