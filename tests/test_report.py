"""Report: seed statistics, failed cells, Markdown/CSV/JSON output, curves, paper columns, CLI."""
from __future__ import annotations

import io
import json
import math
import statistics

import pandas as pd
import pytest
from typer.testing import CliRunner

from avprompt import report as P
from avprompt import results as R
from avprompt.cli_report import app

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEED_VALUES = {  # (task, method, modality, shots) -> primary per seed, hand-made
    ("ave", "dg-sct", "", 16): [0.5, 0.6, 0.7],
    ("ave", "dg-sct", "", 0): [0.40, 0.42, 0.47],
    ("ave", "coop", "v", 16): [0.31, 0.37, 0.35],
    ("llp-cls", "dg-sct", "", 4): [0.2, 0.25, 0.21],
}
FLOOR = {"ave": 0.15, "llp-cls": 0.05}
PRIMARY = {"ave": "segment_acc", "llp-cls": "macro_map"}  # the standard protocol's
REAL = {"dataset": "dir:/data/real", "protocol": "standard"}  # AVE/LLP read from a folder


def _write_store(root, with_failed: bool = True) -> None:
    for (task, method, modality, shots), values in SEED_VALUES.items():
        for seed, v in enumerate(values):
            key = R.CellKey("fewshot", task, method, "tiny-vit+tiny-htsat", shots, seed, modality)
            metrics = {"primary": v, "primary_name": PRIMARY[task], PRIMARY[task]: v,
                       "floor": FLOOR[task], "per_class": {"dog": v / 2}}
            R.write_result(root, R.build_result(key, "ok", metrics, {"lr": 3e-4}, REAL,
                                                with_git=False))
    if with_failed:
        key = R.CellKey("fewshot", "ave", "maple", "tiny-vit+tiny-htsat", 16, 0)
        R.write_result(root, R.build_result(key, "failed", {}, {}, error="CUDA out of memory",
                                            with_git=False))


@pytest.fixture()
def store(tmp_path):
    root = tmp_path / "results"
    _write_store(root)
    return root


@pytest.fixture()
def df(store):
    return P.to_dataframe(R.load_results(store))


def test_long_table_has_one_row_per_cell(df):
    assert len(df) == sum(len(v) for v in SEED_VALUES.values()) + 1
    assert {"primary", "floor", "per_class.dog", "status", "method_id", "seed"} <= set(df.columns)
    assert set(df["method_id"]) == {"dg-sct", "coop@v", "maple"}


