"""Use a trained cell: its checkpoint (``bench --save-checkpoints``) on new videos.

A cell checkpoint (``seed<S>.ckpt.pt`` beside the cell's JSON) holds the method's own state (every
tensor outside the frozen encoders: context, adapters, DG-SCT modules, a fitted cache or probe)
and what is needed to rebuild it: the method key, its requested config, the task (name, level,
class names, segments) and the backbone spec with the weights' fingerprint. ``load_cell`` rebuilds
the method on the same backbones (a different weights file is an error) and loads the state
strictly; ``predict_videos`` decodes mp4 files the way the sweep does (10 segments of 1 s) and
returns per-segment labels and probabilities and the video label.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

CHECKPOINT_SUFFIX = ".ckpt.pt"


def checkpoint_path(json_path: str | Path) -> Path:
    """``.../seed1.json`` -> ``.../seed1.ckpt.pt``."""
    p = Path(json_path)
    return p.with_name(p.name.removesuffix(".json") + CHECKPOINT_SUFFIX)


def cell_checkpoint(method, backbones_spec: str, identity: dict) -> dict:
    """What ``save_cell_checkpoint`` writes: the method's own state and how to rebuild it."""
    task = method.task
    return {"format": 1, "method": method.key,
            "state": {k: v.detach().cpu() for k, v in method.state_dict().items() if not k.startswith("encoders.")},
            "config": dataclasses.asdict(method.config),
            "effective_config": method.effective_config(),
            "task": {"name": task.name, "level": task.level, "class_names": list(task.class_names),
                     "num_segments": task.num_segments,
                     "prompt_names": list(getattr(task, "prompt_names", task.class_names))},
            "backbones": {"spec": backbones_spec,
                          "fingerprint": (identity.get("backbones") or {}).get("fingerprint")},
            "identity": identity}


def save_cell_checkpoint(path: str | Path, blob: dict) -> Path:
    import torch

    from avprompt.results import _atomic_write
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _atomic_write(path, path.name.removesuffix(CHECKPOINT_SUFFIX), lambda f: torch.save(blob, f))


def _read(cell: str | Path) -> tuple[dict, Path]:
    import torch
    p = Path(cell)
    ckpt = p if p.name.endswith(CHECKPOINT_SUFFIX) else checkpoint_path(p)
    if not ckpt.is_file():
        hint = ("rerun that cell with `avprompt bench ... --save-checkpoints --rerun`"
                if p.suffix == ".json" and p.is_file() else "give a cell's seed<S>.json or seed<S>.ckpt.pt")
        raise FileNotFoundError(f"no cell checkpoint {ckpt}: {hint}")
    try:
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise ValueError(f"cell checkpoint {ckpt} cannot be read ({type(e).__name__}: {e}); "
                         "rerun the cell with --save-checkpoints") from None
    if not isinstance(blob, dict) or blob.get("format") != 1 or "state" not in blob:
        raise ValueError(f"{ckpt} is not an avprompt cell checkpoint; rerun the cell with --save-checkpoints")
    return blob, ckpt


def load_cell(cell: str | Path, device: str = "cpu", encoders=None):
    """Rebuild the trained method of a cell. Returns (method, checkpoint dict)."""
    import torch

    from avprompt.encoders import load_encoders
    from avprompt.registry import get_method
    from avprompt.task import TaskSpec

    blob, ckpt = _read(cell)
    enc = encoders if encoders is not None else load_encoders(blob["backbones"]["spec"])
    want = blob["backbones"].get("fingerprint")
    got = enc.identity.get("fingerprint") if hasattr(enc, "identity") else None
    if want and got and want != got:
        raise ValueError(f"{ckpt} was trained on backbones {want}, but {blob['backbones']['spec']} now loads "
                         f"{got}; use the weights it was trained with")
    t = blob["task"]
    task = TaskSpec(t["name"], t["level"], tuple(t["class_names"]), num_segments=t["num_segments"])
    cls = get_method(blob["method"])
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    cfg = cls.default_config(**{k: v for k, v in blob["config"].items() if k in fields})
    torch.manual_seed(0)
    method = cls(enc, task, cfg).to(device)
    own = {k for k in method.state_dict() if not k.startswith("encoders.")}
    missing = sorted(own - set(blob["state"]))
    if missing:
        raise ValueError(f"{ckpt}: the checkpoint lacks {len(missing)} of the method's tensors (e.g. "
                         f"{missing[:3]}); it was saved by another version of {blob['method']}")
    method.load_state_dict(blob["state"], strict=False)
    return method.eval(), blob


def predict_videos(method, paths: Sequence[str | Path], device: str = "cpu") -> list[dict]:
    """Per video: {"video", "segments": [{"t", "label", "prob"}], "label", "prob"} (video tasks
    give the video label from the method's video output; segment tasks the most frequent
    non-background segment label). A file that cannot be decoded is a one-line ValueError."""
    import torch

    from avprompt.data.media import MediaError, decode_clip
    from avprompt.engine.batches import clip_inputs

    enc = method.encoders
    size = enc.vision.image_size if enc.vision is not None else 32
    rate = enc.audio.sample_rate if enc.audio is not None else 16000
    mean = enc.vision.image_mean if enc.vision is not None else (0.5, 0.5, 0.5)
    std = enc.vision.image_std if enc.vision is not None else (0.5, 0.5, 0.5)
    task = method.task
    names = list(task.class_names) + (["background"] if task.level == "segment" else [])
    out = []
    for path in paths:
        try:
            frames, wave, notes = decode_clip(path, size, rate)
        except MediaError as e:
            raise ValueError(f"{path}: {e}; give a readable mp4 (or a frames folder)") from None
        batch = {k: v.to(device) for k, v in
                 clip_inputs([(frames, wave)], mean, std, task.num_segments, "va").items()}
        with torch.no_grad():
            seg = method.segment_logits(batch).float().softmax(-1)[0]  # (T, K)
            whole = method(batch).float().softmax(-1)[0]  # (K) video tasks, (T, K) segment tasks
        segments = [{"t": i, "label": names[int(p.argmax())], "prob": round(float(p.max()), 4)}
                    for i, p in enumerate(seg)]
        if task.level == "video":
            label, prob = names[int(whole.argmax())], round(float(whole.max()), 4)
        else:
            events = [s["label"] for s in segments if s["label"] != "background"]
            label = max(set(events), key=events.count) if events else "background"
            prob = round(sum(s["prob"] for s in segments if s["label"] == label) / max(1, len(segments)), 4)
        out.append({"video": str(path), "segments": segments, "label": label, "prob": prob, "notes": notes})
    return out


def read_inputs(spec: str) -> list[str]:
    """``video.mp4`` or ``manifest:FILE`` (one path per line, or a CSV whose first column holds
    the paths, header allowed) -> the video paths."""
    if not spec.startswith("manifest:"):
        return [spec]
    path = Path(spec.removeprefix("manifest:"))
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    rows = [line.split(",")[0].strip() for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.lower() not in ("path", "video", "media")]
    if not rows:
        raise ValueError(f"manifest {path} lists no video")
    return [str((path.parent / r) if not Path(r).is_absolute() else r) for r in rows]
