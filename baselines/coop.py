"""CoOp: context optimisation for prompting frozen CLIP / CLAP (Zhou et al., IJCV 2022).

Frozen: both encoders (image/audio towers and text towers). Trains: the context vectors of the
prompt ``[SOS][ctx_1..ctx_M][class tokens][.][EOT]`` (``avprompt.prompt_learner``), one set per
branch: unified (M, W) or class-specific (K, M, W), class tokens at the end / middle / front.
Each segment's frozen pooled embedding (B, T, D) is scored against the K prompted class features
(background included on segment-level tasks) with the tower's pre-trained temperature;
``modality=av`` averages the CLIP and CLAP branches' logits (late fusion). The method only reads
frozen pooled features, so the engine trains it from the feature cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from avprompt.method import Method
from avprompt.prompt_learner import PromptConfig, build_learners
from avprompt.registry import register_method


@dataclass
class CoOpConfig(PromptConfig):
    # Reference (CoOp trainers/coop.py, configs): SGD 0.002, momentum 0.9, wd 5e-4, cosine,
    # 1 constant warm-up epoch at 1e-5, batch 32; 50 / 100 / 200 epochs for 1 / 2-4 / 8-16 shots.
    n_ctx: int = 16
    lr: float = 2e-3
    batch_size: int = 32
    epochs: int = 200
    epochs_by_shots: str = "1:50,4:100,16:200"


def scaled_cosine(scale: torch.Tensor, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """scale * cos: feats (B, T, D) against text (K, D) -> (B, T, K)."""
    return scale * F.normalize(feats, dim=-1) @ F.normalize(text, dim=-1).T


@register_method("coop")
class CoOp(Method):
    description = "CoOp: learned prompt context on the frozen text tower(s), late fusion for av"
    config_class = CoOpConfig
    supported_modalities = ("v", "a", "av")
    kind = "train"
    runs_on = "features"
    cost_seconds = (0.58, 0.00016)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)

    def __init__(self, encoders, task, config: CoOpConfig):
        super().__init__(encoders, task, config)
        self.prompt_learners = build_learners(self, config.n_ctx, config.fit_ctx)
        for m in self.modalities:
            self.register_buffer(f"scale_{m}", encoders.tower(m).logit_scale.detach().clone(),
                                 persistent=False)

    def text_features(self, m: str) -> torch.Tensor:
        """(K, D) unnormalised class features of branch ``m`` from the learned prompts."""
        return self.prompt_learners[m]()

    def segment_logits(self, batch):
        logits = [scaled_cosine(getattr(self, f"scale_{m}"), self.features(batch, m).float(),
                                self.text_features(m)) for m in self.modalities]
        return torch.stack(logits).mean(0)  # (B, T, K)
