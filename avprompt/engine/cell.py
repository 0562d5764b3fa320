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
from avprompt.method import Method
from avprompt.registry import get_method
from avprompt.tasks import few_shot_task


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
    select: str = "val"  # "val": initial state and every epoch compete on validation; "last": last epoch


def method_config(cls, plan: CellPlan):
    cfg = cls.default_config(modality=plan.modality)
    cfg = apply_overrides(cfg, plan.overrides, where=f"overrides for {cls.key}")
    shots_known = plan.shots is not None
    epochs = cfg.epochs_for(plan.shots) if hasattr(cfg, "epochs_for") and shots_known else cfg.epochs
    if plan.max_epochs:
        epochs = min(epochs, plan.max_epochs)
    return cfg, epochs


def _batches(ws, task_name, task, method, records, shuffle_seed=None, batch_size=None):
    """Iterator factory of method batches (features for methods that run on features, clips otherwise)."""
    bs = batch_size or method.config.batch_size
    mods = "".join(method.modalities)
    if method.runs_on == "features":
        # one cache lookup for the whole set (a lookup hashes the tower's identity), then rows per batch
        row = {id(r): i for i, r in enumerate(records)}
        feats = {m: ws.features(task_name, m, records, audio_pass=method.config.audio_pass)
                 for m in mods} if records else {}

    def make(chunk):
        b = target_tensors(task, chunk)
        if method.runs_on == "features":
            idx = torch.tensor([row[id(r)] for r in chunk], dtype=torch.long)
            for m in mods:
                b["feat_" + m] = feats[m][idx]
        else:
            b.update(ws.clips(task_name).inputs(chunk, mods))
        return b
    return iterate(records, bs, make, shuffle_seed)


def _feature_set(ws, task_name, task, method, records) -> dict:
    out = target_tensors(task, records)
    for m in method.modalities:
        out["feat_" + m] = ws.features(task_name, m, records, audio_pass=method.config.audio_pass)
    return out


