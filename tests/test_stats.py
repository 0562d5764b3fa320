"""Uncertainty: video bootstrap, two-level (seeds x videos) intervals, paired differences, and
the report columns built from them. Expected values come from hand computation or from a naive
loop over the same resample indices that scores each resample with avprompt.data.metrics."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from avprompt import report as P
from avprompt import results as R
from avprompt import stats as S
from avprompt.cli_report import app
from avprompt.data.metrics import compute_metrics
from avprompt.data.records import ClipRecord

B = 200  # replicates in these tests (the loop checks score every resample with compute_metrics)
B_LLP = 60  # compute_metrics on llp-cls runs sklearn's AP per class: fewer resamples to check


# ----- predictions --------------------------------------------------------------------------------
def preds_video(correct: list[bool], k: int = 4, ids: list[str] | None = None, label_of=None) -> dict:
    """Video-task predictions: video i has class ``label_of(i)`` (default i % k); its logits
    put the top score on that class when ``correct[i]``, else on the next class."""
    n = len(correct)
    labels = [label_of(i) if label_of else i % k for i in range(n)]
    logits = np.zeros((n, k), np.float16)
    for i, (lab, ok) in enumerate(zip(labels, correct)):
        logits[i, lab if ok else (lab + 1) % k] = 5
    vl = np.zeros((n, k), np.uint8)
    vl[np.arange(n), labels] = 1
    seg = np.full((n, 10), -1, np.int16)
    seg[:, 2:6] = np.array(labels)[:, None]
    return {"clip_ids": np.array(ids or [f"v{i:03d}" for i in range(n)]), "logits": logits,
            "segment_labels": seg, "video_labels": vl}


def preds_random(task: str, n: int, k: int, seed: int) -> dict:
    """Random predictions with signal, shuffled clip order (ties in the float16 scores)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:03d}" for i in rng.permutation(n)])
    seg = np.full((n, 10), -1, np.int16)
    if task == "ave":
        lab = rng.integers(0, k, n)
        for i in range(n):
            a = rng.integers(0, 6)
            seg[i, a:a + 4] = lab[i]
        vl = np.zeros((n, k), np.uint8)
        vl[np.arange(n), lab] = 1
        logits = rng.normal(size=(n, 10, k + 1))
        logits[np.arange(n)[:, None], np.arange(10), np.where(seg < 0, k, seg)] += 1.0
    else:
        vl = (rng.random((n, k)) < 0.25).astype(np.uint8)
        vl[np.arange(n), rng.integers(0, k, n)] = 1
        logits = np.round(rng.normal(size=(n, k)) + 1.2 * vl, 1)  # rounded: tied scores
    return {"clip_ids": ids, "logits": logits.astype(np.float16), "segment_labels": seg,
            "video_labels": vl}


def records(preds: dict, rows=None) -> list[ClipRecord]:
    rows = range(len(preds["clip_ids"])) if rows is None else rows
    return [ClipRecord(str(preds["clip_ids"][i]), str(preds["clip_ids"][i]), "", "test",
                       [int(s) for s in preds["segment_labels"][i]],
                       [int(c) for c in np.nonzero(preds["video_labels"][i])[0]]) for i in rows]


def naive_metric(task, protocol, preds, rows, metric="primary") -> float:
    """compute_metrics on the videos ``rows`` (repeats kept): the reference implementation."""
    rows = np.arange(len(preds["clip_ids"])) if rows is None else rows
    m = compute_metrics(task, protocol, np.asarray(preds["logits"])[rows], records(preds, rows))
    return m[metric]


def sorted_preds(preds: dict) -> dict:
    order = np.argsort(preds["clip_ids"].astype(str), kind="stable")
    return {k: np.asarray(v)[order] for k, v in preds.items()}


def draws_for(preds: dict, b: int = B, seed: int = 0) -> np.ndarray:
    ids = preds["clip_ids"]
    return S.resample_indices(len(ids), b, seed, S.test_set_key(ids))


