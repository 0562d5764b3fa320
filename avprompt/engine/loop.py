"""The one training loop and the one evaluator every method goes through (fairness is the product).

Optimiser, schedule, warm-up and epochs come from the method's config; gradient clipping,
bf16 autocast on GPU, model selection and early stopping on validation data only, deterministic
given the seed. The best epoch's trainable state is restored before the test evaluation.

Selection (``select="val"``): the method's initial state is evaluated on validation before any
update (history row ``epoch: -1``) and competes with every epoch; ties go to the later epoch
(the more-trained model), so a noisy, flat validation curve never silently keeps the untrained
model. ``TrainReport.did_not_learn`` is True when the initial state still wins. ``select="last"``
keeps the last epoch (the reference implementations' rule); validation is still recorded.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch


@dataclass
class TrainReport:
    epochs_run: int = 0
    best_epoch: int = -1
    best_val: float = float("nan")
    history: list[dict] = field(default_factory=list)
    train_s: float = 0.0
    steps: int = 0
    initial_val: float = float("nan")
    select: str = "val"
    warmup_epochs: int = 0  # epochs run at the constant warm-up lr (CoOp's recipe: 1e-5)

    @property
    def did_not_learn(self) -> bool:
        """The selected state is the initial one (evaluated before any update) or a warm-up
        epoch's, whose steps at the warm-up lr (1e-5) leave the model where it started."""
        return self.select == "val" and self.best_epoch < self.warmup_epochs and self.epochs_run > 0


