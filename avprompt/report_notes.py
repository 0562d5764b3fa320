"""What the report says beside its numbers: paper numbers paired like with like, trust marks.

Paper numbers (``avprompt/reference/paper_numbers.csv``, see its README) sit beside ours only when
the two measure the same thing: the same task on the same real dataset (never SynthAV or a
manifest), the same metric (for ``--metric primary``: the primary metric the cells recorded, e.g.
``macro_map`` for llp-cls under the standard protocol), a protocol the paper row lists as
comparable, and the same method and shot count. Every paper number the rule withholds gets a
reason (``paper_note``), shown as a footnote.

Trust marks, per summary row (one method x task x shots, seeds aggregated): ``↓`` mean at or below
the constant-predictor floor of the chosen metric; ``†`` some cells changed the method's
architecture from its reference values (records' ``reference_changes``); ``‡`` some cells recorded
warnings (records' ``warnings``, older records ``extra.warnings``).

Intervals: ``ci_note`` says how a summary's 95% intervals were made (bootstrap or Student t, on
which rows), ``paired_note`` what its Δ columns compare, ``seeds_title`` the curves' seed counts.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

PAPER_CSV = Path(__file__).parent / "reference" / "paper_numbers.csv"
PAPER_COLUMNS = ["setting", "task", "metric", "method", "shots", "value", "source", "dataset",
                 "protocol", "definition"]
#: Our method ids whose paper counterpart has another name (the paper's zero-shot baselines are
#: the plain CLIP visual branch and the plain CLAP audio branch).
PAPER_METHOD_ALIASES = {"zeroshot@v": "zeroshot-clip", "zeroshot@a": "zeroshot-clap",
                        "zero-shot@v": "zeroshot-clip", "zero-shot@a": "zeroshot-clap"}
MARK_FLOOR, MARK_CHANGED, MARK_WARNED, MARK_STUCK = "↓", "†", "‡", "○"
MAX_LISTED = 8  # distinct warnings listed in a footnote before "and N more"


# ----- datasets -----------------------------------------------------------------------------------
def _task_dataset(task: str) -> str:
    """The real dataset a task is read from (its ``Task.dataset``; ``""`` for a name no task file
    registers, e.g. an old store's), so paper numbers pair by dataset."""
    from avprompt.tasks import discover
    t = discover().get(task)
    return t.dataset if t else ""


def dataset_kind(dataset: str | None) -> str:
    """``synthav``, ``manifest``, ``real`` (a folder read by the AVE/LLP/... readers) or ``""``
    (not recorded). ``dataset``: a record's ``dataset`` (``synthav-small-0``, ``dir:/data``,
    ``manifest:/x.csv``) or its key's ``data`` tag."""
    d = str(dataset or "").strip()
    if not d or d == "unspecified":
        return ""
    if "synthav" in d.lower():
        return "synthav"
    return "manifest" if d.lower().startswith("manifest") else "real"


def synthav_note(summary: pd.DataFrame) -> str | None:
    """The one sentence saying SynthAV numbers are not AVE/LLP numbers (None without SynthAV)."""
    if "dataset_kind" not in summary or not (summary["dataset_kind"] == "synthav").any():
        return None
    names = sorted({str(d) for d, k in zip(summary.get("data", summary["dataset_kind"]),
                                            summary["dataset_kind"]) if k == "synthav"})
    return (f"Data: {', '.join(names)} is SynthAV, a synthetic world: its ave/ave-cls/llp-cls "
            "numbers are not AVE/LLP numbers, and no paper number is put beside them.")


# ----- paper numbers ------------------------------------------------------------------------------
def load_paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """The DG-SCT paper's numbers; ``shots`` as Int64 (``<NA>`` for the full-training rows)."""
    path = Path(path) if path else PAPER_CSV
    if not path.is_file():
        raise FileNotFoundError(f"paper numbers file {path} is missing: reinstall avprompt")
    paper = pd.read_csv(path, dtype={"shots": str, "protocol": str})
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


def paper_method(method_id: str) -> str:
    return PAPER_METHOD_ALIASES.get(method_id, method_id.split("@")[0])


def _protocols(cell) -> list[str]:
    return [p.strip() for p in str(cell).split(";") if p.strip()]


def pair_paper(row, candidates: pd.DataFrame, metric: str) -> tuple[object, str]:
    """(paper row or None, reason it is withheld) for one summary ``row``.

    ``candidates``: the paper rows with the row's task, method and shot count; ``metric``: the
    report's metric (``primary`` resolves to the row's ``primary_name``). The reason is "" when
    the paper has no number there at all, or when a row is paired.
    """
    if candidates.empty:
        return None, ""
    kind = getattr(row, "dataset_kind", "")
    if kind == "synthav":
        return None, "synthav"  # said once above the table
    if kind == "manifest":
        return None, f"{row.data}: manifest data are not the paper's test set; not paired"
    if kind != "real":
        return None, "dataset not recorded in the results (real AVE/LLP or SynthAV?); not paired"
    ours = str(getattr(row, "primary_name", "") or "") if metric == "primary" else metric
    protocol = str(getattr(row, "protocol", "") or "")
    if ours in ("", "mixed"):
        why = "different primary metrics" if ours else "no primary metric name"
        return None, f"{row.task}: the cells recorded {why}; name one with --metric to compare"
    if not protocol:
        return None, "protocol not recorded in the results; not paired"
    dataset = _task_dataset(row.task)
    for p in candidates.itertuples():
        if p.metric == ours and protocol in _protocols(p.protocol) and p.dataset == dataset:
            return p, ""
    p = candidates.iloc[0]
    return None, (f"{row.task} `{ours}` under the {protocol} protocol: no paper number; the "
                  f"paper's is `{p.metric}` under the {' or '.join(_protocols(p.protocol))} "
                  f"protocol only. {p.definition}")


def add_paper_columns(summary: pd.DataFrame, paper: pd.DataFrame | None = None,
                      metric: str | None = None) -> pd.DataFrame:
    """``summary`` plus ``paper`` (value on our metric's scale, NaN when not comparable),
    ``paper_source`` and ``paper_note`` (why a paper number there is withheld) columns."""
    paper = load_paper_numbers() if paper is None else paper
    metric = metric or summary.attrs.get("metric", "primary")
    p = paper[paper["shots"].notna()].copy()
    p["shots"] = p["shots"].astype(int)
    scale = paper_scale(summary["mean"])
    by_key = {k: g for k, g in p.groupby(["task", "method", "shots"])}
    values, sources, notes = [], [], []
    for r in summary.itertuples():
        cands = by_key.get((r.task, paper_method(r.method_id), int(r.shots)), p.iloc[:0])
        hit, note = pair_paper(r, cands, metric)
        values.append(float(hit.value) * scale if hit is not None else math.nan)
        sources.append(hit.source if hit is not None else "")
        notes.append(note)
    out = summary.copy()
    out["paper"], out["paper_source"], out["paper_note"] = values, sources, notes
    out.attrs = dict(summary.attrs)
    return out


PAPER_NOTE = ("Paper: DG-SCT (arXiv 2311.05152), real CLIP ViT-B/32 + CLAP HTS-AT on the real "
              "datasets, reference code's protocol (best epoch chosen on test, first K clips per "
              "class, one seed); figure-4 values approximate (±0.5). Shown only where task, "
              "dataset, metric and protocol match ours.")


# ----- intervals and paired differences -----------------------------------------------------------
def ci_note(summary: pd.DataFrame) -> str:
    """How the summary's 95% intervals were made (bootstrap, Student t, or both, which rows)."""
    how = summary["ci_method"] if "ci_method" in summary else pd.Series(["t"] * len(summary))
    b = int(summary.attrs.get("resamples", 0) or 0)
    b_map = int(summary.attrs.get("map_resamples", b) or b)
    has_map = summary.attrs.get("metric") == "macro_map" or (
        summary.attrs.get("metric") == "primary"
        and (summary.get("primary_name", pd.Series(dtype=str)) == "macro_map").any())
    reps = f"{b} replicates" + (f", {b_map} for macro mAP" if b_map != b and has_map else "")
    boot = (f"95% CI: two-level bootstrap ({reps}; each draws the seeds with replacement "
            "and one resample of the test videos, shared by the seeds scored on the same test "
            "set; percentile interval)")
    t = "95% CI: Student t over seeds (mean ± t·std/√n; — for one seed)"
    n_t = int((how == "t").sum())
    if n_t == 0 and len(how):
        return boot + "."
    if n_t == len(how):
        why = "no stored predictions" if b else "bootstrap off"
        return f"{t}; {why}."
    return (f"{boot}; Student t over seeds on the {n_t} row(s) marked ᵗ (cells without stored "
            "predictions, or a metric not recomputable from them).")


def paired_note(summary: pd.DataFrame, zero_shot: dict[str, str], dg_sct: str) -> str | None:
    """What the Δ columns are (None when the summary shows none)."""
    shown = [c for c in ("d_zs", "d_dgsct") if c in summary and summary[c].notna().any()]
    if not shown:
        return None
    parts = []
    if "d_zs" in shown:
        refs = ", ".join(f"{b}: {m}" for b, m in zero_shot.items())
        parts.append(f"Δ zs = the method minus its branch's zero-shot method ({refs}; K=0, one "
                     "cell, paired with every seed)")
    if "d_dgsct" in shown:
        parts.append(f"Δ dg-sct = the method minus {dg_sct} at the same K, seeds matched by number")
    return ("; ".join(parts) + ". Paired on the same test videos (matched by clip id; one video "
            "resample applied to both), mean over seeds [two-level bootstrap 95% CI]; * = the "
            "interval excludes 0.")


def seeds_title(rows: pd.DataFrame) -> str:
    """``n = 3 seeds per point`` (``1–3`` when they differ), zero-shot counted apart."""
    def span(ns):
        ns = sorted({int(v) for v in ns})
        return f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    k, z = rows.loc[rows["shots"] > 0, "n"], rows.loc[rows["shots"] == 0, "n"]
    main = span(k if len(k) else z)
    out = f"n = {main} seed{'s' * (main != '1')} per point"
    return out + (f", K=0: {span(z)}" if len(k) and len(z) and span(z) != main else "")


# ----- trust marks --------------------------------------------------------------------------------
def cell_changes(record: dict) -> list[dict]:
    """A record's changes from the method's reference values (list of {field, reference, used,
    reason})."""
    out = record.get("reference_changes")
    if out is None:
        out = (record.get("extra") or {}).get("reference_changes")
    return [c for c in (out or []) if isinstance(c, dict)]


def cell_did_not_learn(record: dict) -> str:
    """The record's "did not learn" reason ("" when its selected state is a trained one)."""
    return str((record.get("extra") or {}).get("did_not_learn") or "")


def cell_warnings(record: dict) -> list[str]:
    """A record's warnings (top-level ``warnings``; older records ``extra.warnings``)."""
    out = record.get("warnings")
    if out is None:
        out = (record.get("extra") or {}).get("warnings")
    return [str(w) for w in (out or [])]


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def group_changes(cells: Iterable[list[dict]]) -> list[dict]:
    """Changes of a group's cells, grouped: [{field, reference, used, reason, cells}]; a change
    made on some towers only (``branches``) names them after the field."""
    counts: dict[tuple, int] = defaultdict(int)
    for changes in cells:
        for c in {(str(c.get("field")) + (f" [{', '.join(map(str, c['branches']))}]"
                                           if c.get("branches") else ""),
                   _show(c.get("reference")), _show(c.get("used")), str(c.get("reason") or ""))
                  for c in changes}:
            counts[c] += 1
    return [dict(field=f, reference=r, used=u, reason=why, cells=n)
            for (f, r, u, why), n in sorted(counts.items())]


def group_warnings(cells: Iterable[list[str]]) -> list[dict]:
    """Warnings of a group's cells: [{message, cells}], most frequent first."""
    counts: dict[str, int] = defaultdict(int)
    for ws in cells:
        for w in set(ws):
            counts[w] += 1
    return [dict(message=m, cells=n) for m, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]


def row_marks(row) -> str:
    marks = []
    if bool(getattr(row, "below_floor", False)):
        marks.append(MARK_FLOOR)
    if int(getattr(row, "did_not_learn", 0) or 0):
        marks.append(MARK_STUCK)
    if int(getattr(row, "changed", 0) or 0):
        marks.append(MARK_CHANGED)
    if int(getattr(row, "warned", 0) or 0):
        marks.append(MARK_WARNED)
    return " ".join(marks)


def _where(row) -> str:
    return f"{row.task} {int(row.shots)}-shot"


def _cells(n: int) -> str:
    return f"{n} cell{'s' * (n != 1)}"


def _changes_block(summary: pd.DataFrame) -> str:
    cells: dict[tuple, int] = defaultdict(int)
    where: dict[tuple, list[str]] = defaultdict(list)
    for r in summary.itertuples():
        for c in r.changes or []:
            k = (r.method_id, c["field"], c["reference"], c["used"], c["reason"])
            cells[k] += c["cells"]
            where[k].append(f"{_where(r)} {c['cells']}/{r.n}")
    block = [f"{MARK_CHANGED} architecture changed from the method's reference values "
             f"({_cells(int(summary['changed'].sum()))}; per row: cells changed/seeds):"]
    for k, n in sorted(cells.items()):
        mid, field, ref, used, why = k
        block.append(f"  - {mid}: `{field}` reference {ref}, used {used}"
                     + (f" ({why})" if why else "") + f": {_cells(n)} ({', '.join(where[k])})")
    return "\n".join(block)


def _warnings_block(summary: pd.DataFrame) -> str:
    cells: dict[str, int] = defaultdict(int)
    where: dict[str, list[str]] = defaultdict(list)
    for r in summary.itertuples():
        for w in r.warning_list or []:
            cells[w["message"]] += w["cells"]
            where[w["message"]].append(f"{r.method_id} {_where(r)}")
    ranked = sorted(cells.items(), key=lambda x: (-x[1], x[0]))
    block = [f"{MARK_WARNED} cells that recorded warnings ({_cells(int(summary['warned'].sum()))}, "
             f"{len(ranked)} distinct; full text in each result's `warnings`):"]
    for msg, n in ranked[:MAX_LISTED]:
        short = msg if len(msg) <= 160 else msg[:157] + "..."
        rows = where[msg]
        listed = ", ".join(rows[:4]) + (f", +{len(rows) - 4} rows" if len(rows) > 4 else "")
        block.append(f"  - \"{short}\": {_cells(n)} ({listed})")
    if len(ranked) > MAX_LISTED:
        block.append(f"  - and {len(ranked) - MAX_LISTED} more distinct warnings")
    return "\n".join(block)


def footnotes(summary: pd.DataFrame, metric: str) -> list[str]:
    """The footnotes for the marks the summary's rows carry: one Markdown block per mark."""
    out: list[str] = []
    if "below_floor" in summary and summary["below_floor"].fillna(False).astype(bool).any():
        out.append(f"{MARK_FLOOR} mean at or below the constant-predictor floor of `{metric}` "
                   "(always predicting one class scores as much).")
    if "did_not_learn" in summary and summary["did_not_learn"].sum():
        rows = [f"{r.method_id} {_where(r)} {int(r.did_not_learn)}/{r.n}" for r in summary.itertuples()
                if r.did_not_learn]
        out.append(f"{MARK_STUCK} did not learn: the initial state (before any update) scored best on "
                   f"validation in {_cells(int(summary['did_not_learn'].sum()))} "
                   f"({', '.join(rows[:12])}{', ...' if len(rows) > 12 else ''}).")
    if "changed" in summary and summary["changed"].sum():
        out.append(_changes_block(summary))
    if "warned" in summary and summary["warned"].sum():
        out.append(_warnings_block(summary))
    return out
