"""Tables and curves built only from result files (``avprompt.results``).

``to_dataframe`` turns records into a long table (one row per cell, metrics flattened into columns);
``summarize`` aggregates seeds per (suite, task, method, backbones, shots) into mean, sample std,
95% confidence half-width (Student t with n-1 degrees of freedom) and n; ``failed_cells`` lists the
cells that did not finish. ``render`` writes Markdown (own renderer, no tabulate), CSV or JSON;
``plot_curves`` draws metric-vs-shots curves with spread and constant-predictor floors.

``add_paper_columns`` / the ``paper`` argument of ``plot_curves`` put the DG-SCT paper's numbers
(``avprompt/reference/paper_numbers.csv``) beside ours. They are percentages; when our metric is a
fraction (every value at most 1) they are divided by 100 first.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

KEY_COLUMNS = ["suite", "task", "method", "modality", "method_id", "backbones", "shots", "seed"]
INFO_COLUMNS = ["status", "error", "train_s", "eval_s", "wall_s", "peak_memory_mb", "device",
                "path"]
GROUP_COLUMNS = ["suite", "task", "method", "method_id", "backbones", "shots"]
PAPER_CSV = Path(__file__).parent / "reference" / "paper_numbers.csv"
PAPER_COLUMNS = ["setting", "task", "metric", "method", "shots", "value", "source"]
#: Our method ids whose paper counterpart has another name (the paper's zero-shot baselines are
#: the plain CLIP visual branch and the plain CLAP audio branch).
PAPER_METHOD_ALIASES = {"zeroshot@v": "zeroshot-clip", "zeroshot@a": "zeroshot-clap",
                        "zero-shot@v": "zeroshot-clip", "zero-shot@a": "zeroshot-clap"}


# ----- long table ---------------------------------------------------------------------------------
def _flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Scalar metrics as ``{name: float}``; nested dicts become ``outer.inner``; lists skipped."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        col = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten(value, col + "."))
        elif value is None:
            out[col] = math.nan
        elif isinstance(value, (int, float, np.number)):
            out[col] = float(value)
    return out


def to_dataframe(results: Iterable[dict]) -> pd.DataFrame:
    """One row per result record: key columns, status/error/timings, then one column per metric.

    A metric whose name collides with a key or info column is stored as ``metric.<name>``.
    """
    reserved = set(KEY_COLUMNS) | set(INFO_COLUMNS)
    rows = []
    for r in results:
        key = r["key"]
        modality = key.get("modality") or ""
        timings = r.get("timings") or {}
        row = {
            "suite": key["suite"], "task": key["task"], "method": key["method"],
            "modality": modality,
            "method_id": f"{key['method']}@{modality}" if modality else key["method"],
            "backbones": key["backbones"], "shots": int(key["shots"]), "seed": int(key["seed"]),
            "status": r.get("status"), "error": r.get("error"),
            "train_s": timings.get("train_s"), "eval_s": timings.get("eval_s"),
            "wall_s": timings.get("wall_s"), "peak_memory_mb": r.get("peak_memory_mb"),
            "device": r.get("device"), "path": r.get("_path"),
        }
        for name, value in _flatten(r.get("metrics") or {}).items():
            row[f"metric.{name}" if name in reserved else name] = value
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else KEY_COLUMNS + INFO_COLUMNS)
    for col in ("train_s", "eval_s", "wall_s", "peak_memory_mb"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


# ----- statistics ---------------------------------------------------------------------------------
def t_quantile(n: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t quantile for ``n`` samples (n-1 degrees of freedom).

    Falls back to the normal quantile when scipy is missing (CI then slightly too narrow for
    small n).
    """
    try:
        from scipy import stats

        return float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    except ImportError:
        from statistics import NormalDist

        return NormalDist().inv_cdf(0.5 + confidence / 2)


def _aggregate(df: pd.DataFrame, metric: str, by: list[str], confidence: float) -> pd.DataFrame:
    if metric not in df.columns and not (df["status"] == "ok").any():
        df = df.assign(**{metric: math.nan})  # only failed cells: an empty summary, no error
    if metric not in df.columns:
        known = [c for c in df.columns if c not in KEY_COLUMNS + INFO_COLUMNS]
        raise ValueError(f"metric {metric!r} is in no result: "
                         f"choose one of {', '.join(known) or '(none)'}")
    ok = df[(df["status"] == "ok") & df[metric].notna()]
    rows = []
    for keys, g in ok.groupby(by, sort=True, dropna=False):
        vals = g[metric].to_numpy(dtype=float)
        n = len(vals)
        std = float(np.std(vals, ddof=1)) if n > 1 else math.nan
        ci = t_quantile(n, confidence) * std / math.sqrt(n) if n > 1 else math.nan
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        row.update(n=n, mean=float(vals.mean()), std=std, ci95=ci)
        if "floor" in g.columns and g["floor"].notna().any():
            row["floor"] = float(g["floor"].mean())
        rows.append(row)
    has_floor = any("floor" in r for r in rows)
    cols = by + ["n", "mean", "std", "ci95"] + (["floor"] if has_floor else [])
    out = pd.DataFrame(rows, columns=cols)
    out["n"] = out["n"].astype(int)
    out.attrs["metric"] = metric
    return out


