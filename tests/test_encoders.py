"""The frozen-encoder protocol: per-block halves equal the stock forward, weights stay frozen,
specs and weights load through the public API (including full-size architectures)."""
from __future__ import annotations

import pytest
import torch

from avprompt.encoders import BackboneSpec, load_encoders
from avprompt.encoders.archs import CLAP_ARCHS, validate_htsat
from avprompt.encoders.hooks import pair_blocks, run_blocks, run_paired


def test_towers_match_library_forward(tiny_encoders):
    v, a = tiny_encoders.vision, tiny_encoders.audio
    x = torch.randn(3, 3, v.image_size, v.image_size)
    assert torch.allclose(v.encode(x), v.model.encode_image(x), atol=1e-6)
    w = torch.randn(3, a.sample_rate) * 0.1
    stock = a.model.audio_projection(a.model.encode_audio({"waveform": w}, device="cpu")["embedding"])
    assert torch.allclose(a.encode(w), stock, atol=1e-5)
    for tower in (v, a):
        ids = tower.text.tokenize(["a red ball", "dog"])
        stock = tower.model.encode_text(ids) if tower is v else tower.model.encode_text(ids, device="cpu")
        assert torch.allclose(tower.text.encode(ids), stock, atol=1e-5)


def test_block_halves_equal_stock_block(tiny_encoders):
    a = tiny_encoders.audio
    tokens = a.embed(torch.randn(2, a.sample_rate))
    blk = a.blocks[1]  # a shifted-window block
    assert blk.block.shift_size > 0
    stock, _ = blk.block(tokens)
    assert torch.allclose(blk.mlp(blk.attn(tokens)), stock, atol=1e-6)


def test_hooks_see_every_point_and_can_change_tokens(tiny_encoders):
    v = tiny_encoders.vision
    x = torch.randn(2, 3, v.image_size, v.image_size)
    seen = []

    def hook(i, point, t):
        seen.append((i, point))
        return t
    base = v.encode(x)  # class-token pooling: the last block for that token alone
    got = v.encode(x, hook)
    assert torch.equal(got, v.project(run_blocks(v.blocks, v.embed(x))))
    assert torch.allclose(got, base, atol=1e-5)
    assert seen == [(i, p) for i in range(v.depth) for p in ("pre", "attn", "mlp")]
    changed = v.encode(x, lambda i, p, t: t * 1.5 if (i, p) == (0, "mlp") else t)
    assert not torch.allclose(changed, base)


def test_pairing_rule_and_paired_run_is_identity_with_identity_hook(tiny_encoders):
    assert pair_blocks(12, 18)[-1] == (11, 17) and len(pair_blocks(12, 18)) == 12
    assert pair_blocks(12, 12) == [(k, k) for k in range(12)]
    assert pair_blocks(18, 12)[0] == (1, 0)
    v, a = tiny_encoders.vision, tiny_encoders.audio
    xv = v.embed(torch.randn(2, 3, v.image_size, v.image_size))
    xa = a.embed(torch.randn(2, a.sample_rate))
    for mode in ("split", "vision-split", "block"):
        points = []
        ov, oa = run_paired(v.blocks, xv, a.blocks, xa, lambda k, p, s, t: points.append(p) or (s, t), mode=mode)
        assert torch.allclose(ov, run_blocks(v.blocks, xv)) and torch.allclose(oa, run_blocks(a.blocks, xa))
        assert points[:2] == (["block", "block"] if mode == "block" else ["attn", "mlp"])


