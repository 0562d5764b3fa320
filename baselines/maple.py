"""MaPLe: multi-modal prompt learning (Khattak et al., CVPR 2023).

Frozen: both encoders. Trains, per branch: the layer-0 text context (n_ctx 2, init from words),
deep text prompts (n_ctx, W_t) for layers 1..depth-1 (init N(0, 0.02)), and one coupling
``Linear(W_t -> C_i)`` per deep layer i that maps that layer's text prompts to the media tower's
prompts, so the two encoders' prompts are learned jointly. ``depth`` (9) is capped by the depth of
the text tower and of the media tower, with a warning and a ``record_change`` (results show the
depth used). Deep prompts enter through the towers' hook mechanism ("pre" point, before block i);
no encoder is forked.

Text tower: the prompt is CoOp's ``[SOS][ctx][class tokens][.][EOT]``; before text block i < depth
the n_ctx context positions are replaced by that layer's prompts; later blocks carry them.

CLIP image tower (ViT): the coupled prompts are appended after the patch tokens before block 0
(N, 1+G*G+n_ctx, C); before each deep block i the previous prompt tokens (the last n_ctx) are
replaced by layer i's; blocks past the depth carry them. They are cut off before ``project``
(open_clip's 'tok' pooling would read only the CLS token anyway; cutting keeps ln_post/pooling
independent of the pool type).

CLAP audio tower (HTS-AT): Swin blocks partition the (H, W) token grid into fixed windows, shift it
cyclically and merge 2x2 patches at stage ends, so extra tokens have no grid position and cannot
be appended. The audio side is therefore additive: before audio block i < depth, the coupled
prompts Linear_i(text prompts of layer i) (n_ctx, C_i), averaged over the n_ctx prompts, are added
to every token (C_i follows the stage width). The residual stream carries each offset into later
blocks and stages, as appended prompts are carried past the depth on the vision side; text-audio
coupling is kept because the same text prompts feed both towers. Coupling biases start at zero so
the offset is driven by the text prompts.

``modality=av`` averages the CLIP and CLAP branches' logits. MaPLe changes the encoders'
internal token sequences, so it runs on the network (frames/audio are encoded every step).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.encoders.hooks import TowerHook, pre_only, run_blocks
from avprompt.method import Method
from avprompt.prompt_learner import PromptConfig, build_learners
from avprompt.registry import register_method


@dataclass
class MaPLeConfig(PromptConfig):
    # Reference (multimodal-prompt-learning, configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx):
    # n_ctx 2 from "a photo of a", depth 9, SGD 0.0035, batch 4, 5 epochs, cosine, 1 warm-up epoch.
    n_ctx: int = 2
    depth: int = 9
    ctx_init: str = "a photo of a"
    ctx_init_audio: str = "the sound of a"
    lr: float = 3.5e-3
    batch_size: int = 4
    epochs: int = 5


@register_method("maple")
class MaPLe(Method):
    description = "MaPLe: deep text prompts coupled to deep image (CLIP) / audio (CLAP) prompts"
    config_class = MaPLeConfig
    supported_modalities = ("v", "a", "av")
    kind = "train"
    runs_on = "network"  # it changes the encoders' internal token sequences
    cost_seconds = (11.81, 0.037)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)

    def __init__(self, encoders, task, config: MaPLeConfig):
        super().__init__(encoders, task, config)
        if config.csc or config.class_position != "end":
            raise ValueError("method maple: uses one shared context with class tokens at the end; "
                             "set csc=false and class_position=end")
        if config.depth < 1:
            raise ValueError(f"method maple: depth={config.depth} must be at least 1")
        self.prompt_learners = build_learners(self, config.n_ctx, config.fit_ctx)
        self.depths: dict[str, int] = {}
        self.deep_text = nn.ParameterDict()
        self.couplings = nn.ModuleDict()
        for m in self.modalities:
            tower, pl = encoders.tower(m), self.prompt_learners[m]
            d = min(config.depth, len(tower.text.blocks), len(tower.blocks))
            if d < config.depth:  # shallow towers: prompt every block there is, and say so
                reason = (f"the {'CLIP' if m == 'v' else 'CLAP'} towers have {len(tower.text.blocks)} text and "
                          f"{len(tower.blocks)} {'image' if m == 'v' else 'audio'} blocks")
                warnings.warn(f"method maple ({m}): depth={config.depth} exceeds the towers ({reason}); "
                              f"using depth={d}", stacklevel=2)
                self.record_change("depth", config.depth, d, reason, branch=m)
            self.depths[m] = d
            w_t = pl.ctx.shape[-1]
            self.deep_text[m] = nn.Parameter(torch.randn(d - 1, pl.n_ctx, w_t) * 0.02)  # layers 1..d-1
            links = nn.ModuleList(nn.Linear(w_t, tower.blocks[i].width) for i in range(d))
            if m == "a":
                for lin in links:
                    nn.init.zeros_(lin.bias)
            self.couplings[m] = links
            self.register_buffer(f"scale_{m}", tower.logit_scale.detach().clone(), persistent=False)

    @property
    def n_ctx(self) -> int:
        return self.prompt_learners[self.modalities[0]].n_ctx

    # ----- prompts ---------------------------------------------------------------------------
    def text_prompts(self, m: str) -> list[torch.Tensor]:
        """Text prompts per deep layer: [ctx (n_ctx, W_t)] + deep (n_ctx, W_t) for layers 1..d-1."""
        return [self.prompt_learners[m].ctx] + list(self.deep_text[m].unbind(0))

    def media_prompts(self, m: str) -> list[torch.Tensor]:
        """Coupled prompts per deep layer i: (n_ctx, C_i) = Linear_i(text prompts of layer i)."""
        return [lin(p) for lin, p in zip(self.couplings[m], self.text_prompts(m))]

    def text_hook(self, m: str) -> TowerHook:
        """Replace the context positions by layer i's deep text prompts before text block i."""
        deep = self.text_prompts(m)
        n = self.prompt_learners[m].n_ctx

        def hook(i: int, point: str, x: torch.Tensor) -> torch.Tensor:
            if point != "pre" or i == 0 or i >= len(deep):
                return x
            p = deep[i].to(x.dtype).expand(x.shape[0], -1, -1)  # (K, n_ctx, W_t)
            return torch.cat([x[:, :1], p, x[:, 1 + n:]], dim=1)
        return pre_only(hook)

    def tower_hook(self, m: str) -> TowerHook:
        """Vision: append (block 0) / replace (deep blocks) the last n_ctx tokens. Audio: add offsets."""
        prompts = self.media_prompts(m)
        n = self.prompt_learners[m].n_ctx

        def vision(i: int, point: str, x: torch.Tensor) -> torch.Tensor:
            if point != "pre" or i >= len(prompts):
                return x
            p = prompts[i].to(x.dtype).expand(x.shape[0], -1, -1)  # (N, n_ctx, C_v)
            return torch.cat([x if i == 0 else x[:, :-n], p], dim=1)

        def audio(i: int, point: str, x: torch.Tensor) -> torch.Tensor:
            if point != "pre" or i >= len(prompts):
                return x
            return x + prompts[i].mean(0).to(x.dtype)  # (N, H*W, C_i) + (C_i,)
        return pre_only(vision) if m == "v" else pre_only(audio)

    # ----- encoding --------------------------------------------------------------------------
    def encode_media(self, x: torch.Tensor, m: str, hook: TowerHook | None = None) -> torch.Tensor:
        """(N, ...) frames or waveforms -> (N, D) prompted embeddings (prompt tokens removed)."""
        tower = self.encoders.tower(m)
        if m == "v" and tower.pooled_token is not None:  # the class token only: prompts never reach the output
            return tower.encode(x, hook or self.tower_hook(m))
        tokens = run_blocks(tower.blocks, tower.embed(x), hook or self.tower_hook(m))
        if m == "v":
            tokens = tokens[:, : -self.prompt_learners[m].n_ctx]  # (N, 1+G*G, C): CLS + patches
        return tower.project(tokens)

    def text_features(self, m: str, hook: TowerHook | None = None) -> torch.Tensor:
        """(K, D) unnormalised class features through the deep-prompted text tower."""
        return self.prompt_learners[m](hook or self.text_hook(m))

    def segment_logits(self, batch):
        logits = []
        for m in self.modalities:
            x = batch["frames"] if m == "v" else batch["audio"]
            b, t = x.shape[:2]
            feats = self.encode_media(x.flatten(0, 1), m).view(b, t, -1).float()
            text = self.text_features(m).float()
            logits.append(getattr(self, f"scale_{m}") * F.normalize(feats, dim=-1)
                          @ F.normalize(text, dim=-1).T)
        return torch.stack(logits).mean(0)  # (B, T, K)
