"""Pre-training of the embedded SynthAV backbones: the loss, a reduced build (tiny towers, a few
steps) that writes weights + manifest which reload through the public spec, and the shipped files."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avprompt.encoders import load_encoders
from avprompt.encoders.factory import SYNTHAV_WEIGHTS
from avprompt.synthav.backbones import CLAP_10S, FILES, QUICK, build_backbones
from avprompt.synthav.corpus import caption_corpus
from avprompt.synthav.pretrain import (PretrainConfig, make_captions, multi_positive_infonce, positives,
                                       tower_data, train_tower)

MINI = replace(QUICK, clip=PretrainConfig(steps=6, batch_size=16, lr=2e-3, warmup=2),
               clap=PretrainConfig(steps=4, batch_size=16, lr=2e-3, warmup=2),
               train_items=48, eval_items=16, eval_seeds=1)


def test_infonce_is_clip_loss_without_duplicates_and_pools_positives():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * x @ t.t()
    clip = 0.5 * (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5)))
    assert torch.allclose(multi_positive_infonce(x, t, list("abcde"), scale), clip, atol=1e-6)
    # two items with the same caption key: matching either caption is right, so pairing each
    # item with the OTHER duplicate's caption costs no more than pairing it with its own
    keys = ["a", "a", "b", "c", "d"]
    swapped = t[[1, 0, 2, 3, 4]]
    assert torch.allclose(multi_positive_infonce(x, t, keys, scale),
                          multi_positive_infonce(x, swapped, keys, scale), atol=1e-6)
    assert multi_positive_infonce(x, x, keys, scale) < multi_positive_infonce(x, t, keys, scale)


def test_captions_name_the_items_own_words():
    rng = np.random.default_rng(0)
    caps, named = make_captions([("red", "star")] * 30, [("high", "chime")] * 30, rng, "v", 0.3, 0.3)
    assert all(any(w in c for w in ("red", "star")) for c in caps)
    assert any("red star high chime" in c for c in caps) and any("chime" not in c for c in caps)
    assert {m for m in named} == {("red", "star"), ("red",), ("star",)}
    caps, named = make_captions([("low", "drum")] * 20, [("blue", "ring")] * 20, rng, "a", 1.0)
    assert all(c.count("blue ring low drum") == 1 for c in caps) and set(named) == {("low", "drum")}


def test_single_word_captions_match_every_item_with_that_word():
    pos = positives([("red", "star"), ("red", "ring"), ("blue", "star")],
                    [("red", "star"), ("red",), ("star",)])
    assert pos.tolist() == [[1, 1, 1], [0, 1, 0], [0, 0, 1]]
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    # a positive matrix from equal keys gives the same loss as the keys themselves
    keys = [("a",), ("a",), ("b",)]
    assert torch.allclose(multi_positive_infonce(x, x, keys, torch.tensor(5.0)),
                          multi_positive_infonce(x, x, positives(keys, keys), torch.tensor(5.0)))


def test_training_lowers_loss_and_leaves_tower_frozen():
    torch.manual_seed(0)
    tower = load_encoders("clip=avp-vit-tiny", modalities="v").vision
    corpus = caption_corpus(16, seed=3, image_size=tower.image_size)
    data = tower_data(corpus, "v", tower)
    caps = [f"a {a} {b}" for a, b in data.pairs]

    def loss():
        with torch.no_grad():
            x = F.normalize(tower.encode(data.inputs), dim=-1)
            t = F.normalize(tower.text.encode(caps), dim=-1)
            return float(multi_positive_infonce(x, t, data.pairs, tower.logit_scale))

    before = loss()
    cfg = PretrainConfig(steps=12, batch_size=16, lr=3e-3, warmup=2, full_name_prob=0.0, word_prob=0.0)
    log = train_tower(tower, data, cfg, seed=0, log=lambda s: None)
    assert loss() < before - 0.1
    assert log["steps_done"] == 12 and not log["stopped_early"]
    assert not any(p.requires_grad for p in tower.model.parameters()) and not tower.model.training
    # a deadline already past: no step is taken and the log says so
    log = train_tower(tower, data, PretrainConfig(steps=5, batch_size=8), seed=0,
                      deadline=time.monotonic() - 1, log=lambda s: None)
    assert log["steps_done"] == 0 and log["stopped_early"]


def test_training_is_reproducible_for_a_seed():
    corpus = caption_corpus(16, seed=4, image_size=32)
    states = []
    for _ in range(2):
        torch.manual_seed(2)
        tower = load_encoders("clip=avp-vit-tiny", modalities="v").vision
        train_tower(tower, tower_data(corpus, "v", tower), PretrainConfig(steps=3, batch_size=8, warmup=1),
                    seed=5, deadline=time.monotonic() + 600, log=lambda s: None)
        states.append(tower.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])

def test_timbre_items_are_never_at_a_named_pitch_and_are_captioned_by_timbre_alone():
    """The audio tower's extra corpus shows every timbre across the pitch range but never inside a
    named pitch band, so no held-out (pitch, timbre) pair is ever heard in pre-training."""
    from avprompt.synthav.corpus import timbre_corpus
    from avprompt.synthav.pretrain import add_timbre_items
    from avprompt.synthav.render import PITCH_HZ
    from avprompt.synthav.vocab import TIMBRES

    t = timbre_corpus(70, seed=3, sample_rate=8000)
    assert t["audio"].shape == (70, 8000) and np.abs(t["audio"]).max() <= 1
    f0 = np.array([a["f0"] for a in t["attributes"]])
    for hz in PITCH_HZ.values():  # the named bands (+-4 % jitter) with a margin
        assert not ((f0 > hz / 1.2) & (f0 < hz * 1.2)).any()
    assert f0.min() < 200 and f0.max() > 1000  # below, between and above the named pitches
    assert [a["timbre"] for a in t["attributes"]].count("chime") == 10 and {a["pitch"] for a in t["attributes"]} == {""}
    assert np.array_equal(timbre_corpus(70, seed=3, sample_rate=8000)["audio"], t["audio"])
    data = add_timbre_items(tower_data(caption_corpus(5, 0, 16, 8000), "a", None), t)
    assert data.inputs.shape == (75, 8000) and data.pairs[5:] == [("", a["timbre"]) for a in t["attributes"]]
    caps, named = make_captions(data.pairs, data.other, np.random.default_rng(0), "a", 0.5, 0.3)
    assert all(m == (p[1],) and p[1] in c and not any(w in c for w in ("low", "mid", "high"))
               for c, m, p in zip(caps[5:], named[5:], data.pairs[5:]))
    # a caption naming a pitch never counts an unnamed-pitch item as its positive
    pos = positives([("", "chime"), ("low", "chime")], [("low", "chime"), ("chime",)])
    assert pos.tolist() == [[0, 1], [1, 1]]
    assert set(TIMBRES) == {a["timbre"] for a in t["attributes"]}


@pytest.fixture(scope="module")
def mini_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("backbones")
    return out, build_backbones(out, minutes_budget=5, seed=1, quick=True, log=lambda s: None, plan=MINI)


def test_reduced_build_writes_files_and_manifest(mini_build):
    out, manifest = mini_build
    on_disk = json.loads((out / FILES["manifest"]).read_text())
    assert on_disk == manifest
    assert manifest["seed"] == 1 and len(manifest["corpus"]["sha256"]) == 64
    for kind in ("clip", "clap"):
        tower = manifest["towers"][kind]
        assert (out / tower["file"]).stat().st_size == tower["bytes"]
        assert tower["train"]["steps_done"] == getattr(MINI, kind).steps
        for key in ("seen", "heldout", "ave", "llp"):
            zs = tower["zero_shot"][key]
            assert 0.0 <= zs["accuracy"]["mean"] <= 1.0 and zs["items"] > 0
            assert zs["chance"] == pytest.approx(1 / zs["classes"], abs=1e-4)
        assert tower["zero_shot"]["ave"]["classes"] == 8


def test_reduced_build_reloads_through_the_spec(mini_build):
    out, manifest = mini_build
    clip, clap = (manifest["towers"][k] for k in ("clip", "clap"))
    spec = f"clip={clip['arch']}@{out / clip['file']},clap={clap['arch']}@{out / clap['file']}"
    enc = load_encoders(spec)
    assert all(p.dtype == torch.float32 for p in enc.parameters())
    # trained weights, not the random initialisation of the same architecture
    torch.manual_seed(1)
    fresh = load_encoders(f"clip={clip['arch']}")
    assert float(enc.vision.model.logit_scale) != float(fresh.vision.model.logit_scale)
    x = torch.randn(2, 3, enc.vision.image_size, enc.vision.image_size)
    assert not torch.allclose(enc.vision.encode(x), fresh.vision.encode(x))
    with pytest.raises(ValueError, match="do not fit architecture"):
        load_encoders(f"clip=avp-vit-synthav@{out / clip['file']}")


def test_shipped_backbones_load_and_fit_the_size_limit():
    paths = [p for _, p in SYNTHAV_WEIGHTS.values()]
    manifest_path = paths[0].parent / FILES["manifest"]
    if not all(p.exists() for p in paths + [manifest_path]):
        pytest.skip("shipped backbones not built yet: run `avprompt backbones build --world synthav`")
    assert sum(p.stat().st_size for p in paths) <= 20 * 2**20
    manifest = json.loads(manifest_path.read_text())
    assert not manifest["quick"]
    enc = load_encoders("synthav")
    assert all(p.dtype == torch.float32 for p in enc.parameters())
    for kind, tower in (("clip", enc.vision), ("clap", enc.audio)):
        assert manifest["towers"][kind]["arch"] == tower.arch
        assert float(tower.logit_scale) == pytest.approx(manifest["towers"][kind]["logit_scale"], rel=1e-2)


def test_rebuilding_one_tower_keeps_the_other(mini_build, tmp_path):
    """--towers clap retrains the audio tower only: the image tower's file and manifest entry stay,
    each entry naming the command that built it; without an earlier build there it is one error."""
    import shutil
    out, manifest = mini_build
    shutil.copytree(out, tmp_path / "b")
    clip_bytes = (tmp_path / "b" / FILES["clip"]).read_bytes()
    new = build_backbones(tmp_path / "b", minutes_budget=5, seed=2, quick=True, log=lambda s: None,
                          plan=MINI, towers=("clap",))
    assert (tmp_path / "b" / FILES["clip"]).read_bytes() == clip_bytes
    assert new["towers"]["clip"]["train"] == manifest["towers"]["clip"]["train"]
    assert "--towers clap" in new["towers"]["clap"]["command"] and "--towers" not in new["towers"]["clip"]["command"]
    assert new["corpus"]["timbre_items"] == MINI.timbre_items > 0
    assert (tmp_path / "b" / FILES["clap"]).read_bytes() != (out / FILES["clap"]).read_bytes()
    with pytest.raises(ValueError, match="build both towers first"):
        build_backbones(tmp_path / "empty", quick=True, plan=MINI, towers=("clip",), log=lambda s: None)


def test_clip_length_corpus_items_sound_in_one_run_of_whole_seconds():
    """10 s items (the clip-length audio tower's corpus) are made second by second like a benchmark
    clip: the sound in one contiguous run of varying length, the noise floor elsewhere."""
    c = caption_corpus(12, seed=2, image_size=16, sample_rate=8000, seconds=10)
    rms = np.sqrt((c["audio"].reshape(12, 10, 8000).astype(np.float64) ** 2).mean(-1))
    loud = rms > 0.05  # sources have amplitude 0.08-0.15, the noise floor 0.01-0.03
    for row in loud:
        on = np.flatnonzero(row)
        assert len(on) >= 1 and on[-1] - on[0] + 1 == len(on), row
    assert len({int(r.sum()) for r in loud}) > 3  # run lengths vary
    one = caption_corpus(3, seed=2, image_size=16, sample_rate=8000)  # 1 s items: the sound throughout
    assert one["audio"].shape == (3, 8000) and np.sqrt((one["audio"].astype(np.float64) ** 2).mean(-1)).min() > 0.05
    with pytest.raises(ValueError, match="whole seconds"):
        caption_corpus(1, seconds=2.5)


def test_clip_length_plan_builds_the_audio_tower_alone(tmp_path):
    """``--plan clap-10s`` writes only the 10 s-window audio tower (no earlier build needed) and it
    reloads through the spec with a 10 s input window."""
    plan = replace(CLAP_10S, clap=PretrainConfig(steps=2, batch_size=8, lr=2e-3, warmup=1),
                   train_items=16, eval_items=16, eval_seeds=1, timbre_items=8)
    manifest = build_backbones(tmp_path, minutes_budget=5, seed=1, log=lambda s: None, plan=plan)
    assert set(manifest["towers"]) == {"clap"} and manifest["corpus"]["seconds"] == 10
    tower = manifest["towers"]["clap"]
    assert tower["arch"] == "avp-htsat-synthav-10s" and tower["train"]["steps_done"] == 2
    enc = load_encoders(f"clap={tower['arch']}@{tmp_path / tower['file']}", modalities="a")
    assert enc.audio.clip_samples == 10 * enc.audio.sample_rate
    with pytest.raises(ValueError, match="this plan builds clap"):
        build_backbones(tmp_path, plan=plan, towers=("clip",), log=lambda s: None)