def test_vision_split_hands_whole_audio_blocks_to_the_first_point(tiny_encoders):
    """The released DG-SCT code's order: at "attn" the audio block has run whole, at "mlp" audio is unchanged."""
    v, a = tiny_encoders.vision, tiny_encoders.audio
    xv = v.embed(torch.randn(2, 3, v.image_size, v.image_size))
    xa = a.embed(torch.randn(2, a.sample_rate))
    (i, j), seen = pair_blocks(len(v.blocks), len(a.blocks))[0], {}
    xa0 = run_blocks(a.blocks, xa, stop=j)
    xv0 = run_blocks(v.blocks, xv, stop=i)

    def hook(k, p, s, t):
        if k == 0:
            seen[p] = (s.clone(), t.clone())
        return s, t
    run_paired(v.blocks, xv, a.blocks, xa, hook, mode="vision-split")
    assert torch.allclose(seen["attn"][0], v.blocks[i].attn(xv0))
    assert torch.allclose(seen["attn"][1], a.blocks[j].mlp(a.blocks[j].attn(xa0)))
    assert torch.allclose(seen["mlp"][1], seen["attn"][1])
    with pytest.raises(ValueError, match="mode='x'"):
        run_paired(v.blocks, xv, a.blocks, xa, hook, mode="x")


def test_frozen_by_construction(tiny_encoders):
    assert not any(p.requires_grad for p in tiny_encoders.parameters())
    tiny_encoders.train()
    assert not tiny_encoders.audio.model.training and not tiny_encoders.vision.model.training


def test_spec_parsing_and_errors():
    s = BackboneSpec.parse("clip=ViT-B-32@openai,clap=HTSAT-base+roberta@/x/630k.pt")
    assert s.clip.arch == "ViT-B-32" and s.clip.weights == "openai"
    assert s.clap.text == "roberta" and s.clap.weights == "/x/630k.pt"
    with pytest.raises(ValueError, match="expected clip=ARCH"):
        BackboneSpec.parse("vision=foo")
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        load_encoders("clip=NoSuchNet")


def test_htsat_constraints_are_checked():
    bad = {**CLAP_ARCHS["avp-htsat-tiny"], "htsat": {**CLAP_ARCHS["avp-htsat-tiny"]["htsat"], "spec_size": 48}}
    with pytest.raises(ValueError, match="multiple of mel_bins"):
        validate_htsat("bad", bad)


def test_weights_round_trip_and_wrong_pairing(tmp_path, tiny_encoders):
    from safetensors.torch import save_file
    v = tiny_encoders.vision
    path = tmp_path / "vit.safetensors"
    save_file({k: t.contiguous() for k, t in v.model.state_dict().items()}, str(path))
    again = load_encoders(f"clip=avp-vit-tiny@{path}")
    x = torch.randn(1, 3, v.image_size, v.image_size)
    assert torch.equal(again.vision.encode(x), v.encode(x))
    with pytest.raises(ValueError, match="do not fit architecture avp-vit-synthav"):
        load_encoders(f"clip=avp-vit-synthav@{path}")


