"""One result cell: (task, method, modality, shots, seed) trained and evaluated by the shared loop.

Split (seeded shots; validation disjoint from shots and test) -> method with its config ->
training-free fitting and/or the shared training loop with selection on validation -> test
metrics -> a self-describing result record. Cacheable methods train from frozen features.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from avprompt.config import apply_overrides
from avprompt.data.splits import make_split
from avprompt.data.tasks import task_spec
from avprompt.engine import loop
from avprompt.engine.batches import iterate, target_tensors
from avprompt.registry import get_method


@dataclasses.dataclass
class CellPlan:
    task: str
    method: str
    modality: str
    shots: int
    seed: int
    protocol: str = "standard"
    overrides: dict = dataclasses.field(default_factory=dict)
    max_epochs: int | None = None  # cap (embedded quick sweeps); None or 0 = the method's own epochs
    patience: int = 0
    checkpoint_in: str | None = None  # trained state to start from (zero-shot transfer)


def method_config(cls, plan: CellPlan):
    cfg = cls.default_config(modality=plan.modality)
    cfg = apply_overrides(cfg, plan.overrides, where=f"overrides for {cls.key}")
    shots_known = plan.shots is not None
    epochs = cfg.epochs_for(plan.shots) if hasattr(cfg, "epochs_for") and shots_known else cfg.epochs
    if plan.max_epochs:
        epochs = min(epochs, plan.max_epochs)
    return cfg, epochs


def _batches(ws, task_name, task, method, records, shuffle_seed=None, batch_size=None):
    """Iterator factory of method batches (features for cacheable methods, clips otherwise)."""
    bs = batch_size or method.config.batch_size
    mods = "".join(method.modalities)

    def make(chunk):
        b = target_tensors(task, chunk)
        if method.cacheable:
            for m in mods:
                b["feat_" + m] = ws.features(task_name, m, chunk)
        else:
            b.update(ws.clips(task_name).inputs(chunk, mods))
        return b
    return iterate(records, bs, make, shuffle_seed)


def _feature_set(ws, task_name, task, method, records) -> dict:
    out = target_tensors(task, records)
    for m in method.modalities:
        out["feat_" + m] = ws.features(task_name, m, records)
    return out


def run_cell(ws, plan: CellPlan, progress=None) -> dict:
    """Train and evaluate one cell; returns the metrics/config/extra parts of a result.

    ``progress(total_epochs, row)`` is called after every epoch (row: epoch, loss, lr, val)."""
    from avprompt.data.metrics import compute_metrics
    from avprompt.data.stats import constant_floors

    t_wall = time.perf_counter()
    index = ws.index(plan.task)
    task = task_spec(plan.task, index)
    split = make_split(index, plan.task, plan.protocol, shots=plan.shots, seed=plan.seed)
    by_id = {r.clip_id: r for r in index.records}
    bad = ws.bad_clips(plan.task)
    train = [by_id[c] for c in split.train if c not in bad]
    val = [by_id[c] for c in split.val if c not in bad]
    test = [by_id[c] for c in split.test if c not in bad]

    cls = get_method(plan.method)
    cfg, epochs = method_config(cls, plan)
    torch.manual_seed(plan.seed)
    method = cls(ws.encoders, task, cfg).to(ws.device)
    if plan.checkpoint_in:
        state = torch.load(plan.checkpoint_in, map_location=ws.device)
        load_transferable(method, state)

    fitted = {}
    if (cls.training_free or getattr(cls, "needs_fit", False)) and train:
        fitted = method.fit(_feature_set(ws, plan.task, task, method, train),
                            _feature_set(ws, plan.task, task, method, val)) or {}

    def validate():
        logits = loop.predict(method, _batches(ws, plan.task, task, method, val, batch_size=16), ws.device)
        return compute_metrics(plan.task, plan.protocol, logits, val)["primary"]

    report = loop.TrainReport()
    if not cls.training_free and train and epochs > 0:
        report = loop.train(method, lambda e: _batches(ws, plan.task, task, method, train,
                                                       shuffle_seed=plan.seed * 1000 + e),
                            validate if val else None, epochs, ws.device, patience=plan.patience,
                            progress=None if progress is None else (lambda row: progress(epochs, row)))
    t_eval = time.perf_counter()
    logits = loop.predict(method, _batches(ws, plan.task, task, method, test, batch_size=16), ws.device)
    metrics = compute_metrics(plan.task, plan.protocol, logits, test)
    floors = constant_floors(index, plan.task).get(plan.protocol, {})
    metrics["floor"] = floors.get("primary")
    metrics["val_best"] = report.best_val
    eval_s = time.perf_counter() - t_eval
    # "v: a photo of a {}." per branch and template, as recorded in every result
    templates = [f"{m}: {t}" for m, ts in (getattr(method, "templates", None) or {}).items() for t in ts]
    return {
        "metrics": metrics,
        "config": {**dataclasses.asdict(cfg), "epochs": epochs, "protocol": plan.protocol,
                   "patience": plan.patience},
        "extra": {
            "class_names": list(task.class_names), "prompt_names": task.prompt_names,
            "prompt_templates": templates, "split_hash": split.hash, "split_notes": split.notes,
            "n_train": len(train), "n_val": len(val), "n_test": len(test), "bad_media": len(bad),
            "dataset": ws.data_id, "backbone": ws.encoders.name, "protocol": plan.protocol,
            "fitted": fitted, "history": report.history, "best_epoch": report.best_epoch,
            "timings": {"train_s": report.train_s, "eval_s": eval_s,
                        "wall_s": time.perf_counter() - t_wall},
            "device": str(ws.device),
            "trainable_params": sum(p.numel() for p in method.trainable_parameters()),
        },
        "method_obj": method,
    }


def load_transferable(method, state: dict) -> list[str]:
    """Load a pre-trained state into a method built for other classes: every tensor whose name
    and shape match carries over (learned context, adapters, DG-SCT modules); class-specific
    tensors (e.g. class-specific context, cached class text features) are rebuilt. Returns the
    names that did not carry over."""
    own = method.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith("encoders.")}
    method.load_state_dict(keep, strict=False)
    return sorted(k for k in own if k not in keep and not k.startswith("encoders."))
