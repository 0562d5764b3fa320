"""CoCoOp: conditional prompt learning (Zhou et al., CVPR 2022).

Frozen: both encoders. Trains, per branch: the context vectors (n_ctx 4, init from words) and a
meta-net ``Linear(D -> D/16) -> ReLU -> Linear(-> W)`` that maps each sample's frozen pooled
embedding (D = the tower's embed dim) to an offset added to every context token, so every sample
has its own K class prompts. ``modality=av`` averages the CLIP and CLAP branches' logits.

Conditioning unit (``condition``): "segment" (default) conditions on each segment's embedding,
so a batch needs (B*T) x K prompted text passes; "video" conditions on the clip-mean embedding
over the T segments (B x K passes, T times cheaper), a documented efficiency variant.

Memory: the reference loops over images and keeps every image's text-encoder activations for
backward (~64x CoOp's memory at batch 1 vs 32 according to its authors). Here all N x K prompts of
a chunk of ``chunk_size`` samples go through one batched text-encoder call, and with
``checkpoint=True`` each chunk's activations are recomputed in backward instead of stored, so peak
memory is that of one chunk plus the (N, K, D) features, at the price of a second forward pass per
chunk in backward (``checkpoint=False`` keeps the activations: faster, more memory).
``benchmarks/bench_cocoop_memory.py`` measures both against the per-sample loop and CoOp.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from avprompt.method import Method
from avprompt.prompt_learner import PromptConfig, build_learners
from avprompt.registry import register_method


@dataclass
class CoCoOpConfig(PromptConfig):
    # Reference (CoOp repo, cocoop configs vit_b16_c4_ep10_batch1_ctxv1): n_ctx 4 from
    # "a photo of a", SGD 0.002, batch 1, 10 epochs, cosine, 1 warm-up epoch at 1e-5.
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    ctx_init_audio: str = "the sound of a"
    lr: float = 2e-3
    batch_size: int = 1
    epochs: int = 10
    condition: str = "segment"  # segment | video
    # samples per batched text-encoder call in training (each brings K prompts); 0 = all. None: 4
    # when the calls are checkpointed (peak memory 3.7x CoOp's at batch 8 x 10 segments and K=29,
    # and faster than 16 on CPU: benchmarks/README.md), else all: without checkpointing every call's
    # activations are kept for backward anyway, and one call is 1.4x faster per step on the
    # embedded towers. Evaluation calls take up to ``eval_prompts`` prompts each.
    chunk_size: int | None = None
    eval_prompts: int = 2048
    checkpoint: bool = True  # recompute chunk activations in backward (memory), same gradients
    # ...only for text towers of at least this many parameters: a small tower's activations are
    # small, and recomputing them only costs time (the embedded SynthAV text towers: <1M)
    checkpoint_min_params: int = 10_000_000
    # "logit": each branch's lr x (100 / its tower's logit scale). The reference lr is tuned on
    # CLIP's scale (100); the gradient reaching the context is proportional to the scale, so
    # on a tower with scale s the same step needs lr x 100/s (the SynthAV towers: ~15-16, so
    # ~x6.5). "none": the reference lr on every tower.
    lr_scale: str = "logit"


class MetaNet(nn.Sequential):
    """(N, D) pooled embeddings -> (N, W) context offsets."""

    def __init__(self, embed_dim: int, ctx_dim: int):
        hidden = max(1, embed_dim // 16)
        super().__init__(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, ctx_dim))


@register_method("cocoop")
class CoCoOp(Method):
    description = "CoCoOp: per-segment conditioned prompt context (meta-net), late fusion for av"
    config_class = CoCoOpConfig
    supported_modalities = ("v", "a", "av")
    kind = "train"
    runs_on = "features"
    cost_seconds = (5.22, 0.021)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)

    def __init__(self, encoders, task, config: CoCoOpConfig):
        super().__init__(encoders, task, config)
        if config.condition not in ("segment", "video"):
            raise ValueError(f"method cocoop: condition={config.condition!r}; use segment|video")
        if config.chunk_size is not None and config.chunk_size < 0:
            raise ValueError(f"method cocoop: chunk_size={config.chunk_size} must be >= 0 (0 = all samples)")
        self.prompt_learners = build_learners(self, config.n_ctx, config.fit_ctx)
        self.meta_nets = nn.ModuleDict({m: MetaNet(encoders.tower(m).embed_dim,
                                                   self.prompt_learners[m].ctx.shape[-1])
                                        for m in self.modalities})
        for m in self.modalities:
            self.register_buffer(f"scale_{m}", encoders.tower(m).logit_scale.detach().clone(),
                                 persistent=False)
        # a transformer block holds ~12 W^2 weights (attention 4 W^2, MLP 8 W^2)
        self.checkpointed = {m: config.checkpoint and 12 * encoders.tower(m).text.width ** 2 * len(
            encoders.tower(m).text.blocks) >= config.checkpoint_min_params for m in self.modalities}
        if config.lr_scale not in ("logit", "none"):
            raise ValueError(f"method cocoop: lr_scale={config.lr_scale!r}; use logit|none")
        self.lr_scales = {m: (100.0 / float(getattr(self, f"scale_{m}")) if config.lr_scale == "logit" else 1.0)
                          for m in self.modalities}
        for m, s in self.lr_scales.items():
            self.record_change("lr", config.lr, round(config.lr * s, 6),
                               f"x{s:.2f} = 100 / the tower's logit scale ({100 / s:.1f}): the reference lr is "
                               "tuned on CLIP's scale 100 (lr_scale=none keeps it)", branch=m)

    def param_groups(self) -> list[dict]:
        """One group per branch (its context and meta-net) at that branch's lr scale."""
        return [{"params": [p for p in (*self.prompt_learners[m].parameters(), *self.meta_nets[m].parameters())
                            if p.requires_grad], "lr_scale": self.lr_scales[m]} for m in self.modalities]

    def _chunk_text(self, m: str, shift: torch.Tensor) -> torch.Tensor:
        """(n, W) offsets -> (n, K, D) L2-normalised conditioned class features (one text pass)."""
        pl = self.prompt_learners[m]
        return F.normalize(pl.encode(pl.build(shift)), dim=-1)

    def conditioned_text(self, m: str, feats: torch.Tensor) -> torch.Tensor:
        """(N, D) frozen embeddings -> (N, K, D) normalised per-sample class features."""
        shift = self.meta_nets[m](feats)  # (N, W)
        grad = torch.is_grad_enabled() and shift.requires_grad
        use_ckpt = self.checkpointed[m] and grad
        chunk = self.config.chunk_size
        if not grad:  # evaluation: only a call's temporaries are held
            step = max(1, self.config.eval_prompts // self.prompt_learners[m].num_classes)
        else:  # None: 4 if checkpointed, else one call (its activations are kept either way)
            step = (4 if use_ckpt else 0) if chunk is None else chunk
            step = step or shift.shape[0]
        out = []
        for s in range(0, shift.shape[0], step):
            part = shift[s:s + step]
            if use_ckpt:
                out.append(checkpoint(self._chunk_text, m, part, use_reentrant=False))
            else:
                out.append(self._chunk_text(m, part))
        return torch.cat(out)

    def branch_logits(self, m: str, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, T, D) frozen embeddings -> (B, T, K) logits of branch ``m``."""
        b, t, _ = feats.shape
        f = F.normalize(feats.float(), dim=-1)  # the meta-net reads normalised features, as in CoCoOp
        scale = getattr(self, f"scale_{m}")
        if self.config.condition == "video":
            text = self.conditioned_text(m, F.normalize(f.mean(1), dim=-1))  # (B, K, D)
            return scale * torch.einsum("btd,bkd->btk", f, text)
        text = self.conditioned_text(m, f.flatten(0, 1))  # (B*T, K, D)
        return scale * torch.einsum("nd,nkd->nk", f.flatten(0, 1), text).view(b, t, -1)

    def segment_logits(self, batch):
        logits = [self.branch_logits(m, self.features(batch, m)) for m in self.modalities]
        return torch.stack(logits).mean(0)  # (B, T, K)
