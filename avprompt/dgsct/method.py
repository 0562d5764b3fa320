"""DG-SCT: Dual-Guided Spatial-Channel-Temporal attention (Duan et al., NeurIPS 2023).

Frozen: the CLIP image tower, the CLAP (HTS-AT) audio tower and both text towers. Trains: the
A2V / V2A modules (``modules.py``) injected into every paired layer of the two encoders, the heads
E_v, E_a, T_v, T_a, two temperatures and CoOp-style context tokens on the CLIP text side. Loss and
fusion: ``loss.py``.

Injection (eq. 1-2) goes through ``run_paired`` (avprompt/encoders/hooks.py) only. Pairing rule
(``pair_blocks``): with towers of depths n_s <= n_l, block s of the shallower tower pairs with block
ceil((s + 1) n_l / n_s) - 1 of the deeper one (equal depths pair k with k, as the reference's
ViT-B/32 with a 12-block HTS-AT). Each pair has two injection points, each with its own A2V and
V2A modules. ``placement="split"`` (paper):

    "attn": v_y = v + MHA(v) + Omega_a2v(a, v)          (Omega reads the block's input tokens)
    "mlp":  v'  = v_y + MLP(v_y) + Omega_a2v(a_y, v_y)  (Omega reads the pre-MLP tokens)

and the same for audio. ``placement="reference"`` (released code, ``run_paired(mode="vision-split")``):
the audio block runs whole; p1 reads the vision tokens after attention and the audio block's output,
and is added before the vision MLP (which therefore sees it); p2 reads the vision MLP's input and the
audio tokens (p1 added) and is added after. The paired blocks are wrapped in ``_Recording`` runners
that remember the inputs of their halves and apply activation checkpointing to the frozen halves
(``checkpoint_frozen``). Token counts and widths per pair come from one dummy pass at init. The
injection building and the paired pass live in ``injection.py``, shared with the dg-sct encoder mode.

**Step 0 is zero-shot (paper preset).** The output gates start at 0 (frozen encoders), the heads are
residual, E(f) = f + MLP(f) with the MLP's last layer at 0 (identity), the temperatures start at the
towers' own logit scales and the CLIP context starts from the words "a photo of a" (``ctx_init``):
at step 0 the image-text logits equal zero-shot CLIP's on the template "a photo of a {}." and the
audio-text logits zero-shot CLAP's on "The sounds of {}" (``tests/test_dgsct_fidelity.py``).
``heads="mlp"`` builds the paper's plain 2-layer MLP heads to ``head_dim`` instead (random at step 0).

**Temporal gate.** The paper adds the RNN temporal-gated attention "in the final layer":
``temporal_layers="last"`` builds it in the last paired layer only (both injection points); ``"all"``
in every one (the released code has a Linear gate in every adapter).

**Parameters** (``avprompt methods --params dg-sct --backbones clip=ViT-B-32,clap=HTSAT-tiny``
prints the split by component and the released code's count on the same backbones). The paper's
Table 6 (26.3M + 17.3M) is for supervised AVE with Swin-V2-L + HTS-AT; it is not the few-shot setting.

Video-level tasks average each branch's segment logits over the T segments (the reference's score
averaging), then fuse; segment tasks treat each segment as a sample with labels 0..K (K =
background).

Presets (``PRESETS``; fields left at None follow the preset, ``effective_config()`` records the
resolved values):

* ``paper``: eq. 3-7, GRU temporal gate in the last layer, residual heads, learned temperatures,
  contrastive loss with per-sample branch weights (eq. 9-11).
* ``reference``: the released few-shot code -- no E/T heads (CLIP-Adapter ratio 0.2 on the visual and
  text features, frozen CLAP features), CLAP's logit scale used as stored (no exp) and CLIP's as
  exp(stored), both fixed; the code's placement, spatial step (token-mean guide, ReLU, C/2), linear
  gate on the projected guide in every adapter, internal latent tokens, bottleneck output; score
  2 l_v + 2 l_a; loss 500 (epochs 1-10) / 5 x CE + 2 L_ai + 1.5 L_ia (``loss.reference_loss``);
  Adam 3e-4, clipping 0.5.
* ``reference-pretrain``: the pre-training / zero-shot code -- as ``reference`` with alpha 0.3,
  beta 0.01, gamma 0.05 and per-class fusion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.dgsct.injection import Recording as _Recording  # noqa: F401  (shared with the encoder modes)
from avprompt.dgsct.injection import build_injections, embed_paired
from avprompt.dgsct.injection import token_shapes as _token_shapes  # noqa: F401
from avprompt.dgsct.loss import FUSIONS, audio_visual_logits, dgsct_loss, fuse, reference_loss
from avprompt.method import Method, MethodConfig
from avprompt.prompt_learner import PromptLearner, check_prompt_tower
from avprompt.prompts import class_text_features, resolve_templates
from avprompt.registry import register_method

_PAPER = dict(temporal="rnn", temporal_layers="last", fusion="paper", placement="split", heads="residual",
              clip_adapter=False, loss="contrastive", scales="learned", alpha=0.2, beta=0.05, gamma=None,
              combine="paper", spatial="paper", guide_relu=False, latent_tokens=0)
_REFERENCE = dict(temporal="linear", temporal_layers="all", fusion="sum", placement="reference", heads="none",
                  clip_adapter=True, loss="reference", scales="stored", alpha=0.2, beta=0.05, gamma=None,
                  combine="reference", spatial="reference", guide_relu=True, latent_tokens=2)
#: choices that differ between the paper and the released code; gamma None = by task level
PRESETS = {"paper": _PAPER, "reference": _REFERENCE,
           "reference-pretrain": {**_REFERENCE, "alpha": 0.3, "beta": 0.01, "gamma": 0.05, "fusion": "per-class"}}
#: config fields that override the preset when set (the rest are preset-only)
OVERRIDABLE = ("temporal", "temporal_layers", "fusion", "placement", "heads", "clip_adapter", "loss",
               "scales", "alpha", "beta", "gamma")
CHOICES = {"temporal": ("rnn", "linear"), "temporal_layers": ("last", "all"), "fusion": FUSIONS,
           "placement": ("split", "reference"), "heads": ("residual", "mlp", "none"),
           "loss": ("contrastive", "reference"), "scales": ("learned", "stored")}


@dataclass
class DGSCTConfig(MethodConfig):
    modality: str = "av"
    preset: str = "paper"  # "paper" | "reference" | "reference-pretrain"
    alpha: float | None = None  # None: the preset's (paper / few-shot code 0.2, pre-training 0.3)
    beta: float | None = None  # None: the preset's (0.05; pre-training 0.01)
    gamma: float | None = None  # None: 0.01 on segment tasks (AVE), 0.05 on video tasks (app. A)
    use_channel: bool = True  # ablations: C, S, T on/off; A2V / V2A on/off
    use_spatial: bool = True
    use_temporal: bool = True
    a2v: bool = True
    v2a: bool = True
    hidden: int = 256  # d of eq. 4
    temporal: str | None = None  # "rnn" | "linear"
    temporal_layers: str | None = None  # "last" (paper: the final layer) | "all"
    fusion: str | None = None  # "paper" (w1, w2) | "sum" (2 y_v + 2 y_a) | "per-class"
    placement: str | None = None  # "split" (eq. 1-2) | "reference" (the released code's order)
    heads: str | None = None  # "residual" (identity at step 0) | "mlp" (random, to head_dim) | "none"
    clip_adapter: bool | None = None
    loss: str | None = None  # "contrastive" (eq. 9-11) | "reference" (CE 500/5 + audio-visual terms)
    scales: str | None = None  # "learned" (temperatures) | "stored" (the code: CLAP's without exp)
    head_dim: int = 0  # common dim D of heads="mlp"; 0 = the CLIP embedding dim
    clip_prompt: str = "coop"  # "coop" (learnable context) | "template"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"  # words the CLIP context starts from; "" = N(0, 0.02)
    clip_templates: str = "clip"
    clap_prompt: str = "template"  # "template" | "coop" (needs a CLIP-style CLAP text tower)
    clap_templates: str = "dgsct-clap"
    negatives: str = "batch"  # contrastive image->text negatives: "batch" | "all" classes
    cache_text: bool = True  # frozen template features computed once (False: every step)
    checkpoint_frozen: bool = False  # activation checkpointing of the frozen blocks
    # activation checkpointing of each A2V/V2A pair, memory for time (preset=reference: its
    # BatchNorm running statistics then see each training batch twice, in the recomputation)
    checkpoint_modules: bool = False
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
    """The released few-shot code's choices (see ``PRESETS``), with optional field overrides."""
    return replace(DGSCTConfig(preset="reference"), **overrides)


