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
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


def default_targets() -> list[str]:
    """``--targets`` when none is given: the tasks whose file sets ``zeroshot_target``."""
    from avprompt.tasks import list_tasks
    return [t.name for t in list_tasks() if t.zeroshot_target]


@dataclass
class ZeroShotConfig:
    pretrain: str = "vggsound40k"
    targets: list[str] = field(default_factory=default_targets)
    methods: str = "all"
    seed: int = 1
    data: str = "synthav"
    backbones: str = "synthav"
    out: str = "runs"
    device: str = "auto"
    max_epochs: int | None = 5
    from_checkpoint: str | None = None  # a checkpoint folder from an earlier run
    overrides: dict = field(default_factory=dict)  # {method_key: {option: value}}, pre-training and evaluation
    synth_size: str = field(default_factory=lambda: os.environ.get("AVPROMPT_SYNTH_SIZE", "small"))


def run_zeroshot(cfg: ZeroShotConfig, echo=print) -> dict:
    import warnings

    import torch
    from avprompt.atomic import atomic_write
    from avprompt.progress import progress

    from avprompt.bench import (BenchConfig, _workspace, cell_identity, cell_key, check_writable,
                                echo_grouped_notes, select_methods, summarize_store)
    from avprompt.engine.cell import CellPlan, run_cell
    from avprompt.registry import get_method
    from avprompt.results import (build_result, cell_done, peak_memory_mb, predictions_path, write_predictions,
                                  write_result)

    from avprompt.tasks import task_names
    pretrain_tasks = task_names(protocol="pretrain")  # the task files with protocol="pretrain"
    if cfg.pretrain not in pretrain_tasks:
        raise ValueError(f"--pretrain {cfg.pretrain!r}: only {' or '.join(pretrain_tasks)} is supported")
    if cfg.max_epochs is not None and cfg.max_epochs < 0:
        raise ValueError(f"--max-epochs {cfg.max_epochs}: must be 0 (no cap) or positive")
    bench = BenchConfig(data=cfg.data, backbones=cfg.backbones, device=cfg.device, out=cfg.out,
                        suite="zeroshot", synth_size=cfg.synth_size, tasks=cfg.targets, seeds=[cfg.seed]).validate()
    check_writable(cfg.out, "--out")
    ws = _workspace(bench)
    for task in [cfg.pretrain, *cfg.targets]:  # fail fast: every dataset must be there
        ws.index(task)
    ckpt_dir = Path(cfg.from_checkpoint or Path(cfg.out) / "checkpoints")
    methods = [k for k in select_methods(cfg.methods) if get_method(k).kind in ("zero-shot", "train")]
    for key in cfg.overrides:
        if key not in methods:
            raise ValueError(f"--set {key}.*: {key!r} is not among the zero-shot methods run "
                             f"({', '.join(methods)})")
    outcomes = []

    def record(key, plan, fn):
        """Run ``fn`` (returns run_cell's output), record ok or failed with warnings, never raise."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = fn()
            out.pop("method_obj", None)
            predictions = out.pop("predictions", None)
            out["extra"]["warnings"] = sorted({str(w.message) for w in caught
                                               if not issubclass(w.category, (DeprecationWarning, FutureWarning))})
            out["extra"]["peak_memory_mb"] = peak_memory_mb(str(ws.device))
            out["extra"]["identity"] = cell_identity(dataclasses.replace(bench, suite=key.suite), plan, ws)
            rec = build_result(key, "ok", out["metrics"], out["config"], out["extra"])
            if predictions is not None:
                write_predictions(cfg.out, key, predictions)
                rec["predictions"] = predictions_path(cfg.out, key).name
        except Exception as e:  # noqa: BLE001 - recorded and printed; the run goes on
            rec = build_result(key, "failed", {}, {}, {}, error=f"{type(e).__name__}: {e}")
        write_result(cfg.out, rec)
        outcomes.append({"path": key, "status": rec["status"], "error": rec["error"], "warnings": rec["warnings"],
                         "reference_changes": [{"method": key.method, **c} for c in rec["reference_changes"]]})
        return rec

    bar = progress(methods, desc="zero-shot methods", unit="method")
    for key in bar:
        cls = get_method(key)
        direct = cls.kind == "zero-shot"
        mod = cls.default_config().modality if cls.runs_on == "features" else cls.supported_modalities[0]
        bar.set_postfix_str(f"{key}@{mod}")
        opts = cfg.overrides.get(key, {})
        # a checkpoint is reused only for the same method options: they are part of its name
        tag = "" if not opts else "-" + hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:8]
        ckpt = ckpt_dir / f"{key}@{mod}{tag}.pt"
        if not direct and not ckpt.exists():
            if cfg.from_checkpoint:
                raise FileNotFoundError(f"--from-checkpoint {cfg.from_checkpoint}: no {ckpt.name} in it")
            echo(f"pre-training {key}@{mod} on {cfg.pretrain}")
            plan = CellPlan(cfg.pretrain, key, mod, None, cfg.seed, max_epochs=cfg.max_epochs,
                            overrides=dict(cfg.overrides.get(key, {})))
            state = {}

            def pretrain():
                out = run_cell(ws, plan)
                method = out["method_obj"]
                state["blob"] = {"state": {k: v for k, v in method.state_dict().items()
                                           if not k.startswith("encoders.")},
                                 "effective_config": out["config"],
                                 "reference_changes": out["extra"].get("reference_changes", [])}
                return out
            # stored with shots 0 (the store's "no few-shot K"); the identity keeps shots None (all clips)
            pk = dataclasses.replace(cell_key(bench, dataclasses.replace(plan, shots=0), ws.backbone_name),
                                     suite="pretrain")
            rec = record(pk, plan, pretrain)
            if rec["status"] != "ok":
                echo(f"FAILED pre-training {key}@{mod}: {rec['error']}")
                continue
            atomic_write(ckpt, lambda f: torch.save(state["blob"], f))
        for task in cfg.targets:
            plan = CellPlan(task, key, mod, 0, cfg.seed, checkpoint_in=None if direct else str(ckpt),
                            overrides=dict(cfg.overrides.get(key, {})))
            k = cell_key(bench, plan, ws.backbone_name)
            if cell_done(cfg.out, k, cell_identity(bench, plan, ws)):
                continue

            def transfer(plan=plan):
                out = run_cell(ws, plan)
                out["extra"]["checkpoint"] = plan.checkpoint_in
                return out
            record(k, plan, transfer)
    failed = [o for o in outcomes if o["status"] != "ok"]
    for o in failed:
        echo(f"FAILED {o['path'].suite} {o['path'].task} {o['path'].method_id}: {o['error']}")
    echo_grouped_notes(outcomes, echo)
    summary = summarize_store(bench, echo)
    echo(f"{len(outcomes)} cells run, {len(failed)} failed; results in {Path(cfg.out) / 'zeroshot'}")
    return {"ran": len(outcomes), "failed": len(failed), **summary}
