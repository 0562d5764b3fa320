"""DG-SCT's cross-modal modules: A2V (audio guides vision) and V2A (vision guides audio).

Paper sec. 3.2-3.3. One ``CrossModalAttention`` acts in one direction: a *guide* modality's tokens
steer the *target* modality's tokens through three attentions:

    prompt    g' = psi(g)                     (N, L_t, C_t)  token-axis 1x1 conv + channel Linear
    channel   M_c = sigmoid(Phi(mean_L(Th_g(mean_L g') * Th_x(x))))          (N, 1, C_t)   eq. 3
    spatial   M_s = sigmoid(Th_s(Th_gs(g') * Th_xs((M_c + 1) x)))            (N, L_t, 1)   eq. 4
    temporal  G   = sigmoid(Th_t(RNN over the T segments of the guide side)) (N, 1, 1)     eq. 5
    output    x_cst = (gamma G + 1) (alpha M_c + beta M_s + 1) x                            eq. 6-7

The module's output Omega is added to the target's residual stream (eq. 1-2). Adding x_cst itself
would double the frozen features, so Omega = g_out * x_cst with a learnable scalar g_out set to 0:
at step 0 the encoders are exactly the frozen ones (the reference zero-initialises its gates too).

Rows are segments: N = B * T, ordered batch-major, so ``view(B, T, ...)`` recovers the clips.
The temporal gate of A2V reads the V2A side's frequency-channel attentive audio (eq. 5 feeds
{a_t^cf} to G^v), so the two directions run in two phases inside ``DGSCTPair``.

``preset="reference"`` options reproduce the released code instead: ReLU on the channel
projections; spatial step ReLU(W_g mean_L g') * ReLU(W_x x_c) with hidden C/2 (the token-mean guide);
gate = per-segment Linear(C_t -> 1) on the *projected* guide; x (alpha M_c + beta M_s + gamma G + 1 -
alpha); 2 latent prompt tokens whose gated cross-attention update stays inside the adapter (it feeds
the multiplication, never the residual stream); and a gated bottleneck output (LayerNorm, grouped 1x1
conv C -> C/8, BatchNorm, ReLU, conv up, BatchNorm, LayerNorm).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass
class ModuleOptions:
    alpha: float = 0.2
    beta: float = 0.05
    gamma: float = 0.01
    channel: bool = True  # eq. 3 on/off (ablation "C")
    spatial: bool = True  # eq. 4 on/off (ablation "S")
    temporal: bool = True  # eq. 5 on/off (ablation "T")
    temporal_kind: str = "rnn"  # "rnn" (paper: GRU across segments) | "linear" (reference code)
    hidden: int = 256  # d of eq. 4 (and the RNN's hidden size)
    spatial_kind: str = "paper"  # "paper" (full projected guide, width d) | "reference" (token mean, ReLU, C/2)
    channel_reduction: int = 2  # bottleneck Phi: C -> C / r -> C (the reference uses C/2)
    combine: str = "paper"  # "paper" (eq. 6-7) | "reference" (one multiplier, bottleneck output)
    guide_relu: bool = False  # reference: ReLU on the channel projections
    latent_tokens: int = 0  # reference: 2 learnable tokens with a gated cross-attention


class PromptProjection(nn.Module):
    """psi: guide tokens (N, L_g, C_g) -> (N, L_t, C_t), the target's shape (paper sec. 3.2).

    psi(g) = channels(tokens(g)) = W_t g W_c^T + b_t (W_c 1)^T + 1 b_c^T, with ``tokens`` a 1x1
    Conv1d over the token axis (W_t (L_t, L_g), b_t) and ``channels`` a Linear (W_c (C_t, C_g), b_c).
    Both products are linear, so they run in the cheaper order (``channels_first``): V2A at
    HTS-AT's first stage maps 50 ViT tokens to 4,096 audio tokens and 768 channels to 96, so
    tokens-then-channels builds an (N, 4096, 768) intermediate (12 GFLOP and 250 MB kept for the
    backward pass at N = 20) that channels-then-tokens never forms (0.9 GFLOP). The parameters (and
    so checkpoints) are the same in either order; the results equal up to float rounding.
    """

    #: False: always tokens-then-channels through the Conv1d, as written (benchmarks' baseline)
    cheapest_order: ClassVar[bool] = True

    def __init__(self, n_in: int, c_in: int, n_out: int, c_out: int):
        super().__init__()
        self.tokens = nn.Conv1d(n_in, n_out, kernel_size=1)  # mixes along the token axis
        self.channels = nn.Linear(c_in, c_out)
        # multiply-adds per row: tokens first L_t L_g C_g + L_t C_g C_t; channels first L_g C_g C_t + L_t L_g C_t
        self.channels_first = n_in * c_in * c_out + n_out * n_in * c_out < n_out * n_in * c_in + n_out * c_in * c_out

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        if not self.cheapest_order:
            return self.channels(self.tokens(g))
        w_t, b_t = self.tokens.weight[:, :, 0], self.tokens.bias  # (L_t, L_g), (L_t,)
        if not self.channels_first:
            # the 1x1 conv as a matmul (the same product; mkldnn's conv backward is slower here)
            return self.channels(torch.matmul(w_t, g) + b_t[:, None])
        y = torch.matmul(w_t, g @ self.channels.weight.T)  # (N, L_t, C_t)
        return y + b_t[:, None] * self.channels.weight.sum(1) + self.channels.bias


class CrossModalAttention(nn.Module):
    """One direction (A2V or V2A) at one injection point of one paired layer.

    Eq. 3-4 run in the cheaper of two equal orders (``cheapest_order``; the parameters, and so
    checkpoints, are the same; results equal up to float rounding, ``tests/test_dgsct_fidelity.py``):

    * channel (paper, no ReLU): mean_L(Th_g(g_mean) * Th_x(x)) = Th_g(g_mean) * Th_x(mean_L x), since
      Th_x is affine: one (N, 1, C) product instead of an (N, L, C) Linear.
    * spatial (paper): Th_s(Th_gs(g) * Th_xs(x)) is a bilinear form of each token pair,
      g^T B x + g.u + x.v + c with B = W_gs^T diag(w_s) W_xs (C x C), so a token costs C^2 + 2C
      multiply-adds instead of 2 C d + 2 d and no (N, L, d) tensor is formed. Used where C < 2 d:
      the embedded towers (C 32-128 vs d = 256: 5-16x fewer) and HTS-AT's first stages at real size.
    """

    #: False: eq. 3-4 as written (an (N, L, d) product per direction; benchmarks' baseline)
    cheapest_order: ClassVar[bool] = True

    def __init__(self, n_guide: int, c_guide: int, n_target: int, c_target: int, opts: ModuleOptions):
        super().__init__()
        self.opts = opts
        c, d = c_target, opts.hidden
        self.prompt = PromptProjection(n_guide, c_guide, n_target, c)
        if opts.channel:
            self.ch_guide, self.ch_target = nn.Linear(c, c), nn.Linear(c, c)
            r = max(1, c // opts.channel_reduction)
            self.ch_bottleneck = nn.Sequential(nn.Linear(c, r), nn.ReLU(), nn.Linear(r, c))
        if opts.spatial:
            if opts.spatial_kind not in ("paper", "reference"):
                raise ValueError(f"spatial={opts.spatial_kind!r}: use paper|reference")
            d_s = d if opts.spatial_kind == "paper" else max(1, c // 2)
            self.sp_guide, self.sp_target = nn.Linear(c, d_s), nn.Linear(c, d_s)
            self.sp_out = nn.Linear(d_s, 1)
            self.spatial_bilinear = opts.spatial_kind == "paper" and c < 2 * d_s
        if opts.temporal:
            if opts.temporal_kind == "rnn":
                self.rnn = nn.GRU(c_guide, d, batch_first=True)
                self.t_out = nn.Linear(d, 1)
            elif opts.temporal_kind == "linear":  # reads the projected guide (target width)
                self.t_out = nn.Linear(c, 1)
            else:
                raise ValueError(f"temporal={opts.temporal_kind!r}: use rnn|linear")
        if opts.latent_tokens:
            self.latent = nn.Parameter(torch.randn(opts.latent_tokens, c) * 0.02)
            self.latent_gate = nn.Parameter(torch.zeros(()))
        if opts.combine == "reference":
            hid = max(2, c // 8 // 2 * 2)  # even, for the 2 groups
            self.out = nn.ModuleDict({
                "ln_in": nn.LayerNorm(c), "down": nn.Conv1d(c, hid, 1, groups=2, bias=False),
                "bn1": nn.BatchNorm1d(hid), "up": nn.Conv1d(hid, c, 1, groups=2, bias=False),
                "bn2": nn.BatchNorm1d(c), "ln_out": nn.LayerNorm(c)})
        elif opts.combine != "paper":
            raise ValueError(f"combine={opts.combine!r}: use paper|reference")
        self.gate = nn.Parameter(torch.zeros(()))  # Omega's output gate, 0 = frozen encoder at init

    def attend(self, guide: torch.Tensor, x: torch.Tensor):
        """Channel + spatial maps. guide (N, L_g, C_g), x (N, L, C) -> (x, m, g_mean).

        Returns the target x the adapter works on (reference: updated by the latent tokens, an
        internal value that never reaches the residual stream), m = alpha M_c + beta M_s,
        broadcastable to (N, L, C) (x_cs = (m + 1) x is eq. 6), and the token mean of the
        projected guide (N, C), which the reference's linear temporal gate reads.
        """
        o = self.opts
        g = self.prompt(guide)  # (N, L, C)
        g_mean = g.mean(1, keepdim=True)  # (N, 1, C)
        if o.latent_tokens:  # reference: tokens read the prompt, then x reads the tokens
            tok = self.latent.expand(x.shape[0], -1, -1)
            tok = tok + torch.softmax(tok @ g.transpose(1, 2), -1) @ g
            x = x + self.latent_gate * (torch.softmax(x @ tok.transpose(1, 2), -1) @ tok)
        act = torch.relu if o.guide_relu else (lambda t: t)
        m = x.new_zeros(())
        x_c = x
        if o.channel:
            if o.guide_relu or not self.cheapest_order:
                pooled = (act(self.ch_guide(g_mean)) * act(self.ch_target(x))).mean(1, keepdim=True)
            else:  # the token mean commutes with the affine Th_x (class docstring)
                pooled = self.ch_guide(g_mean) * self.ch_target(x.mean(1, keepdim=True))  # (N, 1, C)
            m_c = torch.sigmoid(self.ch_bottleneck(pooled))  # (N, 1, C)
            m = m + o.alpha * m_c
            x_c = (m_c + 1) * x
        if o.spatial:
            if o.spatial_kind == "paper":  # eq. 4: every target token meets its projected guide token
                s_logit = self.spatial_logit(g, x_c)
            else:  # reference: the token-mean guide, ReLU on both sides
                s_logit = self.sp_out(torch.relu(self.sp_guide(g_mean)) * torch.relu(self.sp_target(x_c)))
            m = m + o.beta * torch.sigmoid(s_logit)  # M_s: (N, L, 1)
        return x, m, g_mean[:, 0]

    def spatial_logit(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Th_s(Th_gs(g) * Th_xs(x)): g, x (N, L, C) -> (N, L, 1), in the cheaper order."""
        if not (self.spatial_bilinear and self.cheapest_order):
            return self.sp_out(self.sp_guide(g) * self.sp_target(x))
        w_g, b_g = self.sp_guide.weight, self.sp_guide.bias  # (d, C), (d,)
        w_x, b_x = self.sp_target.weight, self.sp_target.bias
        w_s, b_s = self.sp_out.weight[0], self.sp_out.bias  # (d,), (1,)
        bil = (w_g.T * w_s) @ w_x  # (C, C)
        u, v = w_g.T @ (w_s * b_x), w_x.T @ (w_s * b_g)  # (C,): the cross terms with the biases
        const = (w_s * b_g * b_x).sum() + b_s
        return ((g @ bil + v) * x).sum(-1, keepdim=True) + (g @ u).unsqueeze(-1) + const

    def temporal_gate(self, seq: torch.Tensor) -> torch.Tensor:
        """Guide-side features per segment (B, T, C_g) -> gate G (B*T, 1, 1)."""
        if self.opts.temporal_kind == "rnn":
            h, _ = self.rnn(seq)
            seq = h
        return torch.sigmoid(self.t_out(seq)).reshape(-1, 1, 1)

    def output(self, x: torch.Tensor, m: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
        """Omega (N, L, C): eq. 6-7 (paper) or the reference's multiplier + bottleneck, gated."""
        o = self.opts
        if o.combine == "paper":
            y = (m + 1) * x
            if gate is not None:
                y = (o.gamma * gate + 1) * y
            return self.gate * y
        mult = m + 1 - (o.alpha if o.channel else 0.0)
        if gate is not None:
            mult = mult + o.gamma * gate
        b = self.out
        y = b["ln_in"](x * mult).transpose(1, 2)  # (N, C, L) for the 1x1 convs
        y = b["bn2"](b["up"](torch.relu(b["bn1"](b["down"](y)))))
        return self.gate * b["ln_out"](y.transpose(1, 2))


class DGSCTPair(nn.Module):
    """A2V and V2A at one injection point: (v, a) -> (Omega_a2v, Omega_v2a), either may be None.

    v: (B*T, L_v, C_v) vision tokens; a: (B*T, L_a, C_a) audio tokens; T segments per clip.

    ``spans`` (audio_pass=clip): a is (B, L_a, C_a), one pass over each whole clip, and spans (T, L_a)
    says which segment's time span each audio token hears (``AudioTower.span_weights``, columns
    summing to 1). Then frame t is guided by the audio tokens of span t alone (the others zeroed
    before psi), and V2A is computed once per frame over the clip's tokens, each token keeping the
    update of its own span's frame (span-weighted sum): Omega_v2a (B, L_a, C_a).
    """

    def __init__(self, v_shape: tuple[int, int], a_shape: tuple[int, int], opts: ModuleOptions,
                 a2v: bool = True, v2a: bool = True):
        super().__init__()
        (lv, cv), (la, ca) = v_shape, a_shape
        self.opts = opts
        self.a2v = CrossModalAttention(la, ca, lv, cv, opts) if a2v else None
        self.v2a = CrossModalAttention(lv, cv, la, ca, opts) if v2a else None

    def forward(self, v: torch.Tensor, a: torch.Tensor, T: int, spans: torch.Tensor | None = None):
        a_guide = a
        if spans is not None:  # clip pass: one copy of the clip's tokens per segment row
            w = spans.to(a.dtype)  # (T, L_a)
            a = a.repeat_interleave(T, 0)  # (B*T, L_a, C_a), row b*T + t
            a_guide = a * w.repeat(a.shape[0] // T, 1).unsqueeze(-1)  # span t's tokens only
        v_in, a_in = v, a
        mv = ma = None
        if self.a2v is not None:
            v, mv, gm_v = self.a2v.attend(a_guide, v_in)
        if self.v2a is not None:
            a, ma, gm_a = self.v2a.attend(v_in, a_in)
        gv = ga = None
        if self.opts.temporal:
            if self.opts.temporal_kind == "rnn":
                # eq. 5: G^v from the frequency-channel attentive audio, G^a from the
                # spatial-channel attentive vision (plain tokens where that direction is off)
                a_cf = a if ma is None else (ma + 1) * a
                v_cs = v if mv is None else (mv + 1) * v
                if spans is None:
                    seq_for_v = a_cf.mean(1)
                else:  # the mean over span t's tokens
                    wn = w / w.sum(1, keepdim=True)
                    seq_for_v = torch.einsum("btlc,tl->btc", a_cf.view(-1, T, *a_cf.shape[1:]), wn).flatten(0, 1)
                seq_for_a = v_cs.mean(1)
            else:  # reference: each direction's projected guide, per segment (target width)
                seq_for_v = gm_v if self.a2v is not None else None
                seq_for_a = gm_a if self.v2a is not None else None
            if self.a2v is not None:
                gv = self.a2v.temporal_gate(seq_for_v.view(-1, T, seq_for_v.shape[-1]))
            if self.v2a is not None:
                ga = self.v2a.temporal_gate(seq_for_a.view(-1, T, seq_for_a.shape[-1]))
        # the latent-token update (reference) is internal: only Omega reaches the residual stream
        dv = self.a2v.output(v, mv, gv) if self.a2v is not None else None
        da = self.v2a.output(a, ma, ga) if self.v2a is not None else None
        if da is not None and spans is not None:  # each token keeps its own span's update
            da = torch.einsum("btlc,tl->blc", da.view(-1, T, *da.shape[1:]), w)
        return dv, da
