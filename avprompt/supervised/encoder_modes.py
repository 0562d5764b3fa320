"""Encoder modes: per-segment audio and visual features from the shared frozen towers, three ways.

A supervised task head reads f_v (B, T, D_v) and f_a (B, T, D_a), the towers' projected embeddings
(the same ones every method uses), from one of:

    frozen   the frozen towers, nothing trained (the paper's baseline row). ``runs_on="features"``:
             reads the cached ``feat_v`` / ``feat_a`` of the batch, else computes them with
             ``Encoders.encode`` under no_grad (same numbers).
    dg-sct   DG-SCT's A2V / V2A modules inside the paired blocks of both towers, built and run by
             the very code the DG-SCT method uses (``avprompt.dgsct.injection``: ``build_injections``,
             ``embed_paired``), with the preset resolved at ``level="segment"``. The switches
             (use_spatial / use_channel / use_temporal, a2v / v2a) are the paper's ablations.
             Parameter names match the method's (``injections.<k>_<attn|mlp>...``).
    lavish   LAVisH-style latent-token adapters in the same paired blocks (``lavish.py``).

Dense heads (segmentation, spatial grounding) also read the vision tower's tokens: ``forward(batch,
tokens=True)`` returns a third item, every vision block's output tokens as (B, T, L, C) tensors
(CLS first, then the patch grid ``encoders.vision.grid``), from the same pass and with the
mode's modules in effect (``frozen``: under no_grad, no feature cache).

The in-network modes (``runs_on="network"``) run the towers every step; their modules start at
zero output, so at initialisation every mode gives the frozen features. The frozen towers are held
but never registered as a sub-module: a mode's ``state_dict`` / ``parameters`` are its own modules
only (the caller moves and keeps the towers, e.g. ``SupervisedModel``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MODES = ("frozen", "dg-sct", "lavish")


@dataclass
class EncoderConfig:
    mode: str = "frozen"  # "frozen" | "dg-sct" | "lavish"
    # dg-sct switches (the paper's ablations, tables 5/8/9): spatial/channel/temporal attention,
    # audio-guides-vision (A2V) / vision-guides-audio (V2A); both directions off is refused
    use_spatial: bool = True
    use_channel: bool = True
    use_temporal: bool = True
    a2v: bool = True
    v2a: bool = True
    dgsct_preset: str = "paper"  # DG-SCT preset of the modules ("paper" | "reference"), level="segment"
    dgsct_hidden: int = 256  # d of DG-SCT eq. 4 (and the temporal GRU's hidden size)
    # LAVisH: latent tokens per adapter; 2 = the released code's --num_tokens=2 (AVE run script)
    lavish_latents: int = 2
    lavish_reduction: int = 8  # LAVisH bottleneck C -> C / 8 (--Adapter_downsample=8)
    lavish_groups: int = 2  # groups of LAVisH's 1x1 bottleneck convs (--num_conv_group=2; 1 if C is odd)
    checkpoint_frozen: bool = False  # activation checkpointing of the frozen block halves (in-network modes)
    checkpoint_modules: bool = False  # dg-sct: activation checkpointing of each A2V/V2A pair (real size)


class EncoderMode(nn.Module):
    """Batch -> (f_v (B, T, D_v), f_a (B, T, D_a)). Subclasses set ``name`` and ``runs_on``."""

    name: str = ""
    runs_on: str = "network"  # "features" (reads cached feat_v / feat_a) | "network" (towers every step)

    def __init__(self, encoders, config: EncoderConfig):
        super().__init__()
        self._towers = (encoders,)  # a tuple: held, not registered (never in state_dict / parameters)
        self.config = config
        encoders.tower("v"), encoders.tower("a")  # both towers are needed: one-line error otherwise

    @property
    def encoders(self):
        return self._towers[0]

    @property
    def dims(self) -> tuple[int, int]:
        """(D_v, D_a): widths of the features this mode returns."""
        return self.encoders.vision.embed_dim, self.encoders.audio.embed_dim

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, batch: dict, tokens: bool = False):
        """-> (f_v, f_a), or (f_v, f_a, [every vision block's output (B, T, L, C)]) with ``tokens``."""
        raise NotImplementedError

    @staticmethod
    def _per_clip(outs: list[torch.Tensor], B: int) -> list[torch.Tensor]:
        """Block outputs (B*T, L, C) -> (B, T, L, C)."""
        return [o.view(B, -1, *o.shape[1:]) for o in outs]

    def extra_repr(self) -> str:
        return f"mode={self.name!r}, runs_on={self.runs_on!r}"


class FrozenMode(EncoderMode):
    """The frozen towers' embeddings; no trainable parameters."""

    name, runs_on = "frozen", "features"

    def forward(self, batch, tokens: bool = False):
        f_a = batch["feat_a"] if "feat_a" in batch else self.encoders.encode(batch, "a")
        if tokens:
            from avprompt.encoders.hooks import run_blocks
            vt, frames = self.encoders.vision, batch["frames"]
            outs = []

            def keep(i, point, t):  # a block's input is the previous block's output
                if point == "pre" and i > 0:
                    outs.append(t)
                return t
            with torch.no_grad():
                x = run_blocks(vt.blocks, vt.embed(frames.flatten(0, 1)), keep)
                f_v = vt.project(x).view(*frames.shape[:2], -1)
            return f_v, f_a, self._per_clip(outs + [x], frames.shape[0])
        f_v = batch["feat_v"] if "feat_v" in batch else self.encoders.encode(batch, "v")
        return f_v, f_a


class DGSCTMode(EncoderMode):
    """DG-SCT's cross-modal modules in the towers (``avprompt.dgsct.injection``, the method's code)."""

    name = "dg-sct"

    def __init__(self, encoders, config):
        super().__init__(encoders, config)
        from avprompt.dgsct.injection import build_injections
        from avprompt.dgsct.method import DGSCTConfig, resolve
        if not (config.a2v or config.v2a):  # before the dummy passes; same one-line message as the method
            raise ValueError("dg-sct: a2v=false and v2a=false leaves nothing to inject; keep one on")
        # the DG-SCT config carrying exactly the fields the injections read
        self.dgsct_config = DGSCTConfig(preset=config.dgsct_preset, use_spatial=config.use_spatial,
                                        use_channel=config.use_channel, use_temporal=config.use_temporal,
                                        a2v=config.a2v, v2a=config.v2a, hidden=config.dgsct_hidden,
                                        checkpoint_frozen=config.checkpoint_frozen)
        self.choices = resolve(self.dgsct_config, "segment")
        self.pairs, self.injections = build_injections(encoders, self.dgsct_config, self.choices)

    def forward(self, batch, tokens: bool = False):
        from avprompt.dgsct.injection import embed_paired
        keep = [] if tokens else None
        f_v, f_a = embed_paired(self.encoders, self.injections, self.pairs, batch,
                                self.choices["placement"], self.config.checkpoint_frozen, keep_vision=keep,
                                checkpoint_modules=self.config.checkpoint_modules)
        return (f_v, f_a, self._per_clip(keep, f_v.shape[0])) if tokens else (f_v, f_a)


class LavishMode(EncoderMode):
    """LAVisH-style latent-token adapters in the paired blocks (``avprompt.supervised.lavish``)."""

    name = "lavish"

    def __init__(self, encoders, config):
        super().__init__(encoders, config)
        from avprompt.supervised.lavish import LavishAdapters
        self.lavish = LavishAdapters(encoders, config.lavish_latents, config.lavish_reduction, config.lavish_groups)

    @property
    def pairs(self):
        return self.lavish.pairs

    def forward(self, batch, tokens: bool = False):
        keep = [] if tokens else None
        f_v, f_a = self.lavish.embed(self.encoders, batch, self.config.checkpoint_frozen, keep_vision=keep)
        return (f_v, f_a, self._per_clip(keep, f_v.shape[0])) if tokens else (f_v, f_a)


_CLASSES = {"frozen": FrozenMode, "dg-sct": DGSCTMode, "lavish": LavishMode}


def build_encoder_mode(encoders, config: EncoderConfig) -> EncoderMode:
    """The encoder mode ``config.mode`` on ``encoders`` (ValueError naming the modes if unknown)."""
    if config.mode not in _CLASSES:
        raise ValueError(f"encoder mode {config.mode!r} is unknown: use one of {'|'.join(MODES)}")
    return _CLASSES[config.mode](encoders, config)


__all__ = ["MODES", "DGSCTMode", "EncoderConfig", "EncoderMode", "FrozenMode", "LavishMode", "build_encoder_mode"]
