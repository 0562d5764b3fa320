"""Tables and curves built only from result files (``avprompt.results``).

``to_dataframe`` turns records into a long table (one row per cell, metrics flattened into columns);
``summarize`` aggregates seeds per (suite, data, protocol, task, method, backbones, shots) into mean,
sample std, a 95% interval (``ci_lo``, ``ci_hi``; ``ci95`` its larger half), n, the
constant-predictor floor of the chosen metric and trust counts; ``failed_cells`` lists the cells
that did not finish. The interval is the two-level bootstrap over seeds and test videos
(``avprompt.stats``) when every cell of the row stored its predictions (``ci_method``
``bootstrap``), else Student t over seeds (``t``). Paired differences on the same test videos:
``d_zs*`` the method minus its branch's zero-shot method, ``d_dgsct*`` minus DG-SCT at the same
K (``add_paired_columns``); ``compact_table`` is the sweep's K-column table, ``paired_halfwidths``
the paired-interval widths the results README quotes. ``render`` writes Markdown (own renderer,
no tabulate; marks and footnotes), CSV or JSON; ``plot_curves`` draws metric-vs-shots curves with
95% bands and floors.

Floors: a record's ``metrics["floors"]`` holds the floor of each metric (``metrics["floor"]`` the
primary's); the floor column shows the floor of the chosen metric, ``floor`` only for the primary.

``add_paper_columns`` / the ``paper`` argument of ``plot_curves`` put the DG-SCT paper's numbers
beside ours, like with like only (``avprompt.report_notes``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from avprompt import report_notes as N
from avprompt import stats as S
from avprompt.report_notes import (PAPER_COLUMNS, PAPER_CSV, PAPER_METHOD_ALIASES,  # noqa: F401
                                   add_paper_columns, load_paper_numbers, paper_scale)

KEY_COLUMNS = ["suite", "data", "protocol", "task", "method", "modality", "method_id",
               "backbones", "shots", "seed"]
INFO_COLUMNS = ["status", "error", "train_s", "eval_s", "wall_s", "peak_memory_mb", "device",
                "path", "dataset", "dataset_kind", "primary_name", "reference_changes", "warnings"]
GROUP_COLUMNS = ["suite", "data", "protocol", "task", "method", "method_id", "backbones", "shots"]
ZERO_SHOT, DG_SCT, PAIRED = S.ZERO_SHOT, S.DG_SCT, S.PAIRED
add_paired_columns, pair_seeds = S.add_paired_columns, S.pair_seeds
paired_halfwidths = S.paired_halfwidths
_paper_method = N.paper_method


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


def _cell_data(r: dict) -> tuple[str, str, str]:
    """(data tag, dataset, protocol) of a record, from its key or its provenance fields."""
    key, config = r["key"], r.get("config") or {}
    tag = str(key.get("data") or "")
    tag = "" if tag == "unspecified" else tag
    dataset = str(r.get("dataset") or tag)
    protocol = str(r.get("protocol") or key.get("protocol") or config.get("protocol") or "")
    return tag or dataset, dataset, protocol


def to_dataframe(results: Iterable[dict]) -> pd.DataFrame:
    """One row per result record: key columns, status/error/timings, provenance, then one column
    per metric (nested dicts flattened: ``floors.macro_map``).

    A metric whose name collides with a key or info column is stored as ``metric.<name>``.
    Supervised cells (shots ``full``) have their own table (``avprompt.supervised.commands``).
    """
    reserved = set(KEY_COLUMNS) | set(INFO_COLUMNS)
    rows = []
    for r in results:
        key = r["key"]
        if key.get("shots") == "full":
            continue
        modality = key.get("modality") or ""
        timings = r.get("timings") or {}
        data, dataset, protocol = _cell_data(r)
        metrics = r.get("metrics") or {}
        row = {
            "suite": key["suite"], "data": data, "protocol": protocol, "task": key["task"],
            "method": key["method"], "modality": modality,
            "method_id": f"{key['method']}@{modality}" if modality else key["method"],
            "backbones": key["backbones"], "shots": int(key["shots"]), "seed": int(key["seed"]),
            "status": r.get("status"), "error": r.get("error"),
            "train_s": timings.get("train_s"), "eval_s": timings.get("eval_s"),
            "wall_s": timings.get("wall_s"), "peak_memory_mb": r.get("peak_memory_mb"),
            "device": r.get("device"), "path": r.get("_path"),
            "dataset": dataset, "dataset_kind": N.dataset_kind(dataset),
            "primary_name": str(metrics.get("primary_name") or ""),
            "reference_changes": N.cell_changes(r), "warnings": N.cell_warnings(r),
            "did_not_learn": N.cell_did_not_learn(r),
        }
        for name, value in _flatten(metrics).items():
            row[f"metric.{name}" if name in reserved else name] = value
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else KEY_COLUMNS + INFO_COLUMNS)
    for col in ("train_s", "eval_s", "wall_s", "peak_memory_mb"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


# ----- statistics ---------------------------------------------------------------------------------
def select_rows(df: pd.DataFrame, tasks: list[str] | None = None, methods: list[str] | None = None,
                branches: list[str] | None = None) -> pd.DataFrame:
    """Rows of the long table for these tasks, methods (keys or globs on the method key) and
    branches (v / a / av); a filter that matches nothing is a ValueError naming what there is."""
    from fnmatch import fnmatch
    checks = (("--tasks", tasks, df["task"]), ("--methods", methods, df["method"]),
              ("--branches", branches, df["modality"]))
    keep = pd.Series(True, index=df.index)
    for option, wanted, col in checks:
        if wanted is None:
            continue
        hit = col.map(lambda v: any(fnmatch(str(v), w) for w in wanted))
        if not hit.any():
            raise ValueError(f"{option} {','.join(wanted)}: nothing matches; the results have "
                             f"{', '.join(sorted(map(str, col.unique())))}")
        keep &= hit
    return df[keep]


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


def cell_floors(df: pd.DataFrame, metric: str) -> pd.Series:
    """Per cell, the constant-predictor floor of ``metric``: ``floors.<metric>``; for the primary
    metric (``primary`` or the cell's ``primary_name``) also ``floor``; NaN when unknown."""
    nan = pd.Series(math.nan, index=df.index, dtype=float)

    def col(name: str) -> pd.Series:
        return pd.to_numeric(df[name], errors="coerce") if name in df.columns else nan

    names = df["primary_name"] if "primary_name" in df.columns else nan.astype(object)
    out = col(f"floors.{metric}")
    if metric == "primary":
        for name in {n for n in names if isinstance(n, str) and n}:
            out = out.where(out.notna() | (names != name), col(f"floors.{name}"))
        return out.fillna(col("floor"))
    return out.where(out.notna() | (names != metric), col("floor"))


def _unique(values) -> str:
    vals = sorted({str(v) for v in values if v is not None and v == v})
    return vals[0] if len(vals) == 1 else ("mixed" if vals else "")


def _engine(resamples: int | None) -> S.CellBootstrap | None:
    return S.CellBootstrap(resamples) if resamples else None


def _interval(g: pd.DataFrame, metric: str, engine: S.CellBootstrap | None,
              confidence: float) -> S.Interval | None:
    """The two-level bootstrap interval of one row's cells; None without predictions."""
    if engine is None or "path" not in g or g["path"].isna().any() or g["protocol"].nunique() != 1:
        return None
    return S.seeds_interval(engine, list(g.sort_values("seed")["path"]), str(g["task"].iloc[0]),
                            str(g["protocol"].iloc[0]), metric, confidence)


def _aggregate(df: pd.DataFrame, metric: str, by: list[str], confidence: float,
               engine: S.CellBootstrap | None = None) -> pd.DataFrame:
    if metric not in df.columns and not (df["status"] == "ok").any():
        df = df.assign(**{metric: math.nan})  # only failed cells: an empty summary, no error
    if metric not in df.columns:
        known = [c for c in df.columns if c not in KEY_COLUMNS + INFO_COLUMNS]
        raise ValueError(f"--metric {metric!r} is in no result: "
                         f"choose one of {', '.join(known) or '(none)'}")
    ok = df[(df["status"] == "ok") & df[metric].notna()]
    ok = ok.assign(_floor=cell_floors(ok, metric))
    rows = []
    for keys, g in ok.groupby(by, sort=True, dropna=False):
        vals = g[metric].to_numpy(dtype=float)
        n = len(vals)
        mean, std = S.seed_mean_std(vals)
        iv = _interval(g, metric, engine, confidence)
        if iv is not None:
            lo, hi, how = iv.lo, iv.hi, "bootstrap"
        else:
            h = t_quantile(n, confidence) * std / math.sqrt(n) if n > 1 else math.nan
            lo, hi, how = mean - h, mean + h, "t"
        ci = max(hi - mean, mean - lo) if lo == lo else math.nan
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        row.update(n=n, mean=mean, std=std, ci95=ci, ci_lo=lo, ci_hi=hi, ci_method=how)
        floor = float(g["_floor"].mean()) if g["_floor"].notna().any() else math.nan
        row.update(floor=floor, below_floor=bool(floor == floor and row["mean"] <= floor))
        changes = [c for c in g.get("reference_changes", []) if c]
        warned = [w for w in g.get("warnings", []) if w]
        stuck = [w for w in g.get("did_not_learn", []) if isinstance(w, str) and w]
        row.update(did_not_learn=len(stuck))
        row.update(changed=len(changes), warned=len(warned), changes=N.group_changes(changes),
                   warning_list=N.group_warnings(warned),
                   dataset_kind=_unique(g.get("dataset_kind", [])),
                   primary_name=_unique(g.get("primary_name", [])))
        rows.append(row)
    # the column shows when results carry floors at all ("—" for a metric without one)
    has_floor = any(c == "floor" or c.startswith("floors.") for c in df.columns)
    cols = by + ["n", "mean", "std", "ci95", "ci_lo", "ci_hi", "ci_method"] \
        + (["floor", "below_floor"] if has_floor else []) \
        + ["did_not_learn", "changed", "warned", "changes", "warning_list", "dataset_kind", "primary_name"]
    out = pd.DataFrame(rows, columns=cols)
    out["n"] = out["n"].astype(int)
    out.attrs.update(metric=metric, confidence=confidence,
                     resamples=engine.b if engine is not None else 0,
                     map_resamples=engine.resamples("macro_map") if engine is not None else 0)
    return out


def summarize(df: pd.DataFrame, metric: str = "primary", confidence: float = 0.95, *,
              resamples: int = S.DEFAULT_B, paired: bool = True) -> pd.DataFrame:
    """Per (suite, task, method, backbones, shots): n seeds, mean, std (ddof=1), a 95% interval.

    Only status-ok cells count. The interval (``ci_lo``, ``ci_hi``; ``ci95`` = its larger
    distance from the mean) is the two-level bootstrap over seeds and test videos with
    ``resamples`` replicates when every cell of the row has stored predictions and ``metric``
    can be recomputed from them (``ci_method`` ``bootstrap``), else Student t over seeds (``t``;
    NaN for one seed); ``resamples=0`` forces t. ``paired`` adds the paired differences
    (``add_paired_columns``). ``floor`` is the mean constant-predictor score of ``metric`` over
    the cells that record it (``cell_floors``) and ``below_floor`` whether the mean does not beat
    it; ``changed`` / ``warned`` count the cells with reference changes / warnings, detailed
    (grouped, counted) in ``changes`` / ``warning_list``.
    """
    engine = _engine(resamples)
    out = _aggregate(df, metric, GROUP_COLUMNS, confidence, engine)
    if paired and engine is not None:
        out = add_paired_columns(out, df, engine, confidence)
    return out


def failed_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The failed cells with their error reasons (key columns, error, path)."""
    cols = [c for c in KEY_COLUMNS + ["error", "path"] if c in df.columns]
    return df.loc[df["status"] != "ok", cols].sort_values(
        [c for c in KEY_COLUMNS if c in cols]).reset_index(drop=True)


# ----- rendering ----------------------------------------------------------------------------------
def _cell(value, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (float, np.floating)):
        return format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g", right: Iterable[str] = ()) -> str:
    """A GitHub Markdown table; numbers (and the ``right`` columns) right-aligned, NaN ``-``."""
    header = [str(c) for c in df.columns]
    body = [[_cell(v, floatfmt) for v in row] for row in df.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) or c in set(right) for c in df.columns]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in body])


def _number(value, floatfmt: str, missing: str = "—") -> str:
    return missing if value is None or value != value else format(float(value), floatfmt)


def _interval_cell(lo, hi, floatfmt: str) -> str:
    return "—" if lo != lo or hi != hi else f"[{format(lo, floatfmt)}, {format(hi, floatfmt)}]"


def _true(flag) -> bool:
    """A significance flag that is set (bool or numpy bool; None / NaN: no difference)."""
    return flag is not None and flag == flag and bool(flag)


def _difference_cell(value, lo, hi, sig) -> str:
    if value != value:
        return "—"
    return f"{value:+.3g} [{lo:+.3g}, {hi:+.3g}]" + (" *" if _true(sig) else "")


def _display(summary: pd.DataFrame, floatfmt: str = ".4g") -> tuple[pd.DataFrame, list[str]]:
    """The columns worth showing (suite, data and protocol only when several; method_id as
    ``method``; the interval as ``95% CI`` [lo, hi], ``ᵗ`` on Student-t rows when rows mix
    methods; the paired differences that exist; ``marks`` when any row has one) and the paper
    footnotes ``[k]`` they cite."""
    cols = [c for c in ["suite", "data", "protocol", "task", "method_id", "backbones", "shots",
                        "n", "mean", "std", "ci95", "floor", "paper", "paper_source"]
            if c in summary.columns]
    for c in ("suite", "data", "protocol"):
        if c in cols and summary[c].nunique() <= 1:
            cols.remove(c)
    out = summary[cols].rename(columns={"method_id": "method"}).copy()
    if "ci_lo" in summary:
        mixed = summary["ci_method"].nunique() > 1
        out["ci95"] = [_interval_cell(lo, hi, floatfmt) + ("ᵗ" if mixed and how == "t" else "")
                       for lo, hi, how in zip(summary["ci_lo"], summary["ci_hi"],
                                              summary["ci_method"])]
        out = out.rename(columns={"ci95": "95% CI"})
        at = list(out.columns).index("95% CI") + 1
        for col, name in PAIRED.items():
            if col in summary and summary[col].notna().any():
                out.insert(at, name, [_difference_cell(*v) for v in zip(
                    summary[col], summary[f"{col}_lo"], summary[f"{col}_hi"], summary[f"{col}_sig"])])
                at += 1
    if "floor" in out:
        out["floor"] = [_number(v, floatfmt) for v in out["floor"]]
    notes: list[str] = []
    if "paper" in out:
        cells = []
        for value, note in zip(summary["paper"], summary.get("paper_note", [""] * len(out))):
            cell = _number(value, floatfmt)
            if note and note != "synthav":  # SynthAV is said once above the table
                if note not in notes:
                    notes.append(note)
                cell += f" [{notes.index(note) + 1}]"
            cells.append(cell)
        out["paper"] = cells
    marks = [N.row_marks(r) for r in summary.itertuples()]
    if any(marks):
        out["marks"] = marks
    return out, [f"[{i}] {n}." for i, n in enumerate(notes, 1)]


def to_markdown(summary: pd.DataFrame, failed: pd.DataFrame | None = None) -> str:
    """Summary table (marks, footnotes; a failed-cells table when any) as Markdown."""
    metric = summary.attrs.get("metric", "primary")
    table, paper_notes = _display(summary)
    parts = [f"Metric: `{metric}`; mean and std over seeds; n = seeds; "
             "floor = constant-predictor score of this metric (— when unknown). "
             + N.ci_note(summary)]
    parts += [n for n in [N.paired_note(summary, ZERO_SHOT, DG_SCT), N.synthav_note(summary)] if n]
    parts += ["", markdown_table(table, right=["floor", "paper", "95% CI"] + list(PAIRED.values()))]
    notes = N.footnotes(summary, metric)
    if "paper" in summary and summary["paper"].notna().any():
        notes.append(N.PAPER_NOTE)
    notes += paper_notes
    for block in notes:  # one paragraph each (sub-items stay with their heading)
        parts += ["", block]
    if failed is not None and len(failed):
        cols = [c for c in ["task", "method_id", "backbones", "shots", "seed", "error"]
                if c in failed]
        parts += ["", f"Failed cells ({len(failed)}, retried on rerun):", "",
                  markdown_table(failed[cols].rename(columns={"method_id": "method"}))]
    return "\n".join(parts) + "\n"


def compact_table(summary: pd.DataFrame) -> str:
    """The sweep's table (Markdown): one row per (task, method), one column per shot count,
    ``mean ± half-width`` of the row's 95% interval (``ci95``; bootstrap or t as ``ci_note``
    says), ``*`` when the paired difference to the branch's zero-shot method excludes 0."""
    if summary.empty:
        return "(no finished cells)"
    fmt = ".3f" if N.paper_scale(summary["mean"]) < 1 else ".1f"

    def cell(r) -> str:
        ci = "" if r["ci95"] != r["ci95"] else f" ± {format(r['ci95'], fmt)}"
        return f"{format(r['mean'], fmt)}{ci}" + (" *" if _true(r.get("d_zs_sig")) else "")

    s = summary.assign(value=[cell(r) for _, r in summary.iterrows()])
    pivot = s.pivot_table(index=["task", "method_id"], columns="shots", values="value", aggfunc="first")
    pivot.columns = [f"K={c}" for c in pivot.columns]
    pivot = pivot.reset_index().rename(columns={"method_id": "method"}).fillna("")
    lines = [f"`{summary.attrs.get('metric', 'primary')}`, mean ± 95% CI half-width over up to "
             f"{int(summary['n'].max())} seed(s). {N.ci_note(summary)}"]
    if "d_zs_sig" in summary and any(_true(v) for v in summary["d_zs_sig"]):
        lines.append("* the paired difference to the branch's zero-shot method excludes 0.")
    return "\n".join(lines) + "\n\n" + markdown_table(pivot, right=pivot.columns[2:])


