"""The method contract: what every registered method (DG-SCT and each baseline) implements.

A method is an ``nn.Module`` built from the frozen encoders, a ``TaskSpec`` and its own config
dataclass. The one training loop and the one evaluator in ``avprompt.engine`` call only this API.

Batch keys (all tensors on the method's device):
    frames  (B, T, 3, H, W) float: CLIP-normalised frames, one per one-second segment.
    audio   (B, T, S) float: mono waveform per segment at the audio encoder's sample rate.
    feat_v  (B, T, D_v) float: optional cached frozen image embeddings (``Encoders.encode``);
    feat_a  (B, T, D_a) float: optional cached frozen audio embeddings. Cacheable methods use
            them when present and compute them from frames/audio otherwise (same numbers).
    segment_labels (B, T) long: class index per segment, background = ``task.background_index``.
    label   (B,) long: primary video class (video-level tasks).
    video_labels (B, K) float: multi-hot video labels (video-level tasks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.task import TaskSpec


@dataclass
class MethodConfig:
    """Fields every method config has (subclasses add their own and override defaults).

    The optimisation fields are read by the shared training loop, so each method carries its
    reference hyper-parameters next to its code.
    """

    modality: str = "v"  # "v" (CLIP branch), "a" (CLAP branch) or "av" (both, late fusion)
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # "cosine" | "multistep" | "constant"
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    epochs: int = 20
    batch_size: int = 8
    grad_clip: float = 1.0


class Method(nn.Module):
    """Base class. Subclasses set the class attributes and implement ``segment_logits``."""

    key: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = MethodConfig
    supported_modalities: ClassVar[tuple[str, ...]] = ("v", "a", "av")
    #: True when the method only reads pooled frozen embeddings (feat_v / feat_a): the engine then
    #: encodes every clip once and trains from the feature cache.
    cacheable: ClassVar[bool] = False
    #: True when the method has nothing to train by gradient descent (``fit`` may still search
    #: hyper-parameters on validation features).
    training_free: ClassVar[bool] = False

    def __init__(self, encoders, task: TaskSpec, config: MethodConfig):
        super().__init__()
        if config.modality not in self.supported_modalities:
            raise ValueError(
                f"method {self.key!r} supports modality {'|'.join(self.supported_modalities)}, "
                f"got {config.modality!r}: set modality= to one of them")
        self.encoders = encoders  # frozen; registered as a submodule so .to(device) moves it
        self.task = task
        self.config = config

    @classmethod
    def default_config(cls, **overrides) -> MethodConfig:
        """The method's config with its defaults; modality defaults to its first supported one."""
        import dataclasses

        from avprompt.config import apply_overrides
        cfg = cls.config_class()
        if cfg.modality not in cls.supported_modalities:
            cfg = dataclasses.replace(cfg, modality=cls.supported_modalities[0])
        return apply_overrides(cfg, overrides, where=f"method {cls.key}") if overrides else cfg

    # ----- what subclasses implement -------------------------------------------------------
    def segment_logits(self, batch: dict) -> torch.Tensor:
        """Return per-segment class logits ``(B, T, task.num_outputs)``."""
        raise NotImplementedError

    # ----- shared behaviour ------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("v", "a") if m in self.config.modality)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits: ``(B, T, K)`` for segment tasks, ``(B, K)`` (mean over T) for video tasks."""
        seg = self.segment_logits(batch)
        return seg if self.task.level == "segment" else seg.mean(dim=1)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Cross-entropy on segment labels (segment tasks) or the primary label (video tasks)."""
        if self.task.level == "segment":
            return F.cross_entropy(logits.flatten(0, 1), batch["segment_labels"].flatten())
        return F.cross_entropy(logits, batch["label"])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def features(self, batch: dict, modality: str) -> torch.Tensor:
        """Frozen pooled embeddings ``(B, T, D)`` of one modality, from the cache when present."""
        key = "feat_" + modality
        if key in batch:
            return batch[key]
        return self.encoders.encode(batch, modality)

    def fit(self, train_features: dict, val_features: dict) -> dict:
        """Training-free fitting (Tip-Adapter cache, linear probe) on cached features.

        ``*_features`` hold ``feat_v``/``feat_a`` ``(N, T, D)`` plus the label keys. Returns what was
        selected (recorded in the result). Only called when ``training_free`` or the method
        overrides it; default: nothing to fit.
        """
        return {}

    def train(self, mode: bool = True):
        # The frozen encoders stay in eval mode (BatchNorm statistics, SpecAugment, dropout).
        super().train(mode)
        if self.encoders is not None:
            self.encoders.eval()
        return self
