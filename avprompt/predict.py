"""Use a trained cell: its checkpoint (``bench --save-checkpoints``) on new videos.

A cell checkpoint (``seed<S>.ckpt.pt`` beside the cell's JSON) holds the method's own state (every
tensor outside the frozen encoders: context, adapters, DG-SCT modules, a fitted cache or probe)
and what is needed to rebuild it: the method key, its requested config, the task (name, level,
class names, segments) and the backbone spec with the weights' fingerprint. ``load_cell`` rebuilds
the method on the same backbones (a different weights file is an error) and loads the state
strictly; ``predict_videos`` decodes mp4 files the way the sweep does (10 segments of 1 s) and
returns per-segment labels and probabilities and the video label.

A cell trained by ``avprompt train`` (a supervised task: a task head on an encoder mode) is read
from the same ``seed<S>.ckpt.pt`` (it holds ``train_config`` instead of ``format``): the head and
the encoder mode's modules are rebuilt on the same backbones and loaded strictly. Tasks whose
head labels segments of a clip are served (``ave-sup``: C + 1-way per segment, background last;
``avvp``: multi-label per segment, each segment's most probable event plus every event the
reference decision rule keeps, in ``segments[t]["events"]``). Masks (avs-s4, avs-ms3) and answers
to questions (avqa) are not labels of a video: a one-line error points to ``avprompt eval``.
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

    from avprompt.atomic import atomic_write
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save(blob, f))


def _missing_hint(p: Path) -> str:
    """How to get a checkpoint for the cell at ``p`` (a supervised cell is rerun by `train`)."""
    if p.suffix == ".json" and p.is_file():
        try:
            import json

            from avprompt.tasks import get_task
            supervised = get_task(json.loads(p.read_text())["key"]["task"]).protocol == "supervised"
        except Exception:  # noqa: BLE001 - the hint only
            supervised = False
        return ("rerun that cell with `avprompt train ... --rerun` (it saves checkpoints)" if supervised
                else "rerun that cell with `avprompt bench ... --save-checkpoints --rerun`")
    return "give a cell's seed<S>.json or seed<S>.ckpt.pt"


def _read(cell: str | Path) -> tuple[dict, Path]:
    import torch
    p = Path(cell)
    ckpt = p if p.name.endswith(CHECKPOINT_SUFFIX) else checkpoint_path(p)
    if not ckpt.is_file():
        raise FileNotFoundError(f"no cell checkpoint {ckpt}: {_missing_hint(p)}")
    try:
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise ValueError(f"cell checkpoint {ckpt} cannot be read ({type(e).__name__}: {e}); "
                         "rerun the cell (`avprompt bench --save-checkpoints` or `avprompt train`)") from None
    if isinstance(blob, dict) and isinstance(blob.get("train_config"), dict) and "state" in blob:
        return blob, ckpt  # a supervised cell (`avprompt train`)
    if not isinstance(blob, dict) or blob.get("format") != 1 or "state" not in blob:
        raise ValueError(f"{ckpt} is not an avprompt cell checkpoint; rerun the cell with --save-checkpoints "
                         "(`avprompt bench`) or `avprompt train`")
    return blob, ckpt


def load_cell(cell: str | Path, device: str = "cpu", encoders=None):
    """Rebuild the trained method of a cell. Returns (method, checkpoint dict)."""
    import torch

    from avprompt.encoders import load_encoders
    from avprompt.registry import get_method
    from avprompt.task import TaskSpec

    blob, ckpt = _read(cell)
    if "train_config" in blob:
        return _load_supervised(blob, ckpt, device, encoders)
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


def _clip_batch(enc, path, num_segments: int, device) -> tuple[dict, list]:
    """One video decoded as the sweeps decode it (``num_segments`` segments of 1 s) -> (batch, notes)."""
    from avprompt.data.media import MediaError, decode_clip
    from avprompt.engine.batches import clip_inputs

    size = enc.vision.image_size if enc.vision is not None else 32
    rate = enc.audio.sample_rate if enc.audio is not None else 16000
    mean = enc.vision.image_mean if enc.vision is not None else (0.5, 0.5, 0.5)
    std = enc.vision.image_std if enc.vision is not None else (0.5, 0.5, 0.5)
    try:
        frames, wave, notes = decode_clip(path, size, rate)
    except MediaError as e:
        raise ValueError(f"{path}: {e}; give a readable mp4 (or a frames folder)") from None
    batch = {k: v.to(device) for k, v in clip_inputs([(frames, wave)], mean, std, num_segments, "va").items()}
    return batch, list(notes or [])


def _segment_rows(probs, names: list[str]) -> list[dict]:
    """(T, K) probabilities -> [{"t", "label", "prob"}] (the most probable name per segment)."""
    return [{"t": i, "label": names[int(p.argmax())], "prob": round(float(p.max()), 4)} for i, p in enumerate(probs)]


def _video_from_segments(segments: list[dict]) -> tuple[str, float]:
    """Segment tasks' video label: the most frequent non-background segment label; its prob is the
    mean over all segments of the probability of the segments given that label."""
    events = [s["label"] for s in segments if s["label"] != "background"]
    label = max(set(events), key=events.count) if events else "background"
    prob = round(sum(s["prob"] for s in segments if s["label"] == label) / max(1, len(segments)), 4)
    return label, prob


def predict_videos(method, paths: Sequence[str | Path], device: str = "cpu") -> list[dict]:
    """Per video: {"video", "segments": [{"t", "label", "prob"}], "label", "prob", "notes"} (video
    tasks give the video label from the method's video output; segment tasks the most frequent
    non-background segment label). ``method`` is what ``load_cell`` returns (a few-shot method or
    a supervised cell, ``SupervisedCell``). A file that cannot be decoded is a one-line ValueError."""
    import torch

    if isinstance(method, SupervisedCell):
        return method.predict(paths, device)
    task = method.task
    names = list(task.class_names) + (["background"] if task.level == "segment" else [])
    out = []
    for path in paths:
        batch, notes = _clip_batch(method.encoders, path, task.num_segments, device)
        with torch.no_grad():
            seg = method.segment_logits(batch).float().softmax(-1)[0]  # (T, K)
            whole = method(batch).float().softmax(-1)[0]  # (K) video tasks, (T, K) segment tasks
        segments = _segment_rows(seg, names)
        if task.level == "video":
            label, prob = names[int(whole.argmax())], round(float(whole.max()), 4)
        else:
            label, prob = _video_from_segments(segments)
        out.append({"video": str(path), "segments": segments, "label": label, "prob": prob, "notes": notes})
    return out


# ----------------------------------------------------------------- supervised cells (`avprompt train`)
#: what a supervised task's example source predicts when it is not labels of a video's segments
_NOT_LABELS = {"avs": "masks of the sounding object", "avqa": "answers to questions about a video"}


def _load_supervised(blob: dict, ckpt: Path, device: str, encoders=None):
    """Rebuild a supervised cell (encoder mode + task head) from its checkpoint: (cell, blob with
    "method" and "task" as the few-shot checkpoints have them)."""
    import types

    import torch

    from avprompt.encoders import load_encoders
    from avprompt.supervised.run import TrainConfig, build_model, resolve
    from avprompt.tasks import get_task, list_tasks

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in blob["train_config"].items() if k in fields})
    task = get_task(cfg.task)
    source = getattr(task, "source", "clips") or "clips"
    if source != "clips":
        served = ", ".join(t.name for t in list_tasks("supervised") if (t.source or "clips") == "clips")
        raise ValueError(f"{ckpt}: this {task.name} cell predicts {_NOT_LABELS.get(source, 'no labels of segments')}"
                         f", not labels of a video's segments; `avprompt predict` serves few-shot cells and "
                         f"{served}; score this one with `avprompt eval --checkpoint {ckpt}`")
    setup = resolve(cfg)
    method_id = blob.get("method") or f"{setup.head_cls.key}+{cfg.encoder}"
    facts = blob.get("task") or _task_facts_from_record(ckpt, task)
    names = list(facts["class_names"])
    enc = encoders if encoders is not None else load_encoders(cfg.backbones)
    want = ((blob.get("identity") or {}).get("backbones") or {}).get("fingerprint")
    got = enc.identity.get("fingerprint") if getattr(enc, "identity", None) else None
    if want and got and want != got:
        raise ValueError(f"{ckpt} was trained on backbones {want}, but {cfg.backbones} now loads {got}; "
                         "use the weights it was trained with")
    dev = torch.device(device)
    ws = types.SimpleNamespace(encoders=enc.to(dev), device=dev)
    context = dict(blob.get("head_context") or {})
    src = types.SimpleNamespace(context=lambda: context, num_classes=len(names))
    torch.manual_seed(0)
    model = build_model(ws, setup, src)
    missing, unexpected = model.load_state_dict(blob["state"], strict=False)
    missing = [k for k in missing if not k.startswith("encoders.")]
    if missing or unexpected:
        raise ValueError(f"{ckpt}: the checkpoint does not fit the model it describes (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); it was saved by another version of {method_id}")
    model.eval()
    return SupervisedCell(model, task, names, method_id), {**blob, "method": method_id, "task": facts}


def _task_facts_from_record(ckpt: Path, task) -> dict:
    """Class names of a checkpoint saved before they were stored in it: from the cell's JSON."""
    import json
    rec = ckpt.with_name(ckpt.name.removesuffix(CHECKPOINT_SUFFIX) + ".json")
    try:
        names = json.loads(rec.read_text())["class_names"]
    except Exception:  # noqa: BLE001 - one line below
        names = None
    if not names:
        raise ValueError(f"{ckpt} does not hold its class names and {rec} (the cell's record) cannot give them; "
                         "rerun the cell with `avprompt train ... --rerun`")
    return {"name": task.name, "level": task.level, "class_names": list(names), "num_segments": task.num_segments}


