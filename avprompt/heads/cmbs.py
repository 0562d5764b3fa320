"""CMBS-style head for supervised AVE localisation (Xia & Zhao, CVPR 2022, "Cross-Modal Background
Suppression"; facts from ../shared/reference/METHODS.md, "AVE localisation").

Per-segment audio and visual features -> cross-modal attention (each modality attends to the other's
segments, as CMBS's audio-guided attention and cross-modal relation modules do) -> a bidirectional
GRU over the 10 segments -> two outputs:
    relevance (B, T): logit that segment t holds the audio-visual event (vs background);
    category (B, C): the video's event class, pooled over segments weighted by relevance.
Decision (CMBS): segment t is background when sigmoid(relevance) < 0.5, else the video's category.
Loss: cross-entropy on the video category + binary cross-entropy on per-segment relevance.

Simplified from CMBS: one cross-attention layer per direction and no background-suppression
re-weighting of the unimodal branches; the decision rule and both losses are CMBS's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.heads import Head, HeadConfig, projection, register_head


@dataclass
class CMBSConfig(HeadConfig):
    relevance_weight: float = 1.0  # weight of the per-segment relevance BCE beside the category CE


class _CrossAttention(nn.Module):
    """x (B, T, d) attends to y (B, T, d); residual + layer norm."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 4 if d % 4 == 0 else 1, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)

    def forward(self, x, y):
        return self.norm(x + self.attn(x, y, y, need_weights=False)[0])


@register_head("cmbs")
class CMBSHead(Head):
    config_class = CMBSConfig
    tasks = ("ave-sup",)
    description = "CMBS-style AVE localisation: video category x per-segment event relevance"

    def __init__(self, dims, num_classes, config: CMBSConfig, context=None):
        super().__init__(dims, num_classes, config, context)
        d = config.hidden
        self.proj_v, self.proj_a = projection(dims[0], d, config.dropout), projection(dims[1], d, config.dropout)
        self.v_from_a, self.a_from_v = _CrossAttention(d, config.dropout), _CrossAttention(d, config.dropout)
        self.gru = nn.GRU(2 * d, d, batch_first=True, bidirectional=True)
        self.relevance = nn.Linear(2 * d, 1)
        self.category = nn.Linear(2 * d, num_classes)

    def forward(self, f_v, f_a, batch=None):
        v, a = self.proj_v(f_v.float()), self.proj_a(f_a.float())  # (B, T, d)
        v, a = self.v_from_a(v, a), self.a_from_v(a, v)
        h, _ = self.gru(torch.cat([v, a], -1))  # (B, T, 2d)
        rel = self.relevance(h).squeeze(-1)  # (B, T)
        w = torch.softmax(rel, dim=1).unsqueeze(-1)  # segments likely to hold the event name it
        return {"relevance": rel, "category": self.category((w * h).sum(1))}

    def loss(self, out, batch):
        event = (batch["segment_labels"] < self.num_classes).float()  # (B, T): 1 = event segment
        ce = F.cross_entropy(out["category"], batch["label"])
        bce = F.binary_cross_entropy_with_logits(out["relevance"], event)
        return ce + self.config.relevance_weight * bce

    def predict(self, out):
        """(B, T, C + 1) scores whose argmax is CMBS's decision: log p(c) + log s(r) for classes,
        max_c log p(c) + log(1 - s(r)) for background, so background wins iff s(r) < 0.5."""
        logp = torch.log_softmax(out["category"].float(), -1).unsqueeze(1)  # (B, 1, C)
        rel = out["relevance"].float().unsqueeze(-1)  # (B, T, 1)
        classes = logp + F.logsigmoid(rel)
        background = logp.max(-1, keepdim=True).values + F.logsigmoid(-rel)
        return {"segment_scores": torch.cat([classes, background], -1)}
