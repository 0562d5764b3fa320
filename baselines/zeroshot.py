"""Zero-shot CLIP / CLAP / audio-visual: class prompts through the frozen text towers.

Radford et al. 2021 (CLIP), Wu et al. 2023 (LAION-CLAP). Nothing trains; each segment's frozen
image (or 1 s audio) embedding is scored against template prompts of every class (plus
"background" on segment-level tasks). ``zeroshot-av`` averages the two branches' logits. The
scoring lives in ``avprompt.method_bases.ZeroShotBase`` (CLIP-Adapter and Tip-Adapter extend it).
"""
from __future__ import annotations

from avprompt.method_bases import ZeroShotBase, ZeroShotConfig
from avprompt.registry import register_method

__all__ = ["ZeroShotCLIP", "ZeroShotCLAP", "ZeroShotAV", "ZeroShotConfig"]


@register_method("zeroshot-clip")
class ZeroShotCLIP(ZeroShotBase):
    description = "Zero-shot CLIP: frame embeddings vs class prompts (frozen, nothing trains)"
    supported_modalities = ("v",)


@register_method("zeroshot-clap")
class ZeroShotCLAP(ZeroShotBase):
    description = "Zero-shot CLAP: 1 s audio embeddings vs class prompts (frozen, nothing trains)"
    supported_modalities = ("a",)


@register_method("zeroshot-av")
class ZeroShotAV(ZeroShotBase):
    description = "Zero-shot CLIP + CLAP late fusion: mean of both branches' logits"
    supported_modalities = ("av",)
