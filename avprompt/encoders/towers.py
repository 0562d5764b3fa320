"""Frozen towers behind one protocol: ``embed`` -> ``blocks`` -> ``project``, plus a text tower.

``VisionTower`` wraps an open_clip CLIP model (image tower + CLIP text tower); ``AudioTower`` wraps a
laion-clap CLAP model (HTS-AT audio tower + its text tower). Both are frozen by construction:
every parameter has ``requires_grad=False`` and the wrapped model stays in eval mode even when a
method calls ``.train()`` (BatchNorm statistics and SpecAugment must not change).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.encoders.blocks import ClipBlockRunner, SeqFirstBlockRunner, SwinBlockRunner
from avprompt.encoders.hooks import TowerHook, acts_before_blocks_only, run_blocks, run_blocks_pooled
from avprompt.encoders.text import HFTextTower, TextTower


class FrozenTower(nn.Module):
    modality: str = ""

    def __init__(self, model: nn.Module, arch: str, weights: str | None):
        super().__init__()
        self.model = model
        self.arch = arch
        self.weights = weights
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):
        # Frozen: the wrapped model never leaves eval mode.
        super().train(mode)
        self.model.eval()
        return self

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    #: the one token ``project`` reads (the ViT's class token), or None when it reads them all
    pooled_token: int | None = None

    def encode(self, x: torch.Tensor, hook: TowerHook | None = None) -> torch.Tensor:
        """Inputs -> (N, D) unnormalised embeddings, optionally with a tower hook. A tower that
        reads one token computes its last block for that token alone (``run_blocks_pooled``)
        unless the hook acts inside blocks."""
        tokens = self.embed(x)
        if self.pooled_token is not None and acts_before_blocks_only(hook):
            pos = torch.full((tokens.shape[0],), self.pooled_token, dtype=torch.long, device=tokens.device)
            return self.project(run_blocks_pooled(self.blocks, tokens, pos, hook))
        return self.project(run_blocks(self.blocks, tokens, hook))

    @property
    def logit_scale(self) -> torch.Tensor:
        """The pre-trained temperature, already exponentiated (a scalar tensor)."""
        raise NotImplementedError


class VisionTower(FrozenTower):
    """open_clip CLIP. Input: CLIP-normalised images (N, 3, S, S); tokens (N, 1 + G*G, W)."""

    modality = "v"

    def __init__(self, model, arch, weights, tokenizer):
        super().__init__(model, arch, weights)
        visual = model.visual
        g = visual.grid_size
        self.grid = (g[0], g[1])
        self.blocks = [ClipBlockRunner(b, visual.transformer.width, self.grid)
                       for b in visual.transformer.resblocks]
        self.text = TextTower(tokenizer, model.token_embedding, model.positional_embedding,
                              [ClipBlockRunner(b, model.transformer.width, None, model)
                               for b in model.transformer.resblocks],
                              model.ln_final, model.text_projection, self.embed_dim)

    @property
    def pooled_token(self) -> int | None:
        v = self.model.visual
        return 0 if getattr(v, "attn_pool", None) is None and getattr(v, "pool_type", "tok") == "tok" else None

    @property
    def embed_dim(self) -> int:
        return self.model.visual.output_dim

    @property
    def width(self) -> int:
        return self.model.visual.transformer.width

    @property
    def image_size(self) -> int:
        s = self.model.visual.image_size
        return s[0] if isinstance(s, (tuple, list)) else s

    @property
    def image_mean(self) -> tuple[float, ...]:
        return tuple(getattr(self.model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))

    @property
    def image_std(self) -> tuple[float, ...]:
        return tuple(getattr(self.model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))

    def embed(self, x):
        return self.model.visual._embeds(x)

    def project(self, tokens):
        visual = self.model.visual
        pooled, _ = visual._pool(tokens)
        return pooled @ visual.proj if visual.proj is not None else pooled

    @property
    def logit_scale(self):
        return self.model.logit_scale.exp()


class AudioTower(FrozenTower):
    """laion-clap CLAP with an HTS-AT audio tower.

    Input: mono waveforms (N, S) at ``sample_rate``. Clips shorter than ``clip_samples`` are
    repeat-padded (laion-clap's "repeatpad": whole repeats, then zeros), as in CLAP pre-training;
    ``short_audio="stretch"`` instead feeds them as they are and lets HTS-AT stretch the
    spectrogram (what DG-SCT's reference code does with 1 s segments). Longer clips are cut to
    ``clip_samples`` from the start. Tokens: (N, H*W, C) on the current Swin stage's grid.
    """

    modality = "a"

    def __init__(self, model, arch, weights, tokenizer, short_audio: str = "repeatpad"):
        super().__init__(model, arch, weights)
        if short_audio not in ("repeatpad", "stretch"):
            raise ValueError(f"short_audio must be repeatpad|stretch, got {short_audio!r}")
        self.short_audio = short_audio
        htsat = model.audio_branch
        self.blocks = []
        for layer in htsat.layers:
            for k, blk in enumerate(layer.blocks):
                last = k == len(layer.blocks) - 1
                self.blocks.append(SwinBlockRunner(blk, blk.dim, tuple(blk.input_resolution),
                                                   layer.downsample if last else None))
        if model.text_branch_type == "transformer":
            self.text = TextTower(tokenizer, model.token_embedding, model.positional_embedding,
                                  [SeqFirstBlockRunner(b, model.text_branch.width, None, model)
                                   for b in model.text_branch.resblocks],
                                  model.ln_final, model.text_projection, self.embed_dim)
        else:
            self.text = HFTextTower(model, tokenizer, self.embed_dim)

    @property
    def cfg(self):
        return self.model.audio_cfg

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.sample_rate)

    @property
    def clip_samples(self) -> int:
        return int(self.cfg.clip_samples)

    @property
    def embed_dim(self) -> int:
        return self.model.joint_embed_shape

    @property
    def width(self) -> int:
        return self.model.audio_branch.embed_dim

    def fit_length(self, wave: torch.Tensor) -> torch.Tensor:
        """(N, S) -> (N, clip_samples) by repeat-pad / crop (or unchanged for "stretch")."""
        n, s = wave.shape
        if s > self.clip_samples:
            return wave[:, : self.clip_samples]
        if s == self.clip_samples or self.short_audio == "stretch":
            return wave
        reps = self.clip_samples // s
        wave = wave.repeat(1, reps)
        return F.pad(wave, (0, self.clip_samples - wave.shape[1]))

    def embed(self, x):
        """(N, S) waveform -> (N, H*W, C) patch tokens (HTS-AT's steps before its Swin layers)."""
        h = self.model.audio_branch
        x = self.spectrogram(self.fit_length(x))  # (N, 1, frames, freq)
        x = h.logmel_extractor(x)  # (N, 1, frames, mels)
        x = h.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = h.reshape_wav2img(x)  # (N, 1, spec, spec)
        self._frames_num = x.shape[2]
        x = h.patch_embed(x)
        if h.ape:
            x = x + h.absolute_pos_embed
        return h.pos_drop(x)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """(N, S) waveform -> (N, 1, frames, n_fft // 2 + 1) power spectrogram, HTS-AT's first step.

        laion-clap's ``Spectrogram`` (torchlibrosa) computes the STFT as two Conv1d whose kernels
        are the windowed DFT matrix: O(n_fft^2) per frame, 77% of the embedded audio tower's
        ``embed`` and ~15% of a real HTSAT-tiny pass. ``torch.stft`` computes the same transform
        by FFT with the module's own settings and window (the DFT's zero-frequency row of
        ``conv_real`` is the window itself): 3x faster on the embedded tower, 5x at real size, and
        closer to a float64 reference (``tests/test_encoders.py``). Any other extractor runs as is.
        """
        spec = self.model.audio_branch.spectrogram_extractor
        stft = getattr(spec, "stft", None)
        conv = getattr(stft, "conv_real", None)
        if conv is None or getattr(spec, "power", None) is None or getattr(conv, "stride", (0,))[0] != stft.hop_length:
            return spec(wave)
        window = conv.weight[0, 0].to(wave.dtype)  # (n_fft,): cos(0) * window, zero-padded to n_fft
        z = torch.stft(wave, stft.n_fft, stft.hop_length, window=window, center=stft.center,
                       pad_mode=stft.pad_mode, return_complex=True)  # (N, freq, frames)
        power = z.real ** 2 + z.imag ** 2
        if spec.power != 2.0:
            power = power ** (spec.power / 2.0)
        return power.transpose(1, 2).unsqueeze(1)

    def time_grid(self, tokens):
        """Final tokens (N, H*W, C) -> (N, C, F, P): HTS-AT's grid with its time axis unfolded
        (the spectrogram's time is cut into ``freq_ratio`` chunks stacked along frequency; P =
        freq_ratio * W positions in time order, each covering 1/P of the tower's input)."""
        h = self.model.audio_branch
        x = h.norm(tokens)
        n, _, c = x.shape
        frames = getattr(self, "_frames_num", h.spec_size)
        sf = frames // (2 ** (len(h.depths) - 1)) // h.patch_stride[0]
        st = frames // (2 ** (len(h.depths) - 1)) // h.patch_stride[1]
        x = x.permute(0, 2, 1).reshape(n, c, sf, st)
        c_freq_bin = sf // h.freq_ratio
        return x.reshape(n, c, sf // c_freq_bin, c_freq_bin, st).permute(0, 1, 3, 2, 4).reshape(n, c, c_freq_bin, -1)

    def project(self, tokens):
        """Final tokens -> HTS-AT's clip embedding (its 'embedding' output) -> audio_projection."""
        h = self.model.audio_branch
        x = self.time_grid(tokens)
        latent = torch.flatten(h.avgpool(torch.flatten(x, 2)), 1)  # (N, C)
        return self.model.audio_projection(latent)

    def check_clip_window(self, samples: int) -> None:
        """One-line error when a clip of ``samples`` does not fit the tower's input window."""
        if samples > self.clip_samples:
            raise ValueError(f"audio_pass=clip: the clip ({samples / self.sample_rate:g} s) is longer than the audio "
                             f"tower's input window ({self.clip_samples / self.sample_rate:g} s, {self.arch}); "
                             "use audio_pass=segment")

    @staticmethod
    def _span_overlap(lo: torch.Tensor, hi: torch.Tensor, samples: int, spans: int) -> torch.Tensor:
        """(spans, P) overlap, in samples, of intervals [lo_p, hi_p) with the ``spans`` equal spans
        of [0, samples)."""
        edge = torch.arange(spans + 1, dtype=torch.float64) * samples / spans
        return (torch.minimum(hi[None, :], edge[1:, None]) - torch.maximum(lo[None, :], edge[:-1, None])).clamp(min=0)

    def span_weights(self, tokens: int, samples: int, spans: int) -> torch.Tensor:
        """Which time span each token of a Swin stage hears: (spans, tokens) float64, entry [t, l] =
        the fraction of token l's time extent inside span t (samples [t S/spans, (t+1) S/spans) of a
        clip of S = ``samples``); each column sums to 1 for a token inside the clip, less for one
        over the padding of a clip shorter than the window.

        HTS-AT's layout (``reshape_wav2img``): the spectrogram's time is cut into ``freq_ratio``
        chunks stacked along the image's height, so token (i, j) of an H x W stage grid (row-major)
        lies in chunk i // (H / freq_ratio) at time position j of W in that chunk; the spectrogram's
        frames are spread evenly over the fitted waveform."""
        h = self.model.audio_branch
        side = int(round(tokens ** 0.5))
        if side * side != tokens or side % h.freq_ratio:
            raise ValueError(f"span_weights: {tokens} tokens are not a square grid of {h.freq_ratio} chunks")
        fitted = self.fit_length(torch.zeros(1, samples)).shape[1]
        rows_per_chunk = side // h.freq_ratio
        chunk = torch.arange(side) // rows_per_chunk  # (H,) chunk of each token row
        start = (chunk[:, None] * side + torch.arange(side)[None, :]).flatten().double()  # (L,) position
        per = fitted / (h.freq_ratio * side)  # samples per time position
        return self._span_overlap(start * per, (start + 1) * per, samples, spans) / per

    def pool_spans(self, tokens: torch.Tensor, samples: int, spans: int) -> torch.Tensor:
        """Final tokens (N, L, C) of a clip of ``samples`` -> one embedding per span (N, spans, D):
        HTS-AT's pooled embedding restricted to the time positions a span covers (weighted by
        overlap), through the same projection."""
        n, s = tokens.shape[0], samples
        fitted = self.fit_length(torch.zeros(1, s)).shape[1]
        x = self.time_grid(tokens)  # (N, C, F, P)
        P = x.shape[-1]
        pos = torch.arange(P + 1, dtype=torch.float64) * fitted / P  # position edges, in samples
        w = self._span_overlap(pos[:-1], pos[1:], s, spans)
        w = (w / w.sum(1, keepdim=True)).to(x.dtype)  # (spans, P), rows sum to 1
        latent = torch.einsum("ncfp,tp->ntc", x, w) / x.shape[2]  # mean over F, span-weighted over P
        return self.model.audio_projection(latent).view(n, spans, -1)

    def encode_spans(self, wave: torch.Tensor, spans: int) -> torch.Tensor:
        """One pass over a whole clip, one embedding per time span: (N, S) -> (N, spans, D).

        ``audio_pass="clip"``: span t (samples [t S/spans, (t+1) S/spans)) gets HTS-AT's pooled
        embedding restricted to the time positions it covers (``pool_spans``); ``spans=1`` is
        exactly ``encode``. The clip must fit the tower's input window (``clip_samples``); a
        shorter clip is fitted as in ``encode`` and its spans map onto the part of the window the
        clip occupies."""
        self.check_clip_window(wave.shape[1])
        return self.pool_spans(run_blocks(self.blocks, self.embed(wave)), wave.shape[1], spans)

    @property
    def logit_scale(self):
        return self.model.logit_scale_a.exp()
