"""MMIL / HAN-style head for weakly supervised AVVP (Tian et al., ECCV 2020, "Unified Multisensory
Perception: Weakly-Supervised Audio-Visual Video Parsing"; facts from ../shared/reference/METHODS.md,
"AVVP on LLP").

Per-segment audio and visual features -> a hybrid attention layer (HAN: each modality's segments
attend to their own modality and to the other's, residual, then a feed-forward block) ->
per-segment, per-modality class probabilities p (B, T, 2, C) -> attentive MMIL pooling: a
temporal softmax over the T segments and a modality softmax over the 2 modalities, per class, give
the video-level probability P (B, C) = sum_{t,m} w_t w_m p. Trained with binary cross-entropy on the
weak (video-level) labels only; the dense segment labels are never seen in training.

Not included (simplifications, stated): HAN's label smoothing per modality and the later label
refinement of follow-up work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.heads import Head, HeadConfig, projection, register_head


@dataclass
class MMILConfig(HeadConfig):
    layers: int = 1  # hybrid attention layers


class _HybridLayer(nn.Module):
    """HAN layer: x (B, T, d) <- x + self-attention(x) + cross-attention(x, y); then a feed-forward."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        heads = 4 if d % 4 == 0 else 1
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * d, d))

    def forward(self, x, y):
        x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0]
                       + self.cross_attn(x, y, y, need_weights=False)[0])
        return self.norm2(x + self.ff(x))


@register_head("mmil")
class MMILHead(Head):
    config_class = MMILConfig
    tasks = ("avvp",)
    description = "HAN + attentive MMIL pooling: weakly supervised audio-visual video parsing"

    def __init__(self, dims, num_classes, config: MMILConfig, context=None):
        super().__init__(dims, num_classes, config, context)
        d = config.hidden
        self.proj_v, self.proj_a = projection(dims[0], d, config.dropout), projection(dims[1], d, config.dropout)
        self.layers_a = nn.ModuleList(_HybridLayer(d, config.dropout) for _ in range(config.layers))
        self.layers_v = nn.ModuleList(_HybridLayer(d, config.dropout) for _ in range(config.layers))
        self.classify = nn.Linear(d, num_classes)
        self.temporal = nn.Linear(d, num_classes)  # per-class attention logits over segments
        self.modality = nn.Linear(d, num_classes)  # per-class attention logits over modalities

    def forward(self, f_v, f_a, batch=None):
        v, a = self.proj_v(f_v.float()), self.proj_a(f_a.float())  # (B, T, d)
        for la, lv in zip(self.layers_a, self.layers_v):
            a, v = la(a, v), lv(v, a)
        x = torch.stack([a, v], dim=2)  # (B, T, 2, d): modality 0 = audio, 1 = visual
        p = torch.sigmoid(self.classify(x))  # (B, T, 2, C)
        w = torch.softmax(self.temporal(x), dim=1) * torch.softmax(self.modality(x), dim=2)
        video = (w * p).sum((1, 2)).clamp(1e-6, 1 - 1e-6)  # (B, C)
        return {"segment_prob": p, "video_prob": video}

    def loss(self, out, batch):
        return F.binary_cross_entropy(out["video_prob"].float(), batch["video_labels"].float())

    def predict(self, out):
        p = out["segment_prob"].float()
        return {"seg_prob_audio": p[:, :, 0], "seg_prob_visual": p[:, :, 1], "video_prob": out["video_prob"].float()}