def run_cell(ws, plan: CellPlan, progress=None) -> dict:
    """Train and evaluate one cell; returns the metrics/config/extra parts of a result.

    ``progress(total_epochs, row)`` is called after every epoch (row: epoch, loss, lr, val)."""
    from avprompt.data.metrics import compute_metrics
    from avprompt.data.stats import metric_floors

    t_wall = time.perf_counter()
    # the task's definition, looked up once and handed to the callees (the plan and the record
    # keep its name)
    task_def = few_shot_task(plan.task)
    index = ws.index(task_def)
    task = task_spec(task_def, index)
    split = make_split(index, task_def, plan.protocol, shots=plan.shots, seed=plan.seed)
    by_id = {r.clip_id: r for r in index.records}
    bad = ws.bad_clips(plan.task)
    train = [by_id[c] for c in split.train if c not in bad]
    val = [by_id[c] for c in split.val if c not in bad]
    test = [by_id[c] for c in split.test if c not in bad]

    cls = get_method(plan.method)
    checkpoint = load_checkpoint(plan.checkpoint_in, ws.device) if plan.checkpoint_in else None
    carried = {}
    if checkpoint:
        overrides, carried = transfer_config(cls, plan.overrides, checkpoint)
        plan = dataclasses.replace(plan, overrides=overrides)
    cfg, epochs = method_config(cls, plan)
    check_splits(plan, cls, split, train, val, test, bad)
    reference_batch = cfg.batch_size
    if cls.trains and train and cfg.batch_size > len(train):
        # a batch larger than the training set would make every epoch one step
        cfg = dataclasses.replace(cfg, batch_size=len(train))

    def validate_fn(method):
        def validate():
            logits = loop.predict(method, _batches(ws, plan.task, task, method, val, batch_size=16), ws.device)
            return compute_metrics(task_def, plan.protocol, logits, val)["primary"]
        return validate

    def build_and_train(cfg_run):
        """One candidate: build (seeded), load a transfer, fit, train with selection on validation."""
        torch.manual_seed(plan.seed)
        method = cls(ws.encoders, task, cfg_run).to(ws.device)
        transfer = load_transferable(method, checkpoint["state"]) if checkpoint else None
        fitted, fit_kwargs = {}, {}
        if val and cls.fits and fit_takes_score(method):
            # hyper-parameters chosen on the task's primary metric of the method's own
            # (fused) output on validation, as every trained method's epoch is
            fit_kwargs["score"] = lambda logits: compute_metrics(task_def, plan.protocol, logits, val)["primary"]
        if cls.fits and train:
            fitted = method.fit(_feature_set(ws, plan.task, task, method, train),
                                _feature_set(ws, plan.task, task, method, val), **fit_kwargs) or {}
        report = loop.TrainReport()
        if cls.trains and train and epochs > 0:
            report = loop.train(method, lambda e: _batches(ws, plan.task, task, method, train,
                                                           shuffle_seed=plan.seed * 1000 + e),
                                validate_fn(method) if val else None, epochs, ws.device, patience=plan.patience,
                                progress=None if progress is None else (lambda row: progress(epochs, row)),
                                select=plan.select)
        return method, transfer, fitted, report, fit_kwargs

    # Reference learning rates assume CLIP's logit scale (100); on towers with another scale a
    # method may declare multipliers to search on validation (never on test).
    multipliers = tuple(getattr(cfg, "lr_search", ()) or ())
    search = len(multipliers) > 1 and cls.trains and bool(train) and bool(val) and plan.select == "val" and epochs > 0
    lr_search = []
    if search:
        best = None
        for m in multipliers:
            cand = build_and_train(dataclasses.replace(cfg, lr=cfg.lr * m))
            lr_search.append({"multiplier": m, "lr": cfg.lr * m, "val": cand[3].best_val,
                              "best_epoch": cand[3].best_epoch})
            if best is None or cand[3].best_val > best[1][3].best_val:  # ties: the earlier (closer to ×1)
                best = (m, cand)
        chosen, (method, transfer, fitted, report, fit_kwargs) = best
        if chosen != 1:
            method.record_change("lr", cfg.lr, cfg.lr * chosen,
                                 f"x{chosen:g} of the reference, selected on validation from "
                                 f"{'/'.join(f'x{m:g}' for m in multipliers)}")
    else:
        method, transfer, fitted, report, fit_kwargs = build_and_train(cfg)
    if (val and train and cls.trains and epochs > 0
            and getattr(cls, "after_training", Method.after_training) is not Method.after_training):
        # once, on the selected candidate (not inside the lr search)
        after = method.after_training(_feature_set(ws, plan.task, task, method, val), **fit_kwargs)
        if after:
            fitted = {**fitted, "after_training": after}
    if cfg.batch_size != reference_batch:
        method.record_change("batch_size", reference_batch, cfg.batch_size,
                             f"the training set has {len(train)} clips (a batch never exceeds it)")
    t_eval = time.perf_counter()
    logits = loop.predict(method, _batches(ws, plan.task, task, method, test, batch_size=16), ws.device)
    metrics = compute_metrics(task_def, plan.protocol, logits, test)
    predictions = per_video_predictions(task, logits, test)
    # constant-predictor floors of every metric, on exactly the clips this cell was scored on
    floors = metric_floors(task_def, plan.protocol, test, num_classes=len(index.classes))
    metrics["floors"] = {m: v for m, v in floors.items() if m != "primary"}
    metrics["floor"] = floors.get("primary")
    metrics["val_best"] = report.best_val
    eval_s = time.perf_counter() - t_eval
    # "v: a photo of a {}." per branch and template, as recorded in every result
    templates = [f"{m}: {t}" for m, ts in (getattr(method, "templates", None) or {}).items() for t in ts]
    return {
        "metrics": metrics,
        # the config that ran: shrinks and preset resolutions applied (the requested one is in
        # the record's identity); every change from a reference value is listed with its reason
        "config": {**method.effective_config(), "epochs": epochs, "protocol": plan.protocol,
                   "patience": plan.patience, "select": plan.select},
        "extra": {
            "class_names": list(task.class_names), "prompt_names": task.prompt_names,
            "prompt_templates": templates, "split_hash": split.hash, "split_notes": split.notes,
            "n_train": len(train), "n_val": len(val), "n_test": len(test), "bad_media": len(bad),
            "dataset": ws.data_id, "backbone": ws.backbone_name, "protocol": plan.protocol,
            "fitted": fitted, "history": report.history, "best_epoch": report.best_epoch,
            "select": plan.select, "initial_val": report.initial_val,
            **({"did_not_learn": ("the initial state (before any update) scored best on validation "
                                  f"({report.initial_val:.1f}); no epoch beat it") if report.best_epoch < 0 else
                                 (f"the selected epoch ({report.best_epoch}) is a warm-up epoch at lr "
                                  f"{getattr(cfg, 'warmup_lr', 0):g}, which leaves the model at its initial state "
                                  f"(validation {report.best_val:.1f} vs {report.initial_val:.1f} before any "
                                  "update); no trained epoch beat it")} if report.did_not_learn else {}),
            **({"lr_search": lr_search} if lr_search else {}),
            "timings": {"train_s": report.train_s, "eval_s": eval_s,
                        "wall_s": time.perf_counter() - t_wall},
            "device": str(ws.device),
            "reference_changes": method.reference_changes(),
            **({"transfer": {**transfer, "carried_from_pretraining": carried}} if transfer else {}),
            "trainable_params": sum(p.numel() for p in method.trainable_parameters()),
        },
        "method_obj": method,
        "predictions": predictions,
    }


