"""CoOp / CoCoOp / MaPLe specifics on the tiny towers: prompt construction, meta-net, deep prompts."""
from __future__ import annotations

import copy

import pytest
import torch

from avprompt.encoders import Encoders
from avprompt.encoders.text import HFTextTower
from avprompt.prompt_learner import PromptLearner, harmonic_mean
from avprompt.registry import discover
from avprompt.task import TaskSpec

SEG = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=3)
NAMES = ["dog bark", "violin"]  # 2 and 1 BPE tokens


def make(key, encoders, task=SEG, seed=0, **overrides):
    torch.manual_seed(seed)
    cls = discover()[key]
    return cls(encoders, task, cls.default_config(**overrides))


def test_harmonic_mean():
    assert round(harmonic_mean(69.34, 74.22), 2) == 71.70
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_epochs_for_shots():
    cfg = discover()["coop"].default_config()
    assert [cfg.epochs_for(s) for s in (1, 2, 4, 8, 16, 32)] == [50, 100, 100, 200, 200, 200]
    assert discover()["cocoop"].default_config().epochs_for(16) == 10
    with pytest.raises(ValueError, match="epochs_by_shots"):
        discover()["coop"].default_config(epochs_by_shots="1-50").epochs_for(1)


@pytest.mark.parametrize("csc", [False, True])
def test_coop_prompt_shapes(tiny_encoders, csc):
    text = tiny_encoders.vision.text
    pl = PromptLearner(text, NAMES, n_ctx=4, csc=csc)
    assert pl.ctx.shape == ((2, 4, text.width) if csc else (4, text.width))
    prompts = pl.build()
    length = int(pl.ids.argmax(-1).max()) + 1  # cut after the last EOT: 1 + 4 + 2 + 1 + 1
    assert length == 9 and prompts.shape == (2, length, text.width) and pl.ids.shape == (2, length)
    assert pl().shape == (2, text.embed_dim)
    shifted = pl.build(torch.randn(5, text.width))
    assert shifted.shape == (5, 2, length, text.width)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_class_token_and_eot_positions(tiny_encoders, position):
    text = tiny_encoders.vision.text
    pl = PromptLearner(text, NAMES, n_ctx=4, class_position=position, csc=True)
    with torch.no_grad():
        pl.ctx.copy_(torch.arange(1, 9).view(2, 4, 1).float().expand_as(pl.ctx))  # ctx j of class k = 4k + j + 1
        prompts = pl.build()
        ref = text.token_embeds(text.tokenize(NAMES))  # [SOS] name [EOT]
        eot = text.token_embeds(text.tokenize([""]))[0, 1]
    name_at = {"end": 5, "middle": 3, "front": 1}[position]
    for k, n in enumerate([2, 1]):
        p = prompts[k]
        assert torch.equal(p[0], ref[k, 0])  # SOS first
        assert torch.allclose(p[name_at:name_at + n], ref[k, 1:1 + n])  # class tokens
        eot_pos = int(pl.ids[k].argmax())
        assert eot_pos == 1 + 4 + n + 1 and torch.allclose(p[eot_pos], eot)  # EOT after "."
        slots = pl.ctx_slots()[k].tolist()
        expected = {"end": [1, 2, 3, 4], "front": [1 + n, 2 + n, 3 + n, 4 + n],
                    "middle": [1, 2, 3 + n, 4 + n]}[position]
        assert slots == expected
        assert torch.equal(p[slots, 0], torch.arange(1, 5).float() + 4 * k)  # ctx in order


def test_words_init_reproduces_the_hand_written_prompt(tiny_encoders):
    text = tiny_encoders.vision.text
    pl = PromptLearner(text, NAMES, n_ctx=4, init_words="a photo of a")
    with torch.no_grad():
        ref = text.encode([f"a photo of a {n}." for n in NAMES])
        assert torch.allclose(pl(), ref, atol=1e-5)  # also checks that cutting after EOT is exact


def test_ctx_too_long_is_shrunk_or_rejected(tiny_encoders):
    text = tiny_encoders.vision.text  # context length 16
    with pytest.warns(UserWarning, match="using n_ctx=11"):
        assert PromptLearner(text, NAMES, n_ctx=16).n_ctx == 11
    with pytest.raises(ValueError, match="does not fit the text context length 16"):
        PromptLearner(text, NAMES, n_ctx=16, fit_ctx=False)


@pytest.mark.parametrize("key", ["coop", "cocoop", "maple"])
def test_tower_without_prompt_learning_is_rejected(tiny_encoders, key):
    audio = copy.copy(tiny_encoders.audio)  # shares the frozen weights; only .text differs
    audio.text = HFTextTower(audio.model, None, audio.embed_dim)
    with pytest.raises(ValueError, match="does not support prompt learning"):
        make(key, Encoders(None, audio), modality="a")


