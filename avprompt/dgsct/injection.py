"""DG-SCT's injection into the paired frozen blocks, shared by the method and the encoder modes.

One copy of the code that (1) builds the A2V / V2A modules of every paired layer
(``build_injections``: ``pair_blocks``, token shapes from one dummy pass, ``ModuleOptions`` from the
resolved preset, one ``DGSCTPair`` per pair and injection point, keys ``"<k>_attn"`` / ``"<k>_mlp"``)
and (2) runs the two towers in lockstep with them (``embed_paired``, through ``run_paired`` only).
``DGSCT`` (``method.py``) and ``avprompt.supervised.encoder_modes`` (mode ``dg-sct``) both call these,
so the method's numbers and the encoder mode's features come from the same code. ``Recording`` and
``token_shapes`` are also used by other in-tower adapters (LAVisH-style) that need the inputs of each
block's halves or the per-block token widths.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from avprompt.dgsct.modules import DGSCTPair, ModuleOptions
from avprompt.encoders.blocks import BlockRunner
from avprompt.encoders.hooks import pair_blocks, run_blocks, run_paired


class Recording(BlockRunner):
    """A frozen block runner that remembers the inputs of its halves (optionally checkpointed)."""

    def __init__(self, inner: BlockRunner, ckpt: bool):
        super().__init__(inner.block, inner.width, inner.grid)
        self.inner, self.ckpt = inner, ckpt
        self.attn_in = self.mlp_in = None

    def _run(self, f, x):
        if self.ckpt and torch.is_grad_enabled():
            return checkpoint(f, x, use_reentrant=False)
        return f(x)

    def attn(self, x):
        self.attn_in = x
        return self._run(self.inner.attn, x)

    def mlp(self, x):
        self.mlp_in = x
        return self._run(self.inner.mlp, x)

    def after(self, x):
        return self.inner.after(x)


@torch.no_grad()
def token_shapes(tower, x: torch.Tensor) -> list[tuple[int, int]]:
    """(L, C) of the tokens each block reads, from one dummy pass (Swin stages change both)."""
    shapes = []

    def hook(i, point, t):
        if point == "pre":
            shapes.append(tuple(t.shape[1:]))
        return t
    run_blocks(tower.blocks, tower.embed(x), hook)
    return shapes


def tower_token_shapes(encoders) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Per-block (L, C) of the vision and the audio tower (one dummy input each)."""
    vt, at = encoders.tower("v"), encoders.tower("a")
    s = vt.image_size
    return token_shapes(vt, torch.zeros(1, 3, s, s)), token_shapes(at, torch.zeros(1, at.sample_rate))


def module_options(config, choices: dict) -> ModuleOptions:
    """``ModuleOptions`` from a DG-SCT config (switches, hidden) and its resolved preset choices."""
    c = choices
    return ModuleOptions(alpha=c["alpha"], beta=c["beta"], gamma=c["gamma"],
                         channel=config.use_channel, spatial=config.use_spatial,
                         temporal=config.use_temporal, temporal_kind=c["temporal"],
                         hidden=config.hidden, combine=c["combine"], guide_relu=c["guide_relu"],
                         latent_tokens=c["latent_tokens"], spatial_kind=c["spatial"])


def build_injections(encoders, config, choices: dict) -> tuple[list[tuple[int, int]], nn.ModuleDict]:
    """The paired blocks and DG-SCT's modules for them: ``(pairs, ModuleDict{"<k>_<point>": DGSCTPair})``.

    ``config`` carries the switches (use_channel, use_spatial, use_temporal, a2v, v2a, hidden);
    ``choices`` is ``resolve(config, level)``. The temporal gate goes in the last pair only unless
    ``temporal_layers="all"``. Raises a one-line ValueError when both directions are off."""
    vt, at = encoders.tower("v"), encoders.tower("a")
    pairs = pair_blocks(len(vt.blocks), len(at.blocks))
    shapes_v, shapes_a = tower_token_shapes(encoders)
    opts = module_options(config, choices)
    if not (config.a2v or config.v2a):
        raise ValueError("dg-sct: a2v=false and v2a=false leaves nothing to inject; keep one on")
    last = len(pairs) - 1
    no_gate = replace(opts, temporal=False)
    injections = nn.ModuleDict({
        f"{k}_{p}": DGSCTPair(shapes_v[i], shapes_a[j],
                              opts if choices["temporal_layers"] == "all" or k == last else no_gate,
                              config.a2v, config.v2a)
        for k, (i, j) in enumerate(pairs) for p in ("attn", "mlp")})
    return pairs, injections


