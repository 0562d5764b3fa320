"""``avprompt report DIR --html OUT``: one self-contained static page of a results store.

Everything is inside ``OUT/index.html`` (images as base64 PNG, no script or style from elsewhere),
so the page opens from disk, from a CI artefact or attached to an e-mail, without a server:

* the wide table per task (mean ± 95% CI per K, ``*`` where the paired difference to the
  branch's zero-shot excludes 0) and the full long table (floors, paired differences, marks and
  their footnotes) under a fold;
* the curves (one panel per task, 95% CI bands, floors dashed);
* per-class heat maps (row-normalised confusion matrices) at each task's largest K and the
  per-class table, from the stored per-video predictions;
* provenance of every row: seeds, commit(s) and config hash(es) of the cells behind it.

A small inline script marks, once the page has loaded, how many tables and images rendered
(``data-tables`` / ``data-images-ok`` / ``data-images`` on ``<body>``), which the browser test reads.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import tempfile
from pathlib import Path

import pandas as pd

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12.5px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,td:nth-child(2),th:first-child,th:nth-child(2){text-align:left}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:12.5px}details{margin:8px 0}
"""
_CHECK = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'))
    .filter(function (t) { return t.rows.length > 1; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-ok', String(ok));
  document.body.setAttribute('data-tables', String(tables));
});
"""


def md_table_to_html(md: str) -> str:
    """Markdown (pipe tables and plain lines) -> HTML: tables become <table>, other lines <p>."""
    out, rows = [], []

    def flush():
        if not rows:
            return
        head, body = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
        out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                   + "</tr></thead><tbody>" + "".join(
                       "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                   + "</tbody></table>")
        rows.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            rows.append([c.strip() for c in s[1:-1].split("|")])
            continue
        flush()
        if s.startswith("**"):  # a bold lead line (per-task headings of the per-class table)
            out.append(f"<h3>{html.escape(s.replace('**', ''))}</h3>")
        elif s:
            out.append(f'<p class="note">{html.escape(s)}</p>')
    flush()
    return "\n".join(out)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def provenance(records: list[dict]) -> pd.DataFrame:
    """One row per (task, method, K): seeds, commits and config hashes of its cells."""
    rows: dict[tuple, dict] = {}
    for r in records:
        key = r.get("key") or {}
        mod = key.get("modality") or ""
        method = f"{key.get('method')}@{mod}" if mod else str(key.get("method"))
        row = rows.setdefault((key.get("task"), method, int(key.get("shots", 0))),
                              {"seeds": set(), "commits": set(), "configs": set(), "status": set()})
        row["seeds"].add(int(key.get("seed", 0)))
        row["commits"].add(str(r.get("git_commit") or "?")[:10])
        row["configs"].add(str((r.get("identity") or {}).get("config_hash") or "?")[:10])
        row["status"].add(str(r.get("status")))
    return pd.DataFrame([{"task": t, "method": m, "K": k, "seeds": ",".join(map(str, sorted(v["seeds"]))),
                          "status": ",".join(sorted(v["status"])), "commit": ",".join(sorted(v["commits"])),
                          "config hash": ",".join(sorted(v["configs"]))}
                         for (t, m, k), v in sorted(rows.items(), key=lambda kv: tuple(map(str, kv[0])))])


def explain_sections(store: str | Path) -> list[str]:
    """``avprompt explain`` outputs found under the store (``**/explain.json`` beside its PNGs): the
    attention maps and the t-SNE with their silhouette scores and what they were made from."""
    import json
    parts = []
    for info_path in sorted(Path(store).rglob("explain.json")):
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            continue
        folder = info_path.parent
        cell = Path(str(info.get("cell", "?")))
        head = (f"{info.get('method', '?')} on {info.get('task', '?')}: cell {'/'.join(cell.parts[-5:])}, "
                f"clip {Path(str(info.get('video', '?'))).name}")
        parts += [f"<h2>What DG-SCT attends to ({html.escape(folder.name)})</h2>",
                  f'<p class="note">{html.escape(head)}</p>']
        if (folder / "attention.png").is_file():
            parts.append(_img(folder / "attention.png", "DG-SCT attention maps"))
        if (folder / "tsne.png").is_file():
            sil = ", ".join(f"{k} {v:+.3f}" for k, v in (info.get("silhouette") or {}).items())
            note = (f"t-SNE of {info.get('tsne_clips', '?')} clips of the {info.get('tsne_split', '?')} "
                    f"split; silhouette (cosine, higher = classes better separated): {sil}")
            parts += [f'<p class="note">{html.escape(note)}</p>',
                      _img(folder / "tsne.png", "t-SNE of frozen vs adapted features")]
    return parts


def write_html(store: str | Path, out_dir: str | Path, df: pd.DataFrame, records: list[dict],
               resamples: int = 1000) -> Path:
    """Build ``out_dir/index.html`` from the (filtered) rows ``df`` and their ``records``."""
    from avprompt import report
    from avprompt import report_perclass as PC
    from avprompt.report import markdown_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = report.summarize(df, resamples=resamples)
    failed = report.failed_cells(df)
    parts = [f"<h1>avprompt results: {html.escape(str(store))}</h1>"]
    commits = pd.Series([str(r.get("git_commit") or "?")[:10] for r in records]).value_counts()
    parts.append('<p class="note">' + html.escape(
        f"{len(records)} cells ({int((df['status'] == 'ok').sum())} ok, {len(failed)} failed); commits: "
        + ", ".join(f"{c} ({n} cells)" for c, n in commits.items())
        + f"; page written {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}") + "</p>")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not summary.empty:
            parts += ["<h2>Summary (mean ± 95% CI per K)</h2>", md_table_to_html(report.compact_table(summary))]
            parts += ["<h2>Curves</h2>", _img(report.plot_curves(df, tmp / "curves.png", summary=summary),
                                              "accuracy curves per task")]
            parts += ["<details><summary>Full table: floors, paired differences, marks</summary>",
                      md_table_to_html(report.to_markdown(summary, failed)), "</details>"]
        try:
            per_class = PC.wide_per_class(PC.per_class_table(df))
            confusion = PC.plot_confusion(df, tmp / "confusion.png")
        except ValueError as e:  # no stored predictions (older stores), or no accuracy task
            parts.append(f'<p class="note">Per-class view: {html.escape(str(e))}</p>')
        else:
            parts += ["<h2>Per class (each task's largest K)</h2>", _img(confusion, "confusion matrices"),
                      "<details><summary>Per-class table</summary>", md_table_to_html(per_class), "</details>"]
    parts += explain_sections(store)
    prov = provenance(records)
    if not prov.empty:
        parts += ["<h2>Provenance</h2>", md_table_to_html(markdown_table(prov, right=["K"]))]
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>avprompt report</title>"
            f"<style>{_STYLE}</style><script>{_CHECK}</script></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path = out_dir / "index.html"
    from avprompt.atomic import atomic_write_text
    return atomic_write_text(path, page)