# ----- hand-computed ------------------------------------------------------------------------------
def test_percentile_interval_by_hand():
    # 41 values 0..40: the 2.5% / 97.5% points (linear interpolation) are at positions 1 and 39
    assert S.percentile_ci(np.arange(41.0)) == (1.0, 39.0)
    assert S.percentile_ci(np.r_[np.arange(41.0), np.nan]) == (1.0, 39.0)  # NaN replicates ignored
    assert all(math.isnan(v) for v in S.percentile_ci(np.array([np.nan])))
    # bias correction: the estimate 20 splits the replicates evenly (20 below, one tie): no change
    assert S.percentile_ci(np.arange(41.0), center=20.0) == (1.0, 39.0)
    assert S.percentile_ci(np.full(9, 100.0), center=100.0) == (100.0, 100.0)


def test_bias_corrected_interval_by_hand():
    # estimate 10: 10 replicates below, one tie -> share 10.5/41; z0 = Phi^-1(share); the tails
    # move to Phi(2 z0 -/+ 1.959964) of the replicates 0..40 (linear interpolation: 40 * level)
    from statistics import NormalDist
    nd = NormalDist()
    z0 = nd.inv_cdf(10.5 / 41)
    lo_level, hi_level = nd.cdf(2 * z0 - 1.959963984540054), nd.cdf(2 * z0 + 1.959963984540054)
    assert 0.0005 < lo_level < 0.0006 and 0.74 < hi_level < 0.75
    lo, hi = S.percentile_ci(np.arange(41.0), center=10.0)
    assert lo == pytest.approx(40 * lo_level) and hi == pytest.approx(40 * hi_level)
    assert lo < 1.0 and hi < 39.0  # pulled towards the estimate's side


def test_resample_counts_are_multiplicities():
    idx = np.array([[0, 0, 2], [1, 2, 1]])
    assert S.resample_counts(idx, 3).tolist() == [[2, 0, 1], [0, 2, 1]]
    a, b = S.resample_indices(50, 7, 0, "ab"), S.resample_indices(50, 7, 0, "ab")
    assert (a == b).all() and a.shape == (7, 50)  # fixed by (seed, test set)
    assert not (a == S.resample_indices(50, 7, 1, "ab")).all()
    assert not (a == S.resample_indices(50, 7, 0, "cd")).all()


def test_accuracy_replicates_by_hand():
    # 4 videos, the third wrong: 75%; resample multiplicities picked by hand
    prep = S.prepare("ave-cls", "standard", preds_video([True, True, False, True]))
    counts = np.array([[2, 0, 1, 1], [0, 0, 4, 0], [1, 1, 1, 1], [0, 3, 0, 1]], np.float32)
    assert prep.value() == 75.0
    assert prep.replicates(counts).tolist() == [75.0, 0.0, 75.0, 100.0]


def test_segment_accuracy_pools_segments_of_a_video():
    # video 0: 7 of 10 segments right, video 1: 3 of 10 -> resamples {0,0}: 70, {1,1}: 30, both: 50
    k = 3
    seg = np.array([[0] * 10, [1] * 10], np.int16)
    logits = np.zeros((2, 10, k + 1), np.float16)
    logits[0, :7, 0] = logits[0, 7:, 2] = 1
    logits[1, :3, 1] = logits[1, 3:, 2] = 1
    preds = {"clip_ids": np.array(["a", "b"]), "logits": logits, "segment_labels": seg,
             "video_labels": np.eye(k, dtype=np.uint8)[:2]}
    prep = S.prepare("ave", "standard", preds)
    counts = np.array([[2, 0], [0, 2], [1, 1]], np.float32)
    assert prep.replicates(counts).tolist() == [70.0, 30.0, 50.0]
    assert prep.value() == naive_metric("ave", "standard", preds, [0, 1]) == 50.0


def test_identical_methods_differ_by_exactly_zero():
    p = preds_random("ave-cls", 30, 5, seed=1)
    d = S.paired_difference("ave-cls", "standard", p, p, b=B)
    assert (d.value, d.lo, d.hi, d.significant) == (0.0, 0.0, 0.0, False)