class SupervisedCell:
    """A trained supervised cell (``SupervisedModel``: encoder mode + head) with its task and class
    names; ``predict_videos`` labels videos with it. Rows dispatch on the head's output kind
    (``avprompt.heads`` contract): ``segment_scores`` or ``seg_prob_audio``/``seg_prob_visual``/
    ``video_prob``."""

    def __init__(self, model, task, class_names: list[str], key: str):
        self.model, self.task, self.class_names, self.key = model, task, list(class_names), key
        self.encoders = model.encoders

    def outputs(self, batch: dict, device) -> dict:
        """The head's ``predict`` outputs for one clip's batch, as float tensors without the batch axis."""
        import torch

        from avprompt.engine.loop import autocast
        with torch.no_grad(), autocast(torch.device(device)):
            out = self.model.head.predict(self.model(batch))
        return {k: v.float().cpu()[0] for k, v in out.items()}

    def predict(self, paths: Sequence[str | Path], device: str = "cpu") -> list[dict]:
        rows = []
        for path in paths:
            batch, notes = _clip_batch(self.encoders, path, self.task.num_segments, device)
            out = self.outputs(batch, device)
            if "segment_scores" in out:
                row = self._segments_with_background(out)
            elif "seg_prob_audio" in out:
                row = self._parsing(out)
                notes.append("multi-label: each segment's label is its most probable event (the larger of its "
                             "audio and visual probability); segments[t]['events'] lists every event kept by "
                             "the reference rule (segment and video probability >= 0.5)")
            else:
                raise ValueError(f"{self.key}: its head outputs {sorted(out)}, not labels of segments; "
                                 "score it with `avprompt eval --checkpoint`")
            rows.append({"video": str(path), **row, "notes": notes})
        return rows

    def _segments_with_background(self, out: dict) -> dict:
        """(T, C + 1) scores, background last: the argmax is the head's decision; the probability is
        the softmax over the C + 1 scores."""
        segments = _segment_rows(out["segment_scores"].softmax(-1), self.class_names + ["background"])
        label, prob = _video_from_segments(segments)
        return {"segments": segments, "label": label, "prob": prob}

    def _parsing(self, out: dict) -> dict:
        """AVVP: per-segment audio / visual probabilities (T, C) and the video's (C)."""
        import numpy as np

        from avprompt.data.avvp_metrics import decide
        pa, pv, vp = out["seg_prob_audio"], out["seg_prob_visual"], out["video_prob"]
        keep_a, keep_v = decide(pa[None].numpy(), pv[None].numpy(), vp[None].numpy())  # (1, C, T) each
        names = self.class_names
        segments = _segment_rows(np.maximum(pa.numpy(), pv.numpy()), names)
        for s in segments:
            t, events = s["t"], []
            for c in range(len(names)):
                a, v = bool(keep_a[0, c, t]), bool(keep_v[0, c, t])
                if a or v:
                    events.append({"label": names[c], "modality": "audio-visual" if a and v else
                                   ("audio" if a else "visual"),
                                   "prob": round(max(float(pa[t, c]) if a else 0.0, float(pv[t, c]) if v else 0.0), 4)})
            s["events"] = sorted(events, key=lambda e: -e["prob"])
        video_events = [{"label": names[c], "prob": round(float(vp[c]), 4)}
                        for c in np.argsort(-vp.numpy()) if float(vp[c]) >= 0.5]
        return {"segments": segments, "label": names[int(vp.argmax())], "prob": round(float(vp.max()), 4),
                "video_events": video_events}


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
