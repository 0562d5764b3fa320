"""Where a sweep's minutes went, from what it wrote: the world's generation time, the sweep's wall
time and every cell's own timings (train, evaluation), summed per method.

    python benchmarks/sweep_profile.py OUT/fewshot/synthav-small-0/standard [--world DIR] [--fit]

``--fit`` fits each method's cost model (``Method.cost_seconds``: seconds per cell + seconds per
training clip x epoch x lr candidate, ``avprompt.bench.cost_units``) to its cells' wall times by
least squares, for the printed time estimate of ``avprompt bench``.

Cell times are process time of the worker that ran the cell; with N workers they add up to about
N x the cells' wall time. Prints a Markdown table (the one in benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

GROUPS = {"zeroshot-clip": "zero-shot (3 methods)", "zeroshot-clap": "zero-shot (3 methods)",
          "zeroshot-av": "zero-shot (3 methods)"}


def profile(sweep: Path) -> dict:
    cells = collections.defaultdict(lambda: {"cells": 0, "train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0})
    for path in sweep.rglob("seed*.json"):
        if "explain" in path.parts:
            continue
        rec = json.loads(path.read_text())
        t = rec.get("timings") or {}
        row = cells[GROUPS.get(rec["key"]["method"], rec["key"]["method"])]
        row["cells"] += 1
        for k in ("train_s", "eval_s", "wall_s"):
            row[k] += float(t.get(k) or 0.0)
    stamp = json.loads((sweep / "sweep.json").read_text()) if (sweep / "sweep.json").is_file() else {}
    return {"methods": dict(cells), "sweep_wall_s": stamp.get("wall_s"), "cells_run": stamp.get("cells_run"),
            "jobs": (stamp.get("config") or {}).get("jobs")}


def fit_costs(sweep: Path) -> dict:
    """{method: (fixed_s, per_unit_s, cells, mean |relative error|)} from the cells' wall times."""
    import numpy as np

    from avprompt.bench import cost_units

    rows = collections.defaultdict(list)
    for path in sweep.rglob("seed*.json"):
        if "explain" in path.parts:
            continue
        rec = json.loads(path.read_text())
        wall = (rec.get("timings") or {}).get("wall_s")
        if rec.get("status") != "ok" or not wall:
            continue
        plan = argparse.Namespace(method=rec["key"]["method"], shots=rec["key"]["shots"],
                                  max_epochs=(rec.get("config") or {}).get("epochs"))
        rows[plan.method].append((cost_units(plan)[1], float(wall)))
    out = {}
    for method, pts in sorted(rows.items()):
        x, y = np.array(pts).T
        if np.ptp(x) > 0:
            per, fixed = np.polyfit(x, y, 1)
        else:
            per, fixed = 0.0, float(y.mean())
        fixed, per = max(0.0, float(fixed)), max(0.0, float(per))
        err = float(np.mean(np.abs(fixed + per * x - y) / np.maximum(y, 1e-3)))
        out[method] = (round(fixed, 2), float(f"{per:.2g}"), len(pts), round(err, 2))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="<out>/<suite>/<data>/<protocol> folder of a finished sweep")
    ap.add_argument("--world", type=Path, help="the SynthAV world folder (prints its generation time)")
    ap.add_argument("--fit", action="store_true", help="fit each method's cost_seconds to its cells")
    args = ap.parse_args(argv)
    if args.fit:
        print("| method | cost_seconds (per cell, per unit) | cells | mean relative error |\n|---|---|---:|---:|")
        for method, (fixed, per, n, err) in fit_costs(args.sweep).items():
            print(f"| {method} | ({fixed}, {per:g}) | {n} | {err:.0%} |")
        return
    prof = profile(args.sweep)
    if args.world and (args.world / "synthav.json").is_file():
        meta = json.loads((args.world / "synthav.json").read_text())
        print(f"world generation: {meta.get('generation_seconds')} s")
    if prof["sweep_wall_s"] is not None:
        print(f"cells phase wall (sweep.json, feature warm-up included): {prof['sweep_wall_s'] / 60:.1f} min, "
              f"{prof['cells_run']} cells")
    total = sum(r["wall_s"] for r in prof["methods"].values()) or 1.0
    print(f"\n| method | cells | cell-minutes | of which evaluation | share |\n|---|---:|---:|---:|---:|")
    for name, r in sorted(prof["methods"].items(), key=lambda kv: -kv[1]["wall_s"]):
        print(f"| {name} | {r['cells']} | {r['wall_s'] / 60:.1f} | {r['eval_s'] / 60:.1f} | "
              f"{100 * r['wall_s'] / total:.0f}% |")
    print(f"| all | {sum(r['cells'] for r in prof['methods'].values())} | {total / 60:.1f} | "
          f"{sum(r['eval_s'] for r in prof['methods'].values()) / 60:.1f} | 100% |")


if __name__ == "__main__":
    main()
