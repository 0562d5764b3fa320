"""Frozen encoders behind one protocol (see ``towers.py``), built from a backbone spec.

``load_encoders("synthav")`` -> ``Encoders`` holding a ``VisionTower`` (open_clip CLIP) and an
``AudioTower`` (laion-clap CLAP); every method receives one of these.
"""
from __future__ import annotations

import torch
from torch import nn

from avprompt.encoders.factory import BackboneSpec, TowerSpec, build_clap, build_clip
from avprompt.encoders.weights import weights_fingerprint


#: how the audio tower sees a clip's T segments: one pass each, or one pass over the clip
AUDIO_PASSES = ("segment", "clip")


class Encoders(nn.Module):
    """The frozen vision and audio towers (either may be None for single-modality use)."""

    def __init__(self, vision=None, audio=None, spec: BackboneSpec | None = None):
        super().__init__()
        self.vision = vision
        self.audio = audio
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else "custom"

    @property
    def identity(self) -> dict:
        """What these towers are, for results (see ``spec_identity``)."""
        if self.spec is not None:
            return spec_identity(self.spec, ("v" if self.vision is not None else "") +
                                 ("a" if self.audio is not None else ""))
        arch = {k: t.arch for k, t in (("clip", self.vision), ("clap", self.audio)) if t is not None}
        weights = {k: weights_fingerprint(t.weights, seeded=False)
                   for k, t in (("clip", self.vision), ("clap", self.audio)) if t is not None}
        return {"name": self.name, "arch": arch, "weights": weights,
                "fingerprint": "+".join(f"{arch[k]}@{weights[k]}" for k in arch)}

    def tower(self, modality: str):
        t = self.vision if modality == "v" else self.audio
        if t is None:
            raise ValueError(f"this method needs the {'clip' if modality == 'v' else 'clap'} tower; "
                             f"add it to --backbones (got {self.name!r})")
        return t

    @torch.no_grad()
    def encode(self, batch: dict, modality: str, audio_pass: str = "segment") -> torch.Tensor:
        """Frozen pooled embeddings (B, T, D) of frames (B, T, 3, H, W) or audio (B, T, S).

        ``audio_pass``: "segment" encodes each 1 s audio segment on its own (the reference);
        "clip" encodes the T segments as one clip in a single pass and gives each segment the
        embedding of its own time span (``AudioTower.encode_spans``)."""
        if audio_pass not in AUDIO_PASSES:
            raise ValueError(f"audio_pass={audio_pass!r}: use {' or '.join(AUDIO_PASSES)}")
        x = batch["frames"] if modality == "v" else batch["audio"]
        b, t = x.shape[:2]
        if modality == "a" and audio_pass == "clip":
            return self.tower("a").encode_spans(x.flatten(1), t)
        return self.tower(modality).encode(x.flatten(0, 1)).view(b, t, -1)


def spec_identity(spec: str | BackboneSpec, modalities: str = "va") -> dict:
    """What a spec's towers are, without building them (a rerun with nothing to do decides from
    this alone): ``{"name", "arch": {tower: arch}, "weights": {tower: fingerprint}, "fingerprint":
    "ARCH@FP+ARCH@FP"}`` (fingerprints: ``weights.weights_fingerprint``; files are hashed once per
    path, size and mtime). Equal to ``load_encoders(spec).identity``."""
    spec = BackboneSpec.parse(spec) if isinstance(spec, str) else spec
    arch, weights = {}, {}
    for kind, mod in (("clip", "v"), ("clap", "a")):
        tspec = getattr(spec, kind)
        if tspec is None or mod not in modalities:
            continue
        arch[kind] = tspec.arch + ("+roberta" if tspec.text == "roberta" else "")
        weights[kind] = weights_fingerprint(tspec.weights, seeded=True)
    return {"name": spec.name, "arch": arch, "weights": weights,
            "fingerprint": "+".join(f"{arch[k]}@{weights[k]}" for k in arch)}


def load_encoders(spec: str | BackboneSpec = "synthav", modalities: str = "va",
                  short_audio: str = "repeatpad") -> Encoders:
    """Build the frozen towers of ``spec``. Towers without weights get a fixed-seed random
    initialisation, so "tiny" or "clip=ViT-B-32" are the same weights in every process (feature
    caches, Ray workers and DDP ranks agree) and the caller's RNG stream is left untouched."""
    spec = BackboneSpec.parse(spec) if isinstance(spec, str) else spec
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vision = build_clip(spec.clip) if spec.clip and "v" in modalities else None
        audio = build_clap(spec.clap, short_audio) if spec.clap and "a" in modalities else None
    return Encoders(vision, audio, spec)


__all__ = ["AUDIO_PASSES", "BackboneSpec", "Encoders", "TowerSpec", "build_clap", "build_clip", "load_encoders",
           "spec_identity"]