def test_always_right_minus_never_right_is_exactly_100():
    a, b = preds_video([True] * 12), preds_video([False] * 12)
    d = S.paired_difference("ave-cls", "standard", a, b, b=B)
    assert (d.value, d.lo, d.hi, d.significant) == (100.0, 100.0, 100.0, True)
    assert d.halfwidth == 0.0
    d = S.paired_difference("ave-cls", "standard", b, a, b=B)
    assert (d.value, d.lo, d.hi, d.significant) == (-100.0, -100.0, -100.0, True)


def test_two_level_interval_by_hand():
    reps = np.array([[1.0, 2.0, 3.0, 4.0], [11.0, 12.0, 13.0, 14.0]])
    draws = S.seed_draws(2, 4, seed=0)
    expect = [np.mean([reps[s, j] for s in draws[j]]) for j in range(4)]
    iv = S.two_level_ci([2.5, 12.5], reps)
    assert iv.value == 7.5 and (iv.lo, iv.hi) == S.percentile_ci(np.array(expect))
    one = S.two_level_ci([2.5], reps[:1])  # one seed: the video bootstrap itself
    assert (one.lo, one.hi) == S.percentile_ci(reps[0]) and one.n_seeds == 1


# ----- against compute_metrics on the same resamples ----------------------------------------------
@pytest.mark.parametrize("task,protocol,metric,k", [
    ("ave", "standard", "primary", 4), ("ave-cls", "standard", "primary", 5),
    ("llp-cls", "standard", "primary", 6), ("llp-cls", "reference", "primary", 6),
    ("llp-cls", "standard", "single_label_acc", 6), ("llp-cls", "standard", "video_acc", 6)])
def test_bootstrap_matches_a_naive_loop(task, protocol, metric, k):
    p, b = preds_random(task, 40, k, seed=3), B_LLP if task == "llp-cls" else B
    s = sorted_preds(p)  # resample indices refer to the clip-id order
    naive = [naive_metric(task, protocol, s, row, metric) for row in draws_for(p, b)]
    iv = S.bootstrap_ci(task, protocol, p, metric, b=b)
    whole = naive_metric(task, protocol, p, None, metric)
    assert iv.value == pytest.approx(whole, abs=1e-5)
    lo, hi = S.percentile_ci(np.array(naive))
    assert (iv.lo, iv.hi) == (pytest.approx(lo, abs=1e-5), pytest.approx(hi, abs=1e-5))
    assert iv.lo < iv.value < iv.hi


def test_paired_difference_matches_a_naive_loop_on_common_videos():
    task, protocol = "llp-cls", "standard"
    a, b = preds_random(task, 40, 6, seed=4), preds_random(task, 40, 6, seed=5)
    # b: same clips in another order, minus two and plus one a never saw
    keep = [i for i in range(40) if str(b["clip_ids"][i]) not in ("c003", "c017")]
    b = {k: np.asarray(v)[keep] for k, v in b.items()}
    b["clip_ids"] = b["clip_ids"].astype("<U8")
    b["clip_ids"][0] = "zz-extra"
    common = sorted(set(a["clip_ids"].astype(str)) & set(b["clip_ids"].astype(str)))
    pick = lambda p: sorted_preds({k: np.asarray(v)[np.isin(p["clip_ids"], common)]  # noqa: E731
                                   for k, v in p.items()})
    sa, sb = pick(a), pick(b)
    assert (sa["clip_ids"] == sb["clip_ids"]).all()
    idx = S.resample_indices(len(common), B_LLP, 0, S.test_set_key(common))
    naive = [naive_metric(task, protocol, sa, r) - naive_metric(task, protocol, sb, r) for r in idx]
    d = S.paired_difference(task, protocol, a, b, b=B_LLP)
    whole = naive_metric(task, protocol, sa, None) - naive_metric(task, protocol, sb, None)
    assert d.value == pytest.approx(whole, abs=1e-5)
    lo, hi = S.percentile_ci(np.array(naive))
    assert (d.lo, d.hi) == (pytest.approx(lo, abs=1e-5), pytest.approx(hi, abs=1e-5))


