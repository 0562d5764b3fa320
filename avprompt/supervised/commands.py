"""What ``avprompt train`` / ``avprompt eval`` do: run cells into the store, score a checkpoint, and
the table with paired intervals between encoder modes (the same test videos, the same seeds)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from avprompt.results import FULL_SHOTS as FULL  # a supervised cell trains on the whole training set
from avprompt.atomic import atomic_write
from avprompt.supervised.run import TrainConfig, resolve, run_seed


def cell_key(cfg: TrainConfig, setup, ws, seed: int):
    from avprompt.results import CellKey
    return CellKey(suite=cfg.suite, task=setup.task.name, method=f"{setup.head_cls.key}+{cfg.encoder}",
                   backbones=ws.backbone_name, shots=FULL, seed=seed, data=ws.data_id)


def identity(cfg: TrainConfig, setup, ws, seed: int) -> dict:
    import json

    from avprompt.results import identity_hash
    from avprompt.supervised.sources import source_for
    config = json.loads(json.dumps({"head": setup.head_cls.key, **dataclasses.asdict(setup.head_cfg),
                                    "encoder": dataclasses.asdict(setup.enc_cfg), "epochs": setup.epochs},
                                   default=str))
    return {"suite": cfg.suite, "task": setup.task.name, "method": f"{setup.head_cls.key}+{cfg.encoder}",
            "shots": FULL, "seed": seed, "data": source_for(ws, setup.task).data_identity(),
            "backbones": ws.backbone_identity, "config": config, "config_hash": identity_hash(config)}


def train_supervised(cfg: TrainConfig, echo=print, progress=None) -> list[dict]:
    """Run (or reuse) one cell per seed; returns [{"path", "status", "primary", "reused"}]."""
    import torch

    from avprompt.engine.workspace import Workspace
    from avprompt.results import (build_result, cell_state, peak_memory_mb, predictions_path, result_path,
                                  write_predictions, write_result)

    setup = resolve(cfg)
    ws = Workspace(cfg.data, cfg.backbones, cfg.device, cfg.synth_size, workers=cfg.workers)
    out = []
    for seed in cfg.seeds:
        key, ident = cell_key(cfg, setup, ws, seed), identity(cfg, setup, ws, seed)
        path = result_path(cfg.out, key)
        state, detail = cell_state(cfg.out, key, ident)
        if state == "done" and not cfg.rerun:
            out.append({"path": str(path), "status": "ok", "reused": True,
                        "primary": _read_primary(path)})
            continue
        if state == "stale":
            echo(f"rerun {key.task} {key.method} seed {seed}: {detail}")
        res = run_seed(ws, cfg, setup, seed, progress=progress)
        extra = {**res["extra"], "identity": ident, "peak_memory_mb": peak_memory_mb(str(ws.device)),
                 "effective_config": ident["config"]}
        record = build_result(key, "ok", res["metrics"], {**ident["config"], "sweep": _sweep(cfg)}, extra)
        write_predictions(cfg.out, key, res["predictions"])
        record["predictions"] = predictions_path(cfg.out, key).name
        if cfg.save_checkpoints:
            ckpt = path.with_suffix(".ckpt.pt")
            head = res["model"].head
            blob = {"train_config": dataclasses.asdict(cfg), "seed": seed, "identity": ident,
                    "state": {k: v.cpu() for k, v in res["model"].trainable_state().items()},
                    # what `avprompt predict` needs to rebuild the head without the data
                    "method": key.method, "head_context": dict(head.context),
                    "task": {"name": setup.task.name, "level": setup.task.level,
                             "class_names": list(res["extra"]["class_names"]),
                             "num_segments": setup.task.num_segments}}
            atomic_write(ckpt, lambda f: torch.save(blob, f))
            record["checkpoint"] = ckpt.name
        write_result(cfg.out, record)
        out.append({"path": str(path), "status": "ok", "reused": False, "primary": res["metrics"]["primary"]})
    return out


def _sweep(cfg: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("overrides", "rerun")}


def _read_primary(path) -> float | None:
    from avprompt.results import read_result
    return (read_result(path).get("metrics") or {}).get("primary")


def eval_checkpoint(checkpoint: str | Path, data: str | None = None, device: str = "cpu") -> dict:
    """Rebuild a trained cell from its ``.ckpt.pt`` and score it on the test split of ``data``
    (default: the data it was trained on). Returns the metrics in percent."""
    import torch

    from avprompt.engine.workspace import Workspace
    from avprompt.supervised.run import build_model, predict
    from avprompt.supervised.sources import source_for

    path = Path(checkpoint)
    if path.is_dir():
        found = sorted(path.rglob("*.ckpt.pt"))
        if len(found) != 1:
            raise ValueError(f"--checkpoint {path}: expected one *.ckpt.pt under it, found {len(found)}; "
                             "name the file")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file (run `avprompt train` first)")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**{**blob["train_config"], "device": device, **({"data": data} if data else {})})
    setup = resolve(cfg)
    ws = Workspace(cfg.data, cfg.backbones, cfg.device, cfg.synth_size)
    src = source_for(ws, setup.task)
    model = build_model(ws, setup, src)
    missing, unexpected = model.load_state_dict(blob["state"], strict=False)
    missing = [k for k in missing if not k.startswith("encoders.")]
    if missing or unexpected:
        raise ValueError(f"{path}: the checkpoint does not fit the model it describes "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    metrics = src.score(predict(model, src.batches(model, "test", 16), ws.device), "test")[0]
    return {"checkpoint": str(path), "task": setup.task.name, "primary_metric": setup.task.primary,
            "primary": metrics[setup.task.primary], "metrics": metrics, "n_test": len(src.splits()["test"])}