def fit_takes_score(method) -> bool:
    """Whether ``method.fit`` accepts ``score`` (plug-ins written before it: ``fit(train, val)``)."""
    import inspect
    params = inspect.signature(method.fit).parameters
    return "score" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def per_video_predictions(task, logits, records) -> dict:
    """Per-video test outputs, stored beside the record (``results.write_predictions``) so that
    ``report`` can bootstrap over test videos and pair methods on the same videos.

    clip_ids (N,); logits float16 (float32 beyond |256|) (N, T, K) for segment tasks, (N, K) (mean over T) for video
    tasks; segment_labels int16 (N, T) (-1 = background); video_labels uint8 (N, C) multi-hot.
    """
    import numpy as np
    x = np.asarray(logits, dtype=np.float32)
    if task.level != "segment" and x.ndim == 3:
        x = x.mean(axis=1)
    classes = len(task.class_names)
    multi_hot = np.zeros((len(records), classes), dtype=np.uint8)
    for i, r in enumerate(records):
        multi_hot[i, [c for c in r.video_labels if 0 <= c < classes]] = 1
    return {"clip_ids": np.array([r.clip_id for r in records]),
            # float16 halves the store; logits beyond its fine range (a Tip-Adapter-F cache at a large
            # lr reaches 1e15) would overflow to inf or tie, so those cells keep float32
            "logits": x.astype(np.float16 if np.isfinite(x).all() and np.abs(x).max(initial=0) < 256 else np.float32),
            "segment_labels": np.array([r.segment_labels for r in records], dtype=np.int16),
            "video_labels": multi_hot}


def check_splits(plan: CellPlan, cls, split, train, val, test, bad) -> None:
    """One-line errors for a cell that would otherwise train nothing or score nothing."""
    where = f"task {plan.task} ({plan.protocol} protocol, seed {plan.seed})"
    if not test:
        why = (f"all {len(split.test)} test clips have bad media (listed in the media cache report; "
               "`avprompt data stats` shows them)") if split.test else "the test split is empty"
        raise ValueError(f"{where}: no test clip to score: {why}; check the dataset's test annotations")
    needs_train = cls.kind != "zero-shot" and plan.shots != 0 and plan.checkpoint_in is None
    if needs_train and not train:
        why = f"all {len(split.train)} have bad media" if split.train else "the train split has no eligible clip"
        raise ValueError(f"{where}: no training clip for {plan.method} at K={plan.shots}: {why}; "
                         "check the dataset's train annotations")
    if needs_train and not val:
        # training still means something without selection: the last epoch is kept, and said so
        import warnings
        why = f"all {len(split.val)} have bad media" if split.val else "the validation split is empty"
        warnings.warn(f"{where}: no validation clip ({why}): {plan.method} keeps its last epoch "
                      "(no model selection); add val rows for selection", stacklevel=2)


