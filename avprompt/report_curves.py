"""Metric-vs-shots curves from a results table (``avprompt.report``'s ``plot_curves``).

A panel per task; by default each method on its best branch (one line per method, one colour per
method kept across panels), 95% bands (two-level bootstrap, or Student t), the constant-predictor
floor dashed, the metric's name on the y-axis, the x-axis over the shot counts that ran, the legend
below the panels (never clipped). The file format follows the suffix: .png, .pdf or .svg.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from avprompt import report_notes as N
from avprompt import stats as S
from avprompt.report_notes import add_paper_columns


def shot_position(shots: int) -> float:
    """x position on the log2 shot axis: 0 for zero-shot, 1 + log2(K) for K shots."""
    return 0.0 if shots == 0 else 1.0 + math.log2(shots)


METRIC_LABELS = {"segment_acc": "segment accuracy (%)", "video_acc": "video accuracy (%)",
                 "macro_map": "macro mAP (%)", "reference_acc": "accuracy, reference rule (%)",
                 "single_label_acc": "single-label accuracy (%)"}


def best_branches(summ: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method, backbones, data, protocol) keep the branch (v / a / av) with the highest
    mean over the shot counts it ran (ties: the first by name); one line per method."""
    s = summ.assign(_base=summ["method_id"].str.split("@").str[0])
    keys = ["task", "_base", "backbones", "data", "protocol"]
    score = s.groupby(keys + ["method_id"], dropna=False)["mean"].mean().reset_index()
    score = score.sort_values(keys + ["mean", "method_id"], ascending=[True] * len(keys) + [False, True])
    keep = set(map(tuple, score.drop_duplicates(keys)[["task", "method_id", "backbones", "data", "protocol"]]
                   .itertuples(index=False)))
    rows = [tuple(r) in keep for r in s[["task", "method_id", "backbones", "data", "protocol"]].itertuples(index=False)]
    return summ[rows]