def test_weighted_average_precision_is_sklearns_with_sample_weight():
    rng = np.random.default_rng(7)
    for _ in range(60):
        n = int(rng.integers(2, 10))
        s, y = np.round(rng.normal(size=(n, 3)), 0), rng.random((n, 3)) < 0.4  # many ties
        w = rng.integers(0, 3, (3, n)).astype(np.float32)
        got = S.average_precisions(s, y, w)
        cls = [c for c in range(3) if y[:, c].any()]
        assert got.shape == (len(cls), 3)
        for j, c in enumerate(cls):
            for r in range(3):
                if (w[r] * y[:, c]).sum() == 0:
                    assert math.isnan(got[j, r])
                else:
                    assert got[j, r] == pytest.approx(
                        average_precision_score(y[:, c], s[:, c], sample_weight=w[r]), abs=1e-6)


def test_cells_on_one_test_set_share_draws(tmp_path):
    a, b = preds_random("ave-cls", 30, 5, seed=8), preds_random("ave-cls", 30, 5, seed=9)
    paths = []
    for name, p in (("a", a), ("b", b)):
        key = R.CellKey("s", "ave-cls", name, "bb", 4, 1, "v")
        R.write_predictions(tmp_path, key, p)
        paths.append(str(R.result_path(tmp_path, key)))
    eng = S.CellBootstrap(B)
    (va, ra), (vb, rb) = eng.cell(paths[0], "ave-cls", "standard"), eng.cell(paths[1], "ave-cls", "standard")
    diff, rd = eng.pair(paths[0], paths[1], "ave-cls", "standard")
    assert diff == va - vb and np.array_equal(rd, ra - rb)
    d = S.paired_difference("ave-cls", "standard", a, b, b=B)
    assert (d.lo, d.hi) == S.percentile_ci(rd)
    assert eng.cell(str(tmp_path / "none.json"), "ave-cls", "standard") is None  # no predictions
    assert eng.cell(paths[0], "ave-cls", "standard", "per_class.dog") is None  # not recomputable


# ----- the report ---------------------------------------------------------------------------------
N_VIDEOS, K = 20, 4
MIXED = {1: [i % 3 != 0 for i in range(N_VIDEOS)], 2: [i % 4 != 1 for i in range(N_VIDEOS)]}
CELLS = {  # (method, modality, shots, seed) -> per-video correctness on ave-cls
    ("zeroshot-clip", "v", 0, 1): [False] * N_VIDEOS,
    **{("coop", "v", 16, s): [True] * N_VIDEOS for s in (1, 2)},
    **{("dg-sct", "av", 16, s): [True] * N_VIDEOS for s in (1, 2)},
    **{("linear-probe", "v", 16, s): MIXED[s] for s in (1, 2)},
}


def write_cell(root, method, modality, shots, seed, correct, with_preds=True):
    key = R.CellKey("fewshot", "ave-cls", method, "bb", shots, seed, modality, "synthav-t", "standard")
    p = preds_video(correct, K)
    m = compute_metrics("ave-cls", "standard", p["logits"], records(p))
    R.write_result(root, R.build_result(key, "ok", m, {}, {"dataset": "synthav-t", "protocol": "standard"},
                                        with_git=False))
    if with_preds:
        R.write_predictions(root, key, p)


@pytest.fixture()
def store(tmp_path):
    root = tmp_path / "runs"
    for (method, mod, shots, seed), correct in CELLS.items():
        write_cell(root, method, mod, shots, seed, correct)
    return root


def summary(root, **kw):
    return P.summarize(P.to_dataframe(R.load_results(root)), resamples=B, **kw)


def row(s, method_id, shots=16):
    return s[(s.method_id == method_id) & (s.shots == shots)].iloc[0]


