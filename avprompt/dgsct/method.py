"""DG-SCT: Dual-Guided Spatial-Channel-Temporal attention (Duan et al., NeurIPS 2023).

Frozen: the CLIP image tower, the CLAP (HTS-AT) audio tower and both text towers. Trains: the
A2V / V2A modules (``modules.py``) injected into every paired layer of the two encoders, four
2-layer MLP heads E_v, E_a, T_v, T_a to a common dimension, two temperatures, and CoOp-style
context tokens on the CLIP text side. Loss and fusion: ``loss.py``.

Injection (eq. 1-2) goes through ``run_paired`` (avprompt/encoders/hooks.py) only. Pairing rule
(``pair_blocks``): with towers of depths n_s <= n_l, block s of the shallower tower pairs with block
ceil((s + 1) n_l / n_s) - 1 of the deeper one, so both tokens are equally far through their towers
(equal depths pair k with k, as the reference's ViT-B/32 with a 12-block HTS-AT). Each pair has two
injection points, each with its own A2V and V2A modules:

    "attn": v_y = v + MHA(v) + Omega_a2v(a, v)          (Omega reads the block's input tokens)
    "mlp":  v'  = v_y + MLP(v_y) + Omega_a2v(a_y, v_y)  (Omega reads the pre-MLP tokens)

and the same for audio. Because ``run_paired`` hands the hook the tokens after each half, the
paired blocks are wrapped in ``_Recording`` runners that remember the inputs of their halves;
the same wrapper applies activation checkpointing to the frozen halves (``checkpoint_frozen``).
``placement="block"`` (reference code, ``run_paired(split=False)``) adds both modules' outputs
after the whole block. Token counts and widths per pair come from one dummy pass at init (Swin
stages change both).

Video-level tasks average each branch's segment logits over the T segments (the reference's
score averaging), then weigh the branches per video; segment tasks treat each segment as a
sample with labels 0..K (K = background).

``preset="reference"`` (or ``reference_config()``) switches every choice where the reference code
departs from the paper: linear temporal gate, the reference combination with a bottleneck output
and latent tokens, ReLU channel projections, whole-block placement, CLIP-Adapter (ratio 0.2) on
the CLIP branch and sum fusion. Fields left at None follow the preset; ``effective_config()``
records the resolved values.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from avprompt.dgsct.loss import dgsct_loss, fuse
from avprompt.dgsct.modules import DGSCTPair, ModuleOptions
from avprompt.encoders.blocks import BlockRunner
from avprompt.encoders.hooks import pair_blocks, run_blocks, run_paired
from avprompt.method import Method, MethodConfig
from avprompt.prompts import class_text_features, resolve_templates
from avprompt.registry import register_method

PRESETS = {  # choices that differ between the paper and the reference code
    "paper": dict(temporal="rnn", fusion="paper", placement="split", combine="paper",
                  guide_relu=False, latent_tokens=0, clip_adapter=False),
    "reference": dict(temporal="linear", fusion="sum", placement="block", combine="reference",
                      guide_relu=True, latent_tokens=2, clip_adapter=True),
}


@dataclass
class DGSCTConfig(MethodConfig):
    modality: str = "av"
    preset: str = "paper"  # "paper" | "reference"
    alpha: float = 0.2
    beta: float = 0.05
    gamma: float | None = None  # None: 0.01 on segment tasks (AVE), 0.05 on video tasks (app. A)
    use_channel: bool = True  # ablations: C, S, T on/off; A2V / V2A on/off
    use_spatial: bool = True
    use_temporal: bool = True
    a2v: bool = True
    v2a: bool = True
    hidden: int = 256  # d of eq. 4
    temporal: str | None = None  # "rnn" | "linear"
    fusion: str | None = None  # "paper" (w1, w2) | "sum" (2 y_v + 2 y_a)
    placement: str | None = None  # "split" (eq. 1-2) | "block" (after the whole block)
    clip_adapter: bool | None = None
    head_dim: int = 0  # common dim D of E_v, E_a, T_v, T_a; 0 = the CLIP embedding dim
    clip_prompt: str = "coop"  # "coop" (learnable context) | "template"
    n_ctx: int = 4
    clip_templates: str = "clip"
    clap_prompt: str = "template"  # "template" | "coop" (needs a CLIP-style CLAP text tower)
    clap_templates: str = "dgsct-clap"
    negatives: str = "batch"  # contrastive image->text negatives: "batch" | "all" classes
    cache_text: bool = True  # frozen template features computed once (False: every step)
    checkpoint_frozen: bool = False  # activation checkpointing of the frozen blocks
    # optimisation (paper app. A, reference training script)
    optimizer: str = "adam"
    lr: float = 3e-4
    weight_decay: float = 0.0
    schedule: str = "multistep"
    milestones: tuple[int, ...] = (10, 20, 30)
    warmup_epochs: int = 0
    epochs: int = 50
    batch_size: int = 2
    grad_clip: float = 0.5


def reference_config(**overrides) -> DGSCTConfig:
    """The reference code's choices (see ``PRESETS``), with optional field overrides."""
    return replace(DGSCTConfig(preset="reference"), **overrides)


