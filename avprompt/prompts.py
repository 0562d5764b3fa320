"""Hand-written prompt templates and frozen class text features (shared by all methods)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Template sets, recorded in every result. CLIP: CoOp's single template; CLAP: laion-clap's README
# template; DG-SCT's CLAP branch uses "The sounds of {}".
TEMPLATES = {
    "clip": ["a photo of a {}."],
    "clip-ensemble": ["a photo of a {}.", "a video frame of a {}.", "a picture of the {}.", "a {}."],
    "clap": ["This is a sound of {}."],
    "clap-ensemble": ["This is a sound of {}.", "The sounds of {}.", "the sound of a {}.", "{}."],
    "dgsct-clap": ["The sounds of {}"],
}


def resolve_templates(name_or_list) -> list[str]:
    if isinstance(name_or_list, (list, tuple)):
        return list(name_or_list)
    if name_or_list in TEMPLATES:
        return TEMPLATES[name_or_list]
    if "{}" in name_or_list:
        return [name_or_list]
    raise ValueError(f"templates {name_or_list!r}: use one of {', '.join(TEMPLATES)} or a string with '{{}}'")


@torch.no_grad()
def class_text_features(text_tower, names: list[str], templates: list[str]) -> torch.Tensor:
    """(K, D) L2-normalised class features: mean of normalised template features per class."""
    feats = []
    for name in names:
        f = F.normalize(text_tower.encode([t.format(name) for t in templates]).float(), dim=-1)
        feats.append(F.normalize(f.mean(0), dim=-1))
    return torch.stack(feats)
