"""Public bases that several baselines build on, so no baseline file imports another.

``ZeroShotBase``: each branch's frozen pooled embedding is scored against template prompts of every
class (plus "background" on segment-level tasks) through the frozen text tower, times the tower's
logit scale (Radford et al. 2021; Wu et al. 2023). The zero-shot baselines are this class as is;
CLIP-Adapter and Tip-Adapter add to it and reuse its ``text_{m}`` / ``scale_{m}`` buffers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from avprompt.method import Method, MethodConfig
from avprompt.prompts import class_text_features, resolve_templates


@dataclass
class ZeroShotConfig(MethodConfig):
    clip_templates: str = "clip"
    clap_templates: str = "clap"
    epochs: int = 0


class ZeroShotBase(Method):
    """Frozen template text features per branch; ``modality=av`` averages the branches' logits.

    Buffers (not saved: rebuilt from the towers): ``text_{m}`` (K, D) L2-normalised class features,
    ``scale_{m}`` the tower's logit scale.
    """

    config_class = ZeroShotConfig
    kind = "zero-shot"
    runs_on = "features"
    cost_seconds = (0.05, 0.0)  # zero-shot: text features and one pass over cached test features

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