def block_outputs(blocks: list[Recording], last: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output tokens after a run: the next block's recorded input, then ``last``."""
    return [b.attn_in for b in blocks[1:]] + [last]


def embed_paired(encoders, injections: nn.ModuleDict, pairs: list[tuple[int, int]], batch: dict,
                 placement: str = "split", checkpoint_frozen: bool = False,
                 keep_vision: list | None = None,
                 checkpoint_modules: bool = False,
                 audio_pass: str = "segment") -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (B, T, 3, S, S), audio (B, T, S_a) -> tower embeddings f_v (B, T, D_v), f_a (B, T, D_a)
    with DG-SCT's modules injected (``placement`` "split": paper eq. 1-2; "reference": released code).
    ``keep_vision``: a list that receives every vision block's output tokens (B*T, L, C), modules
    included (dense task heads read them). ``checkpoint_frozen`` / ``checkpoint_modules``: activation
    checkpointing of the frozen block halves / of each DG-SCT pair (its (N, L, d) spatial and channel
    intermediates at HTS-AT's first stage are the largest tensors a step keeps), recomputed in the
    backward pass. ``audio_pass="clip"``: the audio tower runs once per clip (B rows, not B*T) and
    each pair sees which segment's span every audio token hears (``DGSCTPair``); f_a pools each
    segment's span of the final tokens (``AudioTower.pool_spans``)."""
    vt, at = encoders.vision, encoders.audio
    frames, audio = batch["frames"], batch["audio"]
    B, T = frames.shape[:2]
    clip = audio_pass == "clip"
    if clip:
        samples = audio.shape[1] * audio.shape[2]
        at.check_clip_window(samples)
        span_cache: dict[int, torch.Tensor] = {}

        def spans_of(tokens: torch.Tensor) -> torch.Tensor:
            L = tokens.shape[1]
            if L not in span_cache:
                span_cache[L] = at.span_weights(L, samples, T).to(tokens.device, tokens.dtype)
            return span_cache[L]
    v_blocks = [Recording(b, checkpoint_frozen) for b in vt.blocks]
    a_blocks = [Recording(b, checkpoint_frozen) for b in at.blocks]
    paper = placement == "split"

    def hook(k, point, xv, xa):
        bv, ba = v_blocks[pairs[k][0]], a_blocks[pairs[k][1]]
        inj = injections[f"{k}_{point}"]
        if paper:  # eq. 1 reads the block input, eq. 2 the pre-MLP tokens
            src_v, src_a = (bv.attn_in, ba.attn_in) if point == "attn" else (bv.mlp_in, ba.mlp_in)
        elif point == "attn":  # code: vision after attention, audio after its whole block
            src_v, src_a = xv, xa
        else:  # code: the vision MLP's input (p1 added) and the audio tokens (p1 added)
            src_v, src_a = bv.mlp_in, xa
        extra = {"spans": spans_of(src_a)} if clip else {}
        if checkpoint_modules and torch.is_grad_enabled():
            dv, da = checkpoint(inj, src_v, src_a, T, use_reentrant=False, **extra)
        else:
            dv, da = inj(src_v, src_a, T, **extra)
        return (xv if dv is None else xv + dv), (xa if da is None else xa + da)

    xa = at.embed(audio.flatten(1) if clip else audio.flatten(0, 1))
    xv, xa = run_paired(v_blocks, vt.embed(frames.flatten(0, 1)), a_blocks, xa,
                        hook, pairs=pairs, mode="split" if paper else "vision-split")
    if keep_vision is not None:
        keep_vision.extend(block_outputs(v_blocks, xv))
    fa = at.pool_spans(xa, samples, T) if clip else at.project(xa).view(B, T, -1)
    return vt.project(xv).view(B, T, -1), fa
