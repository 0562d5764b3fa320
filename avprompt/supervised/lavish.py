"""LAVisH-style latent audio-visual adapters inside the paired frozen blocks (encoder mode ``lavish``).

Lin, Sung, Lei, Bansal, Bertasius, "Vision Transformers are Parameter-Efficient Audio-Visual
Learners" (LAVisH, CVPR 2023; arXiv 2212.07983; code github.com/GenjiB/LAVISH). Facts matched
(from the paper's abstract and the released AVE code, ``AVE/nets/net_trans.py``, ``AVE/run_v2.sh``):

* two adapters per layer and modality: "p1" reads the block's *input* tokens of both modalities and
  is added after the attention half; "p2" reads the tokens after attention (p1 included) and is added
  after the MLP half (adapters in parallel to the sub-layers, both modalities updated in lockstep);
* in each adapter a small set of learnable latent tokens first attends to the OTHER modality's
  tokens (softmax over its tokens, the result added to the latents through a gate starting at 1),
  then this modality's tokens attend to those latents (softmax over the latents), added through a
  gate starting at 0: the latents form the attention bottleneck that avoids quadratic cross-attention;
* 2 latent tokens per adapter (``--num_tokens=2``), initialised uniformly in [0, 1);
* the adapter's output is a bottleneck of the (latent-updated) tokens: LayerNorm, grouped 1x1 conv
  C -> C/8 (``--Adapter_downsample=8``, ``--num_conv_group=2``, no bias), BatchNorm, ReLU, conv up,
  BatchNorm, LayerNorm, times an output gate starting at 0 (``--is_gate=1``): at initialisation the
  towers are exactly the frozen ones.

Simplified / adapted here:

* LAVisH runs both modalities through ONE shared ViT, so the two token sets have the same width.
  Here the towers differ (a CLIP ViT and a Swin HTS-AT whose stages change width and token count),
  so each adapter projects the other modality's tokens to its own width with a Linear (identity
  when the widths match), the only parameters LAVisH does not have.
* Adapters sit only in the *paired* blocks (``pair_blocks``: one pair per block of the shallower
  tower, as DG-SCT); the deeper tower's unpaired blocks run unchanged (LAVisH: every layer).
* The attention logits are scaled by 1/sqrt(C) (the released code uses raw dot products, which
  saturate the softmax on wide, unnormalised residual-stream tokens).
* Their AVE model reads spectrogram images with the visual ViT; here each modality keeps its own
  frozen tower (CLIP for frames, CLAP's HTS-AT for waveforms), as every other method in this repo.

Everything acts through ``run_paired`` with a pair hook (``mode="split"``) on ``Recording`` runners
that remember each half's input; no encoder is edited or forked.
"""
from __future__ import annotations

import torch
from torch import nn

from avprompt.dgsct.injection import Recording, block_outputs, tower_token_shapes
from avprompt.encoders.hooks import pair_blocks, run_paired


class LatentAdapter(nn.Module):
    """One direction at one injection point: tokens x (N, L, C) guided by other (N, L_o, C_o)
    -> residual (N, L, C), zero at initialisation."""

    def __init__(self, c: int, c_other: int, latents: int = 2, reduction: int = 8, groups: int = 2):
        super().__init__()
        if latents < 1:
            raise ValueError(f"lavish: lavish_latents={latents}: needs at least 1 latent token")
        self.other = nn.Identity() if c_other == c else nn.Linear(c_other, c)  # width bridge (not in LAVisH)
        self.latents = nn.Parameter(torch.rand(latents, c))  # LAVisH code: uniform [0, 1)
        self.gate_latent = nn.Parameter(torch.ones(()))  # latents <- other modality, starts open
        self.gate_cross = nn.Parameter(torch.zeros(()))  # tokens <- latents, starts closed
        g = groups if c % groups == 0 else 1
        hid = max(g, c // reduction // g * g)
        self.ln_in, self.ln_out = nn.LayerNorm(c), nn.LayerNorm(c)
        self.down = nn.Conv1d(c, hid, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm1d(hid)
        self.up = nn.Conv1d(hid, c, 1, groups=g, bias=False)
        self.bn2 = nn.BatchNorm1d(c)
        self.gate = nn.Parameter(torch.zeros(()))  # output gate: 0 = the frozen tower at init
        self.scale = c ** -0.5

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        o = self.other(other)  # (N, L_o, C)
        tok = self.latents.expand(x.shape[0], -1, -1)  # (N, m, C)
        tok = tok + self.gate_latent * (torch.softmax(tok @ o.transpose(1, 2) * self.scale, -1) @ o)
        x = x + self.gate_cross * (torch.softmax(x @ tok.transpose(1, 2) * self.scale, -1) @ tok)
        y = self.ln_in(x).transpose(1, 2)  # (N, C, L) for the 1x1 convs
        y = self.bn2(self.up(torch.relu(self.bn1(self.down(y)))))
        return self.gate * self.ln_out(y.transpose(1, 2))


class LavishAdapters(nn.Module):
    """The adapters of every paired layer: ``adapters["<k>_<attn|mlp>"]["v" | "a"]``."""

    def __init__(self, encoders, latents: int = 2, reduction: int = 8, groups: int = 2):
        super().__init__()
        vt, at = encoders.tower("v"), encoders.tower("a")
        self.pairs = pair_blocks(len(vt.blocks), len(at.blocks))
        shapes_v, shapes_a = tower_token_shapes(encoders)
        self.adapters = nn.ModuleDict()
        for k, (i, j) in enumerate(self.pairs):
            cv, ca = shapes_v[i][1], shapes_a[j][1]
            for p in ("attn", "mlp"):
                self.adapters[f"{k}_{p}"] = nn.ModuleDict({
                    "v": LatentAdapter(cv, ca, latents, reduction, groups),  # vision reads audio
                    "a": LatentAdapter(ca, cv, latents, reduction, groups)})  # audio reads vision

    def embed(self, encoders, batch: dict, checkpoint_frozen: bool = False,
              keep_vision: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, T, 3, S, S), audio (B, T, S_a) -> f_v (B, T, D_v), f_a (B, T, D_a);
        ``keep_vision`` receives every vision block's output tokens (B*T, L, C)."""
        vt, at = encoders.vision, encoders.audio
        frames, audio = batch["frames"], batch["audio"]
        B, T = frames.shape[:2]
        v_blocks = [Recording(b, checkpoint_frozen) for b in vt.blocks]
        a_blocks = [Recording(b, checkpoint_frozen) for b in at.blocks]

        def hook(k, point, xv, xa):
            bv, ba = v_blocks[self.pairs[k][0]], a_blocks[self.pairs[k][1]]
            # p1 ("attn") reads the block inputs; p2 ("mlp") the MLP inputs (p1 already added)
            src_v, src_a = (bv.attn_in, ba.attn_in) if point == "attn" else (bv.mlp_in, ba.mlp_in)
            ad = self.adapters[f"{k}_{point}"]
            return xv + ad["v"](src_v, src_a), xa + ad["a"](src_a, src_v)

        xv, xa = run_paired(v_blocks, vt.embed(frames.flatten(0, 1)), a_blocks, at.embed(audio.flatten(0, 1)),
                            hook, pairs=self.pairs, mode="split")
        if keep_vision is not None:
            keep_vision.extend(block_outputs(v_blocks, xv))
        return vt.project(xv).view(B, T, -1), at.project(xa).view(B, T, -1)