def _records(df: pd.DataFrame) -> list[dict]:
    clean = df.astype(object).where(df.notna(), None)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in clean.to_dict(orient="records")]


def render(summary: pd.DataFrame, failed: pd.DataFrame | None = None, fmt: str = "md") -> str:
    """Summary as ``md``, ``csv`` (summary only; list columns as JSON text) or ``json``
    ({metric, notes, summary, failed})."""
    if fmt == "md":
        return to_markdown(summary, failed)
    if fmt == "csv":
        flat = summary.copy()
        for c in ("changes", "warning_list"):
            if c in flat:
                flat[c] = [json.dumps(v) for v in flat[c]]
        return flat.to_csv(index=False)
    if fmt == "json":
        out = {"metric": summary.attrs.get("metric", "primary"),
               "notes": [n for n in [N.synthav_note(summary)] if n],
               "intervals": [n for n in [N.ci_note(summary),
                                         N.paired_note(summary, ZERO_SHOT, DG_SCT)] if n],
               "summary": _records(summary),
               "failed": _records(failed if failed is not None else pd.DataFrame())}
        return json.dumps(out, indent=2) + "\n"
    raise ValueError(f"--format {fmt!r}: use md, csv or json")


# ----- curves (avprompt/report_curves.py) --------------------------------------------------------
def plot_curves(*args, **kwargs):
    """``avprompt.report_curves.plot_curves`` (kept here: the report's one entry point)."""
    from avprompt.report_curves import plot_curves as plot
    return plot(*args, **kwargs)
