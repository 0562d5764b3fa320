"""Zero-shot transfer: pre-train each trainable method on VGG-Sound 40K, evaluate on targets by name.

For each method: train on the pre-training set's train split (all clips), select the epoch on its
held-out split (never on a target's test), save the checkpoint, then build the method for each
target task's class names, load every learned tensor whose name and shape carry over (context,
adapters, DG-SCT modules: nothing is re-initialised at transfer) and evaluate. Results go to the
same store with shots = 0 (suite ``zeroshot``); the pre-training cell itself is stored under
suite ``pretrain``. Training-free zero-shot methods (``zeroshot-*``) are evaluated directly.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ZeroShotConfig:
    pretrain: str = "vggsound40k"
    targets: list[str] = field(default_factory=lambda: ["ave", "ave-cls", "llp-cls"])
    methods: str = "all"
    seed: int = 1
    data: str = "synthav"
    backbones: str = "synthav"
    out: str = "results/synthav"
    device: str = "auto"
    max_epochs: int | None = 5
    from_checkpoint: str | None = None  # a checkpoint folder from an earlier run
    synth_size: str = field(default_factory=lambda: os.environ.get("AVPROMPT_SYNTH_SIZE", "small"))


def run_zeroshot(cfg: ZeroShotConfig, echo=print) -> dict:
    import torch

    from avprompt.bench import BenchConfig, _workspace, select_methods, summarize_store
    from avprompt.engine.cell import CellPlan, run_cell
    from avprompt.registry import get_method
    from avprompt.results import CellKey, build_result, cell_done, write_result

    if cfg.pretrain != "vggsound40k":
        raise ValueError(f"--pretrain {cfg.pretrain!r}: only vggsound40k is supported")
    bench = BenchConfig(data=cfg.data, backbones=cfg.backbones, device=cfg.device, out=cfg.out,
                        suite="zeroshot", synth_size=cfg.synth_size, tasks=cfg.targets)
    ws = _workspace(bench)
    ckpt_dir = Path(cfg.from_checkpoint or Path(cfg.out) / "checkpoints")
    ran = failed = 0
    for key in select_methods(cfg.methods):
        cls = get_method(key)
        direct = cls.training_free and key.startswith("zeroshot")
        if cls.training_free and not direct or getattr(cls, "needs_fit", False):
            continue  # needs target shots (Tip-Adapter cache, linear probe): not a zero-shot method
        mod = cls.supported_modalities[0] if not cls.cacheable else cls.default_config().modality
        ckpt = ckpt_dir / f"{key}@{mod}.pt"
        if not direct and not ckpt.exists():
            if cfg.from_checkpoint:
                raise FileNotFoundError(f"--from-checkpoint {cfg.from_checkpoint}: no {ckpt.name} in it")
            echo(f"pre-training {key}@{mod} on {cfg.pretrain}")
            plan = CellPlan(cfg.pretrain, key, mod, None, cfg.seed, max_epochs=cfg.max_epochs)
            out = run_cell(ws, plan)
            method = out.pop("method_obj")
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v for k, v in method.state_dict().items() if not k.startswith("encoders.")}
            torch.save(state, ckpt)
            pk = CellKey("pretrain", cfg.pretrain, key, ws.encoders.name, 0, cfg.seed, mod)
            write_result(cfg.out, build_result(pk, "ok", out["metrics"], out["config"], out["extra"]))
        for task in cfg.targets:
            k = CellKey("zeroshot", task, key, ws.encoders.name, 0, cfg.seed, mod)
            if cell_done(cfg.out, k):
                continue
            plan = CellPlan(task, key, mod, 0, cfg.seed, checkpoint_in=None if direct else str(ckpt))
            try:
                out = run_cell(ws, plan)
                out.pop("method_obj")
                out["extra"]["checkpoint"] = None if direct else str(ckpt)
                rec = build_result(k, "ok", out["metrics"], out["config"], out["extra"])
            except Exception as e:
                rec = build_result(k, "failed", {}, {}, {}, error=f"{type(e).__name__}: {e}")
                failed += 1
            write_result(cfg.out, rec)
            ran += 1
    summary = summarize_store(dataclasses.replace(bench, plot=str(Path(cfg.out) / "zeroshot" / "curves.png")), echo)
    return {"ran": ran, "failed": failed, **summary}
