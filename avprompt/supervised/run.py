"""``avprompt train``: a supervised task = the shared encoder (an encoder mode) + a task head, trained
on the task's full training set by the one training loop, selected on validation, scored on test.

One result cell per (task, head + encoder mode, seed) in the same store as the few-shot sweeps:
``<out>/supervised/<data>/standard/<task>/<head>+<mode>/<backbones>/full/seed<S>.json`` with its
per-video test scores beside it (``.pred.npz``, read by the paired comparison) and the trained
state (``.ckpt.pt``: encoder-mode modules + head, never the frozen towers) for ``avprompt eval``.
A cell is reused when its identity (data, backbones, resolved configs, seed) is unchanged.

Cost: ``frozen`` trains the head on cached per-segment features (each clip encoded once, shared
with the few-shot sweeps); ``dg-sct`` / ``lavish`` run the towers every step. What an example is,
how it is batched and scored is the task's example source (``avprompt.supervised.sources``).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from avprompt.config import apply_overrides


@dataclass
class TrainConfig:
    """Everything a supervised run depends on (saved, resolved, in every result)."""

    task: str = "ave-sup"
    encoder: str = "frozen"  # "frozen" | "dg-sct" | "lavish"
    head: str = ""  # "" = the task's default head
    seeds: list[int] = field(default_factory=lambda: [1])
    data: str = "synthav"
    backbones: str = "synthav"
    synth_size: str = dataclasses.field(default_factory=lambda: os.environ.get("AVPROMPT_SYNTH_SIZE", "small"))
    device: str = "auto"
    out: str = "runs"
    suite: str = "supervised"
    # epoch cap for in-network modes (the towers run every step: ~10x a frozen epoch); None = head's
    max_epochs_in_network: int | None = 4
    max_epochs: int | None = None
    overrides: dict = field(default_factory=dict)  # flat: head-config and encoder-config fields
    save_checkpoints: bool = True
    rerun: bool = False
    workers: int = 1


class SupervisedModel(nn.Module):
    """Encoder mode + head as one module the shared loop trains (``avprompt.engine.loop.train``).

    ``encoders`` (the frozen towers) is held but never trained, walked or saved: the loop's
    state copies skip it and ``train()`` keeps it in eval mode (dropout off, as every method)."""

    def __init__(self, encoders, mode, head):
        super().__init__()
        self.encoders, self.mode, self.head = encoders, mode, head
        self.config = head.config  # the loop's optimisation fields
        for p in encoders.parameters():
            p.requires_grad_(False)

    def forward(self, batch: dict) -> dict:
        if self.head.needs_tokens:  # dense heads: every vision block's tokens, from the same pass
            f_v, f_a, tokens = self.mode(batch, tokens=True)
            return self.head(f_v, f_a, {**batch, "tokens_v": tokens})
        f_v, f_a = self.mode(batch)  # (B, T, D_v), (B, T, D_a)
        return self.head(f_v, f_a, batch)

    def loss(self, out: dict, batch: dict) -> torch.Tensor:
        return self.head.loss(out, batch)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in list(self.mode.trainable_parameters()) + list(self.head.parameters()) if p.requires_grad]

    def param_groups(self) -> list[dict]:
        return [{"params": self.trainable_parameters()}]

    def start_epoch(self, epoch: int) -> None:
        pass

    def trainable_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoders.")}

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoders.eval()
        return self


def split_overrides(overrides: dict, head_cls, enc_cls) -> tuple[dict, dict]:
    """Flat ``key=value`` overrides -> (head config fields, encoder config fields)."""
    head_f = {f.name for f in dataclasses.fields(head_cls.config_class)}
    enc_f = {f.name for f in dataclasses.fields(enc_cls)} - {"mode"}
    unknown = sorted(set(overrides) - head_f - enc_f)
    if unknown:
        raise ValueError(f"--set {unknown[0]}=...: not a field of head {head_cls.key!r} "
                         f"({', '.join(sorted(head_f))}) nor of the encoder mode "
                         f"({', '.join(sorted(enc_f))})")
    return ({k: v for k, v in overrides.items() if k in head_f}, {k: v for k, v in overrides.items() if k in enc_f})


@dataclass
class Setup:
    """Resolved pieces of one run (shared by ``train`` and ``eval``)."""

    task: object
    head_cls: type
    head_cfg: object
    enc_cfg: object
    epochs: int


def resolve(cfg: TrainConfig) -> Setup:
    from avprompt.heads import get_head
    from avprompt.supervised.encoder_modes import EncoderConfig
    from avprompt.tasks import get_task

    task = get_task(cfg.task)
    if task.protocol != "supervised":
        raise ValueError(f"--task {task.name} is a {task.protocol} task; `avprompt train` runs supervised "
                         "tasks (see `avprompt tasks`); run it with `avprompt bench --tasks ...`")
    head_cls = get_head(cfg.head or task.head)
    if task.name not in head_cls.tasks:
        raise ValueError(f"--head {head_cls.key} serves {', '.join(head_cls.tasks)}, not {task.name}")
    h, e = split_overrides(cfg.overrides, head_cls, EncoderConfig)
    head_cfg = apply_overrides(head_cls.config_class(), h, where=f"--set for head {head_cls.key}")
    enc_cfg = apply_overrides(EncoderConfig(mode=cfg.encoder), e, where="--set for the encoder mode")
    epochs = head_cfg.epochs
    cap = cfg.max_epochs_in_network if cfg.encoder != "frozen" else None
    for c in (cap, cfg.max_epochs):
        if c:
            epochs = min(epochs, c)
    return Setup(task, head_cls, head_cfg, enc_cfg, epochs)


def build_model(ws, setup: Setup, source) -> SupervisedModel:
    """Encoder mode + head for ``source``'s outputs; the head's context = the vision tower's token
    facts + the source's own (``avprompt.heads`` contract)."""
    from avprompt.supervised.encoder_modes import build_encoder_mode
    mode = build_encoder_mode(ws.encoders, setup.enc_cfg)
    vt = ws.encoders.vision
    context = {"vision_width": vt.width, "vision_grid": tuple(vt.grid), "vision_depth": len(vt.blocks),
               **source.context()}
    head = setup.head_cls(tuple(mode.dims), source.num_classes, setup.head_cfg, context)
    return SupervisedModel(ws.encoders, mode, head).to(ws.device)