def test_report_paired_columns(store):
    s = summary(store)
    coop, dg, lp = row(s, "coop@v"), row(s, "dg-sct@av"), row(s, "linear-probe@v")
    # always right vs the zero-shot cell that is never right: +100, no spread, significant
    assert (coop.d_zs, coop.d_zs_lo, coop.d_zs_hi, coop.d_zs_sig) == (100.0, 100.0, 100.0, True)
    assert coop.d_zs_ref == "zeroshot-clip@v"
    # identical to DG-SCT on every video: exactly 0, not significant
    assert (coop.d_dgsct, coop.d_dgsct_lo, coop.d_dgsct_hi, coop.d_dgsct_sig) == (0.0, 0.0, 0.0, False)
    assert (coop.ci_lo, coop.ci_hi, coop.ci_method) == (100.0, 100.0, "bootstrap")
    assert math.isnan(dg.d_dgsct) and math.isnan(dg.d_zs)  # no self-pairing; no zeroshot-av@av
    # the mixed method: two-level interval, recomputed by a loop over the same draws
    key = S.test_set_key([f"v{i:03d}" for i in range(N_VIDEOS)])
    idx, draws = S.resample_indices(N_VIDEOS, B, 0, key), S.seed_draws(2, B, 0)
    acc = {s_: np.array([np.mean(np.array(MIXED[s_])[r]) * 100 for r in idx]) for s_ in (1, 2)}
    level = [np.mean([acc[(1, 2)[d]][j] for d in draws[j]]) for j in range(B)]
    assert (lp.ci_lo, lp.ci_hi) == pytest.approx(S.percentile_ci(np.array(level)), abs=1e-9)
    diff = [np.mean([100 - acc[(1, 2)[d]][j] for d in draws[j]]) for j in range(B)]
    assert lp.d_dgsct == pytest.approx(-np.mean([100 - 100 * np.mean(MIXED[x]) for x in (1, 2)]))
    assert (lp.d_dgsct_lo, lp.d_dgsct_hi) == pytest.approx(tuple(-v for v in reversed(
        S.percentile_ci(np.array(diff)))), abs=1e-9)
    assert lp.d_dgsct_sig and lp.ci95 == pytest.approx(max(lp.ci_hi - lp["mean"], lp["mean"] - lp.ci_lo))