def _fusable(params: list) -> bool:
    """Adam(W)'s fused kernel takes floating-point tensors on CPU or CUDA."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)


def build_optimizer(params: list, cfg) -> torch.optim.Optimizer:
    """``params``: tensors, or param-group dicts whose ``lr_scale`` multiplies the schedule's lr.

    Adam and AdamW use torch's fused kernel where it applies: the same update in one kernel per
    step instead of ~10 small ops per tensor (DG-SCT's 347 tensors: its optimizer step 13.5 ->
    3.2 ms on one CPU thread, ~4% of a step on the embedded towers)."""
    params = list(params)
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if name in ("adam", "adamw"):
        opt = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **({"fused": True} if _fusable(params) else {}))
    raise ValueError(f"optimizer={cfg.optimizer!r}: use sgd, adam or adamw")


SCHEDULES = ("cosine", "multistep", "constant")


def build_scheduler(opt: torch.optim.Optimizer, cfg, epochs: int):
    """The per-epoch learning-rate schedule, from ``torch.optim.lr_scheduler`` (stepped once after
    each epoch): ``warmup_epochs`` at the constant ``warmup_lr`` (CoOp's recipe; only when epochs
    follow it), then over the remaining epochs cosine annealing from ``lr`` towards 0, x0.5 at
    each of ``milestones`` (counted from epoch 0), or constant. A param group's ``lr_scale``
    multiplies its learning rate throughout."""
    from torch.optim import lr_scheduler as sched
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule={cfg.schedule!r}: use cosine, multistep or constant")
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] = cfg.lr * group.get("lr_scale", 1.0)
    warm = cfg.warmup_epochs if epochs > cfg.warmup_epochs else 0
    if cfg.schedule == "cosine":
        main = sched.CosineAnnealingLR(opt, T_max=max(1, epochs - warm), eta_min=0.0)
    elif cfg.schedule == "multistep":
        milestones = getattr(cfg, "milestones", (10, 20, 30))
        main = sched.MultiStepLR(opt, milestones=[max(0, m - warm) for m in milestones], gamma=0.5)
    else:
        main = sched.ConstantLR(opt, factor=1.0, total_iters=0)
    if not warm:
        return main
    warmup = sched.ConstantLR(opt, factor=cfg.warmup_lr / cfg.lr, total_iters=warm)
    return sched.SequentialLR(opt, [warmup, main], milestones=[warm])


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device):
    """bf16 autocast on GPU; plain fp32 on CPU (CPU bf16 is slower than fp32 on most machines)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(method, batches: Iterable[dict], device) -> np.ndarray:
    """Logits for every batch, concatenated: (N, T, K) segment tasks, (N, K) video tasks."""
    method.eval()
    out = []
    for batch in batches:
        with autocast(device):
            out.append(method(_to(batch, device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0,))


def _shard(batch: dict) -> dict:
    """Under torch.distributed, each rank keeps rows rank::world of every batch tensor."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return batch
    r, w = dist.get_rank(), dist.get_world_size()
    return {k: v[r::w] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in batch.items()}


def _ddp(method):
    """DistributedDataParallel over the method when a process group is up (torchrun), else itself.

    DDP averages gradients over ranks, so with equal shards a step equals the single-process
    step on the whole batch for losses that are means over samples."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return method
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(method, find_unused_parameters=False)


def _trainable_state(method) -> dict:
    """A copy of the method's state without the frozen encoders (never walked: their state dict
    alone costs milliseconds per call, and selection copies the state after every epoch)."""
    enc = getattr(method, "encoders", None)
    state = {k: v.detach() for k, v in method._parameters.items() if v is not None}
    state.update({k: v for k, v in method._buffers.items()
                  if v is not None and k not in method._non_persistent_buffers_set})
    for name, child in method.named_children():
        if child is not enc:
            state.update({f"{name}.{k}": v for k, v in child.state_dict().items()})
    return copy.deepcopy(state)


def train(method, train_batches: Callable[[int], Iterable[dict]], validate: Callable[[], float] | None,
          epochs: int, device, patience: int = 0, eval_every: int = 1, progress=None,
          select: str = "val") -> TrainReport:
    """Train ``method``'s trainable parameters.

    train_batches(epoch) yields the epoch's batches (shuffled by the caller's seeded generator);
    validate() returns the validation primary metric (higher is better), or None to keep the
    last epoch. ``patience`` > 0 stops after that many evaluations without improvement.
    ``select``: "val" (initial state and every epoch compete, ties to the later) or "last".
    A non-finite loss raises FloatingPointError (the cell is then recorded as failed).
    """
    cfg = method.config
    groups = method.param_groups()
    params = [p for g in groups for p in g["params"]]
    report = TrainReport()
    if epochs <= 0 or not params:
        return report
    report.warmup_epochs = cfg.warmup_epochs if epochs > cfg.warmup_epochs else 0
    if select not in ("val", "last"):
        raise ValueError(f"select={select!r}: use val or last")
    report.select = select
    opt = build_optimizer(groups, cfg)
    schedule = build_scheduler(opt, cfg, epochs)
    model = _ddp(method)
    best_state, since_best = None, 0
    t0 = time.perf_counter()
    if validate is not None:
        # the true initial state, before any update: the baseline every epoch must beat
        report.initial_val = report.best_val = float(validate())
        best_state = _trainable_state(method)
        report.history.append({"epoch": -1, "loss": float("nan"), "lr": 0.0, "val": report.initial_val})
    for epoch in range(epochs):
        method.train()
        method.start_epoch(epoch)
        losses = []
        for batch in train_batches(epoch):
            batch = _to(_shard(batch), device)
            with autocast(device):
                loss = method.loss(model(batch), batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at epoch {epoch} step {report.steps}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip and cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            report.steps += 1
        row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": opt.param_groups[0]["lr"]}
        if epoch < epochs - 1:  # after the last epoch the groups keep the lrs it ran at
            schedule.step()
        last = epoch == epochs - 1
        if validate is not None and ((epoch + 1) % eval_every == 0 or last):
            row["val"] = val = float(validate())
            if val > report.best_val:
                since_best = 0
            else:
                since_best += 1
            # ties go to the later epoch (NaN-safe: a NaN best is always replaced)
            if select == "val" and not (val < report.best_val):
                report.best_val, report.best_epoch = val, epoch
                best_state = _trainable_state(method)
        report.history.append(row)
        report.epochs_run = epoch + 1
        if progress is not None:
            progress(row)
        if patience and since_best >= patience:
            break
    if select == "val" and best_state is not None:
        method.load_state_dict(best_state, strict=False)
    else:
        report.best_epoch = report.epochs_run - 1
        if validate is not None and report.history and "val" in report.history[-1]:
            report.best_val = report.history[-1]["val"]
    report.train_s = time.perf_counter() - t0
    return report