def resolve(cfg: DGSCTConfig, level: str) -> dict:
    """Concrete choices: preset defaults, then every field the user set explicitly."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"dg-sct: preset={cfg.preset!r}: use {'|'.join(PRESETS)}")
    out = dict(PRESETS[cfg.preset])
    for key in OVERRIDABLE:
        if getattr(cfg, key) is not None:
            out[key] = getattr(cfg, key)
    for key, allowed in CHOICES.items():
        if out[key] not in allowed:
            raise ValueError(f"dg-sct: {key}={out[key]!r}: use {'|'.join(allowed)}")
    if out["gamma"] is None:
        out["gamma"] = 0.01 if level == "segment" else 0.05
    return out


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


class _ResidualHead(nn.Module):
    """E(f) = f + MLP(f), the MLP's last layer at zero: the identity at step 0, so the heads keep
    the frozen towers' image-text / audio-text alignment until training moves them. (N.., D) -> (N.., D)."""

    def __init__(self, d: int):
        super().__init__()
        self.mlp = _mlp(d, d)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, f):
        return f + self.mlp(f)


def _head(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "residual":
        return _ResidualHead(d_in)
    return _mlp(d_in, d_out) if kind == "mlp" else nn.Identity()


class _ClipAdapter(nn.Module):
    """CLIP-Adapter (reference CLIP branch): f' = r A(f) + (1 - r) f, A = c -> c/4 -> c."""

    def __init__(self, c: int, ratio: float = 0.2):
        super().__init__()
        self.ratio = ratio
        self.fc = nn.Sequential(nn.Linear(c, c // 4, bias=False), nn.ReLU(),
                                nn.Linear(c // 4, c, bias=False), nn.ReLU())

    def forward(self, f):
        return self.ratio * self.fc(f) + (1 - self.ratio) * f


@register_method("dg-sct")
class DGSCT(Method):
    description = ("DG-SCT: audio and vision guide each other's frozen encoder layers "
                   "(spatial-channel-temporal attention), contrastive CLIP + CLAP text heads")
    config_class = DGSCTConfig
    supported_modalities = ("av",)
    kind = "train"
    runs_on = "network"  # it changes the encoders' internal tokens
    audio_passes = ("segment", "clip")  # clip: per-span guidance (``DGSCTPair``)
    cost_seconds = (30.7, 0.13)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)
    carried_at_transfer = ("alpha", "beta", "gamma", "fusion")  # zero-shot evaluates as it pre-trained
    reference_overrides = {"preset": "reference"}  # the released code, for ``methods --params``

    def __init__(self, encoders, task, config: DGSCTConfig):
        super().__init__(encoders, task, config)
        self.choices = c = resolve(config, task.level)
        vt, at = encoders.tower("v"), encoders.tower("a")
        # the A2V / V2A modules of every paired layer (shared with the dg-sct encoder mode)
        self.pairs, self.injections = build_injections(encoders, config, c)

        if c["heads"] != "mlp" and config.head_dim:
            raise ValueError(f"dg-sct: head_dim={config.head_dim} applies to heads=mlp; heads={c['heads']} "
                             "keeps each branch's embedding width")
        d = config.head_dim or vt.embed_dim
        self.head_v, self.head_a = _head(c["heads"], vt.embed_dim, d), _head(c["heads"], at.embed_dim, d)
        self.head_tv, self.head_ta = _head(c["heads"], vt.text.embed_dim, d), _head(c["heads"], at.text.embed_dim, d)
        if c["scales"] == "learned":  # temperatures tau_v, tau_a, starting at the towers' own scales
            self.log_scale_v = nn.Parameter(vt.logit_scale.detach().float().clamp(max=100).log().clone())
            self.log_scale_a = nn.Parameter(at.logit_scale.detach().float().clamp(max=100).log().clone())
        else:  # the code: exp(CLIP's stored scale); CLAP's stored scale as it is (no exp), both frozen
            self.register_buffer("scale_v", vt.logit_scale.detach().float().clone(), persistent=False)
            self.register_buffer("scale_a", at.logit_scale.detach().float().log().clone(), persistent=False)
        if c["clip_adapter"]:
            self.adapter_v = _ClipAdapter(vt.embed_dim)
            self.adapter_tv = _ClipAdapter(vt.text.embed_dim)
        if c["loss"] == "reference":  # the code's fc_a1 (512 -> 512) before the audio-visual terms
            self.av_audio = nn.Linear(at.embed_dim, vt.embed_dim)
            self.register_buffer("av_scale", vt.logit_scale.detach().float().clone(), persistent=False)
            if at.embed_dim != vt.embed_dim:
                self.record_change("av_audio", "Linear(512 -> 512)", f"Linear({at.embed_dim} -> {vt.embed_dim})",
                                   "the audio-visual terms compare CLAP audio with CLIP image embeddings")
        self._templates = {}
        self._init_text("v", vt.text, config.clip_prompt, config.clip_templates, config.ctx_init)
        self._init_text("a", at.text, config.clap_prompt, config.clap_templates, "")
        self._epoch = 0
        self._last = None  # last forward's per-branch logits and embeddings, read by ``loss``

    def effective_config(self) -> dict:
        """The config with the preset resolved: no None left in the preset fields; the preset-only
        choices (combine, spatial, guide_relu, latent_tokens), the head width actually built and
        the reference loss's weights are added."""
        out = super().effective_config()
        out.update(self.choices)
        if self.choices["heads"] == "mlp":
            out["head_dim"] = self.head_v[-1].out_features
        built = {m: getattr(self, f"prompt_{m}").n_ctx for m in ("v", "a") if hasattr(self, f"prompt_{m}")}
        if built:  # n_ctx applies to the learned-context ("coop") branches only: report what they built
            out["n_ctx"] = next(iter(built.values())) if len(set(built.values())) == 1 else built
        if self.choices["loss"] == "reference":
            out["loss_weights"] = "CE x500 in epochs 1-10, x5 after; + 2 L_audio->image + 1.5 L_image->audio"
        return out

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    # ----- class prompts -----------------------------------------------------------------------
    def _init_text(self, m: str, text, kind: str, templates: str, init_words: str) -> None:
        names = self.task.prompt_names
        if kind == "template":
            self._templates[m] = resolve_templates(templates)
            if self.config.cache_text:  # frozen and independent of training: once per class list
                self.register_buffer(f"text_{m}", class_text_features(text, names, self._templates[m]),
                                     persistent=False)
            return
        if kind != "coop":
            raise ValueError(f"dg-sct: prompt kind {kind!r}: use coop|template")
        check_prompt_tower(text, self.key, m)
        pl = PromptLearner(text, names, self.config.n_ctx, init_words=init_words, where=f"dg-sct ({m})")
        if pl.shrink_reason:
            self.record_change("n_ctx", self.config.n_ctx, pl.n_ctx, pl.shrink_reason, branch=m)
        setattr(self, f"prompt_{m}", pl)

    def text_features(self, m: str) -> torch.Tensor:
        """(K, D_text) class features of branch m before its head."""
        if hasattr(self, f"prompt_{m}"):
            return getattr(self, f"prompt_{m}")()
        if self.config.cache_text:
            return getattr(self, f"text_{m}")
        with torch.no_grad():
            return class_text_features(self.encoders.tower(m).text, self.task.prompt_names, self._templates[m])

    # ----- encoders with injected modules --------------------------------------------------------
    def embed(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, T, 3, S, S), audio (B, T, S_a) -> tower embeddings f_v (B, T, D_v), f_a (B, T, D_a)."""
        return embed_paired(self.encoders, self.injections, self.pairs, batch,
                            self.choices["placement"], self.config.checkpoint_frozen,
                            checkpoint_modules=self.config.checkpoint_modules,
                            audio_pass=self.config.audio_pass)

    # ----- heads, logits, loss -------------------------------------------------------------------
    @property
    def templates(self) -> dict:
        """Prompt templates per branch, as recorded in results (learned context shown as [ctx])."""
        out = {}
        for m in ("v", "a"):
            pl = getattr(self, f"prompt_{m}", None)
            out[m] = [f"[{pl.n_ctx} learned context tokens] {{}}."] if pl is not None else self._templates[m]
        return out

    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.choices["scales"] == "learned":
            cap = math.log(100)
            return self.log_scale_v.clamp(max=cap).exp(), self.log_scale_a.clamp(max=cap).exp()
        return self.scale_v, self.scale_a

    def _logits(self, f_v, f_a) -> tuple[torch.Tensor, torch.Tensor]:
        """Tower embeddings (B, T, D) -> image-text and audio-text logits, each (B, T, K)."""
        t_v, t_a = self.text_features("v"), self.text_features("a")
        if self.choices["clip_adapter"]:
            f_v, t_v = self.adapter_v(f_v), self.adapter_tv(t_v)
        e_v, e_a = F.normalize(self.head_v(f_v), dim=-1), F.normalize(self.head_a(f_a), dim=-1)
        t_v, t_a = F.normalize(self.head_tv(t_v), dim=-1), F.normalize(self.head_ta(t_a), dim=-1)
        scale_v, scale_a = self.scales()
        return scale_v * e_v @ t_v.T, scale_a * e_a @ t_a.T

    def branch_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-segment logits of the image-text and audio-text branches, each (B, T, K)."""
        return self._logits(*self.embed(batch))

    def segment_logits(self, batch: dict) -> torch.Tensor:
        return fuse(*self.branch_logits(batch), self.choices["fusion"])

    def forward(self, batch: dict) -> torch.Tensor:
        """(B, T, K) on segment tasks; (B, K) on video tasks (branch logits averaged over T)."""
        f_v, f_a = self.embed(batch)
        l_v, l_a = self._logits(f_v, f_a)
        if self.task.level == "video":
            l_v, l_a = l_v.mean(1), l_a.mean(1)
        out = fuse(l_v, l_a, self.choices["fusion"])
        self._last = (out, l_v, l_a, f_v, f_a)
        return out

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Eq. 11 (paper) or the released code's loss, on what the last ``forward`` produced."""
        if self._last is None or self._last[0].shape != logits.shape:
            raise ValueError("dg-sct: loss() needs the branch logits of the forward that produced "
                             "these logits; call method(batch) first")
        _, l_v, l_a, f_v, f_a = self._last
        self._last = None
        if self.task.level == "segment":
            l_v, l_a, labels = l_v.flatten(0, 1), l_a.flatten(0, 1), batch["segment_labels"].flatten()
            logits = logits.flatten(0, 1)
        else:
            labels = batch["label"]
        if self.choices["loss"] == "reference":
            av = audio_visual_logits(f_v, self.av_audio(f_a), self.av_scale)
            return reference_loss(logits, labels, av, self._epoch)
        return dgsct_loss(l_v.float(), l_a.float(), labels, self.choices["fusion"], self.config.negatives)
