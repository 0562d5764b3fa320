"""Architectures as data: small named configs of the real open_clip / laion-clap classes.

Weights are a separate key (see ``factory.BackboneSpec``). ``avp-*-tiny`` build in well under a
second and exist for tests; ``avp-*-synthav`` are the embedded default backbones pre-trained on
SynthAV (weights shipped in ``avprompt/assets``). Any open_clip architecture name and laion-clap's
HTSAT-tiny / HTSAT-base / HTSAT-large presets are accepted too.
"""
from __future__ import annotations

# open_clip model configs (the same JSON schema open_clip ships for ViT-B-32 etc.)
CLIP_ARCHS: dict[str, dict] = {
    "avp-vit-tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "avp-vit-synthav": {
        "embed_dim": 96,
        "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
    },
}

# HTS-AT configs: laion-clap's CLAP(audio_cfg, text_cfg) plus the Swin arguments that its
# create_htsat_model hard-codes for tiny/base/large. Constraints (checked by validate_htsat):
# spec_size % mel_bins == 0; frames of one clip <= spec_size * freq_ratio; every stage's grid
# divisible by the window while larger than it; last grid >= freq_ratio; heads divide widths.
CLAP_ARCHS: dict[str, dict] = {
    "avp-htsat-tiny": {
        "joint_embed_dim": 32,
        "audio_cfg": {"sample_rate": 16000, "clip_samples": 16000, "window_size": 512, "hop_size": 160,
                      "mel_bins": 32, "fmin": 50, "fmax": 8000, "audio_length": 1024, "class_num": 1},
        "htsat": {"spec_size": 64, "patch_size": 4, "patch_stride": [4, 4], "embed_dim": 16,
                  "depths": [2, 2], "num_heads": [2, 4], "window_size": 4},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "avp-htsat-synthav": {
        "joint_embed_dim": 96,
        "audio_cfg": {"sample_rate": 16000, "clip_samples": 16000, "window_size": 512, "hop_size": 160,
                      "mel_bins": 32, "fmin": 50, "fmax": 8000, "audio_length": 1024, "class_num": 1},
        "htsat": {"spec_size": 64, "patch_size": 4, "patch_stride": [4, 4], "embed_dim": 32,
                  "depths": [2, 2, 2], "num_heads": [2, 4, 8], "window_size": 4},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
    },
}

# The same Swin as avp-htsat-synthav over a 10 s window (like HTS-AT's own): one pass hears a
# whole clip, so ``audio_pass=clip`` can be measured on SynthAV. 40 ms hop (251 frames) and 16 mel
# bands keep the spectrogram image 64 x 64, i.e. the same FLOPs per pass as the 1 s tower;
# freq_ratio 4 leaves 16 time positions on the last grid (real HTS-AT: 32 per 10 s).
CLAP_ARCHS["avp-htsat-synthav-10s"] = {
    **CLAP_ARCHS["avp-htsat-synthav"],
    "audio_cfg": {**CLAP_ARCHS["avp-htsat-synthav"]["audio_cfg"], "clip_samples": 160000, "window_size": 1024,
                  "hop_size": 640, "mel_bins": 16},
}

# laion-clap's own presets (create_htsat_model), for listing and validation.
CLAP_PRESETS = {"HTSAT-tiny": "tiny", "HTSAT-base": "base", "HTSAT-large": "large"}


def validate_htsat(name: str, cfg: dict) -> None:
    """Raise ValueError naming the broken constraint of a small HTS-AT config."""
    a, h = cfg["audio_cfg"], cfg["htsat"]
    spec, mels = h["spec_size"], a["mel_bins"]
    if spec % mels:
        raise ValueError(f"{name}: spec_size {spec} must be a multiple of mel_bins {mels}")
    ratio = spec // mels
    frames = a["clip_samples"] // a["hop_size"] + 1
    if frames > spec * ratio:
        raise ValueError(f"{name}: {frames} spectrogram frames exceed spec_size*freq_ratio = {spec * ratio}")
    grid = spec // h["patch_stride"][0]
    for stage, (heads, width) in enumerate(zip(h["num_heads"], [h["embed_dim"] * 2 ** s for s in range(len(h["depths"]))])):
        if width % heads:
            raise ValueError(f"{name}: stage {stage} width {width} not divisible by {heads} heads")
        if grid > h["window_size"] and grid % h["window_size"]:
            raise ValueError(f"{name}: stage {stage} grid {grid} not divisible by window {h['window_size']}")
        last = grid
        grid //= 2
    if last < ratio:
        raise ValueError(f"{name}: last stage grid {last} smaller than freq_ratio {ratio}")