def test_report_markdown_marks_significance(store):
    md = P.to_markdown(summary(store))
    lines = {c[1]: c for c in (
        [x.strip() for x in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("| ave-cls"))}
    header = [x.strip() for x in next(ln for ln in md.splitlines() if ln.startswith("| task")).strip("|").split("|")]
    coop = dict(zip(header, lines["coop@v"]))
    assert coop["Δ zs"] == "+100 [+100, +100] *" and coop["Δ dg-sct"] == "+0 [+0, +0]"
    assert coop["95% CI"] == "[100, 100]"
    assert dict(zip(header, lines["dg-sct@av"]))["Δ dg-sct"] == "—"
    assert "two-level bootstrap" in md and "* = the interval excludes 0" in md
    assert "Δ zs" not in P.to_markdown(summary(store, paired=False))


def test_report_falls_back_to_t_without_predictions(store):
    write_cell(store, "maple", "v", 16, 1, MIXED[1], with_preds=False)
    write_cell(store, "maple", "v", 16, 2, MIXED[2], with_preds=False)
    s = summary(store)
    maple = row(s, "maple@v")
    vals = [100 * np.mean(MIXED[x]) for x in (1, 2)]
    h = P.t_quantile(2) * np.std(vals, ddof=1) / math.sqrt(2)
    assert maple.ci_method == "t" and maple.ci_lo == pytest.approx(np.mean(vals) - h)
    assert math.isnan(maple.d_zs)  # no predictions, no pairing
    md = P.to_markdown(s)
    assert "Student t over seeds on the 1 row(s) marked ᵗ" in md
    assert "ᵗ" in next(ln for ln in md.splitlines() if "maple@v" in ln)
    t_only = P.summarize(P.to_dataframe(R.load_results(store)), resamples=0)
    assert set(t_only.ci_method) == {"t"} and "d_zs" not in t_only
    assert "Student t over seeds (mean ± t·std/√n" in P.to_markdown(t_only)


def test_compact_table_and_halfwidths(store):
    table = P.compact_table(summary(store))
    assert "K=16" in table and "K=0" in table
    coop = next(ln for ln in table.splitlines() if "coop@v" in ln)
    assert "100.0 ± 0.0 *" in coop
    hw = P.paired_halfwidths(R.load_results(store), "coop@v", "dg-sct@av", 16, resamples=B)
    assert hw[["task", "n_seeds", "diff", "halfwidth", "seed_halfwidth"]].values.tolist() == \
        [["ave-cls", 2, 0.0, 0.0, 0.0]]
    zs = P.paired_halfwidths(R.load_results(store), "linear-probe@v", "zeroshot-clip@v", 16, resamples=B)
    r = zs.iloc[0]  # the zero-shot method is taken at K=0
    assert r["diff"] == pytest.approx(np.mean([100 * np.mean(MIXED[x]) for x in (1, 2)]))
    assert r.halfwidth == pytest.approx(max(r.hi - r["diff"], r["diff"] - r.lo)) and r.halfwidth > 0
    assert P.paired_halfwidths(R.load_results(store), "maple@v", "coop@v", 16).empty
    every = P.paired_halfwidths(R.load_results(store), None, "dg-sct@av", 16, resamples=B)
    assert every.a.tolist() == ["coop@v", "linear-probe@v"]  # every method but the reference
    assert every.halfwidth.tolist()[0] == 0.0 and every.halfwidth.tolist()[1] > 0


def test_cli_paired_options_and_curves(store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, [str(store), "--resamples", "100", "--plot", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert "Δ zs" in res.stdout and "+100 [+100, +100] *" in res.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(app, [str(store), "--no-paired", "--format", "csv"])
    assert res.exit_code == 0 and "d_zs" not in pd.read_csv(__import__("io").StringIO(res.stdout))
    res = runner.invoke(app, [str(store), "--resamples", "-1"])
    assert res.exit_code == 2 and "--resamples -1" in res.output


def test_compact_table_by_hand():
    s = pd.DataFrame({"task": ["ave"] * 3, "method_id": ["coop@v", "coop@v", "maple@v"],
                      "shots": [1, 16, 16], "n": [3, 3, 1], "mean": [40.0, 61.25, 50.0],
                      "ci95": [2.5, 1.0, math.nan], "d_zs_sig": [False, True, False]})  # bool dtype
    table = P.compact_table(s)
    rows = [ln for ln in table.splitlines() if ln.startswith("| ave")]
    assert [[c.strip() for c in r.strip("|").split("|")] for r in rows] == [
        ["ave", "coop@v", "40.0 ± 2.5", "61.2 ± 1.0 *"], ["ave", "maple@v", "", "50.0"]]
    assert "up to 3 seed(s)" in table and "excludes 0" in table


def test_seeds_pair_by_number_and_zero_shot_broadcasts():
    cells, dg = {1: "m1", 2: "m2", 3: "m3"}, {1: "d1", 3: "d3"}
    assert S.pair_seeds(cells, dg) == [("m1", "d1"), ("m3", "d3")]
    assert S.pair_seeds(cells, {1: "z1"}) == [("m1", "z1")]  # a trained reference: same seed only
    assert S.pair_seeds(cells, {1: "z1"}, broadcast=True) == [("m1", "z1"), ("m2", "z1"), ("m3", "z1")]
    assert S.pair_seeds(cells, {}, broadcast=True) == []


def test_broken_predictions_fall_back_to_t(store):
    bad = next(store.rglob("linear-probe@v/*/shots16/seed1.pred.npz"))
    bad.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable predictions"):
        s = summary(store)
    assert row(s, "linear-probe@v").ci_method == "t" and row(s, "coop@v").ci_method == "bootstrap"
    assert math.isnan(row(s, "linear-probe@v").d_zs)