def load_checkpoint(path: str, device) -> dict:
    """A pre-training checkpoint: {"state": tensors, "effective_config": ..., "reference_changes": [...]}
    (older files hold the bare state dict). One-line error naming the file when it is not one."""
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}); "
                         "rerun the pre-training (delete the file) or pass another --from-checkpoint") from None
    if isinstance(blob, dict) and isinstance(blob.get("state"), dict):
        return blob
    if isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return {"state": blob, "effective_config": None, "reference_changes": []}
    raise ValueError(f"checkpoint {path} holds a {type(blob).__name__}, not a method state; "
                     "rerun the pre-training (delete the file)")


def transfer_config(cls, user: dict, checkpoint: dict) -> tuple[dict, dict]:
    """The target's overrides at a zero-shot transfer, and the values carried from pre-training.

    Values a method resolves from the task (``cls.carried_at_transfer``, e.g. DG-SCT's gamma by
    task level) follow the pre-training unless the user set them; architecture values
    (``transfer_overrides``) always follow it."""
    eff = checkpoint.get("effective_config") or {}
    carried = {f: eff[f] for f in cls.carried_at_transfer if f in eff and f not in user}
    return {**carried, **user, **transfer_overrides(checkpoint)}, carried


# Optimiser values a pre-training may have changed (CoCoOp's lr by the logit scale, a batch cut to
# the training set): a transfer target never trains, so they are not carried. Carried, they were
# recorded as the target's reference and rescaled again (lr 0.002 -> 0.0134 -> 0.090 in the record).
TRAINING_FIELDS = frozenset({"lr", "batch_size", "epochs", "warmup_epochs", "weight_decay", "momentum"})


def transfer_overrides(checkpoint: dict) -> dict:
    """Architecture values pre-training changed from the reference (e.g. a context length shrunk
    to fit the pre-training class names): the target method is built with the same values, so the
    learned tensors fit. Optimiser values (``TRAINING_FIELDS``) stay the target's own."""
    out = {}
    for c in checkpoint.get("reference_changes") or []:
        if "field" not in c or c["field"] in TRAINING_FIELDS:
            continue
        used = (checkpoint.get("effective_config") or {}).get(c["field"], c["used"])
        if isinstance(used, dict):  # branches ran with different values: the config takes one
            raise ValueError(f"the checkpoint's {c['field']} differs per branch ({used}); transfer needs one "
                             "value: pre-train with that field set explicitly")
        out[c["field"]] = used
    return out


def load_transferable(method, state: dict) -> dict:
    """Load a pre-trained state into a method built for other classes.

    Every learned tensor whose name and shape match carries over (context, adapters, DG-SCT
    modules); class-specific tensors (class-specific context, cached class text features) cannot.
    Returns {"loaded": [...], "not_loaded": {name: reason}, "untransferred_trainable": [...]}
    (trainable target parameters that start fresh). A transfer that loads none of the
    checkpoint's learned tensors raises: its "zero-shot" number would be an untrained model."""
    own = method.state_dict()
    learned = {k: v for k, v in state.items() if not k.startswith("encoders.")}
    keep, not_loaded = {}, {}
    for k, v in learned.items():
        if k not in own:
            not_loaded[k] = "not in the target method"
        elif own[k].shape != v.shape:
            not_loaded[k] = f"shape {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the target"
        else:
            keep[k] = v
    trainable = [n for n, p in method.named_parameters() if p.requires_grad]
    if learned and not any(k in keep for k in trainable):
        names = ", ".join(f"{k} ({why})" for k, why in list(not_loaded.items())[:3])
        raise ValueError(f"transfer loaded none of {method.key}'s learned parameters from the checkpoint "
                         f"(e.g. {names}); the pre-trained method does not fit the target")
    method.load_state_dict(keep, strict=False)
    fresh = sorted(n for n in trainable if n not in keep)
    if fresh:
        import warnings
        warnings.warn(f"transfer: {len(fresh)} learned tensors of {method.key} did not load and start "
                      f"untrained: {', '.join(fresh[:5])}", stacklevel=2)
    return {"loaded": sorted(keep), "not_loaded": not_loaded, "untransferred_trainable": fresh}
