"""CLIP-Adapter (Gao et al. 2021, gaopengcuhk/CLIP-Adapter ``clip_adapter.py``), per branch.

A residual bottleneck adapter on the frozen pooled embedding f (B, T, D) of each branch:
``A(f) = ReLU(W2 ReLU(W1 f))`` with W1: D -> D/4 and W2: D/4 -> D (no biases), and
``f' = ratio * A(f) + (1 - ratio) * f`` (ratio 0.2). f' is L2-normalised and scored against the
frozen template text features times the tower's logit scale, exactly like zero-shot; only the
adapter trains. The reference hard-codes D = 1024 (RN50); here D is the tower's embedding width.
``modality=av`` gives each branch its own adapter and averages the two branches' logits.

Hyper-parameters: the reference trains inside CoOp's Dassl trainer with its configuration files,
i.e. SGD lr 2e-3, momentum 0.9, weight decay 5e-4, cosine schedule with one constant warm-up epoch
at 1e-5, batch 32, 200 epochs; those are the defaults here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.method_bases import ZeroShotBase, ZeroShotConfig
from avprompt.registry import register_method


@dataclass
class ClipAdapterConfig(ZeroShotConfig):
    ratio: float = 0.2  # residual ratio: weight of the adapted feature (reference alpha = 0.2)
    reduction: int = 4  # bottleneck width D / reduction
    optimizer: str = "sgd"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    epochs: int = 200
    batch_size: int = 32
    # The reference lr (2e-3) is tuned on CLIP's logit scale (100); on towers with a smaller scale
    # (the SynthAV towers: ~15) the adapter barely moves, so x1/x10/x100 are tried on validation.
    lr_search: tuple[float, ...] = (1.0, 10.0, 100.0)


class Adapter(nn.Module):
    """Linear(c -> c/r, no bias) -> ReLU -> Linear(-> c, no bias) -> ReLU (the reference block)."""

    def __init__(self, c: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, c // reduction)
        self.fc = nn.Sequential(nn.Linear(c, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, c, bias=False), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@register_method("clip-adapter")
class ClipAdapter(ZeroShotBase):
    description = "CLIP-Adapter: residual bottleneck adapter (ratio 0.2) on frozen embeddings, per branch"
    config_class = ClipAdapterConfig
    supported_modalities = ("v", "a", "av")
    kind = "train"
    runs_on = "features"
    cost_seconds = (0.62, 5.5e-05)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)

    def __init__(self, encoders, task, config: ClipAdapterConfig):
        super().__init__(encoders, task, config)
        if not 0.0 <= config.ratio <= 1.0:
            raise ValueError(f"clip-adapter: ratio={config.ratio} must lie in [0, 1]")
        if config.reduction < 1:
            raise ValueError(f"clip-adapter: reduction={config.reduction} must be >= 1")
        self.adapters = nn.ModuleDict({m: Adapter(encoders.tower(m).embed_dim, config.reduction)
                                       for m in self.modalities})

    def adapt(self, f: torch.Tensor, modality: str) -> torch.Tensor:
        """(B, T, D) frozen embedding -> (B, T, D) L2-normalised adapted embedding."""
        f = f.float()
        r = self.config.ratio
        return F.normalize(r * self.adapters[modality](f) + (1.0 - r) * f, dim=-1)

    def segment_logits(self, batch):
        logits = [getattr(self, f"scale_{m}") * self.adapt(self.features(batch, m), m)
                  @ getattr(self, f"text_{m}").T for m in self.modalities]
        return torch.stack(logits).mean(0)  # (B, T, K)