def test_full_size_architectures_save_and_load_official_layout(tmp_path):
    """ViT-B-32 + HTSAT-base (random weights): saved like official files and loaded back."""
    torch.manual_seed(0)
    enc = load_encoders("clip=ViT-B-32,clap=HTSAT-base")
    v, a = enc.vision, enc.audio
    assert v.depth == 12 and a.depth == 18 and v.width == 768
    torch.save(v.model.state_dict(), tmp_path / "vitb32.pt")
    # laion-clap checkpoints: {"state_dict": {"module." + key: tensor}} incl. position_ids
    sd = {"module." + k: t for k, t in a.model.state_dict().items()}
    sd["module.text_branch.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save({"epoch": 1, "state_dict": sd}, tmp_path / "630k-audioset-best.pt")
    again = load_encoders(f"clip=ViT-B-32@{tmp_path / 'vitb32.pt'},clap=HTSAT-base@{tmp_path / '630k-audioset-best.pt'}")
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(again.vision.encode(x), v.encode(x))
    w = torch.randn(1, 48000) * 0.1
    assert torch.allclose(again.audio.encode(w), a.encode(w), atol=1e-5)


def test_pooled_last_block_equals_the_full_block(tiny_encoders):
    """Text EOT / class-token pooling computes the last block for one token: equal to the full block
    at that token (causal text blocks of both libraries, the ViT), and really one token wide."""
    from avprompt.encoders.hooks import pre_only, run_blocks_pooled
    torch.manual_seed(1)
    v = tiny_encoders.vision
    for tower in (v.text, tiny_encoders.audio.text):
        ids = tower.tokenize(["a red ball in the park", "dog", "a loud horn"])
        x = tower.token_embeds(ids) + tower.positional[: ids.shape[1]]
        eot = ids.argmax(-1)
        blk = tower.blocks[-1]
        full = blk(x)[torch.arange(3), eot]
        assert torch.allclose(blk.pooled(x, eot)[:, 0], full, atol=1e-5)
        # the causal mask row is each prompt's own: pooling at another position changes the result
        assert not torch.allclose(blk.pooled(x, torch.zeros_like(eot))[:, 0], full, atol=1e-3)
        # the whole tower: padding after the last EOT is left out, the features are the full pass's
        assert tower.causal
        widths = []
        h = tower.blocks[0].block.mlp.register_forward_pre_hook(lambda m, a: widths.append(a[0].shape[1]))
        try:
            got = tower.encode(ids)
        finally:
            h.remove()
        assert widths == [int(eot.max()) + 1] < [ids.shape[1]]
        p = tower.ln_final(run_blocks(tower.blocks, x))[torch.arange(3), eot]
        want = tower.projection(p) if isinstance(tower.projection, torch.nn.Module) else p @ tower.projection
        assert torch.allclose(got, want, atol=1e-5)
    x = v.embed(torch.randn(2, 3, v.image_size, v.image_size))
    seen = []
    h = v.blocks[-1].block.mlp.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    try:
        pos = torch.zeros(2, dtype=torch.long)
        def double_first(i, point, t):  # a "pre" hook that changes tokens, also at the last block
            return t * 1.5 if (i, point) == (v.depth - 1, "pre") else t
        got = run_blocks_pooled(v.blocks, x, pos, pre_only(double_first))
    finally:
        h.remove()
    assert seen == [1]  # the last block's MLP saw the pooled token only
    want = run_blocks(v.blocks, x, double_first)[:, :1]
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="acts inside blocks"):
        run_blocks_pooled(v.blocks, x, pos, lambda i, p, t: t)


def test_fft_spectrogram_matches_the_library_stft(tiny_encoders):
    """``AudioTower.spectrogram`` (torch.stft) equals laion-clap's conv STFT and is at least as close
    to a float64 FFT; an extractor of another kind runs as it is."""
    a = tiny_encoders.audio
    torch.manual_seed(2)
    w = a.fit_length(0.1 * torch.randn(3, a.sample_rate))
    spec = a.model.audio_branch.spectrogram_extractor
    lib, ours = spec(w), a.spectrogram(w)
    assert ours.shape == lib.shape
    st = spec.stft
    z = torch.stft(w.double(), st.n_fft, st.hop_length, window=st.conv_real.weight[0, 0].double(),
                   center=st.center, pad_mode=st.pad_mode, return_complex=True)
    ref = z.abs().pow(2).transpose(1, 2).unsqueeze(1)
    peak = ref.max()
    assert (ours.double() - ref).abs().max() / peak < 1e-5
    assert (lib.double() - ref).abs().max() / peak < 1e-3
    assert (ours.double() - ref).abs().max() <= (lib.double() - ref).abs().max()

    class Other(torch.nn.Module):  # not torchlibrosa's layout: no fast path
        def forward(self, x):
            return x[:, None, :, None]
    a.model.audio_branch.spectrogram_extractor = Other()
    try:
        assert torch.equal(a.spectrogram(w), w[:, None, :, None])
    finally:
        a.model.audio_branch.spectrogram_extractor = spec


def test_text_blocks_follow_the_model_across_to():
    """``.to(device)`` replaces a module's buffers: the text blocks must read the causal mask the
    model holds now, not the tensor it held when the tower was built (on a GPU that stale mask
    stayed on the CPU and attention refused it). The dtype stands in for the device here."""
    enc = load_encoders("tiny")
    for tower in (enc.vision, enc.audio):
        tower.model.to(torch.float64)
        for runner in tower.text.blocks:
            assert runner.attn_mask is tower.model.attn_mask
            assert runner.attn_mask.dtype == torch.float64
        ids = tower.text.tokenize(["a red circle"])
        assert tower.text.encode(ids).dtype == torch.float64