def summarize(df: pd.DataFrame, metric: str = "primary", confidence: float = 0.95) -> pd.DataFrame:
    """Per (suite, task, method, backbones, shots): n seeds, mean, std (ddof=1), ci95 half-width.

    Only status-ok cells count; a group with one seed has std and ci95 NaN. ``floor`` is the mean
    constant-predictor score when results carry ``metrics['floor']``.
    """
    return _aggregate(df, metric, GROUP_COLUMNS, confidence)


def failed_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The failed cells with their error reasons (key columns, error, path)."""
    cols = [c for c in KEY_COLUMNS + ["error", "path"] if c in df.columns]
    return df.loc[df["status"] != "ok", cols].sort_values(KEY_COLUMNS[:8]).reset_index(drop=True)


# ----- paper numbers ------------------------------------------------------------------------------
def load_paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """The DG-SCT paper's numbers; ``shots`` as Int64 (``<NA>`` for the full-training rows)."""
    path = Path(path) if path else PAPER_CSV
    if not path.is_file():
        raise FileNotFoundError(f"paper numbers file {path} is missing: reinstall avprompt")
    paper = pd.read_csv(path, dtype={"shots": str})
    missing = [c for c in PAPER_COLUMNS if c not in paper.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; "
                         f"expected {','.join(PAPER_COLUMNS)}")
    paper["shots"] = pd.to_numeric(paper["shots"], errors="coerce").astype("Int64")
    return paper


def paper_scale(values: Iterable[float]) -> float:
    """1/100 when our values look like fractions (all finite ones at most 1), else 1."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return 0.01 if v.size and np.all(np.abs(v) <= 1.0) else 1.0


def _paper_method(method_id: str) -> str:
    return PAPER_METHOD_ALIASES.get(method_id, method_id.split("@")[0])


def _select_paper(paper: pd.DataFrame, metric: str, scale: float) -> pd.DataFrame:
    """Paper rows comparable with ``metric`` at a numeric shot count, values rescaled.

    For ``primary`` a (task, method, shots) counts only when the paper gives one metric for it
    (true of every few-shot/zero-shot row); otherwise the paper metric name must equal ``metric``.
    """
    p = paper[paper["shots"].notna()].copy()
    if metric == "primary":
        counts = p.groupby(["task", "method", "shots"])["metric"].transform("nunique")
        p = p[counts == 1]
    else:
        p = p[p["metric"] == metric]
    p["shots"] = p["shots"].astype(int)
    p["value"] = p["value"] * scale
    return p


def add_paper_columns(summary: pd.DataFrame, paper: pd.DataFrame | None = None,
                      metric: str | None = None) -> pd.DataFrame:
    """``summary`` plus ``paper`` (value on our metric's scale) and ``paper_source`` columns."""
    paper = load_paper_numbers() if paper is None else paper
    metric = metric or summary.attrs.get("metric", "primary")
    p = _select_paper(paper, metric, paper_scale(summary["mean"]))
    lookup = {(r.task, r.method, int(r.shots)): (r.value, r.source) for r in p.itertuples()}
    out = summary.copy()
    hits = [lookup.get((r.task, _paper_method(r.method_id), int(r.shots)), (math.nan, ""))
            for r in out.itertuples()]
    out["paper"] = [h[0] for h in hits]
    out["paper_source"] = [h[1] for h in hits]
    out.attrs = dict(summary.attrs)
    return out


# ----- rendering ----------------------------------------------------------------------------------
def _cell(value, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (float, np.floating)):
        return format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table; numbers right-aligned, NaN shown as ``-``."""
    header = [str(c) for c in df.columns]
    body = [[_cell(v, floatfmt) for v in row] for row in df.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in body])


def _display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary columns worth showing: suite only when several, method_id as ``method``."""
    cols = [c for c in ["suite", "task", "method_id", "backbones", "shots", "n", "mean", "std",
                        "ci95", "floor", "paper", "paper_source"] if c in summary.columns]
    if summary["suite"].nunique() <= 1:
        cols.remove("suite")
    return summary[cols].rename(columns={"method_id": "method"})


def to_markdown(summary: pd.DataFrame, failed: pd.DataFrame | None = None) -> str:
    """Summary table (and a failed-cells table when any) as Markdown."""
    metric = summary.attrs.get("metric", "primary")
    parts = [f"Metric: `{metric}`; mean, std and 95% CI half-width (Student t) over seeds; "
             "n = seeds.", "", markdown_table(_display(summary))]
    if failed is not None and len(failed):
        cols = [c for c in ["task", "method_id", "backbones", "shots", "seed", "error"]
                if c in failed]
        parts += ["", f"Failed cells ({len(failed)}, retried on rerun):", "",
                  markdown_table(failed[cols].rename(columns={"method_id": "method"}))]
    return "\n".join(parts) + "\n"


def _records(df: pd.DataFrame) -> list[dict]:
    clean = df.astype(object).where(df.notna(), None)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in clean.to_dict(orient="records")]


