"""``avprompt report``: summary table (and optionally curves) from a folder of result files.

Mount with ``app.add_typer(cli_report.app, name="report")`` or
``app.command("report")(cli_report.report_command)``. Imports no torch; pandas and matplotlib
load only when the command runs.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

FORMATS = ("md", "csv", "json")
AGAINST = ("paper",)

app = typer.Typer(add_completion=False, help="Summarise a results folder into a table and curves.")


@app.command()
def report_command(
    dir: Path = typer.Argument(Path("results"), metavar="DIR",
                               help="Folder holding the result JSON files."),
    format: str = typer.Option("md", "--format", "-f", help="Table format: md, csv or json."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write curves to this PNG."),
    against: Optional[str] = typer.Option(
        None, "--against", help="Put reference numbers beside ours: 'paper' (DG-SCT paper), only "
        "where task, data, metric and protocol match (else '—' with a footnote)."),
    metric: str = typer.Option("primary", "--metric", help="Metric to aggregate over seeds; the "
                               "floor column shows this metric's constant-predictor floor."),
    paired: bool = typer.Option(True, "--paired/--no-paired", help="Paired differences on the "
                                "same test videos: Δ zs (minus the branch's zero-shot method) and "
                                "Δ dg-sct (minus dg-sct@av at the same K)."),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap replicates of the 95% CI "
                                  "(over seeds and test videos); 0: Student t over seeds only."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Only these tasks (comma-separated), "
                                        "e.g. ave,llp-cls."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Only these methods (comma-separated "
                                          "keys or globs, e.g. dg-sct,coop,tip-*)."),
    branches: Optional[str] = typer.Option(None, "--branches", help="Only these branches "
                                           "(comma-separated: v, a, av)."),
    layout: str = typer.Option("long", "--layout", help="md table: long (one row per K, every "
                               "column) or wide (one row per method, one column per K: mean ± CI, "
                               "* when the paired difference to zero-shot excludes 0)."),
    curves: str = typer.Option("best", "--curves", help="--plot lines: best (each method on its best "
                               "branch) or all (every branch)."),
    per_class: bool = typer.Option(False, "--per-class", help="Per-class accuracy (AP on llp-cls) from "
                                   "the stored predictions, at each task's largest K (or --shots), "
                                   "instead of the summary table."),
    shots: Optional[int] = typer.Option(None, "--shots", help="Shot count of --per-class / --confusion."),
    confusion: Optional[Path] = typer.Option(None, "--confusion", help="Also write confusion matrices "
                                             "(accuracy tasks, summed over seeds) to this image."),
    html_dir: Optional[Path] = typer.Option(None, "--html", help="Also write one self-contained page "
                                            "(tables, curves, per-class heat maps, provenance) to "
                                            "DIR/index.html; opens without a server."),
) -> None:
    """Aggregate seeds per (task, method, backbones, shots): mean, std, 95% CI (bootstrap over
    seeds and test videos where predictions are stored, else Student t), n, floor, paired
    differences (* when their CI excludes 0); list failures. Marks: ↓ not above the floor,
    † architecture changed from the method's reference values, ‡ cells with warnings
    (footnotes list them).

    Example: avprompt report results/fewshot --tasks ave --methods "dg-sct,coop*" --html report/
    """
    if format not in FORMATS:
        _fail(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    if resamples < 0:
        _fail(f"--resamples {resamples}: give 0 (Student t only) or a positive count, e.g. 1000")
    if against is not None and against not in AGAINST:
        _fail(f"--against {against!r}: only 'paper' is available")
    if not dir.is_dir():
        _fail(f"results folder {dir} does not exist: run a suite first or pass the folder "
              "holding the result JSON files")

    from avprompt import report, results

    if layout not in ("long", "wide"):
        _fail(f"--layout {layout!r}: use long or wide")
    if curves not in ("best", "all"):
        _fail(f"--curves {curves!r}: use best or all")
    records = results.load_results(dir)
    if not records:
        _fail(f"no result files (*.json) under {dir}")
    supervised = [r for r in records if r["key"].get("shots") == results.FULL_SHOTS]
    if supervised:  # task heads on the whole training set: their own table, encoder modes paired
        from avprompt.supervised.compare import comparison, format_comparison
        for task in sorted({r["key"]["task"] for r in supervised}):
            if not tasks or task in _split(tasks):
                sys.stdout.write(format_comparison(comparison(dir, task), task) + "\n\n")
        records = [r for r in records if r["key"].get("shots") != results.FULL_SHOTS]
        if not records:
            return
    try:
        df = report.select_rows(report.to_dataframe(records), tasks=_split(tasks), methods=_split(methods),
                                branches=_split(branches))
        if per_class or confusion is not None:
            from avprompt import report_perclass as PC
            if per_class:
                sys.stdout.write(PC.wide_per_class(PC.per_class_table(df, shots)))
            if confusion is not None:
                typer.echo(f"wrote {PC.plot_confusion(df, confusion, shots)}", err=True)
            if per_class:
                return
        summary = report.summarize(df, metric=metric, resamples=resamples, paired=paired)
        paper = report.load_paper_numbers() if against == "paper" else None
        if paper is not None:
            summary = report.add_paper_columns(summary, paper, metric)
        failed = report.failed_cells(df)
        if format == "md" and layout == "wide":
            sys.stdout.write(report.compact_table(summary) + "\n")
        else:
            sys.stdout.write(report.render(summary, failed, format))
        if len(failed) and format != "md":
            typer.echo(f"{len(failed)} failed cell(s); rerun the suite to retry them "
                       "(--format md lists them)", err=True)
        if html_dir is not None:
            from avprompt.report_html import write_html
            keep = set(df["path"])
            page = write_html(dir, html_dir, df, [r for r in records if r.get("_path") in keep], resamples)
            typer.echo(f"wrote {page}", err=True)
        if plot is not None:
            path = report.plot_curves(df, plot, paper=paper, metric=metric, summary=summary, branches=curves)
            typer.echo(f"wrote {path}", err=True)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _split(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _fail(message: str) -> None:
    """One-line error on stderr, exit status 2 (the usage-error status)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


if __name__ == "__main__":
    app()
