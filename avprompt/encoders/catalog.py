"""What ``avprompt backbones list`` shows: every known architecture, where its weights come from,
and which of them are already on this disk.

open_clip's table of architectures and pretrained tags is read once per installed open_clip
version and kept in ``$AVPROMPT_CACHE/catalog/`` (importing open_clip costs ~6 s; the list should
answer at once). A tag counts as on disk when its Hugging Face repository is in the hub cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``) or its file is in
open_clip's legacy download folder (``~/.cache/clip``).
"""
from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

from avprompt.atomic import atomic_write_text
from avprompt.encoders.archs import CLAP_ARCHS, CLAP_PRESETS, CLIP_ARCHS

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# architectures listed without --all (the ones the DG-SCT reference and the baselines use)
COMMON_CLIP = ("ViT-B-32", "ViT-B-16", "ViT-L-14")


def _cache_root() -> Path:
    return Path(os.environ.get("AVPROMPT_CACHE", Path.home() / ".cache" / "avprompt"))


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def open_clip_table() -> dict[str, dict[str, dict]]:
    """{arch: {tag: {"hf_hub": repo or "", "url": url or ""}}} for every open_clip architecture
    (architectures without a pretrained tag map to {}), cached per open_clip version."""
    version = metadata.version("open_clip_torch")
    path = _cache_root() / "catalog" / f"open_clip-{version}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    table = {arch: {} for arch in open_clip.list_models()}
    for arch, tag in open_clip.list_pretrained():
        cfg = get_pretrained_cfg(arch, tag) or {}
        table.setdefault(arch, {})[tag] = {"hf_hub": cfg.get("hf_hub", ""), "url": cfg.get("url", "")}
    try:  # a cache is a convenience: an unwritable folder only costs the next call its 6 s
        atomic_write_text(path, json.dumps(table))
    except OSError:
        pass
    return table


def tag_on_disk(source: dict) -> bool:
    """Whether one pretrained tag's weights are already downloaded (hub cache or ~/.cache/clip)."""
    repo = source.get("hf_hub", "").strip("/")
    if repo and any((hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots").glob("*/*")):
        return True
    url = source.get("url", "")
    return bool(url) and (Path.home() / ".cache" / "clip" / url.rsplit("/", 1)[-1]).is_file()


def catalog(all_open_clip: bool = False) -> list[dict]:
    """Rows {"tower", "arch", "weights", "on_disk": [tags or files present]} for ``backbones list``."""
    from avprompt.encoders.factory import SYNTHAV_10S_WEIGHTS, SYNTHAV_WEIGHTS
    shipped = {arch: path for arch, path in (*SYNTHAV_WEIGHTS.values(), *SYNTHAV_10S_WEIGHTS.values())}
    rows = []
    for kind, archs in (("clip", CLIP_ARCHS), ("clap", CLAP_ARCHS)):
        for arch in archs:
            if arch not in shipped:
                rows.append({"tower": kind, "arch": arch, "weights": "random (tests)", "on_disk": []})
            else:
                asset = shipped[arch].relative_to(ASSETS).as_posix()
                present = [asset] if shipped[arch].is_file() else []
                rows.append({"tower": kind, "arch": arch, "weights": f"shipped: avprompt/assets/{asset}",
                             "on_disk": present})
    examples = {"HTSAT-tiny": " (LAION's 630k-*.pt)", "HTSAT-base": " (e.g. music_audioset_epoch_15_esc_90.14.pt)"}
    rows += [{"tower": "clap", "arch": a, "weights": "a local .pt checkpoint" + examples.get(a, ""), "on_disk": []}
             for a in CLAP_PRESETS]
    for arch, tags in open_clip_table().items():
        if not all_open_clip and not arch.startswith(COMMON_CLIP):
            continue
        weights = ("tags: " + ", ".join(tags) + " (or a local file)") if tags else \
            "no pretrained tag: a local file only"
        rows.append({"tower": "clip", "arch": arch, "weights": weights,
                     "on_disk": [t for t, src in tags.items() if tag_on_disk(src)]})
    return rows
