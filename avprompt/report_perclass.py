"""Per-class results from the stored per-video predictions (``seed<S>.pred.npz``).

``per_class`` turns one cell's predictions into one row per class: segment accuracy per true
class on ``ave`` (background included as its own row), video accuracy per primary class on
``ave-cls``, average precision per class on ``llp-cls``. The rows add up to the cell's score:
``correct`` summed over classes divided by ``support`` summed is the overall accuracy, and the
mean of the per-class APs is the macro mAP. ``confusion`` counts (true, predicted) pairs for the
accuracy tasks. ``per_class_table`` averages cells over seeds; ``plot_confusion`` draws the
matrices summed over seeds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _task(name: str):
    """The registered ``Task`` of a result's task name; None for a name no file registers (an
    old store), which then reads as a single-label video task."""
    from avprompt.tasks import discover
    return discover().get(name)


def _multi_label(name: str) -> bool:
    """Video-level multi-label tasks (``llp-cls``) get per-class AP over the videos' label sets;
    the others per-class accuracy and confusions (a segment task scores segments, whose stored
    logits are (N, T, K), so AP over video label sets does not apply to it)."""
    t = _task(name)
    return bool(t and t.multi_label and t.level == "video")


def _labels_and_predictions(task_level: str, preds: dict) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class indices of every scored unit: segments (background = K) on
    segment tasks, videos on video tasks (the primary label: ``stats.primary_labels``)."""
    logits = np.asarray(preds["logits"], dtype=np.float32)
    if task_level == "segment":
        k = logits.shape[-1] - 1
        true = np.asarray(preds["segment_labels"]).astype(int)
        true = np.where(true < 0, k, true).ravel()
        return true, logits.reshape(-1, logits.shape[-1]).argmax(-1)
    from avprompt.stats import primary_labels
    true = primary_labels(preds["segment_labels"], preds["video_labels"])
    keep = true >= 0  # a video without any label is not scored (as the overall metric does)
    return true[keep], logits.argmax(-1)[keep]


def per_class(task: str, task_level: str, class_names: list[str], preds: dict) -> pd.DataFrame:
    """One row per class: ``class``, ``support``, ``correct`` and ``value`` (accuracy, or AP on
    a multi-label task such as ``llp-cls``), in % like the overall metric."""
    if _multi_label(task):
        from avprompt.stats import average_precisions
        y = np.asarray(preds["video_labels"], dtype=bool)
        has = y.any(0)
        ap = np.full(y.shape[1], np.nan)
        ap[has] = average_precisions(np.asarray(preds["logits"], dtype=np.float64), y)[:, 0]
        return pd.DataFrame({"class": class_names[: y.shape[1]], "support": y.sum(0),
                             "correct": np.nan, "value": 100 * ap})
    true, pred = _labels_and_predictions(task_level, preds)
    names = list(class_names) + (["background"] if task_level == "segment" else [])
    support = np.bincount(true, minlength=len(names))
    correct = np.bincount(true[true == pred], minlength=len(names))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 100 * correct / support
    return pd.DataFrame({"class": names, "support": support, "correct": correct, "value": value})


def confusion(task_level: str, n_classes: int, preds: dict) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted (C = classes + background on segment tasks)."""
    true, pred = _labels_and_predictions(task_level, preds)
    c = n_classes + (task_level == "segment")
    return np.bincount(true * c + pred, minlength=c * c).reshape(c, c)


def _cells(df: pd.DataFrame):
    """(task, method_id, shots) -> [(record path, class names, level)] of the ok cells with predictions."""
    from avprompt.results import read_predictions, read_result

    groups: dict[tuple, list] = {}
    for row in df[df["status"] == "ok"].itertuples():
        preds = read_predictions(row.path) if row.path else None
        if preds is None:
            continue
        rec = read_result(row.path)
        t = _task(row.task)
        level = t.level if t else "video"
        groups.setdefault((row.task, row.method_id, int(row.shots)), []).append(
            (preds, list(rec.get("class_names") or []), level))
    return groups


def per_class_table(df: pd.DataFrame, shots: int | None = None) -> pd.DataFrame:
    """Long table: task, method, shots, class, support, value (mean over seeds), n seeds. ``shots``:
    one shot count (default: each task's largest, plus its zero-shot rows)."""
    rows = []
    for (task, method_id, k), cells in sorted(_cells(df).items()):
        largest = int(df.loc[df["task"] == task, "shots"].max())
        if k not in ((shots,) if shots is not None else (largest, 0)):
            continue
        parts = [per_class(task, level, names, p) for p, names, level in cells]
        stacked = pd.concat(parts)
        agg = stacked.groupby("class", sort=False).agg(support=("support", "first"), value=("value", "mean"))
        for cls, r in agg.iterrows():
            rows.append({"task": task, "method": method_id, "shots": k, "class": cls,
                         "support": int(r["support"]), "value": r["value"], "n": len(parts)})
    if not rows:
        raise ValueError("no cell with stored predictions matches: per-class results need the "
                         "seed<S>.pred.npz files written beside the records")
    return pd.DataFrame(rows)


def wide_per_class(table: pd.DataFrame) -> str:
    """Markdown: per task, classes as rows, one column per (method, K), values in %."""
    from avprompt.report import markdown_table
    out = []
    for task, t in table.groupby("task", sort=True):
        t = t.assign(col=[f"{m} K={k}" for m, k in zip(t["method"], t["shots"])])
        wide = t.pivot_table(index=["class"], columns="col", values="value", aggfunc="first", sort=False)
        support = t.groupby("class", sort=False)["support"].first()
        wide.insert(0, "support", support)
        wide = wide.reset_index()
        for c in wide.columns[2:]:
            wide[c] = [f"{v:.1f}" if v == v else "—" for v in wide[c]]
        metric = "AP (%)" if _multi_label(task) else "accuracy (%)"
        out += [f"**{task}**: per-class {metric}, mean over seeds", "",
                markdown_table(wide, right=list(wide.columns[1:])), ""]
    return "\n".join(out)


def plot_confusion(df: pd.DataFrame, path: str | Path, shots: int | None = None) -> Path:
    """Row-normalised confusion matrices (summed over seeds), one panel per (task, method) of the
    accuracy tasks at ``shots`` (default: each task's largest K)."""
    from matplotlib.figure import Figure

    panels = []
    for (task, method_id, k), cells in sorted(_cells(df).items()):
        if _multi_label(task):  # per-class AP, no confusion matrix
            continue
        largest = int(df.loc[df["task"] == task, "shots"].max())
        if k != (shots if shots is not None else largest):
            continue
        names = cells[0][1] + (["bg"] if cells[0][2] == "segment" else [])
        m = sum(confusion(level, len(n), p) for p, n, level in cells)
        panels.append((f"{task} {method_id} K={k} (n={len(cells)})", names, m))
    if not panels:
        raise ValueError("no accuracy-task cell with stored predictions at that shot count to draw")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 4.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, names, m) in zip(axes, panels):
        norm = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.set_title(title, fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
