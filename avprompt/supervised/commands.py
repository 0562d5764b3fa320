"""What ``avprompt train`` / ``avprompt eval`` do: run cells into the store, score a checkpoint, and
the table with paired intervals between encoder modes (the same test videos, the same seeds)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from avprompt.supervised.run import FULL, TrainConfig, resolve, run_seed


def cell_key(cfg: TrainConfig, setup, ws, seed: int):
    from avprompt.results import CellKey
    return CellKey(suite=cfg.suite, task=setup.task.name, method=f"{setup.head_cls.key}+{cfg.encoder}",
                   backbones=ws.encoders.name, shots=FULL, seed=seed, data=ws.data_id)


def identity(cfg: TrainConfig, setup, ws, seed: int) -> dict:
    import json

    from avprompt.results import identity_hash
    config = json.loads(json.dumps({"head": setup.head_cls.key, **dataclasses.asdict(setup.head_cfg),
                                    "encoder": dataclasses.asdict(setup.enc_cfg), "epochs": setup.epochs},
                                   default=str))
    return {"suite": cfg.suite, "task": setup.task.name, "method": f"{setup.head_cls.key}+{cfg.encoder}",
            "shots": FULL, "seed": seed, "data": ws.data_identity(setup.task.name),
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
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"train_config": dataclasses.asdict(cfg), "seed": seed, "identity": ident,
                        "state": {k: v.cpu() for k, v in res["model"].trainable_state().items()}}, tmp)
            tmp.replace(ckpt)
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
    from avprompt.supervised.evaluate import score
    from avprompt.supervised.run import batches, build_model, data_splits, predict
    from avprompt.task import TaskSpec

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
    index, sp, _ = data_splits(ws, setup.task.name)
    model = build_model(ws, setup, len(index.classes))
    missing, unexpected = model.load_state_dict(blob["state"], strict=False)
    missing = [k for k in missing if not k.startswith("encoders.")]
    if missing or unexpected:
        raise ValueError(f"{path}: the checkpoint does not fit the model it describes "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    spec = TaskSpec(setup.task.name, "segment", tuple(index.classes), setup.task.num_segments)
    preds = predict(model, batches(ws, setup.task.name, spec, model, sp["test"], 16), ws.device)
    metrics = score(preds, sp["test"], len(index.classes))[0]
    return {"checkpoint": str(path), "task": setup.task.name, "primary_metric": setup.task.primary,
            "primary": metrics[setup.task.primary], "metrics": metrics, "n_test": len(sp["test"])}


# ----- the table: modes with intervals, paired differences ----------------------------------------
def _cells(root: str | Path, task: str) -> dict:
    """{method_id: {seed: (clip_ids, per-video primary scores, record)}} of ``task``'s supervised cells."""
    from avprompt.results import load_results, read_predictions
    out: dict = {}
    for r in load_results(root):
        key = r["key"]
        if key.get("shots") != FULL or key["task"] != task or r.get("status") != "ok":
            continue
        pred = read_predictions(r)
        metric = (r.get("metrics") or {}).get("primary_metric")
        if pred is None or f"video_{metric}" not in pred:
            continue
        out.setdefault(key["method"], {})[int(key["seed"])] = (pred["clip_ids"], pred[f"video_{metric}"], r)
    return out


def _two_level(per_seed: list[np.ndarray], b: int = 2000) -> tuple[float, float, float]:
    """Mean over seeds of per-video means, and a 95% interval resampling seeds and test videos."""
    from avprompt.stats import percentile_ci, resample_counts, resample_indices, seed_draws
    x = np.stack(per_seed)  # (S, N)
    s, n = x.shape
    w = resample_counts(resample_indices(n, b), n)  # (b, N) video multiplicities
    by_seed = (w @ x.T) / n  # (b, S): each seed's mean over the resampled videos
    draws = seed_draws(s, b)  # (b, S)
    reps = np.take_along_axis(by_seed, draws, 1).mean(1)
    est = float(x.mean())
    lo, hi = percentile_ci(reps, center=est)
    return est, lo, hi


def comparison(root: str | Path, task: str, baseline: str | None = None) -> list[dict]:
    """One row per head+mode: mean primary with its interval over seeds and test videos, and the
    paired difference to ``baseline`` (default: the frozen row) on the common seeds and videos."""
    cells = _cells(root, task)
    if baseline is None:
        baseline = next((m for m in sorted(cells) if m.endswith("+frozen")), None)
    rows = []
    for m in sorted(cells):
        seeds = sorted(cells[m])
        first = cells[m][seeds[0]][2]
        est, lo, hi = _two_level([cells[m][s][1] for s in seeds])
        row = {"method": m, "n_seeds": len(seeds), "metric": first["metrics"]["primary_metric"],
               "mean": est, "ci": (lo, hi), "floor": first["metrics"].get("floor"),
               "metrics": {k: float(np.mean([cells[m][s][2]["metrics"][k] for s in seeds]))
                           for k, v in first["metrics"].items() if isinstance(v, float) and k != "val_best"}}
        if baseline and m != baseline and baseline in cells:
            common = sorted(set(seeds) & set(cells[baseline]))
            diffs = []
            for s in common:
                ids_a, va, _ = cells[m][s]
                ids_b, vb, _ = cells[baseline][s]
                pos = {c: i for i, c in enumerate(ids_b)}
                keep = [i for i, c in enumerate(ids_a) if c in pos]
                diffs.append(va[keep] - vb[[pos[ids_a[i]] for i in keep]])
            if diffs and len({len(d) for d in diffs}) == 1:
                d, dlo, dhi = _two_level(diffs)
                row["vs"] = {"baseline": baseline, "diff": d, "ci": (dlo, dhi), "n_seeds": len(common),
                             "significant": not (dlo <= 0 <= dhi)}
        rows.append(row)
    return rows


def format_comparison(rows: list[dict], task: str) -> str:
    if not rows:
        return f"{task}: no supervised cells"
    lines = [f"{task} ({rows[0]['metric']}, mean over seeds, 95% CI over seeds and test videos)",
             f"{'head+encoder':<22} {'n':>2} {'mean':>6} {'95% CI':>15} {'floor':>6}   vs baseline (paired)"]
    for r in rows:
        floor = f"{r['floor']:.1f}" if r["floor"] is not None else "-"
        vs = ""
        if "vs" in r:
            v = r["vs"]
            vs = (f"{v['diff']:+.1f} [{v['ci'][0]:+.1f}, {v['ci'][1]:+.1f}]{' *' if v['significant'] else ''}"
                  f" vs {v['baseline']}")
        lines.append(f"{r['method']:<22} {r['n_seeds']:>2} {r['mean']:6.1f} [{r['ci'][0]:5.1f}, {r['ci'][1]:5.1f}] "
                     f"{floor:>6}   {vs}")
    lines.append("* the paired interval excludes 0")
    return "\n".join(lines)
