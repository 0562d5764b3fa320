"""Build frozen towers from a backbone spec: architecture and weights are separate keys.

Spec grammar (``--backbones``)::

    tiny                                  both tiny test towers, random weights
    synthav                               the shipped SynthAV-pretrained towers (default)
    synthav-10s                           the same image tower, the 10 s-window audio tower
    clip=ViT-B-32@openai                  open_clip architecture @ pretrained tag (user's cache)
    clip=ViT-B-16@/data/vitb16.safetensors,clap=HTSAT-base@/data/630k-audioset-best.pt
    clip=ViT-B-32,clap=HTSAT-base         random weights (no "@")

A tower left out of the spec is not built (single-modality methods). ``+roberta`` after a CLAP
architecture (``clap=HTSAT-base+roberta@FILE``) selects laion-clap's RoBERTa text tower, which is
what official checkpoints use; its tokenizer comes from the local Hugging Face cache. Without it,
the CLIP-style ``transformer`` text tower is used (CLIP BPE tokenizer, works offline).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import avprompt  # noqa: F401  (sets HF_HUB_OFFLINE before laion_clap is imported)
from avprompt.encoders.archs import CLAP_ARCHS, CLAP_PRESETS, CLIP_ARCHS, validate_htsat
from avprompt.encoders.weights import load_into, load_state

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SYNTHAV_WEIGHTS = {"clip": ("avp-vit-synthav", ASSETS / "synthav-clip.safetensors"),
                   "clap": ("avp-htsat-synthav", ASSETS / "synthav-clap.safetensors")}
# The 10 s-window SynthAV audio tower (``backbones build --plan clap-10s``): the backbone spec
# ``synthav-10s`` pairs it with the default image tower, so ``audio_pass=clip`` runs on SynthAV.
SYNTHAV_10S_DIR = ASSETS / "synthav-10s"
SYNTHAV_10S_WEIGHTS = {"clip": SYNTHAV_WEIGHTS["clip"],
                       "clap": ("avp-htsat-synthav-10s", SYNTHAV_10S_DIR / "synthav-clap.safetensors")}


@dataclass(frozen=True)
class TowerSpec:
    kind: str  # "clip" | "clap"
    arch: str
    weights: str | None = None  # pretrained tag, local file, or None (random)
    text: str = "transformer"  # CLAP text tower: "transformer" | "roberta"

    def __str__(self):
        arch = self.arch + ("+roberta" if self.text == "roberta" else "")
        return f"{self.kind}={arch}" + (f"@{self.weights}" if self.weights else "")


@dataclass(frozen=True)
class BackboneSpec:
    clip: TowerSpec | None
    clap: TowerSpec | None
    name: str  # short identifier for result paths

    @classmethod
    def parse(cls, spec: str) -> "BackboneSpec":
        spec = spec.strip()
        if spec == "tiny":
            return cls(TowerSpec("clip", "avp-vit-tiny"), TowerSpec("clap", "avp-htsat-tiny"), "tiny")
        for named, weights in (("synthav", SYNTHAV_WEIGHTS), ("synthav-10s", SYNTHAV_10S_WEIGHTS)):
            if spec == named:
                return cls(*(TowerSpec(k, a, str(p)) for k, (a, p) in weights.items()), named)
        towers: dict[str, TowerSpec] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, sep, rest = part.partition("=")
            if not sep or kind not in ("clip", "clap"):
                raise ValueError(f"backbone spec part {part!r}: expected clip=ARCH[@WEIGHTS] or "
                                 "clap=ARCH[+roberta][@WEIGHTS], or 'tiny' / 'synthav' / 'synthav-10s'")
            arch, _, weights = rest.partition("@")
            arch, _, text = arch.partition("+")
            if kind == "clap" and text not in ("", "roberta"):
                raise ValueError(f"backbone spec part {part!r}: unknown CLAP text tower {text!r} (use +roberta)")
            towers[kind] = TowerSpec(kind, arch, weights or None, text or "transformer")
        if not towers:
            raise ValueError(f"empty backbone spec {spec!r}: use 'synthav', 'tiny' or clip=...,clap=...")
        name = "_".join(f"{t.arch}" + (f"@{Path(t.weights).stem}" if t.weights else "")
                        for t in towers.values())
        return cls(towers.get("clip"), towers.get("clap"), name.replace("/", "-"))


def build_clip(spec: TowerSpec):
    """open_clip CLIP -> VisionTower."""
    import open_clip

    from avprompt.encoders.towers import VisionTower

    if spec.arch in CLIP_ARCHS:
        model = open_clip.model.CLIP(**CLIP_ARCHS[spec.arch])
        context = CLIP_ARCHS[spec.arch]["text_cfg"]["context_length"]
        tokenizer = open_clip.SimpleTokenizer(context_length=context)
    elif spec.arch in open_clip.list_models():
        local = spec.weights and (os.sep in spec.weights or os.path.exists(spec.weights)
                                  or spec.weights.endswith((".pt", ".pth", ".bin", ".safetensors")))
        pretrained = None if (spec.weights is None or local) else spec.weights
        try:
            model = open_clip.create_model(spec.arch, pretrained=pretrained)
        except RuntimeError as e:
            raise ValueError(f"open_clip cannot load {spec.arch}@{spec.weights}: {e}") from None
        tokenizer = open_clip.get_tokenizer(spec.arch)
        if not local:
            spec = TowerSpec(spec.kind, spec.arch, None)  # tag already loaded
    else:
        raise ValueError(f"unknown CLIP architecture {spec.arch!r}: see `avprompt backbones list`")
    if spec.weights:
        load_into(model, load_state(spec.weights), spec.arch, spec.weights)
    return VisionTower(model, spec.arch, spec.weights, tokenizer)


def _small_htsat_factory(htsat_args: dict):
    def factory(audio_cfg, enable_fusion=False, fusion_type="None"):
        from laion_clap.clap_module.htsat import HTSAT_Swin_Transformer
        return HTSAT_Swin_Transformer(num_classes=audio_cfg.class_num, config=audio_cfg,
                                      enable_fusion=enable_fusion, fusion_type=fusion_type, **htsat_args)
    return factory


def build_clap(spec: TowerSpec, short_audio: str = "repeatpad"):
    """laion-clap CLAP -> AudioTower."""
    import open_clip
    from laion_clap.clap_module import model as clap_model_module

    from avprompt.encoders.towers import AudioTower

    if spec.arch in CLAP_ARCHS:
        cfg = CLAP_ARCHS[spec.arch]
        validate_htsat(spec.arch, cfg)
        h = cfg["htsat"]
        num_features = h["embed_dim"] * 2 ** (len(h["depths"]) - 1)
        audio_cfg = dict(cfg["audio_cfg"], model_type="HTSAT", model_name="small")
        text_cfg = dict(cfg["text_cfg"], model_type="transformer")
        # laion-clap's CLAP builds its audio tower through create_htsat_model, which knows only the
        # tiny/base/large presets: route that one call to the same HTS-AT class with our arguments.
        with mock.patch.object(clap_model_module, "create_htsat_model", _small_htsat_factory(h)):
            model = clap_model_module.CLAP(embed_dim=num_features, audio_cfg=audio_cfg, text_cfg=text_cfg,
                                           joint_embed_shape=cfg["joint_embed_dim"])
        tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    elif spec.arch in CLAP_PRESETS:
        from laion_clap.clap_module.factory import create_model
        if spec.text == "roberta":
            try:
                from transformers import RobertaTokenizer
                tokenizer = RobertaTokenizer.from_pretrained("roberta-base")
                model, _ = create_model(spec.arch, "roberta", precision="fp32", device="cpu")
            except OSError as e:
                raise ValueError(f"the RoBERTa text tower of {spec.arch} needs 'roberta-base' in the local "
                                 f"Hugging Face cache (offline): {str(e).splitlines()[0]}") from None
        else:
            model, _ = create_model(spec.arch, "transformer", precision="fp32", device="cpu")
            tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    else:
        raise ValueError(f"unknown CLAP architecture {spec.arch!r}: see `avprompt backbones list`")
    if spec.weights:
        # official checkpoints carry position_ids of the RoBERTa embeddings; newer transformers
        # keep them as a non-persistent buffer, so the key is optional either way.
        load_into(model, load_state(spec.weights), spec.arch, spec.weights, ignore=("position_ids",))
    return AudioTower(model.float(), spec.arch, spec.weights, tokenizer, short_audio=short_audio)
