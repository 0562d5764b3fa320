"""Task heads: the trainable part of a supervised task on top of the shared encoder.

A head is one file in this folder (or a ``avprompt.heads`` entry point, or a ``*.py`` in a folder
of ``AVPROMPT_HEADS_PATH``): a config dataclass deriving ``HeadConfig``, an ``nn.Module`` deriving
``Head``, and ``@register_head("key")``. It takes per-segment features from an encoder mode
(``avprompt.supervised.encoder_modes``: frozen, dg-sct, lavish) and declares the tasks it serves.

Contract (checked by tests/test_head_contract.py for every registered head):
    __init__(dims=(D_v, D_a), num_classes=C, config, context=None)
        ``context`` (dict) carries what the task's example source and the towers know beyond C:
        ``vision_width`` / ``vision_grid`` / ``vision_depth`` of the vision tower (always), and
        source facts such as ``vocab_size`` (question words) for question answering
    forward(f_v (B, T, D_v), f_a (B, T, D_a), batch=None) -> dict of tensors (the head's outputs)
        ``batch`` is the whole batch (inputs beyond the features, e.g. ``question`` tokens); a head
        with ``needs_tokens = True`` also finds ``batch["tokens_v"]``: every vision block's output
        tokens, a list of (B, T, L, C) (CLS first, then the ``vision_grid`` patches)
    loss(out, batch) -> scalar tensor (batch keys: the targets of the task's example source)
    predict(out) -> dict of tensors the task's evaluator reads:
        segment tasks with a background class (ave-sup): ``segment_scores`` (B, T, C + 1),
            background last; argmax is the decision
        parsing tasks (avvp): ``seg_prob_audio`` / ``seg_prob_visual`` (B, T, C) and
            ``video_prob`` (B, C), all probabilities
        segmentation (avs-s4, avs-ms3): ``mask_prob`` (B, T, H, W) foreground probabilities at the
            ground-truth masks' size (``batch["masks"]``)
        question answering (avqa): ``answer_scores`` (B, C) over the closed answer set
    example_batch(B, T, C, context, generator) (classmethod) -> a batch with the targets ``loss``
        reads and any input ``forward`` reads, for the contract test (default: segment/video labels)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from avprompt.config import TrainingConfig
from avprompt.plugins import ClassRegistry, PluginError



@dataclass
class HeadConfig(TrainingConfig):
    """Fields every head config has; the shared training loop reads the optimisation ones
    (``TrainingConfig``; heads train from scratch: Adam, no warm-up)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    batch_size: int = 16
    hidden: int = 128  # width the head projects both modalities to
    dropout: float = 0.1


class Head(nn.Module):
    key: ClassVar[str] = ""
    config_class: ClassVar[type] = HeadConfig
    tasks: ClassVar[tuple[str, ...]] = ()  # the tasks this head serves
    description: ClassVar[str] = ""
    needs_tokens: ClassVar[bool] = False  # reads the vision tokens (batch["tokens_v"])

    def __init__(self, dims: tuple[int, int], num_classes: int, config: HeadConfig, context: dict | None = None):
        super().__init__()
        self.dims, self.num_classes, self.config = dims, num_classes, config
        self.context = dict(context or {})

    def forward(self, f_v: torch.Tensor, f_a: torch.Tensor, batch: dict | None = None) -> dict:
        raise NotImplementedError

    @classmethod
    def example_batch(cls, B: int, T: int, C: int, context: dict, generator: torch.Generator) -> dict:
        """Targets of the segment / video tasks: ``segment_labels`` (B, T) in 0..C (C =
        background), ``label`` (B,), ``video_labels`` (B, C) multi-hot."""
        return {"segment_labels": torch.randint(0, C + 1, (B, T), generator=generator),
                "label": torch.randint(0, C, (B,), generator=generator),
                "video_labels": (torch.rand(B, C, generator=generator) > 0.5).float()}

    def loss(self, out: dict, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, out: dict) -> dict:
        raise NotImplementedError


def projection(d_in: int, d: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> dropout: one modality's features (B, T, d_in) to the head width d."""
    return nn.Sequential(nn.Linear(d_in, d), nn.ReLU(), nn.Dropout(dropout))


def _check(key: str, cls: type) -> None:
    if not cls.tasks:
        raise PluginError(f"head {key!r} ({cls.__module__}): declare tasks = (...) it serves")
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, HeadConfig)):
        raise PluginError(f"head {key!r}: config_class must derive avprompt.heads.HeadConfig")


_HEADS = ClassRegistry("head", Head, "avprompt.heads", "avprompt.heads", "AVPROMPT_HEADS_PATH", _check)
register_head = _HEADS.register  # class decorator: register a ``Head`` subclass under a kebab-case key
discover = _HEADS.discover
get_head = _HEADS.get


def list_heads(task: str | None = None) -> list[str]:
    return sorted(k for k, c in discover().items() if task is None or task in c.tasks)
