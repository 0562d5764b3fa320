"""Report: paper numbers only like with like, floors of the chosen metric, trust marks."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from avprompt import report as P
from avprompt import report_notes as N
from avprompt import results as R
from avprompt.cli_report import app
from avprompt.data.metrics import primary_metric

REAL = "dir:/data/real"
BB = "vit-b-32+htsat"
# llp-cls metrics of one cell (percent) and their constant-predictor floors, hand-made
LLP = {"video_acc": 40.0, "single_label_acc": 45.0, "macro_map": 30.0, "reference_acc": 40.0}
LLP_FLOORS = {"video_acc": 52.0, "single_label_acc": 20.0, "macro_map": 8.0, "reference_acc": 52.0}


def _key(task, method, shots, seed, protocol, data, modality=""):
    key = R.CellKey(protocol, task, method, BB, shots, seed, modality)  # suite = protocol
    fields = getattr(R.CellKey, "__dataclass_fields__", {})
    if "protocol" in fields:  # stores that file cells by data and protocol
        key = R.CellKey(protocol, task, method, BB, shots, seed, modality, data=data.split(":")[0],
                        protocol=protocol)
    return key


def write_cell(root, task, method, shots, seed, values: dict, *, protocol="standard",
               dataset=REAL, floors: dict | None = None, changes=None, warnings=None,
               old_warnings=False, modality="", with_floors=True):
    primary = primary_metric(task, protocol)
    metrics = {**values, "primary_name": primary, "primary": values[primary]}
    if floors is not None:
        metrics["floor"] = floors[primary]
        if with_floors:
            metrics["floors"] = dict(floors)
    extra = {"dataset": dataset, "protocol": protocol}
    if changes:
        extra["reference_changes"] = changes
    if warnings and not old_warnings:
        extra["warnings"] = warnings
    rec = R.build_result(_key(task, method, shots, seed, protocol, dataset, modality), "ok",
                         metrics, {"protocol": protocol}, extra, with_git=False)
    if warnings and old_warnings:  # records written before warnings moved to the top level
        rec.pop("warnings", None)
        rec.setdefault("extra", {})["warnings"] = warnings
    R.write_result(root, rec)


def summary(root, metric="primary", paper=True):
    df = P.to_dataframe(R.load_results(root))
    s = P.summarize(df, metric=metric)
    return P.add_paper_columns(s, P.load_paper_numbers(), metric) if paper else s


def row_of(s, **match):
    sel = pd.Series(True, index=s.index)
    for k, v in match.items():
        sel &= s[k] == v
    assert sel.sum() == 1, (match, s[list(match)])
    return s[sel].iloc[0]


def md_rows(md: str) -> list[dict]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def paper_value(task, method, shots, metric):
    p = P.load_paper_numbers()
    hit = p[(p.task == task) & (p.method == method) & (p.shots == shots) & (p.metric == metric)]
    assert len(hit) == 1
    return float(hit.value.iloc[0])


@pytest.fixture()
def llp_store(tmp_path):
    for seed in (1, 2):
        write_cell(tmp_path, "llp-cls", "dg-sct", 16, seed, LLP, floors=LLP_FLOORS)
    write_cell(tmp_path, "llp-cls", "dg-sct", 16, 1, LLP, protocol="reference", floors=LLP_FLOORS)
    return tmp_path


# ----- pairing ------------------------------------------------------------------------------------
def test_standard_llp_map_is_not_paired_reference_accuracy_is(llp_store):
    s = summary(llp_store)
    std, ref = row_of(s, protocol="standard"), row_of(s, protocol="reference")
    assert std.primary_name == "macro_map" and math.isnan(std.paper)
    assert "reference protocol" in std.paper_note and "`reference_acc`" in std.paper_note
    assert ref.primary_name == "reference_acc" and ref.paper_note == ""
    assert ref.paper == pytest.approx(paper_value("llp-cls", "dg-sct", 16, "reference_acc"))
    md = P.to_markdown(s)
    rows = {r["protocol"]: r for r in md_rows(md)}
    assert rows["standard"]["paper"] == "— [1]" and rows["reference"]["paper"] != "—"
    assert float(rows["reference"]["paper"]) == pytest.approx(ref.paper)
    footnote = [ln for ln in md.splitlines() if ln.startswith("[1] ")]
    assert len(footnote) == 1 and "macro_map" in footnote[0] and "reference" in footnote[0]


def test_same_metric_other_protocol_or_other_metric_same_protocol_is_not_paired(llp_store):
    by_metric = {m: summary(llp_store, m) for m in ("reference_acc", "single_label_acc")}
    s = by_metric["reference_acc"]
    assert math.isnan(row_of(s, protocol="standard").paper)  # LLP rule only under reference
    assert row_of(s, protocol="reference").paper == pytest.approx(
        paper_value("llp-cls", "dg-sct", 16, "reference_acc"))
    s = by_metric["single_label_acc"]
    assert s["paper"].isna().all() and s["paper_note"].str.contains("single_label_acc").all()


def test_ave_pairs_under_either_protocol_but_not_without_provenance(tmp_path):
    ave = {"segment_acc": 61.0}
    write_cell(tmp_path, "ave", "dg-sct", 16, 1, ave)
    write_cell(tmp_path, "ave", "dg-sct", 16, 1, ave, protocol="reference")
    write_cell(tmp_path, "ave", "dg-sct", 8, 1, ave, dataset="")  # dataset not recorded
    s = summary(tmp_path)
    want = paper_value("ave", "dg-sct", 16, "segment_acc")
    assert row_of(s, shots=16, protocol="standard").paper == pytest.approx(want)
    assert row_of(s, shots=16, protocol="reference").paper == pytest.approx(want)
    unknown = row_of(s, shots=8)
    assert math.isnan(unknown.paper) and "dataset not recorded" in unknown.paper_note


def test_synthav_is_said_once_and_never_paired(tmp_path):
    for task, values in (("ave", {"segment_acc": 70.0}), ("ave-cls", {"video_acc": 90.0}),
                         ("llp-cls", LLP)):
        for protocol in ("standard", "reference"):
            write_cell(tmp_path, task, "dg-sct", 16, 1, values, protocol=protocol,
                       dataset="synthav-small-0")
    s = summary(tmp_path)
    assert s["paper"].isna().all() and (s["dataset_kind"] == "synthav").all()
    md = P.to_markdown(s)
    assert md.count("not AVE/LLP numbers") == 1 and "synthav-small-0" in md
    assert "[1]" not in md and {r["paper"] for r in md_rows(md)} == {"—"}
    assert P.to_markdown(summary(tmp_path, paper=False)).count("not AVE/LLP numbers") == 1
    assert len(json.loads(P.render(s, fmt="json"))["notes"]) == 1
    write_cell(tmp_path, "ave", "dg-sct", 16, 1, {"segment_acc": 70.0})  # real data beside
    assert N.synthav_note(summary(tmp_path)) is not None
    assert summary(tmp_path)["paper"].notna().sum() == 1


# ----- floors -------------------------------------------------------------------------------------
def test_floor_column_is_the_floor_of_the_chosen_metric(llp_store):
    for metric in ("primary", *LLP):
        s = summary(llp_store, metric)
        for protocol in ("standard", "reference"):
            row = row_of(s, protocol=protocol)
            name = primary_metric("llp-cls", protocol) if metric == "primary" else metric
            assert row.floor == pytest.approx(LLP_FLOORS[name]), (metric, protocol)
            assert row.below_floor == (LLP[name] <= LLP_FLOORS[name])
        md = P.to_markdown(s)
        assert ("↓" in md) == any(LLP[m] <= LLP_FLOORS[m] for m in
                                  ([metric] if metric in LLP else ["macro_map", "reference_acc"]))


def test_floor_falls_back_to_the_primary_floor_only_for_the_primary(tmp_path):
    write_cell(tmp_path, "llp-cls", "coop", 16, 1, LLP, floors=LLP_FLOORS, with_floors=False)
    df = P.to_dataframe(R.load_results(tmp_path))
    assert P.summarize(df, "primary").floor[0] == pytest.approx(LLP_FLOORS["macro_map"])
    assert P.summarize(df, "macro_map").floor[0] == pytest.approx(LLP_FLOORS["macro_map"])
    s = P.summarize(df, "video_acc")
    assert math.isnan(s.floor[0]) and not s.below_floor[0]
    write_cell(tmp_path, "llp-cls", "coop", 16, 2, LLP, floors=LLP_FLOORS)  # a known floor beside
    s = P.summarize(P.to_dataframe(R.load_results(tmp_path)), "video_acc")
    assert s.floor[0] == pytest.approx(LLP_FLOORS["video_acc"])  # mean of the cells that know it
    write_cell(tmp_path, "ave", "coop", 16, 1, {"segment_acc": 50.0})  # no floor at all
    s = P.summarize(P.to_dataframe(R.load_results(tmp_path)), "video_acc")
    assert md_rows(P.to_markdown(s))[0]["floor"] == f"{LLP_FLOORS['video_acc']:.4g}"
    s = P.summarize(P.to_dataframe(R.load_results(tmp_path)), "primary")
    assert row_of(s, task="ave").floor != row_of(s, task="ave").floor  # NaN
    assert {r["task"]: r["floor"] for r in md_rows(P.to_markdown(s))}["ave"] == "—"


# ----- trust marks --------------------------------------------------------------------------------
PAIRING = {"field": "layer_pairing", "reference": "identity", "used": "proportional",
           "reason": "audio tower has 4 blocks, vision 12"}
HIDDEN = {"field": "spatial_hidden", "reference": 256, "used": 32, "reason": "tiny backbone",
          "branches": ["a", "v"]}


def test_reference_changes_are_marked_grouped_and_counted(tmp_path):
    ave = {"segment_acc": 60.0}
    write_cell(tmp_path, "ave", "dg-sct", 16, 1, ave, changes=[PAIRING])
    write_cell(tmp_path, "ave", "dg-sct", 16, 2, ave, changes=[PAIRING])
    write_cell(tmp_path, "ave", "dg-sct", 16, 3, ave, changes=[PAIRING, HIDDEN])
    write_cell(tmp_path, "ave", "dg-sct", 4, 1, ave, changes=[PAIRING])
    write_cell(tmp_path, "ave", "coop", 16, 1, ave, modality="v")
    s = summary(tmp_path)
    assert row_of(s, method_id="dg-sct", shots=16).changed == 3
    assert row_of(s, method_id="coop@v").changed == 0
    md = P.to_markdown(s)
    marks = {(r["method"], r["shots"]): r["marks"] for r in md_rows(md)}
    assert marks[("dg-sct", "16")] == "†" and marks[("dg-sct", "4")] == "†"
    assert marks[("coop@v", "16")] == ""
    lines = md.splitlines()
    head = [ln for ln in lines if ln.startswith("†")]
    assert len(head) == 1 and "(4 cells;" in head[0]
    pairing = [ln for ln in lines if "`layer_pairing`" in ln]
    hidden = [ln for ln in lines if "`spatial_hidden [a, v]`" in ln]
    assert len(pairing) == 1 and len(hidden) == 1  # grouped across rows
    assert "4 cells" in pairing[0] and "ave 16-shot 3/3" in pairing[0] and "ave 4-shot 1/1" in pairing[0]
    assert "identity" in pairing[0] and "proportional" in pairing[0] and PAIRING["reason"] in pairing[0]
    assert "1 cell (ave 16-shot 1/3)" in hidden[0] and "256" in hidden[0] and "32" in hidden[0]
    back = pd.read_csv(__import__("io").StringIO(P.render(s, fmt="csv")))
    dg16 = back[(back.method_id == "dg-sct") & (back.shots == 16)].iloc[0]
    assert {c["field"]: c["cells"] for c in json.loads(dg16.changes)} == \
        {"layer_pairing": 3, "spatial_hidden [a, v]": 1}


def test_warnings_are_marked_from_new_and_old_records(tmp_path):
    msg = "class 'Speech' has 0 single-label clips, fewer than K=16"
    write_cell(tmp_path, "llp-cls", "dg-sct", 16, 1, LLP, warnings=[msg])
    write_cell(tmp_path, "llp-cls", "dg-sct", 16, 2, LLP, warnings=[msg], old_warnings=True)
    write_cell(tmp_path, "llp-cls", "dg-sct", 16, 3, LLP)
    write_cell(tmp_path, "llp-cls", "coop", 16, 1, LLP, warnings=["other"], modality="v")
    s = summary(tmp_path, paper=False)
    assert row_of(s, method_id="dg-sct").warned == 2 and row_of(s, method_id="coop@v").warned == 1
    md = P.to_markdown(s)
    assert {r["method"]: r["marks"] for r in md_rows(md)} == {"coop@v": "‡", "dg-sct": "‡"}
    listed = [ln for ln in md.splitlines() if msg in ln]
    assert len(listed) == 1 and "2 cells" in listed[0]
    assert [ln for ln in md.splitlines() if ln.startswith("‡")][0].count("3 cells") == 1


def test_no_marks_no_marks_column(llp_store):
    md = P.to_markdown(summary(llp_store, "single_label_acc"))  # 45 > 20: above its floor
    assert "marks" not in md.splitlines()[2] and "†" not in md and "‡" not in md


def test_cli_shows_dash_and_footnote(llp_store):
    runner = CliRunner()
    res = runner.invoke(app, [str(llp_store), "--against", "paper"])
    assert res.exit_code == 0, res.output
    assert "— [1]" in res.stdout and "\n[1] " in res.stdout
    res = runner.invoke(app, [str(llp_store), "--against", "paper", "--format", "json"])
    rows = json.loads(res.stdout)["summary"]
    assert {r["protocol"]: r["paper"] is None for r in rows} == {"standard": True,
                                                                 "reference": False}