def test_coop_trains_only_the_context(tiny_encoders, batch_factory):
    method = make("coop", tiny_encoders, modality="av", n_ctx=4, csc=True, class_position="middle")
    names = sorted(n for n, p in method.named_parameters() if p.requires_grad)
    assert names == ["prompt_learners.a.ctx", "prompt_learners.v.ctx"]
    assert method.prompt_learners["v"].ctx.shape == (SEG.num_outputs, 4, 32)
    logits = method(batch_factory(tiny_encoders, SEG))
    assert logits.shape == (2, 3, SEG.num_outputs)


def test_cocoop_meta_net_and_batched_text(tiny_encoders, batch_factory):
    method = make("cocoop", tiny_encoders, modality="v", chunk_size=0, checkpoint=False)
    d, w = tiny_encoders.vision.embed_dim, tiny_encoders.vision.text.width
    net = method.meta_nets["v"]
    assert (net[0].in_features, net[0].out_features, net[2].out_features) == (d, d // 16, w)
    feats = torch.nn.functional.normalize(torch.randn(6, d), dim=-1)
    full = method.conditioned_text("v", feats)
    assert full.shape == (6, SEG.num_outputs, tiny_encoders.vision.embed_dim)
    full.sum().backward()
    grad = method.prompt_learners["v"].ctx.grad.clone()
    # chunked + checkpointed passes give the same features and the same gradients
    method.zero_grad()
    method.config.chunk_size = 4
    method.checkpointed["v"] = True
    chunked = method.conditioned_text("v", feats)
    assert torch.allclose(chunked, full, atol=1e-5)
    chunked.sum().backward()
    assert torch.allclose(method.prompt_learners["v"].ctx.grad, grad, atol=1e-5)
    # a per-sample loop (the reference's way) gives the same features
    loop = torch.cat([method.conditioned_text("v", feats[i:i + 1]) for i in range(6)])
    assert torch.allclose(loop, full, atol=1e-5)
    # calls per pass: chunk_size None = 4 samples when checkpointed, one call when not (training);
    # evaluation takes eval_prompts prompts per call; the features are the same every way
    calls = []
    real = method._chunk_text
    method._chunk_text = lambda m, part: calls.append(len(part)) or real(m, part)
    method.config.chunk_size = None
    method.conditioned_text("v", feats)
    method.checkpointed["v"] = False
    method.conditioned_text("v", feats)
    method.config.eval_prompts = 2 * SEG.num_outputs
    with torch.no_grad():
        assert torch.allclose(method.conditioned_text("v", feats), full, atol=1e-5)
    assert calls == [4, 2, 6, 2, 2, 2]
    # checkpointing only pays for a large text tower: off on the tiny one unless asked for
    assert make("cocoop", tiny_encoders, modality="v").checkpointed == {"v": False}
    assert make("cocoop", tiny_encoders, modality="v", checkpoint_min_params=0).checkpointed == {"v": True}
    video = make("cocoop", tiny_encoders, modality="v", condition="video")
    assert video(batch_factory(tiny_encoders, SEG)).shape == (2, 3, SEG.num_outputs)


def test_maple_counts(tiny_encoders):
    method = make("maple", tiny_encoders, modality="av")
    # tiny towers: CLIP text 2 blocks, image 2 blocks; CLAP text 2 blocks, audio 4 -> depth 9 caps to 2
    assert method.depths == {"v": 2, "a": 2}
    for m in ("v", "a"):
        assert method.deep_text[m].shape == (1, 2, 32)
        assert len(method.couplings[m]) == 2
    assert [lin.out_features for lin in method.couplings["a"]] == [16, 16]  # audio stage-1 width
    shallow = make("maple", tiny_encoders, modality="v", depth=1)
    assert shallow.depths == {"v": 1} and shallow.deep_text["v"].shape[0] == 0


def spy_on(hook, log):
    def spy(i, point, x):
        y = hook(i, point, x)
        if point == "pre":
            log.append((i, x.detach().clone(), y.detach().clone()))
        return y
    return spy


@pytest.mark.parametrize("depth", [2, 1])
def test_maple_vision_prompts_in_token_sequence(tiny_encoders, depth):
    method = make("maple", tiny_encoders, modality="v", depth=depth).eval()
    frames = torch.randn(3, 3, 32, 32)
    n, base = method.n_ctx, 1 + 4 * 4  # CLS + 4x4 patches
    with torch.no_grad():
        prompts = method.media_prompts("v")
        log = []
        out = method.encode_media(frames, "v", hook=spy_on(method.tower_hook("v"), log))
        assert torch.allclose(out, method.encode_media(frames, "v"))
    (i0, x0, y0), (i1, x1, y1) = log
    assert x0.shape[1] == base and y0.shape[1] == base + n  # appended after the patch tokens
    assert torch.equal(y0[:, :base], x0) and torch.allclose(y0[:, base:], prompts[0].expand(3, -1, -1))
    assert x1.shape[1] == base + n  # block 0's prompt outputs arrive at block 1
    if depth == 2:  # replaced by layer 1's prompts, everything else untouched
        assert not torch.allclose(x1[:, base:], prompts[1].expand(3, -1, -1))
        assert torch.allclose(y1[:, base:], prompts[1].expand(3, -1, -1))
        assert torch.equal(y1[:, :base], x1[:, :base])
    else:  # past the depth: carried unchanged
        assert torch.equal(y1, x1)
    # before project the prompts are removed; open_clip's 'tok' pooling reads CLS either way
    tower = tiny_encoders.vision
    assert out.shape == (3, tower.embed_dim)
    assert tower.model.visual.pool_type == "tok"
    with torch.no_grad():
        assert torch.allclose(tower.project(y1), tower.project(y1[:, :base]), atol=1e-6)


def test_maple_text_and_audio_prompts(tiny_encoders):
    method = make("maple", tiny_encoders, modality="a").eval()
    n = method.n_ctx
    with torch.no_grad():
        deep = method.text_prompts("a")
        log = []
        feats = method.text_features("a", hook=spy_on(method.text_hook("a"), log))
        assert torch.allclose(feats, method.text_features("a"))
        (_, x0, y0), (_, x1, y1) = log
        assert torch.equal(y0, x0)  # layer-0 context is part of the prompt embeddings
        pos = tiny_encoders.audio.text.positional[1:1 + n]  # block 0 sees embeddings + positions
        assert torch.allclose(x0[:, 1:1 + n] - pos, deep[0].expand(4, -1, -1), atol=1e-6)
        assert torch.allclose(y1[:, 1:1 + n], deep[1].expand(4, -1, -1))  # replaced at block 1
        assert torch.equal(y1[:, :1], x1[:, :1]) and torch.equal(y1[:, 1 + n:], x1[:, 1 + n:])

        offsets = [p.mean(0) for p in method.media_prompts("a")]
        log = []
        method.encode_media(torch.randn(2, 16000) * 0.1, "a", hook=spy_on(method.tower_hook("a"), log))
        assert [x.shape[1] for _, x, _ in log] == [256, 256, 64, 64]  # grid untouched by prompts
        for i, x, y in log:
            if i < 2:
                assert torch.allclose(y - x, offsets[i].expand_as(x), atol=1e-6)
            else:
                assert torch.equal(y, x)


# ----- effective config: what ran on these towers ---------------------------------------------
LONG = TaskSpec("ave", "segment", ("dog bark", "a very long class name with many many words"), num_segments=3)


@pytest.mark.parametrize("key,modality", [("coop", "v"), ("coop", "av"), ("cocoop", "a")])
def test_shrunk_n_ctx_is_the_effective_config(tiny_encoders, key, modality):
    with pytest.warns(UserWarning, match="does not fit the text context length 16"):
        method = make(key, tiny_encoders, LONG, modality=modality, n_ctx=16)
    used = {m: method.prompt_learners[m].ctx.shape[-2] for m in method.modalities}
    assert len(set(used.values())) == 1 and next(iter(used.values())) < 16
    eff = method.effective_config()
    assert eff["n_ctx"] == next(iter(used.values())) and method.config.n_ctx == 16
    (change,) = [c for c in method.reference_changes() if c["field"] == "n_ctx"]  # (cocoop: lr too)
    assert change["field"] == "n_ctx" and change["reference"] == 16 and change["used"] == eff["n_ctx"]
    assert "16-token context" in change["reason"] and change["branches"] == list(method.modalities)


def test_unchanged_config_records_no_change(tiny_encoders):
    import dataclasses
    method = make("coop", tiny_encoders, modality="av", n_ctx=4)
    assert method.reference_changes() == []
    assert method.effective_config() == dataclasses.asdict(method.config)


def test_branches_that_ran_differently_are_recorded_per_branch(tiny_encoders):
    method = make("coop", tiny_encoders, modality="av", n_ctx=4)
    method.record_change("n_ctx", 4, 2, "test: only the audio branch shrank", branch="a")
    assert method.effective_config()["n_ctx"] == {"v": 4, "a": 2}
    assert method.reference_changes() == [{"field": "n_ctx", "reference": 4, "used": 2,
                                           "reason": "test: only the audio branch shrank", "branches": ["a"]}]


def test_capped_maple_depth_is_the_effective_config(tiny_encoders):
    with pytest.warns(UserWarning, match="using depth=2"):
        method = make("maple", tiny_encoders, modality="av")  # reference depth 9; tiny towers: 2 blocks
    assert method.config.depth == 9
    assert method.effective_config()["depth"] == method.depths["v"] == method.depths["a"] == 2
    assert all(method.deep_text[m].shape[0] + 1 == 2 for m in ("v", "a"))  # prompted layers
    changes = {c["branches"][0]: c for c in method.reference_changes()}  # reasons differ per tower
    assert sorted(changes) == ["a", "v"]
    assert all((c["field"], c["reference"], c["used"]) == ("depth", 9, 2) for c in changes.values())
    assert "2 text and 2 image blocks" in changes["v"]["reason"]
    assert "2 text and 4 audio blocks" in changes["a"]["reason"]
    assert make("maple", tiny_encoders, modality="v", depth=1).reference_changes() == []
