"""SynthAV: a generated audio-visual world, the default data of ``avprompt bench``.

Public entry points:
    generate_world(out, size="small", seed=0, workers=2) -> Path   # AVE/LLP/VGG-Sound-40K formats
    default_world_dir(size="small", seed=0) -> Path
    oracle_ceilings(world_dir_or_truth, split="test") -> dict
    caption_corpus(n, seed, image_size, sample_rate, seconds, split) -> dict
Imports are lazy so that ``import avprompt.synthav`` stays cheap.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "generate_world": "avprompt.synthav.world",
    "default_world_dir": "avprompt.synthav.world",
    "oracle_ceilings": "avprompt.synthav.oracle",
    "caption_corpus": "avprompt.synthav.corpus",
    "class_sets": "avprompt.synthav.vocab",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'avprompt.synthav' has no attribute {name!r}")