def render(summary: pd.DataFrame, failed: pd.DataFrame | None = None, fmt: str = "md") -> str:
    """Summary as ``md``, ``csv`` (summary only) or ``json`` ({metric, summary, failed})."""
    if fmt == "md":
        return to_markdown(summary, failed)
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        out = {"metric": summary.attrs.get("metric", "primary"), "summary": _records(summary),
               "failed": _records(failed if failed is not None else pd.DataFrame())}
        return json.dumps(out, indent=2) + "\n"
    raise ValueError(f"report format {fmt!r}: use md, csv or json")


# ----- curves -------------------------------------------------------------------------------------
def shot_position(shots: int) -> float:
    """x position on the log2 shot axis: 0 for zero-shot, 1 + log2(K) for K shots."""
    return 0.0 if shots == 0 else 1.0 + math.log2(shots)


def plot_curves(df: pd.DataFrame, path: str | Path, floors: dict[str, float] | None = None,
                paper: pd.DataFrame | None = None, metric: str = "primary") -> Path:
    """Metric-vs-shots curves, one panel per task, one line per (method, backbones).

    Shaded band: mean ± std over seeds. Dashed grey line: the task's constant-predictor floor
    (``floors`` or the mean of results' ``metrics['floor']``). Hollow diamonds: paper numbers for
    the plotted methods. Uses the Agg canvas directly, so no global backend is set.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    summ = _aggregate(df, metric, ["task", "method_id", "backbones", "shots"], 0.95)
    if summ.empty:
        raise ValueError(f"no finished results with metric {metric!r} to plot")
    if floors is None and "floor" in summ.columns:
        floors = summ.groupby("task")["floor"].mean().dropna().to_dict()
    p = _select_paper(paper, metric, paper_scale(summ["mean"])) if paper is not None else None
    tasks = sorted(summ["task"].unique())
    lines = sorted(set(zip(summ["method_id"], summ["backbones"])))
    several_bb = summ["backbones"].nunique() > 1
    # Colour = method, line style = branch (v solid, a dotted, av dashed): a sweep over three
    # branches stays readable with one colour per method.
    cmap = colormaps["tab20"]
    bases = sorted({m.split("@")[0] for m in summ["method_id"].unique()})
    color = {m: cmap((2 * bases.index(m.split("@")[0])) % 20 + (bases.index(m.split("@")[0]) // 10))
             for m in summ["method_id"].unique()}
    style = {"v": "-", "a": ":", "av": "--"}
    max_pos = max(shot_position(int(s)) for s in summ["shots"])
    ticks = [0] + [2 ** i for i in range(0, int(max(4, max_pos - 1)) + 1)]

    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(4.8 * ncols, 3.8 * nrows + 0.35 * math.ceil(len(lines) / 5) + 0.6),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    legend: dict[str, object] = {}
    for ax, task in zip(axes, tasks):
        t = summ[summ["task"] == task]
        for method_id, bb in lines:
            g = t[(t["method_id"] == method_id) & (t["backbones"] == bb)].sort_values("shots")
            if g.empty:
                continue
            x = [shot_position(int(s)) for s in g["shots"]]
            m, s = g["mean"].to_numpy(), np.nan_to_num(g["std"].to_numpy())
            label = f"{method_id} ({bb})" if several_bb else method_id
            ls = style.get(method_id.partition("@")[2], "-")
            (h,) = ax.plot(x, m, marker="o", ms=3.5, lw=1.4, ls=ls, color=color[method_id], label=label)
            legend.setdefault(label, h)
            if len(x) > 1:
                ax.fill_between(x, m - s, m + s, color=color[method_id], alpha=0.15, lw=0)
            else:  # a lone point has no band to shade: show its spread as an error bar
                ax.errorbar(x, m, yerr=s, color=color[method_id], capsize=3, lw=1)
        if floors and task in floors:
            legend.setdefault("constant predictor",
                              ax.axhline(floors[task], ls="--", color="0.45", lw=1, label="constant predictor"))
        if p is not None:
            for method_id in t["method_id"].unique():
                q = p[(p["task"] == task) & (p["method"] == _paper_method(method_id))]
                ax.scatter([shot_position(int(s)) for s in q["shots"]], q["value"], marker="D",
                           s=30, facecolors="none", edgecolors=[color[method_id]], zorder=3)
        ax.set_xticks([shot_position(k) for k in ticks], [str(k) for k in ticks])
        ax.set_title(task)
        ax.set_xlabel("shots per class (0 = zero-shot)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    if p is not None:
        legend["paper (reported)"] = Line2D([], [], ls="", marker="D", mfc="none", mec="0.2")
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center",
               ncols=min(5, len(legend)), fontsize=7, frameon=False)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