@torch.no_grad()
def predict(model: SupervisedModel, batch_iter, device) -> dict:
    """The head's ``predict`` outputs over all batches, concatenated as numpy arrays."""
    from avprompt.engine.loop import _to, autocast
    model.eval()
    parts: dict[str, list] = {}
    for batch in batch_iter:
        with autocast(device):
            out = model.head.predict(model(_to(batch, device)))
        for k, v in out.items():
            parts.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def run_seed(ws, cfg: TrainConfig, setup: Setup, seed: int, progress=None) -> dict:
    """Train, select on validation, score on test: the parts of one result record."""
    from avprompt.engine import loop
    from avprompt.supervised.sources import source_for

    t0 = time.perf_counter()
    task = setup.task
    src = source_for(ws, task)
    sp = src.splits()
    torch.manual_seed(seed)
    model = build_model(ws, setup, src)
    bs = min(setup.head_cfg.batch_size, len(sp["train"]))

    def validate():
        return src.score(predict(model, src.batches(model, "val", 16), ws.device), "val")[0][task.primary]

    report = loop.train(model, lambda e: src.batches(model, "train", bs, seed * 1000 + e),
                        validate, setup.epochs, ws.device, progress=progress, select="val")
    t_eval = time.perf_counter()
    preds = predict(model, src.batches(model, "test", 16), ws.device)
    metrics, per_video = src.score(preds, "test")
    metrics["primary"] = metrics[task.primary]
    metrics["primary_metric"] = task.primary
    # every reported metric the task declares or scores per unit (an aggregate-only metric such
    # as the AVS F-score has a floor too)
    metrics["floors"] = src.floors("test", [m for m in metrics if m in per_video or m in task.metrics])
    metrics["floor"] = metrics["floors"].get(task.primary)
    metrics["val_best"] = report.best_val
    return {
        "metrics": metrics, "model": model, "report": report,
        "predictions": {"clip_ids": src.ids("test"),
                        **{f"video_{k}": v for k, v in per_video.items()}, **src.stored_predictions(preds)},
        "extra": {"class_names": src.class_names, "dataset": ws.data_id, "backbone": ws.backbone_name,
                  "protocol": "standard", **src.extra(), "unit": src.unit, "history": report.history,
                  "best_epoch": report.best_epoch, "initial_val": report.initial_val,
                  **({"did_not_learn": f"the initial state scored best on validation ({report.initial_val:.1f})"}
                     if report.did_not_learn else {}),
                  "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
                  "timings": {"train_s": report.train_s, "eval_s": time.perf_counter() - t_eval,
                              "wall_s": time.perf_counter() - t0},
                  "device": str(ws.device)},
    }