def resolve(cfg: DGSCTConfig, level: str) -> dict:
    """Concrete choices: preset defaults, then every field the user set explicitly."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset={cfg.preset!r}: use {'|'.join(PRESETS)}")
    out = dict(PRESETS[cfg.preset])
    for key in ("temporal", "fusion", "placement", "clip_adapter"):
        if getattr(cfg, key) is not None:
            out[key] = getattr(cfg, key)
    if out["placement"] not in ("split", "block"):
        raise ValueError(f"placement={out['placement']!r}: use split|block")
    out["gamma"] = cfg.gamma if cfg.gamma is not None else (0.01 if level == "segment" else 0.05)
    return out


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


class _ClipAdapter(nn.Module):
    """CLIP-Adapter (reference CLIP branch): f' = r A(f) + (1 - r) f, A = c -> c/4 -> c."""

    def __init__(self, c: int, ratio: float = 0.2):
        super().__init__()
        self.ratio = ratio
        self.fc = nn.Sequential(nn.Linear(c, c // 4, bias=False), nn.ReLU(),
                                nn.Linear(c // 4, c, bias=False), nn.ReLU())

    def forward(self, f):
        return self.ratio * self.fc(f) + (1 - self.ratio) * f


class _Recording(BlockRunner):
    """A frozen block runner that remembers the inputs of its halves (optionally checkpointed)."""

    def __init__(self, inner: BlockRunner, ckpt: bool):
        super().__init__(inner.block, inner.width, inner.grid)
        self.inner, self.ckpt = inner, ckpt
        self.attn_in = self.mlp_in = None

    def _run(self, f, x):
        if self.ckpt and torch.is_grad_enabled():
            return checkpoint(f, x, use_reentrant=False)
        return f(x)

    def attn(self, x):
        self.attn_in = x
        return self._run(self.inner.attn, x)

    def mlp(self, x):
        self.mlp_in = x
        return self._run(self.inner.mlp, x)

    def after(self, x):
        return self.inner.after(x)


@torch.no_grad()
def _token_shapes(tower, x: torch.Tensor) -> list[tuple[int, int]]:
    """(L, C) of the tokens each block reads, from one dummy pass (Swin stages change both)."""
    shapes = []

    def hook(i, point, t):
        if point == "pre":
            shapes.append(tuple(t.shape[1:]))
        return t
    run_blocks(tower.blocks, tower.embed(x), hook)
    return shapes


@register_method("dg-sct")
class DGSCT(Method):
    description = ("DG-SCT: audio and vision guide each other's frozen encoder layers "
                   "(spatial-channel-temporal attention), contrastive CLIP + CLAP text heads")
    config_class = DGSCTConfig
    supported_modalities = ("av",)
    kind = "train"
    runs_on = "network"  # it changes the encoders' internal tokens

    def __init__(self, encoders, task, config: DGSCTConfig):
        super().__init__(encoders, task, config)
        self.choices = c = resolve(config, task.level)
        vt, at = encoders.tower("v"), encoders.tower("a")
        self.pairs = pair_blocks(len(vt.blocks), len(at.blocks))
        s = vt.image_size
        shapes_v = _token_shapes(vt, torch.zeros(1, 3, s, s))
        shapes_a = _token_shapes(at, torch.zeros(1, at.sample_rate))
        opts = ModuleOptions(alpha=config.alpha, beta=config.beta, gamma=c["gamma"],
                             channel=config.use_channel, spatial=config.use_spatial,
                             temporal=config.use_temporal, temporal_kind=c["temporal"],
                             hidden=config.hidden, combine=c["combine"], guide_relu=c["guide_relu"],
                             latent_tokens=c["latent_tokens"])
        if not (config.a2v or config.v2a):
            raise ValueError("dg-sct: a2v=false and v2a=false leaves nothing to inject; keep one on")
        self.injections = nn.ModuleDict({
            f"{k}_{p}": DGSCTPair(shapes_v[i], shapes_a[j], opts, config.a2v, config.v2a)
            for k, (i, j) in enumerate(self.pairs) for p in ("attn", "mlp")})

        d = config.head_dim or vt.embed_dim
        self.head_v, self.head_a = _mlp(vt.embed_dim, d), _mlp(at.embed_dim, d)
        self.head_tv, self.head_ta = _mlp(vt.text.embed_dim, d), _mlp(at.text.embed_dim, d)
        self.log_scale_v = nn.Parameter(vt.logit_scale.detach().float().clamp(max=100).log().clone())
        self.log_scale_a = nn.Parameter(at.logit_scale.detach().float().clamp(max=100).log().clone())
        if c["clip_adapter"]:
            self.adapter_v = _ClipAdapter(vt.embed_dim)
            self.adapter_tv = _ClipAdapter(vt.text.embed_dim)
        self._init_text("v", vt.text, config.clip_prompt, config.clip_templates)
        self._init_text("a", at.text, config.clap_prompt, config.clap_templates)
        self._last = None  # last forward's per-branch logits, read by ``loss``

    def effective_config(self) -> dict:
        """The config with the preset resolved: no None left for temporal, fusion, placement,
        clip_adapter or gamma; the preset-only choices (combine, guide_relu, latent_tokens) and the
        head width actually built (head_dim 0 = CLIP embedding dim) are added."""
        out = super().effective_config()
        out.update(self.choices)
        out["head_dim"] = self.head_v[-1].out_features
        # n_ctx applies to the learned-context ("coop") branches only: report what they built
        built = {m: getattr(self, f"ctx_{m}").shape[0] for m in ("v", "a") if hasattr(self, f"ctx_{m}")}
        if built:
            out["n_ctx"] = next(iter(built.values())) if len(set(built.values())) == 1 else built
        return out

    # ----- class prompts -----------------------------------------------------------------------
    def _init_text(self, m: str, text, kind: str, templates: str) -> None:
        names = self.task.prompt_names
        if kind == "template":
            self._templates = getattr(self, "_templates", {})
            self._templates[m] = resolve_templates(templates)
            if self.config.cache_text:  # frozen and independent of training: once per class list
                self.register_buffer(f"text_{m}", class_text_features(text, names, self._templates[m]),
                                     persistent=False)
            return
        if kind != "coop":
            raise ValueError(f"dg-sct: prompt kind {kind!r}: use coop|template")
        if not text.supports_prompt_learning:
            raise ValueError("dg-sct: learnable context needs a CLIP-style text tower; this CLAP uses "
                             "RoBERTa: set clap_prompt=template")
        n = self.config.n_ctx
        longest = int((text.tokenize(names).argmax(-1) - 1).max())  # name tokens between SOS and EOT
        room = text.context_length - longest - 3  # SOS, ".", EOT
        if n > room:  # the tokenizer would cut the class name silently: shrink, warn and record
            msg = (f"dg-sct ({m}): n_ctx={n} does not fit the text context length {text.context_length} "
                   f"next to the longest class name ({longest} tokens)")
            if room < 1:
                raise ValueError(msg + "; shorten the class names or set clip_prompt=template")
            warnings.warn(msg + f"; using n_ctx={room}", stacklevel=3)
            self.record_change("n_ctx", n, room, f"prompt + longest class name ({longest} tokens) exceed "
                               f"the text tower's {text.context_length}-token context", branch=m)
            n = room
        ids = text.tokenize([" ".join(["X"] * n) + f" {name}." for name in names])  # (K, L)
        with torch.no_grad():
            emb = text.token_embeds(ids)  # (K, L, W): [SOS] X..X name . [EOT] pad
        self.register_buffer(f"ids_{m}", ids, persistent=False)
        self.register_buffer(f"emb_{m}", emb, persistent=False)
        setattr(self, f"ctx_{m}", nn.Parameter(torch.randn(n, text.width) * 0.02))  # CoOp init

    def text_features(self, m: str) -> torch.Tensor:
        """(K, D_text) class features of branch m before its head."""
        text = self.encoders.tower(m).text
        if hasattr(self, f"ctx_{m}"):
            ids, emb, ctx = getattr(self, f"ids_{m}"), getattr(self, f"emb_{m}"), getattr(self, f"ctx_{m}")
            n = ctx.shape[0]
            x = torch.cat([emb[:, :1], ctx.expand(len(ids), -1, -1).to(emb.dtype), emb[:, 1 + n:]], 1)
            return text.encode_embeds(x, ids)
        if self.config.cache_text:
            return getattr(self, f"text_{m}")
        with torch.no_grad():
            return class_text_features(text, self.task.prompt_names, self._templates[m])

    # ----- encoders with injected modules --------------------------------------------------------
    def embed(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, T, 3, S, S), audio (B, T, S_a) -> tower embeddings f_v (B, T, D_v), f_a (B, T, D_a)."""
        vt, at = self.encoders.vision, self.encoders.audio
        frames, audio = batch["frames"], batch["audio"]
        B, T = frames.shape[:2]
        ck = self.config.checkpoint_frozen
        v_blocks = [_Recording(b, ck) for b in vt.blocks]
        a_blocks = [_Recording(b, ck) for b in at.blocks]
        split = self.choices["placement"] == "split"

        def hook(k, point, xv, xa):
            bv, ba = v_blocks[self.pairs[k][0]], a_blocks[self.pairs[k][1]]
            if point in ("attn", "mlp"):  # eq. 1 reads the block input, eq. 2 the pre-MLP tokens
                src_v, src_a = (bv.attn_in, ba.attn_in) if point == "attn" else (bv.mlp_in, ba.mlp_in)
                return self._inject(self.injections[f"{k}_{point}"], xv, xa, src_v, src_a, T)
            xv, xa = self._inject(self.injections[f"{k}_attn"], xv, xa, bv.attn_in, ba.attn_in, T)
            return self._inject(self.injections[f"{k}_mlp"], xv, xa, bv.mlp_in, ba.mlp_in, T)

        xv, xa = run_paired(v_blocks, vt.embed(frames.flatten(0, 1)), a_blocks,
                            at.embed(audio.flatten(0, 1)), hook, pairs=self.pairs, split=split)
        return vt.project(xv).view(B, T, -1), at.project(xa).view(B, T, -1)

    @staticmethod
    def _inject(pair: DGSCTPair, xv, xa, src_v, src_a, T):
        dv, da = pair(src_v, src_a, T)
        return (xv if dv is None else xv + dv), (xa if da is None else xa + da)

    # ----- heads, logits, loss -------------------------------------------------------------------
    @property
    def templates(self) -> dict:
        """Prompt templates per branch, as recorded in results (learned context shown as [ctx])."""
        c = self.config
        out = {}
        for m, kind, names in (("v", c.clip_prompt, c.clip_templates), ("a", c.clap_prompt, c.clap_templates)):
            n = getattr(self, f"ctx_{m}").shape[0] if kind == "coop" else 0  # as built (maybe shrunk)
            out[m] = [f"[{n} learned context tokens] {{}}."] if kind == "coop" else resolve_templates(names)
        return out

    def branch_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-segment logits of the image-text and audio-text branches, each (B, T, K)."""
        f_v, f_a = self.embed(batch)
        t_v, t_a = self.text_features("v"), self.text_features("a")
        if self.choices["clip_adapter"]:
            f_v, t_v = self.adapter_v(f_v), self.adapter_tv(t_v)
        e_v, e_a = F.normalize(self.head_v(f_v), dim=-1), F.normalize(self.head_a(f_a), dim=-1)
        t_v, t_a = F.normalize(self.head_tv(t_v), dim=-1), F.normalize(self.head_ta(t_a), dim=-1)
        scale_v = self.log_scale_v.clamp(max=math.log(100)).exp()
        scale_a = self.log_scale_a.clamp(max=math.log(100)).exp()
        return scale_v * e_v @ t_v.T, scale_a * e_a @ t_a.T

    def segment_logits(self, batch: dict) -> torch.Tensor:
        return fuse(*self.branch_logits(batch), self.choices["fusion"])

    def forward(self, batch: dict) -> torch.Tensor:
        """(B, T, K) on segment tasks; (B, K) on video tasks (branch logits averaged over T)."""
        l_v, l_a = self.branch_logits(batch)
        if self.task.level == "video":
            l_v, l_a = l_v.mean(1), l_a.mean(1)
        self._last = (l_v, l_a)
        return fuse(l_v, l_a, self.choices["fusion"])

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Eq. 11 on the branch logits of the last ``forward`` (the call that produced ``logits``)."""
        if self._last is None or self._last[0].shape != logits.shape:
            raise ValueError("dg-sct: loss() needs the branch logits of the forward that produced "
                             "these logits; call method(batch) first")
        l_v, l_a = self._last
        if self.task.level == "segment":
            l_v, l_a, labels = l_v.flatten(0, 1), l_a.flatten(0, 1), batch["segment_labels"].flatten()
        else:
            labels = batch["label"]
        self._last = None
        return dgsct_loss(l_v.float(), l_a.float(), labels, self.choices["fusion"], self.config.negatives)