def plot_curves(df: pd.DataFrame, path: str | Path, floors: dict[str, float] | None = None,
                paper: pd.DataFrame | None = None, metric: str = "primary",
                summary: pd.DataFrame | None = None, resamples: int = S.DEFAULT_B,
                branches: str = "best") -> Path:
    """Metric-vs-shots curves, one panel per task, one line per (method, backbones).

    ``branches="best"`` (default) draws each method on its best branch (``best_branches``), so a
    panel has one line per method; ``"all"`` draws every branch (line style v solid, a dotted,
    av dashed). Each method keeps one colour across panels; the y-axis names the metric; the
    x-axis spans the shot counts that ran; the format follows the suffix (.png, .pdf, .svg).

    Shaded band (error bar for a lone point): the row's 95% interval, the two-level bootstrap
    over seeds and test videos where predictions are stored, else Student t over seeds (none
    for one seed without predictions); the panel title gives the seeds per point. ``summary``:
    a ``summarize`` result to reuse (its intervals, no second bootstrap), else one is made with
    ``resamples`` replicates. Dashed grey line: the task's constant-predictor floor of
    ``metric`` (``floors`` or the mean of the cells' floors, ``cell_floors``). Hollow diamonds:
    paper numbers for the plotted rows, paired like with like (``add_paper_columns``). A store
    holding several data or protocols gets one line per (method, backbones, data, protocol).
    Uses the Agg canvas directly, so no global backend is set.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if summary is not None:
        summ = summary.drop(columns=[c for c in ("paper", "paper_source", "paper_note")
                                     if c in summary])
        metric = summary.attrs.get("metric", metric)
    else:
        from avprompt.report import _aggregate, _engine
        summ = _aggregate(df, metric, ["data", "protocol", "task", "method_id", "backbones",
                                       "shots"], 0.95, _engine(resamples))
    if summ.empty:
        raise ValueError(f"no finished results with metric {metric!r} to plot")
    if floors is None and "floor" in summ.columns:
        floors = summ.groupby("task")["floor"].mean().dropna().to_dict()
    if paper is not None:
        summ = add_paper_columns(summ, paper, metric)
    if branches not in ("best", "all"):
        raise ValueError(f"branches={branches!r}: use best or all")
    if branches == "best":
        summ = best_branches(summ)
    tasks = sorted(summ["task"].unique())
    lines = sorted(set(zip(summ["method_id"], summ["backbones"], summ["data"], summ["protocol"])))
    several = [c for c in ("backbones", "data", "protocol") if summ[c].nunique() > 1]
    # Colour = method, line style = branch (v solid, a dotted, av dashed): a sweep over three
    # branches stays readable with one colour per method.
    bases = sorted({m.split("@")[0] for m in summ["method_id"].unique()})
    cmap = colormaps["tab10" if len(bases) <= 10 else "tab20"]
    color = {m: cmap(bases.index(m.split("@")[0]) % cmap.N) for m in summ["method_id"].unique()}
    style = {"v": "-", "a": ":", "av": "--"}
    ticks = sorted({int(k) for k in summ["shots"]})  # only the shot counts that ran

    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(4.8 * ncols, 3.8 * nrows + 0.35 * math.ceil(len(lines) / 5) + 0.6),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    legend: dict[str, object] = {}
    for ax, task in zip(axes, tasks):
        t = summ[summ["task"] == task]
        for method_id, bb, data, protocol in lines:
            g = t[(t["method_id"] == method_id) & (t["backbones"] == bb) & (t["data"] == data)
                  & (t["protocol"] == protocol)].sort_values("shots")
            if g.empty:
                continue
            x = [shot_position(int(s)) for s in g["shots"]]
            m = g["mean"].to_numpy()
            lo, hi = g["ci_lo"].to_numpy(dtype=float), g["ci_hi"].to_numpy(dtype=float)
            extra = [str(v) for c, v in zip(("backbones", "data", "protocol"), (bb, data, protocol))
                     if c in several]
            label = f"{method_id} ({', '.join(extra)})" if extra else method_id
            ls = style.get(method_id.partition("@")[2], "-")
            (h,) = ax.plot(x, m, marker="o", ms=3.5, lw=1.4, ls=ls, color=color[method_id], label=label)
            legend.setdefault(label, h)
            if len(x) > 1:
                ax.fill_between(x, lo, hi, color=color[method_id], alpha=0.15, lw=0)
            elif lo[0] == lo[0]:  # a lone point has no band to shade: an error bar
                err = np.maximum(0, np.array([m - lo, hi - m]))
                ax.errorbar(x, m, yerr=err, color=color[method_id], capsize=3, lw=1)
            if paper is not None and g["paper"].notna().any():
                q = g[g["paper"].notna()]
                ax.scatter([shot_position(int(k)) for k in q["shots"]], q["paper"], marker="D",
                           s=30, facecolors="none", edgecolors=[color[method_id]], zorder=3)
        if floors and task in floors:
            legend.setdefault("constant predictor",
                              ax.axhline(floors[task], ls="--", color="0.45", lw=1, label="constant predictor"))
        ax.set_xticks([shot_position(k) for k in ticks], [str(k) for k in ticks])
        ax.set_title(f"{task} (95% CI; {N.seeds_title(t)})")
        ax.set_xlabel("shots per class (0 = zero-shot)")
        name = S.metric_name(task, str(t["protocol"].iloc[0]), metric) if len(t) else None
        ax.set_ylabel(METRIC_LABELS.get(name, metric) + (" [best branch]" if branches == "best" else ""))
        ax.grid(alpha=0.3)
    if paper is not None and summ["paper"].notna().any():
        legend["paper (reported)"] = Line2D([], [], ls="", marker="D", mfc="none", mec="0.2")
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center",
               ncols=min(4, len(legend)), fontsize=8, frameon=False)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
