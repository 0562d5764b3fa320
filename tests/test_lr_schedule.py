"""The loop's learning-rate schedule comes from ``torch.optim.lr_scheduler`` and gives, epoch by
epoch, the closed forms the methods' recipes state (CoOp: constant warm-up at 1e-5, then cosine)."""
from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from avprompt.engine.loop import build_optimizer, build_scheduler


def _closed_form(cfg, epoch: int, epochs: int) -> float:
    """The recipes' formula (with warm-up only when epochs follow it)."""
    warm = cfg.warmup_epochs if epochs > cfg.warmup_epochs else 0
    if epoch < warm:
        return cfg.warmup_lr
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * (epoch - warm) / max(1, epochs - warm)))
    if cfg.schedule == "multistep":
        return cfg.lr * 0.5 ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


@pytest.mark.parametrize("schedule", ["cosine", "multistep", "constant"])
@pytest.mark.parametrize("warmup,epochs", [(0, 1), (0, 7), (1, 1), (1, 5), (2, 50), (3, 12)])
def test_schedule_matches_the_closed_form_for_every_group(schedule, warmup, epochs):
    cfg = SimpleNamespace(optimizer="sgd", lr=2e-3, momentum=0.9, weight_decay=5e-4, schedule=schedule,
                          warmup_epochs=warmup, warmup_lr=1e-5, milestones=(3, 6, 9))
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]},
              {"params": [torch.nn.Parameter(torch.zeros(2))], "lr_scale": 10.0}]
    opt = build_optimizer(groups, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scheduler-order or deprecation warning
        sched = build_scheduler(opt, cfg, epochs)
        for epoch in range(epochs):
            want = _closed_form(cfg, epoch, epochs)
            for group, scale in zip(opt.param_groups, (1.0, 10.0)):
                assert group["lr"] == pytest.approx(want * scale, rel=1e-9, abs=1e-15), (epoch, scale)
            opt.step()
            sched.step()


def test_unknown_schedule_is_named():
    cfg = SimpleNamespace(optimizer="sgd", lr=1e-3, momentum=0.0, weight_decay=0.0, schedule="linear",
                          warmup_epochs=0, warmup_lr=1e-5)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    with pytest.raises(ValueError, match="schedule='linear'"):
        build_scheduler(opt, cfg, 3)


def test_adam_uses_the_fused_kernel_with_the_same_update():
    """Adam(W) run fused where it applies; the update equals the per-tensor loop's."""
    torch.manual_seed(0)
    for name in ("adam", "adamw"):
        cfg = SimpleNamespace(optimizer=name, lr=1e-2, weight_decay=1e-3, momentum=0.9)
        a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
        b = [torch.nn.Parameter(p.detach().clone()) for p in a]
        opt = build_optimizer([{"params": a}], cfg)
        assert opt.defaults["fused"] is True
        ref = (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(b, lr=1e-2, weight_decay=1e-3, foreach=False)
        for step in range(3):
            for ps in (a, b):
                for i, p in enumerate(ps):
                    p.grad = torch.full_like(p, 0.1 * (i + 1) * (step + 1))
            opt.step()
            ref.step()
        for p, q in zip(a, b):
            assert torch.allclose(p, q, atol=1e-6)
