"""Zero-shot CLIP / CLAP / audio-visual: class prompts through the frozen text towers.

Radford et al. 2021 (CLIP), Wu et al. 2023 (LAION-CLAP). Nothing trains; each segment's frozen
image (or 1 s audio) embedding is scored against template prompts of every class (plus
"background" on segment-level tasks). ``zeroshot-av`` averages the two branches' logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from avprompt.method import Method, MethodConfig
from avprompt.prompts import class_text_features, resolve_templates
from avprompt.registry import register_method


@dataclass
class ZeroShotConfig(MethodConfig):
    clip_templates: str = "clip"
    clap_templates: str = "clap"
    epochs: int = 0


class _ZeroShot(Method):
    config_class = ZeroShotConfig
    cacheable = True
    training_free = True

    def __init__(self, encoders, task, config):
        super().__init__(encoders, task, config)
        for m in self.modalities:
            tower = encoders.tower(m)
            templates = resolve_templates(config.clip_templates if m == "v" else config.clap_templates)
            self.register_buffer(f"text_{m}", class_text_features(tower.text, task.prompt_names, templates),
                                 persistent=False)
            self.register_buffer(f"scale_{m}", tower.logit_scale.detach().clone(), persistent=False)

    @property
    def templates(self) -> dict:
        return {m: resolve_templates(self.config.clip_templates if m == "v" else self.config.clap_templates)
                for m in self.modalities}

    def segment_logits(self, batch):
        logits = [getattr(self, f"scale_{m}") * F.normalize(self.features(batch, m), dim=-1)
                  @ getattr(self, f"text_{m}").T for m in self.modalities]
        return torch.stack(logits).mean(0)  # (B, T, K)


@register_method("zeroshot-clip")
class ZeroShotCLIP(_ZeroShot):
    description = "Zero-shot CLIP: frame embeddings vs class prompts (frozen, nothing trains)"
    supported_modalities = ("v",)


@register_method("zeroshot-clap")
class ZeroShotCLAP(_ZeroShot):
    description = "Zero-shot CLAP: 1 s audio embeddings vs class prompts (frozen, nothing trains)"
    supported_modalities = ("a",)


@register_method("zeroshot-av")
class ZeroShotAV(_ZeroShot):
    description = "Zero-shot CLIP + CLAP late fusion: mean of both branches' logits"
    supported_modalities = ("av",)

