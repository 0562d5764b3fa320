"""Paired comparisons over a results store: the report's Δ columns (each method against the same
branch's zero-shot and against DG-SCT on the same test videos) and the K=16 half-widths the
results README quotes. The statistics themselves live in ``avprompt.stats``."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from avprompt.stats import CONFIDENCE, DEFAULT_B, DG_SCT, PAIRED, ZERO_SHOT, CellBootstrap, seeds_difference

if TYPE_CHECKING:
    import pandas as pd

def _cells_index(df: pd.DataFrame, metric: str) -> dict[tuple, dict[int, str]]:
    """(suite, data, protocol, task, backbones, method_id, shots) -> {seed: path} of ok cells."""
    ok = df[(df["status"] == "ok") & df[metric].notna() & df["path"].notna()] \
        if metric in df.columns else df.iloc[:0]
    index: dict[tuple, dict[int, str]] = {}
    for r in ok.itertuples():
        k = (r.suite, r.data, r.protocol, r.task, r.backbones, r.method_id, int(r.shots))
        index.setdefault(k, {})[int(r.seed)] = r.path
    return index


def pair_seeds(cells: dict[int, str], ref: dict[int, str],
               broadcast: bool = False) -> list[tuple[str, str]]:
    """Each seed's cell ({seed: path}) with the reference cell of the same seed number; with
    ``broadcast`` (a zero-shot reference at K=0: nothing trains, one seed is run) a seed the
    reference lacks gets the reference's lowest seed."""
    if broadcast and ref:
        return [(cells[s], ref.get(s, ref[min(ref)])) for s in sorted(cells)]
    return [(cells[s], ref[s]) for s in sorted(cells) if s in ref]


def add_paired_columns(summary: pd.DataFrame, df: pd.DataFrame, engine: CellBootstrap,
                       confidence: float = 0.95) -> pd.DataFrame:
    """``summary`` plus paired differences on the same test videos, per row (seeds averaged,
    two-level bootstrap interval; ``avprompt.stats``): ``d_zs`` the method minus its branch's
    zero-shot method (``ZERO_SHOT``) and ``d_dgsct`` minus ``DG_SCT`` at the same K, each with
    ``_lo``, ``_hi``, ``_sig`` (interval excludes 0) and ``_ref`` (the reference method)."""
    metric = summary.attrs.get("metric", "primary")
    index = _cells_index(df, metric)
    out = {f"{c}{s}": [] for c in PAIRED for s in ("", "_lo", "_hi", "_sig", "_ref")}
    for r in summary.itertuples():
        where = (r.suite, r.data, r.protocol, r.task, r.backbones)
        cells = index.get(where + (r.method_id, int(r.shots)), {})
        zs = ZERO_SHOT.get(str(r.method_id).partition("@")[2])
        refs = {"d_zs": (zs, 0) if zs and r.method_id != zs else None,
                "d_dgsct": (DG_SCT, int(r.shots)) if r.method_id != DG_SCT else None}
        for col, ref in refs.items():
            pairs = pair_seeds(cells, index.get(where + ref, {}), ref[1] == 0) if ref and cells else []
            iv = seeds_difference(engine, pairs, r.task, r.protocol, metric, confidence) \
                if pairs else None
            out[col].append(iv.value if iv else math.nan)
            out[f"{col}_lo"].append(iv.lo if iv else math.nan)
            out[f"{col}_hi"].append(iv.hi if iv else math.nan)
            out[f"{col}_sig"].append(iv.significant if iv else None)
            out[f"{col}_ref"].append(ref[0] if iv else "")
    res = summary.assign(**out)
    res.attrs = dict(summary.attrs, paired=True)
    return res


def paired_halfwidths(results, a: str | None, b: str, shots: int = 16, metric: str = "primary",
                      resamples: int = DEFAULT_B, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """How wide the paired interval of method ``a`` minus method ``b`` is at K = ``shots``, per
    (suite, data, protocol, task, backbones): the quantity behind a sentence like "the 95% CI of
    a paired difference at K=16 is at most ±5 points on every task".

    ``results``: records (``avprompt.results.load_results``) or ``report.to_dataframe`` of them;
    ``a`` / ``b``: method ids (``coop@v``; ``a=None``: every method but ``b``); ``b`` without
    cells at ``shots`` is taken at K=0 (a zero-shot method). One row per method ``a`` and place
    where both have cells with predictions: ``n_seeds``,
    ``diff`` (mean over seeds), ``lo`` / ``hi`` (two-level bootstrap), ``halfwidth`` (larger
    distance from ``diff`` to a bound) and ``seed_halfwidth`` (the largest halfwidth of one
    seed's difference alone, test-video bootstrap).
    """
    import pandas as pd

    from avprompt.report import to_dataframe

    df = results if isinstance(results, pd.DataFrame) else to_dataframe(results)
    if metric not in df.columns:
        raise ValueError(f"metric {metric!r} is in no result")
    engine, index, rows = CellBootstrap(resamples), _cells_index(df, metric), []
    places = sorted({k[:6] for k in index
                     if k[6] == int(shots) and k[5] != b and (a is None or k[5] == a)})
    for *where, method in places:
        where = tuple(where)
        ref, k_ref = index.get(where + (b, int(shots))), int(shots)
        if not ref:
            ref, k_ref = index.get(where + (b, 0), {}), 0
        pairs = pair_seeds(index[where + (method, int(shots))], ref, k_ref == 0)
        task, protocol = where[3], where[2]
        iv = seeds_difference(engine, pairs, task, protocol, metric, confidence) if pairs else None
        if iv is None:
            continue
        one = [seeds_difference(engine, [p], task, protocol, metric, confidence) for p in pairs]
        rows.append(dict(zip(("suite", "data", "protocol", "task", "backbones"), where), a=method, b=b,
                         shots=int(shots), n_seeds=len(pairs), diff=iv.value, lo=iv.lo, hi=iv.hi,
                         halfwidth=iv.halfwidth, seed_halfwidth=max(o.halfwidth for o in one)))
    cols = ["suite", "data", "protocol", "task", "backbones", "a", "b", "shots", "n_seeds",
            "diff", "lo", "hi", "halfwidth", "seed_halfwidth"]
    return pd.DataFrame(rows, columns=cols)
