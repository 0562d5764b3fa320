"""The supervised table: each head + encoder mode with its interval over seeds and test videos, and
paired differences between modes (the same test videos, the same seeds). numpy only (no torch):
``avprompt report`` and ``avprompt train`` print it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avprompt.results import FULL_SHOTS as FULL


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
    for m in sorted(cells, key=lambda m: (m != baseline, m)):
        seeds = sorted(cells[m])
        first = cells[m][seeds[0]][2]
        est, lo, hi = _two_level([cells[m][s][1] for s in seeds])
        row = {"method": m, "n_seeds": len(seeds), "metric": first["metrics"]["primary_metric"],
               "epochs": (first.get("config") or {}).get("epochs"),
               "trainable": (first.get("extra") or {}).get("trainable_params"),
               "mean": est, "ci": (lo, hi), "floor": first["metrics"].get("floor"),
               "unit": (first.get("extra") or {}).get("unit", "video"),
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
    unit = rows[0]["unit"]
    lines = [f"{task} ({rows[0]['metric']}, mean over seeds, 95% CI over seeds and test {unit}s)",
             f"{'head+encoder':<22} {'n':>2} {'epochs':>6} {'trainable':>10} {'mean':>6} {'95% CI':>15} "
             f"{'floor':>6}   vs baseline (paired)"]
    for r in rows:
        floor = f"{r['floor']:.1f}" if r["floor"] is not None else "-"
        vs = ""
        if "vs" in r:
            v = r["vs"]
            vs = (f"{v['diff']:+.1f} [{v['ci'][0]:+.1f}, {v['ci'][1]:+.1f}]{' *' if v['significant'] else ''}"
                  f" vs {v['baseline']}")
        lines.append(f"{r['method']:<22} {r['n_seeds']:>2} {r['epochs'] or '-':>6} {r['trainable'] or 0:>10,} "
                     f"{r['mean']:6.1f} [{r['ci'][0]:5.1f}, {r['ci'][1]:5.1f}] {floor:>6}   {vs}")
    lines.append(f"* the paired interval excludes 0; floor: the best constant predictor on the test {unit}s")
    if len({r["epochs"] for r in rows}) > 1:
        lines.append("note: the rows trained for different numbers of epochs (--max-epochs gives them one budget)")
    return "\n".join(lines)