def test_summary_statistics_over_seeds(df):
    s = P.summarize(df)
    assert len(s) == len(SEED_VALUES)  # the failed maple cell forms no group
    for (task, method, modality, shots), values in SEED_VALUES.items():
        mid = f"{method}@{modality}" if modality else method
        row = s[(s.task == task) & (s.method_id == mid) & (s.shots == shots)]
        assert len(row) == 1
        row = row.iloc[0]
        sd = statistics.stdev(values)
        assert row.n == 3
        assert row["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert row["std"] == pytest.approx(sd, abs=1e-12)
        # Student t, 2 degrees of freedom, 97.5% quantile = 4.302652729...
        assert row.ci95 == pytest.approx(4.302652729749464 * sd / math.sqrt(3), rel=1e-9)
        assert row.floor == pytest.approx(FLOOR[task])


def test_single_seed_has_no_spread(tmp_path):
    key = R.CellKey("fewshot", "ave", "coop", "bb", 1, 0)
    R.write_result(tmp_path, R.build_result(key, "ok", {"primary": 0.3}, {}, with_git=False))
    s = P.summarize(P.to_dataframe(R.load_results(tmp_path)))
    assert s.n.tolist() == [1] and math.isnan(s["std"][0]) and math.isnan(s.ci95[0])
    assert "floor" not in s.columns


def test_only_failed_cells_gives_empty_summary(tmp_path):
    key = R.CellKey("fewshot", "ave", "coop", "bb", 1, 0)
    R.write_result(tmp_path, R.build_result(key, "failed", error="boom", with_git=False))
    df = P.to_dataframe(R.load_results(tmp_path))
    assert P.summarize(df).empty
    assert "boom" in P.to_markdown(P.summarize(df), P.failed_cells(df))


def test_unknown_metric_is_named(df):
    with pytest.raises(ValueError, match="'top5'.*primary"):
        P.summarize(df, metric="top5")


def test_other_metric_can_be_summarised(df):
    s = P.summarize(df, metric="per_class.dog")
    row = s[(s.task == "ave") & (s.method_id == "dg-sct") & (s.shots == 16)].iloc[0]
    assert row["mean"] == pytest.approx(0.3)


def test_failed_cells_are_listed(df):
    failed = P.failed_cells(df)
    assert failed[["method_id", "shots", "seed"]].values.tolist() == [["maple", 16, 0]]
    assert failed.error[0] == "CUDA out of memory"
    md = P.to_markdown(P.summarize(df), failed)
    assert "Failed cells (1" in md and "CUDA out of memory" in md


def test_markdown_has_a_row_per_group(df):
    md = P.render(P.summarize(df), P.failed_cells(df), "md")
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    header, rule, *rows = table[: 2 + len(SEED_VALUES)]
    names = [c.strip() for c in header.strip("|").split("|")]
    assert names[:4] == ["task", "method", "backbones", "shots"]
    assert set(rule) <= set("|-:")
    assert len(rows) == len(SEED_VALUES)
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert ["ave", "coop@v", "tiny-vit+tiny-htsat", "16", "3"] in [c[:5] for c in cells]
    widths = {len(ln) for ln in table[: 2 + len(SEED_VALUES)]}
    assert len(widths) == 1  # columns are padded to one width


def test_markdown_escapes_pipes_and_shows_nan_as_dash():
    out = P.markdown_table(pd.DataFrame({"name": ["a|b"], "x": [float("nan")]}))
    assert "a\\|b" in out and out.splitlines()[2].rstrip().endswith("- |")


def test_csv_round_trip(df):
    s = P.summarize(df)
    back = pd.read_csv(io.StringIO(P.render(s, fmt="csv")))
    assert list(back.columns) == list(s.columns)
    pd.testing.assert_frame_equal(back[["n", "mean", "std", "ci95", "floor"]],
                                  s[["n", "mean", "std", "ci95", "floor"]], check_dtype=False)
    assert back.method_id.tolist() == s.method_id.tolist()


def test_json_output(df):
    out = json.loads(P.render(P.summarize(df), P.failed_cells(df), "json"))
    assert out["metric"] == "primary" and len(out["summary"]) == len(SEED_VALUES)
    assert out["failed"][0]["error"] == "CUDA out of memory"
    with pytest.raises(ValueError, match="md, csv or json"):
        P.render(P.summarize(df), fmt="html")


def test_paper_column_beside_ours(df):
    paper = P.load_paper_numbers()
    assert {"setting", "source"} <= set(paper.columns) and paper["source"].str.len().gt(0).all()
    s = P.add_paper_columns(P.summarize(df), paper)
    assert {"paper", "paper_source"} <= set(s.columns)
    row = s[(s.task == "ave") & (s.method_id == "dg-sct") & (s.shots == 16)].iloc[0]
    ref = paper[(paper.task == "ave") & (paper.method == "dg-sct") & (paper.shots == 16)].iloc[0]
    assert row.paper == pytest.approx(ref.value / 100)  # our metric is a fraction
    assert row.paper_source == ref.source
    # standard-protocol LLP: our primary is macro mAP, the paper's number is reference-rule
    # accuracy under the reference protocol: not the same quantity, so no paper number
    no_ref = s[(s.task == "llp-cls") & (s.shots == 4)].iloc[0]
    assert len(paper[(paper.task == "llp-cls") & (paper.method == "dg-sct") & (paper.shots == 4)])
    assert math.isnan(no_ref.paper) and "reference protocol" in no_ref.paper_note
    coop = s[s.method_id == "coop@v"].iloc[0]  # the paper has no 16-shot CoOp number
    assert math.isnan(coop.paper)
    assert "paper" in P.to_markdown(s).splitlines()[2]


def test_paper_scale():
    assert P.paper_scale([0.2, 0.9]) == 0.01
    assert P.paper_scale([20.0, 90.0]) == 1.0
    from avprompt.report_curves import shot_position
    assert shot_position(0) == 0 and shot_position(1) == 1 and shot_position(16) == 5


def test_best_branch_keeps_one_line_per_method():
    from avprompt.report_curves import best_branches
    rows = [dict(task="ave", method_id=f"coop@{b}", backbones="x", data="d", protocol="standard", shots=k,
                 mean=m + k) for b, m in (("v", 50), ("a", 20), ("av", 55)) for k in (1, 16)]
    rows += [dict(task="ave", method_id="dg-sct@av", backbones="x", data="d", protocol="standard", shots=1, mean=1.0)]
    kept = best_branches(pd.DataFrame(rows))
    assert sorted(kept["method_id"].unique()) == ["coop@av", "dg-sct@av"] and len(kept) == 3


@pytest.mark.parametrize("suffix,magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_plot_formats_follow_the_suffix(df, tmp_path, suffix, magic):
    out = P.plot_curves(df, tmp_path / f"curves{suffix}", branches="all")
    assert out.read_bytes()[:len(magic)] == magic


def test_plot_writes_png(df, tmp_path):
    out = P.plot_curves(df, tmp_path / "plots" / "curves.png", paper=P.load_paper_numbers())
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    out2 = P.plot_curves(df, tmp_path / "floors.png", floors={"ave": 0.2})
    assert out2.read_bytes()[:8] == PNG_SIGNATURE


def test_cli_report(store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, [str(store), "--against", "paper", "--plot", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert "coop@v" in res.stdout and "paper" in res.stdout and "CUDA out of memory" in res.stdout
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_SIGNATURE
    res = runner.invoke(app, [str(store), "--format", "csv"])
    assert res.exit_code == 0 and len(pd.read_csv(io.StringIO(res.stdout))) == len(SEED_VALUES)


def test_cli_filters_and_wide_layout(store):
    runner = CliRunner()
    res = runner.invoke(app, [str(store), "--methods", "coop", "--layout", "wide", "--resamples", "0"])
    assert res.exit_code == 0, res.output
    body = [line for line in res.stdout.splitlines() if line.startswith("|")]
    assert "K=" in body[0] and all("coop@" in line for line in body[2:]) and len(body) > 2
    res = runner.invoke(app, [str(store), "--tasks", "nope"])
    assert res.exit_code == 2 and "--tasks nope: nothing matches; the results have" in res.output


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    for args, words in [([str(tmp_path / "missing")], "does not exist"),
                        ([str(tmp_path), "--format", "xml"], "md, csv, json"),
                        ([str(tmp_path), "--against", "mteb"], "only 'paper'"),
                        ([str(tmp_path)], "no result files")]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and words in res.output, args
        assert len(res.output.strip().splitlines()) == 1, res.output


def test_did_not_learn_rows_are_marked_and_named(tmp_path):
    root = tmp_path / "results"
    for seed, stuck in ((1, True), (2, False)):
        key = R.CellKey("fewshot", "ave", "coop", "bb", 4, seed, "v")
        extra = {**REAL, **({"did_not_learn": "the initial state scored best (40.0)"} if stuck else {})}
        R.write_result(root, R.build_result(key, "ok", {"primary": 0.4, "primary_name": "segment_acc"}, {}, extra,
                                            with_git=False))
    summary = P.summarize(P.to_dataframe(R.load_results(root)), resamples=0)
    assert summary["did_not_learn"].tolist() == [1]
    text = P.to_markdown(summary)
    assert "○" in text and "did not learn" in text and "coop@v ave 4-shot 1/2" in text
