"""TPAVI-style head for audio-visual segmentation on AVSBench-object (Zhou et al., ECCV 2022,
"Audio-Visual Segmentation"; facts from ../shared/reference/METHODS.md, "AVS on AVSBench-object").

Reference: a 4-stage visual backbone (ResNet-50 / PVT-v2) gives multi-scale maps; at each stage a
TPAVI block (temporal pixel-wise audio-visual interaction: non-local attention in "dot" mode over
all T x H x W positions of a video, the audio embedding of each segment broadcast over its frame as
the key, a zero-initialised output projection, a residual) injects the audio; an FPN-like decoder
turns the maps into one mask logit per frame. Loss: BCE on the masks (+ an audio-visual matching
regulariser for MS3).

Here the backbone is the shared frozen CLIP ViT (or its dg-sct / lavish variant):
  * 4 blocks evenly spread over the depth (outputs of blocks depth/4, depth/2, 3 depth/4, depth;
    with fewer blocks some are reused), CLS dropped, patches as (B*T, C, gh, gw);
  * a ViTDet-style simple pyramid: x4 (two stride-2 transposed convs), x2 (one), x1 (1x1 conv),
    x0.5 (max-pool), each to ``hidden`` channels + a 3x3 conv; the shallowest block feeds the
    finest level, as a hierarchical backbone would;
  * TPAVI at every level with the segment's audio embedding f_a (B, T, D_a) projected to ``hidden``.
    The key (phi of the broadcast audio) is constant over a frame's H x W, so the (N x N) dot
    attention with N = T*H*W factorises exactly: y_i = 1/N sum_t (theta_i . phi_t) G_t, G_t =
    sum over frame t of g(x_j). Same numbers as the reference's matmul, O(N T) memory instead of
    O(N^2). The output conv starts at zero (the reference zero-initialises its BatchNorm), so each
    block starts as the identity; the reference's post-residual LayerNorm is left out for that;
  * an FPN top-down decoder (bilinear upsample + add + 3x3 conv) to a 1-channel logit map at the
    finest level (4 x the patch grid), bilinearly upsampled to the masks' size.
Simplified: one 3x3 conv per decoder step instead of the reference's residual conv units, no ASPP
and no audio-visual matching regulariser (loss: BCE over the frames that have a mask only).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.heads import Head, HeadConfig, register_head


@dataclass
class TPAVIConfig(HeadConfig):
    hidden: int = 64  # channels of every pyramid level (the reference uses 256 on 224-px inputs)
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    schedule: str = "cosine"
    dropout: float = 0.0  # unused: dense maps; kept for the shared field set


def block_indices(depth: int, levels: int = 4) -> list[int]:
    """0-based blocks whose outputs feed the pyramid: ceil(depth * k / levels) - 1, k = 1..levels."""
    return [max(0, -(-depth * k // levels) - 1) for k in range(1, levels + 1)]


class TPAVI(nn.Module):
    """Audio-guided non-local block on x (B, T, d, H, W) with audio a (B, T, d) -> same shape."""

    def __init__(self, d: int):
        super().__init__()
        inter = max(1, d // 2)
        self.theta, self.g = nn.Conv2d(d, inter, 1), nn.Conv2d(d, inter, 1)
        self.phi = nn.Linear(d, inter)  # = the reference's 1x1x1 conv on the broadcast audio
        self.out = nn.Conv2d(inter, d, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        B, T, d, H, W = x.shape
        flat = x.flatten(0, 1)
        theta = self.theta(flat).view(B, T, -1, H * W)  # (B, T, i, HW)
        g = self.g(flat).view(B, T, -1, H * W).sum(-1)  # G_t (B, T, i)
        phi = self.phi(a)  # (B, T, i)
        # sum_t phi_t G_t^T: (B, i, i); then y = M^T theta / N at every position of the video
        m = torch.einsum("bti,btj->bij", phi, g) / (T * H * W)
        y = torch.einsum("bij,btiq->btjq", m, theta).reshape(B * T, -1, H, W)
        return x + self.out(y).view(B, T, d, H, W)


def _conv3(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.GroupNorm(1, d), nn.ReLU())


@register_head("tpavi")
class TPAVIHead(Head):
    config_class = TPAVIConfig
    tasks = ("avs-s4", "avs-ms3")
    description = "TPAVI-style AVS decoder: ViT pyramid, audio-guided attention per level, FPN to masks"
    needs_tokens = True

    def __init__(self, dims, num_classes, config: TPAVIConfig, context=None):
        super().__init__(dims, num_classes, config, context)
        c, d = self.context["vision_width"], config.hidden
        self.grid = tuple(self.context["vision_grid"])
        self.blocks = block_indices(int(self.context["vision_depth"]))
        up = lambda i, o: nn.ConvTranspose2d(i, o, 2, stride=2)  # noqa: E731
        self.pyramid = nn.ModuleList([
            nn.Sequential(up(c, d), nn.GroupNorm(1, d), nn.GELU(), up(d, d)),  # x4
            up(c, d),  # x2
            nn.Conv2d(c, d, 1),  # x1
            nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(c, d, 1)),  # x0.5
        ])
        self.smooth = nn.ModuleList([_conv3(d) for _ in range(4)])
        self.audio = nn.Sequential(nn.Linear(dims[1], d), nn.ReLU())
        self.tpavi = nn.ModuleList([TPAVI(d) for _ in range(4)])
        self.fuse = nn.ModuleList([_conv3(d) for _ in range(3)])
        self.logit = nn.Conv2d(d, 1, 3, padding=1)

    def forward(self, f_v, f_a, batch=None):
        """tokens_v: list of (B, T, 1 + gh*gw, C); f_a (B, T, D_a) -> {"logits": (B, T, H, W)} at the
        size of ``batch["masks"]`` (else the finest level, 4 x the grid)."""
        tokens = batch["tokens_v"]
        B, T = f_a.shape[:2]
        gh, gw = self.grid
        a = self.audio(f_a.float())  # (B, T, d)
        levels = []
        for i, proj, smooth, tpavi in zip(self.blocks, self.pyramid, self.smooth, self.tpavi):
            x = tokens[i][:, :, 1:].float()  # CLS dropped: (B, T, gh*gw, C)
            x = x.transpose(-1, -2).reshape(B * T, -1, gh, gw)
            x = smooth(proj(x))
            levels.append(tpavi(x.view(B, T, *x.shape[1:]), a).flatten(0, 1))
        y = levels[3]
        for k in (2, 1, 0):  # top-down: coarse to fine
            y = self.fuse[k](levels[k] + F.interpolate(y, size=levels[k].shape[-2:], mode="bilinear",
                                                       align_corners=False))
        logits = self.logit(y)  # (B*T, 1, 4 gh, 4 gw)
        if batch is not None and "masks" in batch:
            logits = F.interpolate(logits, size=tuple(batch["masks"].shape[-2:]), mode="bilinear",
                                   align_corners=False)
        return {"logits": logits.view(B, T, *logits.shape[-2:])}

    @classmethod
    def example_batch(cls, B, T, C, context, generator):
        """``masks`` (B, T, 16, 16) random 0/1, ``mask_valid`` (B, T) with the first frame always valid."""
        valid = torch.rand(B, T, generator=generator) > 0.4
        valid[:, 0] = True
        return {"masks": (torch.rand(B, T, 16, 16, generator=generator) > 0.5).float(), "mask_valid": valid}

    def loss(self, out, batch):
        """BCE-with-logits averaged over the pixels of the frames that have a mask."""
        bce = F.binary_cross_entropy_with_logits(out["logits"].float(), batch["masks"].float(), reduction="none")
        w = batch["mask_valid"].float()  # (B, T)
        return (bce.mean((-1, -2)) * w).sum() / w.sum().clamp(min=1.0)

    def predict(self, out):
        return {"mask_prob": torch.sigmoid(out["logits"].float())}
